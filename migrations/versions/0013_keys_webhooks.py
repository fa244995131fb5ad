"""API keys (service accounts) and webhook failure tracking, test deliveries and redeliveries

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 19:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

sa.GUID = GUID
sa.DateTimeUTC = DateTimeUTC

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("user_id", sa.GUID(length=16), nullable=False),
        sa.Column("created_by_id", sa.GUID(length=16), nullable=False),
        sa.Column("last_used_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("revoked_by_id", sa.GUID(length=16), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_api_key_user_id_user_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["user_account.id"],
            name=op.f("fk_api_key_created_by_id_user_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["revoked_by_id"],
            ["user_account.id"],
            name=op.f("fk_api_key_revoked_by_id_user_account"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_key_key_hash")),
        sa.UniqueConstraint("user_id", name=op.f("uq_api_key_user_id")),
    )
    op.add_column("webhook", sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False))
    op.add_column("webhook", sa.Column("disabled_at", sa.DateTimeUTC(timezone=True), nullable=True))
    op.add_column("webhook_delivery", sa.Column("redelivery_of_id", sa.GUID(length=16), nullable=True))
    op.create_foreign_key(
        op.f("fk_webhook_delivery_redelivery_of_id_webhook_delivery"),
        "webhook_delivery",
        "webhook_delivery",
        ["redelivery_of_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_webhook_delivery_redelivery_of_id_webhook_delivery"), "webhook_delivery", type_="foreignkey"
    )
    op.drop_column("webhook_delivery", "redelivery_of_id")
    op.drop_column("webhook", "disabled_at")
    op.drop_column("webhook", "consecutive_failures")
    op.drop_table("api_key")
