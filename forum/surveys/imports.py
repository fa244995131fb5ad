"""``forum surveys import SURVEY FILE.csv``: answers collected elsewhere (a Delighted or Qualtrics export).

- Columns are found by name, case-insensitively: the email (``email``, ``e-mail``, ``person email``,
  ``recipientemail``…), the score (``score``, ``nps``, ``rating``…), the comment (``comment``,
  ``feedback``, ``reason``…) and the date (``date``, ``created_at``, ``response timestamp``,
  ``recordeddate``, ``enddate``…: ISO 8601, Unix seconds or ``MM/DD/YYYY HH:MM``; UTC unless it says
  otherwise). Every other column with a value becomes a property of the answer (plan, region…).
- A bad row (no email, a score out of range, a date in the future or unreadable, more cells than the
  header…) is reported with its line number; the rest of the file still imports.
- Idempotent: each row's key is the md5 of (email, date, score, comment); a row already imported is skipped.
- An unknown email becomes an external account with no usable password, claimed by registering with it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forum.accounts.schemas import EMAIL_RE
from forum.accounts.services import accounts_for_emails
from forum.encoding import post_language
from forum.models import AnswerSource, Survey, SurveyAnswer
from forum.surveys.schemas import MAX_SCORE, MIN_SCORE
from forum.surveys.services import enqueue_voices, refresh_latest

BATCH_ROWS = 500
COLUMNS = {
    "email": ("email", "e-mail", "email address", "person email", "recipientemail", "recipient email", "respondent"),
    "score": ("score", "nps", "nps score", "rating", "csat", "likelihood", "q_nps", "nps_group_score"),
    "comment": ("comment", "comments", "feedback", "reason", "open text", "verbatim", "why"),
    "date": (
        "date",
        "answered_at",
        "created_at",
        "response timestamp",
        "response date",
        "recordeddate",
        "enddate",
        "timestamp",
        "submitted at",
    ),
}
# Qualtrics columns that describe the response, not the respondent: never properties.
IGNORED = {
    "responseid", "startdate", "status", "ipaddress", "progress", "duration (in seconds)", "finished",
    "distributionchannel", "userlanguage", "recipientlastname", "recipientfirstname", "externalreference",
    "locationlatitude", "locationlongitude", "response id", "id",
}  # fmt: skip
MAX_PROPERTIES, MAX_KEY, MAX_VALUE, MAX_COMMENT = 20, 40, 200, 5_000
_US_DATES = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y")


@dataclass
class Rejected:
    line: int
    reason: str


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    already_imported: int = 0
    accounts_created: int = 0
    rejected: list[Rejected] = field(default_factory=list)


@dataclass
class _Row:
    line: int
    email: str
    score: int
    comment: str | None
    answered_at: datetime
    properties: dict[str, str]
    key: str


class CsvImportError(ValueError):
    """The file cannot be imported at all (no email or score column, not a CSV)."""


def _parse_date(raw: str, now: datetime) -> datetime:
    value = raw.strip()
    if re.fullmatch(r"\d{9,11}(\.\d+)?", value):
        parsed = datetime.fromtimestamp(float(value), UTC)
    else:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            for fmt in _US_DATES:
                try:
                    parsed = datetime.strptime(value, fmt)  # naive means UTC: set below
                    break
                except ValueError:
                    continue
            else:
                raise ValueError(f"unreadable date {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > now:
        raise ValueError(f"date {value!r} is in the future")
    return parsed.astimezone(UTC)


def _columns(header: list[str]) -> dict[str, str]:
    """Our field name → the file's column name."""
    found: dict[str, str] = {}
    for name in header:
        label = name.strip().lower()
        for wanted, aliases in COLUMNS.items():
            if label in aliases and wanted not in found:
                found[wanted] = name
    missing = [wanted for wanted in ("email", "score") if wanted not in found]
    if missing:
        raise CsvImportError(
            f"no {' or '.join(missing)} column in the header (found: {', '.join(header) or 'nothing'}); "
            f"an email column is one of {', '.join(COLUMNS['email'])}; "
            f"a score column one of {', '.join(COLUMNS['score'])}"
        )
    return found


