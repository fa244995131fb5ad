"""history notes rendered for their reader; word-prefix search

Rewrites ``post`` (its generated ``search`` column is dropped and added again) and rebuilds the GIN
index under an exclusive lock: about 30 s at 100,000 posts (docs/benchmarks.md).

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01 16:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op
from sqlalchemy.dialects import postgresql

sa.GUID = GUID

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = "coalesce(title, '') || ' ' || coalesce(body, '')"
STEMMED = f"to_tsvector('english'::regconfig, {_TEXT}) || to_tsvector('spanish'::regconfig, {_TEXT})"
# Unstemmed lower-cased words too, so that "auth" is a prefix of "authentication" and "authorization".
WITH_WORDS = f"{STEMMED} || to_tsvector('simple'::regconfig, {_TEXT})"

EVENTS = "('merged', 'unmerged', 'addressed', 'unaddressed')"

# System-made status changes named the other post in their note ("Merged into “…”"): from now on they
# keep a reference and the note is written when read, for the reader. Existing rows are matched to the
# merge or shipping that made them (the nearest in time).
BACKFILL = [
    """
    UPDATE status_change sc SET event = 'merged', note = NULL, related_post_id = (
        SELECT pm.target_id FROM post_merge pm WHERE pm.source_id = sc.post_id
        ORDER BY abs(extract(epoch FROM pm.created_at - sc.created_at)) LIMIT 1)
    WHERE sc.to_status = 'duplicate' AND sc.note LIKE 'Merged into “%”'
      AND EXISTS (SELECT 1 FROM post_merge pm WHERE pm.source_id = sc.post_id)
    """,
    """
    UPDATE status_change sc SET event = 'unmerged', note = NULL, related_post_id = (
        SELECT pm.target_id FROM post_merge pm WHERE pm.source_id = sc.post_id AND pm.unmerged_at IS NOT NULL
        ORDER BY abs(extract(epoch FROM pm.unmerged_at - sc.created_at)) LIMIT 1)
    WHERE sc.from_status = 'duplicate' AND sc.note LIKE 'Unmerged from “%”'
      AND EXISTS (SELECT 1 FROM post_merge pm WHERE pm.source_id = sc.post_id AND pm.unmerged_at IS NOT NULL)
    """,
    """
    UPDATE status_change sc SET event = 'addressed', note = NULL, related_post_id = (
        SELECT se.post_id FROM ship_event se WHERE se.addressed ? sc.post_id::text
        ORDER BY abs(extract(epoch FROM se.created_at - sc.created_at)) LIMIT 1)
    WHERE sc.to_status = 'addressed' AND sc.note LIKE 'Addressed by “%”, now shipped'
      AND EXISTS (SELECT 1 FROM ship_event se WHERE se.addressed ? sc.post_id::text)
    """,
    """
    UPDATE status_change sc SET event = 'unaddressed', note = NULL, related_post_id = (
        SELECT se.post_id FROM ship_event se WHERE se.addressed ? sc.post_id::text AND se.revoked_at IS NOT NULL
        ORDER BY abs(extract(epoch FROM se.revoked_at - sc.created_at)) LIMIT 1)
    WHERE sc.from_status = 'addressed' AND sc.note LIKE '“%” is no longer shipped'
      AND EXISTS (SELECT 1 FROM ship_event se WHERE se.addressed ? sc.post_id::text AND se.revoked_at IS NOT NULL)
    """,
]

RESTORE = """
UPDATE status_change sc SET note = CASE sc.event
        WHEN 'merged' THEN 'Merged into “' || p.title || '”'
        WHEN 'unmerged' THEN 'Unmerged from “' || p.title || '”'
        WHEN 'addressed' THEN 'Addressed by “' || p.title || '”, now shipped'
        ELSE '“' || p.title || '” is no longer shipped' END
FROM post p WHERE p.id = sc.related_post_id AND sc.event IS NOT NULL
"""


def _search_column(expression: str) -> None:
    op.drop_index("ix_post_search", table_name="post", postgresql_using="gin")
    op.drop_column("post", "search")
    op.add_column(
        "post",
        sa.Column("search", postgresql.TSVECTOR(), sa.Computed(expression, persisted=True), nullable=False),
    )
    op.create_index("ix_post_search", "post", ["search"], unique=False, postgresql_using="gin")


def upgrade() -> None:
    _search_column(WITH_WORDS)
    op.add_column("status_change", sa.Column("event", sa.String(length=16), nullable=True))
    op.add_column("status_change", sa.Column("related_post_id", sa.GUID(length=16), nullable=True))
    op.create_foreign_key(
        op.f("fk_status_change_related_post_id_post"),
        "status_change",
        "post",
        ["related_post_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_check_constraint(op.f("ck_status_change_event_valid"), "status_change", f"event IN {EVENTS}")
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    op.execute(RESTORE)
    op.drop_constraint(op.f("ck_status_change_event_valid"), "status_change", type_="check")
    op.drop_constraint(op.f("fk_status_change_related_post_id_post"), "status_change", type_="foreignkey")
    op.drop_column("status_change", "related_post_id")
    op.drop_column("status_change", "event")
    _search_column(STEMMED)
