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


def upgrade() -> None:
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
