"""post language and a vector index for 512-dimension encoders (multilingual grouping)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 22:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same shape as ix_post_embedding_hnsw_384 (migration 0002): a partial index per vector size, so the
# multilingual encoder (USE multilingual v3, 512 dimensions) gets its own HNSW graph.
HNSW_512 = (
    "CREATE INDEX ix_post_embedding_hnsw_512 ON post_embedding "
    "USING hnsw ((embedding::vector(512)) vector_cosine_ops) WHERE vector_dims(embedding) = 512"
)


def upgrade() -> None:
    # Detected when a post is written (embeddings.language); NULL for posts written before this
    # revision until the embedding worker's sweep fills it in.
    op.add_column("post", sa.Column("language", sa.String(length=8), nullable=True))
    op.create_index("ix_post_language", "post", ["language"], postgresql_where=sa.text("deleted_at IS NULL"))
    op.execute(HNSW_512)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_post_embedding_hnsw_512")
    op.drop_index("ix_post_language", table_name="post", postgresql_where=sa.text("deleted_at IS NULL"))
    op.drop_column("post", "language")
