"""cluster description: each cluster's representative, key phrases, languages and member explanations, stored

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

sa.GUID = GUID
sa.DateTimeUTC = DateTimeUTC

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What Explainer.describe (and explain_members) computed for a cluster, and its members per channel
# (a post's channel never changes, so a membership change, which moves the revision, is all that moves them), one row per cluster and audience:
# sees_internal false is derived from public members only. ``revision`` is cluster_tally.revision when it
# was computed; a row behind the tally is served while a cluster.describe job recomputes it
# (forum/grouping/descriptions.py). Nothing here is a source of truth: the table can be emptied at any time.


# A cluster's posts of the last 30 days (the triage list's growth) as an index range: each membership
# carries its post's created_at, set by a trigger when it is written and when the post's created_at moves.
_FUNCTIONS = [
    """
CREATE FUNCTION cluster_membership_posted_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.post_created_at := (SELECT created_at FROM post WHERE id = NEW.post_id);
    RETURN NEW;
END
$$""",
    """
CREATE FUNCTION post_membership_posted_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cluster_membership SET post_created_at = NEW.created_at WHERE post_id = NEW.id;
    RETURN NULL;
END
$$""",
]
_TRIGGERS = [
    "CREATE TRIGGER cluster_membership_posted_at BEFORE INSERT OR UPDATE OF post_id ON cluster_membership "
    "FOR EACH ROW EXECUTE FUNCTION cluster_membership_posted_at()",
    "CREATE TRIGGER post_membership_posted_at AFTER UPDATE OF created_at ON post FOR EACH ROW "
    "WHEN (OLD.created_at IS DISTINCT FROM NEW.created_at) EXECUTE FUNCTION post_membership_posted_at()",
]


def upgrade() -> None:
    op.add_column("cluster_membership", sa.Column("post_created_at", sa.DateTimeUTC(timezone=True), nullable=True))
    op.execute("UPDATE cluster_membership m SET post_created_at = p.created_at FROM post p WHERE p.id = m.post_id")
    op.create_index(
        "ix_cluster_membership_recent",
        "cluster_membership",
        ["cluster_id", "post_created_at"],
        postgresql_where=sa.text("state <> 'rejected'"),
    )
    for statement in _FUNCTIONS + _TRIGGERS:
        op.execute(statement)
    op.create_table(
        "cluster_description",
        sa.Column("cluster_id", sa.GUID(length=16), nullable=False),
        sa.Column("sees_internal", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("representative_id", sa.GUID(length=16), nullable=True),
        sa.Column("representative_title", sa.Text(), nullable=True),
        sa.Column("key_phrases", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("languages", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("channels", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("explanations", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("computed_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["cluster.id"], name=op.f("fk_cluster_description_cluster_id_cluster"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cluster_id", "sees_internal", name=op.f("pk_cluster_description")),
    )


def downgrade() -> None:
    op.drop_table("cluster_description")
    op.execute("DROP TRIGGER post_membership_posted_at ON post")
    op.execute("DROP TRIGGER cluster_membership_posted_at ON cluster_membership")
    op.execute("DROP FUNCTION post_membership_posted_at()")
    op.execute("DROP FUNCTION cluster_membership_posted_at()")
    op.drop_index("ix_cluster_membership_recent", table_name="cluster_membership")
    op.drop_column("cluster_membership", "post_created_at")
