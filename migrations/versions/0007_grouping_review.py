"""grouping review: suggestions queue, labelled pairs from decisions, board-wide grouping settings

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

sa.GUID = GUID
sa.DateTimeUTC = DateTimeUTC

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_suggestion",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("post_id", sa.GUID(length=16), nullable=False),
        sa.Column("cluster_id", sa.GUID(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decided_by_id", sa.GUID(length=16), nullable=True),
        sa.Column("decided_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'accepted', 'dismissed')", name=op.f("ck_cluster_suggestion_state_valid")
        ),
        sa.ForeignKeyConstraint(
            ["post_id"], ["post.id"], name=op.f("fk_cluster_suggestion_post_id_post"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["cluster.id"], name=op.f("fk_cluster_suggestion_cluster_id_cluster"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"],
            ["user_account.id"],
            name=op.f("fk_cluster_suggestion_decided_by_id_user_account"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_suggestion")),
    )
    op.create_index("uq_cluster_suggestion_post_cluster", "cluster_suggestion", ["post_id", "cluster_id"], unique=True)
    op.create_index(
        "ix_cluster_suggestion_pending",
        "cluster_suggestion",
        ["cluster_id"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "grouping_label",
        sa.Column("post_a_id", sa.GUID(length=16), nullable=False),
        sa.Column("post_b_id", sa.GUID(length=16), nullable=False),
        sa.Column("duplicate", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("decided_by_id", sa.GUID(length=16), nullable=True),
        sa.Column("decided_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "source IN ('confirm', 'reject', 'move', 'split', 'accept', 'dismiss')",
            name=op.f("ck_grouping_label_source_valid"),
        ),
        sa.CheckConstraint("post_a_id < post_b_id", name=op.f("ck_grouping_label_pair_ordered")),
        sa.ForeignKeyConstraint(
            ["post_a_id"], ["post.id"], name=op.f("fk_grouping_label_post_a_id_post"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["post_b_id"], ["post.id"], name=op.f("fk_grouping_label_post_b_id_post"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"],
            ["user_account.id"],
            name=op.f("fk_grouping_label_decided_by_id_user_account"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("post_a_id", "post_b_id", name=op.f("pk_grouping_label")),
    )
    op.create_table(
        "grouping_setting",
        sa.Column("key", sa.String(length=240), nullable=False),
        sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_grouping_setting")),
    )
    # The consolidation pass looks at what was embedded since its last run.
    op.create_index("ix_post_embedding_embedded_at", "post_embedding", ["embedded_at"])


def downgrade() -> None:
    op.drop_index("ix_post_embedding_embedded_at", table_name="post_embedding")
    op.drop_table("grouping_setting")
    op.drop_table("grouping_label")
    op.drop_index("ix_cluster_suggestion_pending", table_name="cluster_suggestion")
    op.drop_index("uq_cluster_suggestion_post_cluster", table_name="cluster_suggestion")
    op.drop_table("cluster_suggestion")
