"""HNSW indexes leave out title-view vectors (re-scoring only, never searched)

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-01 17:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The default configuration stores, next to each encoder's vector of a post, its vector of the title
# alone (model "<name>:title", embeddings.grouping.TitleView). Those rows are read by primary key when
# the nearest candidates are re-scored; keeping them out of the HNSW graphs keeps the as-you-type search
# as large as before. GroupingService.nearest repeats the predicate so the planner picks these indexes.
SIZES = (384, 512)


def _create(size: int, where: str) -> None:
    op.execute(
        f"CREATE INDEX ix_post_embedding_hnsw_{size} ON post_embedding "
        f"USING hnsw ((embedding::vector({size})) vector_cosine_ops) WHERE {where}"
    )


def upgrade() -> None:
    for size in SIZES:
        op.execute(f"DROP INDEX IF EXISTS ix_post_embedding_hnsw_{size}")
        _create(size, f"vector_dims(embedding) = {size} AND model NOT LIKE '%\\:title'")  # "\\:": not a bind


def downgrade() -> None:
    op.execute("DELETE FROM post_embedding WHERE model LIKE '%\\:title'")
    for size in SIZES:
        op.execute(f"DROP INDEX IF EXISTS ix_post_embedding_hnsw_{size}")
        _create(size, f"vector_dims(embedding) = {size}")
