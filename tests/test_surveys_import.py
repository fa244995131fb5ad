"""``forum surveys import``: a Delighted/Qualtrics-like CSV with bad rows, re-run idempotent, unknown
emails become claimable accounts."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from forum.cli import main
from tests.conftest import PASSWORD, Api, run_sql
from tests.test_surveys import make_survey, report

CSV = """\
Email,Score,Comment,Response Timestamp,Plan,Region
ana@example.com,10,Me encanta la app,2026-10-05T10:00:00Z,pro,eu
bob@example.com,3,"Support chat takes forever,
and nobody answers",2026-10-06 09:30:00,free,us
not-an-email,9,,2026-10-06,free,eu
carla@example.com,11,Too high,2026-10-07,pro,eu
dan@example.com,seven,,2026-10-07,pro,eu
erin@example.com,7,,yesterday-ish,free,eu
fred@example.com,8,From the future,2999-01-01,pro,eu
,5,no email,2026-10-08,pro,eu
gina@example.com,6,Extra cell,2026-10-08,pro,eu,surprise
{known},0,Invoices without our tax ID,1759917600,business,eu

{known},9,Much better now,10/20/2026 08:00,business,eu
"""


def _invoke(database_url: str, *args: str):
    return CliRunner().invoke(main, list(args), env={"FORUM_DATABASE_URL": database_url}, catch_exceptions=False)


def test_import_reports_bad_rows_by_line_and_is_idempotent(api: Api, database_url: str, tmp_path: Path) -> None:
    product = api.make_user("internal", "product")
    known = api.register("known")
    survey = make_survey(api, product, throttle_days=0)
    path = tmp_path / "delighted.csv"
    path.write_text(CSV.format(known=known.email), encoding="utf-8")

    first = _invoke(database_url, "surveys", "import", survey["id"], str(path))
    assert first.exit_code == 0, first.output
    assert "11 rows: 4 imported, 0 already imported, 7 rejected; 2 new account(s) to claim" in first.output
    rejected = [line.strip() for line in first.output.splitlines() if line.strip().startswith("line ")]
    assert rejected == [
        "line 5: not a valid email: 'not-an-email'",
        "line 6: score 11 is outside 0-10",
        "line 7: score 'seven' is not a whole number",
        "line 8: unreadable date 'yesterday-ish'",
        "line 9: date '2999-01-01' is in the future",
        "line 10: no email",
        "line 11: 7 cells but the header has 6 columns",
    ]
    again = _invoke(database_url, "surveys", "import", survey["id"], str(path))
    assert "11 rows: 0 imported, 4 already imported, 7 rejected; 0 new account(s) to claim" in again.output
    assert run_sql(database_url, "SELECT count(*) FROM survey_answer")[0][0] == 4

    # The known customer's latest answer (20 October) counts; their earlier 0 is history.
    result = report(api, product, survey)
    assert (result["overall"]["responses"], result["overall"]["promoters"], result["overall"]["detractors"]) == (
        3,
        2,
        1,
    )
    plans = {
        v["value"]: v["score"]["responses"]
        for p in result["by_property"]
        if p["property"] == "Plan"
        for v in p["values"]
    }
    assert plans == {"pro": 1, "free": 1, "business": 1}
    rows = run_sql(
        database_url,
        "SELECT u.email, a.score, a.comment, a.answered_at, a.source FROM survey_answer a "
        "JOIN user_account u ON u.id = a.user_id ORDER BY a.answered_at",
    )
    assert [(r.email, r.score, r.source) for r in rows] == [
        (known.email, 0, "import"),
        ("ana@example.com", 10, "import"),
        ("bob@example.com", 3, "import"),
        (known.email, 9, "import"),
    ]
    assert rows[2].comment == "Support chat takes forever,\nand nobody answers"
    assert rows[0].answered_at.isoformat() == "2025-10-08T10:00:00+00:00"  # Unix seconds
    assert rows[3].answered_at.isoformat() == "2026-10-20T08:00:00+00:00"

    missing = tmp_path / "nothing.csv"
    missing.write_text("name,comment\nAna,hello\n", encoding="utf-8")
    bad = _invoke(database_url, "surveys", "import", survey["id"], str(missing))
    assert bad.exit_code != 0 and "no email or score column" in bad.output


def test_an_imported_account_is_claimed_by_registering(api: Api, database_url: str, tmp_path: Path) -> None:
    product = api.make_user("internal", "product")
    survey = make_survey(api, product)
    path = tmp_path / "qualtrics.csv"
    path.write_text(
        "RecipientEmail,Q_NPS,Why,RecordedDate\n"
        "Recipient Email,How likely…,Why?,Recorded Date\n"
        '{"ImportId":"RecipientEmail"},{"ImportId":"QID1"},{"ImportId":"QID2"},{"ImportId":"recordedDate"}\n'
        "Lena@Example.com,4,La app tarda mucho en abrir,2026-11-01 12:00:00\n",
        encoding="utf-8",
    )
    out = _invoke(database_url, "surveys", "import", survey["id"], str(path))
    assert "1 rows: 1 imported, 0 already imported, 0 rejected; 1 new account(s) to claim" in out.output, out.output
    login = api.client.post("/api/auth/login", json={"email": "lena@example.com", "password": PASSWORD})
    assert login.status_code == 401, "an imported account has no usable password"

    claimed = api.client.post(
        "/api/auth/register", json={"email": "lena@example.com", "password": PASSWORD, "display_name": "Lena"}
    )
    assert claimed.status_code == 201, claimed.text
    assert (claimed.json()["display_name"], claimed.json()["kind"]) == ("Lena", "external")
    lena = api.login("lena@example.com", claimed.json()["id"])
    mine = api.client.get("/api/me/survey-answers", headers=lena.headers).json()["items"]
    assert [(a["score"], a["comment"]) for a in mine] == [(4, "La app tarda mucho en abrir")]
    twice = api.client.post(
        "/api/auth/register", json={"email": "lena@example.com", "password": "another password", "display_name": "X"}
    )
    assert twice.status_code == 409, "a claimed account is an ordinary one"
    assert (
        api.client.post("/api/auth/login", json={"email": "lena@example.com", "password": PASSWORD}).status_code == 200
    )
