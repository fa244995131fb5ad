"""Configuration, read once from ``FORUM_*`` environment variables.

Every variable is listed in the README. Settings are plain dataclasses; the pieces of the app that
need a library config (database, JWT, CORS, rate limits) build it from them.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from embeddings.grouping import DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_SUGGEST_THRESHOLD

#: The threshold of a single-encoder configuration (``FORUM_EMBEDDING_MODEL=all-MiniLM-L6-v2``): its cosine,
#: calibrated on bug_pairs (docs/duplicates.md).
SINGLE_ENCODER_THRESHOLD = 0.66


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from exc


def _env_optional_float(name: str) -> float | None:
    return None if _env(name) is None else _env_float(name, 0.0)


def _env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = (_env(name, default) or default).strip().lower()
    if raw not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _env_ints(name: str, default: list[int]) -> list[int]:
    raw = _env(name)
    if raw is None:
        return default
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise SystemExit(f"{name} must be comma-separated integers, got {raw!r}") from exc
    if not values:
        raise SystemExit(f"{name} must list at least one number")
    return values


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in (_env(name, "") or "").split(",") if part.strip()]


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("forum", appauthor=False))


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    """External PostgreSQL (with pgvector). None means the embedded server in ``data_dir``."""
    secret_key: str | None = None
    token_ttl_minutes: int = 60 * 24
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = 1_048_576
    rate_limit_enabled: bool = True
    rate_limit_writes_per_minute: int = 120
    rate_limit_auth_per_minute: int = 20
    rate_limit_similar_per_minute: int = 60
    """``POST /api/posts/similar`` runs the model: its own budget per client address."""
    webhook_allowed_hosts: list[str] = field(default_factory=list)
    """Host names and CIDRs webhooks may target although they are loopback, private or link-local."""
    webhook_max_failures: int = 10
    """A webhook is disabled (and the admins told) after this many deliveries in a row failed for good."""
    db_pool_size: int = 10
    db_max_overflow: int = 10
    debug: bool = False
    embedding_model: str | None = None
    """None: the default configuration (all-MiniLM-L6-v2 + USE multilingual, as ``multilingual``)."""
    duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD
    """The "sure" threshold of the grouping score (embeddings.grouping; docs/duplicates.md). A single-encoder
    ``FORUM_EMBEDDING_MODEL`` (e.g. ``all-MiniLM-L6-v2``) defaults to 0.66 on its cosine instead."""
    suggest_threshold: float | None = None
    """Scores from here up to ``duplicate_threshold`` become suggestions in the review queue ("maybe");
    None: ``duplicate_threshold - SUGGEST_MARGIN``."""
    grouping_mode: str = "auto"
    """``auto``: sure groupings are applied, maybes suggested; ``suggest``: every grouping is a suggestion."""
    consolidate_seconds: float = 300.0
    """How often the worker's consolidation pass runs (also soon after a burst of new posts)."""
    run_worker_in_server: bool = True
    credit_voters: int = 10
    """How many of the earliest unique voters are credited when a post ships."""
    credit_author_points: list[int] = field(default_factory=lambda: [100, 80, 60, 40, 20, 10])
    """Points for authors by rank (1 = the pioneer); the last value repeats for later ranks."""
    credit_voter_points: list[int] = field(default_factory=lambda: [20, 18, 16, 14, 12, 10, 8, 6, 4, 2])
    credit_critic_points: int = 30
    survey_throttle_days: int = 90
    """A person is asked a survey at most once per this many days (a survey can set its own)."""
    smtp_url: str | None = None
    """``smtp://user:pass@host:587`` (STARTTLS when offered; ``?starttls=true`` requires it, ``false`` never) or
    ``smtps://…:465``. None: no email is sent (the inbox works as ever)."""
    email_from: str = "forum@localhost"
    public_url: str = "http://127.0.0.1:8000"
    """Where people reach this forum: the links in emails (posts, unsubscribe)."""

    @classmethod
    def from_env(cls) -> Settings:
        model = _env("FORUM_EMBEDDING_MODEL")
        default_config = model is None or model.strip().startswith("multilingual")
        threshold = DEFAULT_DUPLICATE_THRESHOLD if default_config else SINGLE_ENCODER_THRESHOLD
        suggest = _env_optional_float("FORUM_SUGGEST_THRESHOLD")
        if suggest is None and default_config and _env("FORUM_DUPLICATE_THRESHOLD") is None:
            suggest = DEFAULT_SUGGEST_THRESHOLD  # the maybe band measured with the default sure threshold
        return cls(
            data_dir=Path(_env("FORUM_DATA_DIR") or default_data_dir()).expanduser(),
            database_url=_env("FORUM_DATABASE_URL"),
            secret_key=_env("FORUM_SECRET_KEY"),
            token_ttl_minutes=_env_int("FORUM_TOKEN_TTL_MINUTES", 60 * 24),
            cors_origins=_env_list("FORUM_CORS_ORIGINS"),
            max_body_bytes=_env_int("FORUM_MAX_BODY_BYTES", 1_048_576),
            rate_limit_enabled=_env_bool("FORUM_RATE_LIMIT_ENABLED", True),
            rate_limit_writes_per_minute=_env_int("FORUM_RATE_LIMIT_WRITES_PER_MINUTE", 120),
            rate_limit_auth_per_minute=_env_int("FORUM_RATE_LIMIT_AUTH_PER_MINUTE", 20),
            rate_limit_similar_per_minute=_env_int("FORUM_RATE_LIMIT_SIMILAR_PER_MINUTE", 60),
            webhook_allowed_hosts=_env_list("FORUM_WEBHOOK_ALLOWED_HOSTS"),
            webhook_max_failures=max(_env_int("FORUM_WEBHOOK_MAX_FAILURES", 10), 1),
            db_pool_size=_env_int("FORUM_DB_POOL_SIZE", 10),
            db_max_overflow=_env_int("FORUM_DB_MAX_OVERFLOW", 10),
            debug=_env_bool("FORUM_DEBUG", False),
            embedding_model=model,
            duplicate_threshold=_env_float("FORUM_DUPLICATE_THRESHOLD", threshold),
            suggest_threshold=suggest,
            grouping_mode=_env_choice("FORUM_GROUPING_MODE", ("auto", "suggest"), "auto"),
            consolidate_seconds=_env_float("FORUM_CONSOLIDATE_SECONDS", 300.0),
            run_worker_in_server=_env_bool("FORUM_WORKER_IN_SERVER", True),
            credit_voters=_env_int("FORUM_CREDIT_VOTERS", 10),
            credit_author_points=_env_ints("FORUM_CREDIT_AUTHOR_POINTS", [100, 80, 60, 40, 20, 10]),
            credit_voter_points=_env_ints("FORUM_CREDIT_VOTER_POINTS", [20, 18, 16, 14, 12, 10, 8, 6, 4, 2]),
            credit_critic_points=_env_int("FORUM_CREDIT_CRITIC_POINTS", 30),
            survey_throttle_days=_env_int("FORUM_SURVEY_THROTTLE_DAYS", 90),
            smtp_url=_env("FORUM_SMTP_URL"),
            email_from=_env("FORUM_EMAIL_FROM", "forum@localhost") or "forum@localhost",
            public_url=(_env("FORUM_PUBLIC_URL", "http://127.0.0.1:8000") or "").rstrip("/"),
        )

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    def jwt_secret(self) -> str:
        """``FORUM_SECRET_KEY``, else a secret generated on first run and kept in the data dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        candidate = secrets.token_urlsafe(48)
        # O_EXCL: when several processes start at once, the first writer wins and all read its key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(candidate)
        return candidate