def parse_rows(content: str, survey_id: UUID, kind: str, now: datetime, report: ImportReport) -> list[_Row]:
    """Every valid row of the file; the others go to ``report.rejected`` with their line number."""
    first_line = content.split("\n", 1)[0]
    delimiter = max(",;\t", key=first_line.count)  # comma, or semicolon/tab exports
    reader = csv.reader(io.StringIO(content), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvImportError("the file is empty") from None
    columns = _columns(header)
    index = {name: i for i, name in enumerate(header)}
    used = set(columns.values())
    property_columns = [
        name for name in header if name not in used and name.strip() and name.strip().lower() not in IGNORED
    ]
    low, high = MIN_SCORE[kind], MAX_SCORE[kind]
    rows: list[_Row] = []
    line = reader.line_num
    for cells in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank line
        report.rows += 1

        def cell(name: str, cells: list[str] = cells) -> str:
            i = index[name]
            return cells[i].strip() if i < len(cells) else ""

        try:
            if len(cells) > len(header):
                raise ValueError(f"{len(cells)} cells but the header has {len(header)} columns")
            if "\x00" in "".join(cells):
                raise ValueError("contains a NUL character")
            email = cell(columns["email"]).lower()
            raw_score = cell(columns["score"])
            if start <= 3 and raw_score and not raw_score.lstrip("-").isdigit() and "@" not in email:
                report.rows -= 1  # Qualtrics' question-text and ImportId rows under the header
                continue
            if not email:
                raise ValueError("no email")
            if len(email) > 254 or not EMAIL_RE.match(email):
                raise ValueError(f"not a valid email: {email!r}")
            if not re.fullmatch(r"-?\d+", raw_score):
                raise ValueError(f"score {raw_score!r} is not a whole number")
            score = int(raw_score)
            if not low <= score <= high:
                raise ValueError(f"score {score} is outside {low}-{high}")
            raw_date = cell(columns["date"]) if "date" in columns else ""
            answered_at = _parse_date(raw_date, now) if raw_date else now
            comment = cell(columns["comment"]) if "comment" in columns else ""
            if len(comment) > MAX_COMMENT:
                raise ValueError(f"comment longer than {MAX_COMMENT} characters")
            properties = {name.strip()[:MAX_KEY]: cell(name)[:MAX_VALUE] for name in property_columns if cell(name)}
            properties = dict(list(properties.items())[:MAX_PROPERTIES])
        except ValueError as exc:
            report.rejected.append(Rejected(start, str(exc)))
            continue
        digest = hashlib.md5(
            "\x1f".join([str(survey_id), email, raw_date, str(score), comment]).encode(), usedforsecurity=False
        ).hexdigest()
        rows.append(_Row(start, email, score, comment or None, answered_at, properties, digest))
    return rows


async def import_answers(
    session_maker: async_sessionmaker[AsyncSession],
    survey_id: UUID,
    content: str,
    *,
    progress: Any = None,
    now: datetime | None = None,
) -> ImportReport:
    """Import a CSV export's text into a survey, one transaction per batch of rows."""
    now = now or datetime.now(UTC)
    async with session_maker() as session:
        survey = await session.get(Survey, survey_id)
        if survey is None:
            raise CsvImportError(f"no survey {survey_id}")
        kind = survey.kind
    report = ImportReport()
    rows = parse_rows(content, survey_id, kind, now, report)
    if progress is not None:
        progress.length = report.rows
        progress.update(report.rows - len(rows))  # rejected rows are done with
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start : start + BATCH_ROWS]
        async with session_maker() as session, session.begin():
            accounts, created = await accounts_for_emails(session, (row.email for row in batch))
            report.accounts_created += created
            inserted = await session.execute(
                insert(SurveyAnswer)
                .values(
                    [
                        {
                            "survey_id": survey_id,
                            "user_id": accounts[row.email][0],
                            "score": row.score,
                            "comment": row.comment,
                            "language": post_language(row.comment, "") if row.comment else None,
                            "respondent_kind": accounts[row.email][1],
                            "properties": row.properties,
                            "answered_at": row.answered_at,
                            "is_latest": False,
                            "source": AnswerSource.IMPORT.value,
                            "import_key": row.key,
                        }
                        for row in batch
                    ]
                )
                .on_conflict_do_nothing(
                    index_elements=[SurveyAnswer.survey_id, SurveyAnswer.import_key],
                    index_where=text("import_key IS NOT NULL"),
                )
                .returning(SurveyAnswer.id, SurveyAnswer.user_id, SurveyAnswer.comment)
            )
            new = inserted.all()
            report.imported += len(new)
            report.already_imported += len(batch) - len(new)
            await refresh_latest(session, survey_id, [r.user_id for r in new])
            await enqueue_voices(session, [r.id for r in new if r.comment])
        if progress is not None:
            progress.update(len(batch))
    return report
