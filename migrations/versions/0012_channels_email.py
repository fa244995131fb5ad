"""channels and email: where feedback came from, who captured it on a customer's behalf, email preferences

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

sa.GUID = GUID
sa.DateTimeUTC = DateTimeUTC

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNELS = "'web', 'support', 'sales', 'social', 'store', 'survey', 'other'"


def upgrade() -> None:
    op.add_column("post", sa.Column("channel", sa.String(length=16), server_default="web", nullable=False))
    op.create_check_constraint(op.f("ck_post_channel_valid"), "post", f"channel IN ({CHANNELS})")
    op.create_index(
        "ix_post_channel", "post", ["channel"], postgresql_where=sa.text("deleted_at IS NULL AND channel <> 'web'")
    )
    op.create_table(
        "feedback_capture",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("post_id", sa.GUID(length=16), nullable=False),
        sa.Column("comment_id", sa.GUID(length=16), nullable=True),
        sa.Column("customer_id", sa.GUID(length=16), nullable=False),
        sa.Column("captured_by_id", sa.GUID(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("source_url", sa.String(length=2000), nullable=True),
        sa.Column("said_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint("subject IN ('post', 'vote', 'comment')", name=op.f("ck_feedback_capture_subject_valid")),
        sa.CheckConstraint(
            f"channel IN ({CHANNELS}) AND channel <> 'web'", name=op.f("ck_feedback_capture_channel_valid")
        ),
        sa.ForeignKeyConstraint(
            ["post_id"], ["post.id"], name=op.f("fk_feedback_capture_post_id_post"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["comment_id"], ["comment.id"], name=op.f("fk_feedback_capture_comment_id_comment"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["user_account.id"],
            name=op.f("fk_feedback_capture_customer_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["captured_by_id"],
            ["user_account.id"],
            name=op.f("fk_feedback_capture_captured_by_id_user_account"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_capture")),
    )
    op.create_index("ix_feedback_capture_post", "feedback_capture", ["post_id", "subject"])
    op.create_index(
        "uq_feedback_capture_vote",
        "feedback_capture",
        ["post_id", "customer_id"],
        unique=True,
        postgresql_where=sa.text("subject = 'vote'"),
    )
    op.add_column("notification", sa.Column("emailed_at", sa.DateTimeUTC(timezone=True), nullable=True))
    op.create_table(
        "email_preference",
        sa.Column("user_id", sa.GUID(length=16), nullable=False),
        sa.Column("frequency", sa.String(length=8), server_default="each", nullable=False),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("frequency_since", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("frequency IN ('each', 'daily', 'none')", name=op.f("ck_email_preference_frequency_valid")),
        sa.CheckConstraint("language IN ('en', 'es')", name=op.f("ck_email_preference_language_valid")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_email_preference_user_id_user_account"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_email_preference")),
    )
    op.create_index(
        "ix_email_preference_daily", "email_preference", ["user_id"], postgresql_where=sa.text("frequency = 'daily'")
    )


def downgrade() -> None:
    op.drop_index("ix_email_preference_daily", table_name="email_preference")
    op.drop_table("email_preference")
    op.drop_column("notification", "emailed_at")
    op.drop_index("uq_feedback_capture_vote", table_name="feedback_capture")
    op.drop_index("ix_feedback_capture_post", table_name="feedback_capture")
    op.drop_table("feedback_capture")
    op.drop_index("ix_post_channel", table_name="post")
    op.drop_constraint(op.f("ck_post_channel_valid"), "post", type_="check")
    op.drop_column("post", "channel")
