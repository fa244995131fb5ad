"""cluster tally: survey voices stored on the row (the detractors sort walks an index); changes of two
clusters take their tally rows in one order

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 23:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Lock order, for every path that changes what the tally counts: the posts concerned (by id), then the
# tally rows of their clusters (by cluster id), then cluster_voter and cluster_day rows (migration 0018).
# A vote takes its post's row, then its one cluster's tally row. A change of two clusters took their tally
# rows in the order its statements reached them: a move from X to Y took X's then Y's, a merge of a post of
# X into one of Y took Y's (the carried votes) then X's (the source's status), so opposite changes at once
# deadlocked and PostgreSQL aborted one (a 500). Now:
#
# - cluster_tally_lock(posts, clusters) takes the posts' rows (FOR SHARE, by id), then the tally rows of
#   the given clusters and of the posts' current clusters (by id). The app calls it first in every
#   transaction that changes two clusters (merges, unmerges, moves, splits, consolidation:
#   forum/grouping/locks.py).
# - A membership that moves to another cluster in one UPDATE (any other writer) takes both rows in order
#   before the row changes (cluster_membership_move_lock, BEFORE UPDATE).
#
# Survey voices (the triage list's detractors sort, GET /api/clusters?sort=detractors) were summed from
# survey_tally's 'cluster' rows (migration 0011: each respondent's latest answer per survey, by the cluster
# its comment was placed in) for every cluster, and every tally row sorted, on each call. The tally row now
# carries the sums: voices (sum of n) and detractor_voices (sum of low), kept by a row trigger on
# survey_tally's 'cluster' rows and set when a tally row is inserted; ix_cluster_tally_detractors is the
# sort's order. A survey_tally row with n = 0 has low = 0 (low counts some of the n answers), so the sums
# equal the former query's, which skipped such rows.
_FUNCTIONS = [
    """
CREATE FUNCTION cluster_tally_lock(p_posts uuid[], p_clusters uuid[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM post WHERE id = ANY(p_posts) ORDER BY id FOR SHARE;
    PERFORM 1 FROM cluster_tally
    WHERE cluster_id = ANY(p_clusters)
       OR cluster_id IN (SELECT m.cluster_id FROM cluster_membership m
                         WHERE m.post_id = ANY(p_posts) AND m.state <> 'rejected')
    ORDER BY cluster_id FOR NO KEY UPDATE;
END
$$""",
    """
CREATE FUNCTION cluster_membership_move_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM cluster_tally_lock(ARRAY[OLD.post_id, NEW.post_id], ARRAY[OLD.cluster_id, NEW.cluster_id]);
    RETURN NEW;
END
$$""",
    """
CREATE FUNCTION cluster_tally_voices() RETURNS trigger LANGUAGE plpgsql AS $$
-- A survey_tally 'cluster' row changed (its value is the cluster's id): the cluster's sums move with it.
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.value = NEW.value THEN
        IF (OLD.n, OLD.low) IS DISTINCT FROM (NEW.n, NEW.low) THEN
            UPDATE cluster_tally SET voices = voices + NEW.n - OLD.n,
                                     detractor_voices = detractor_voices + NEW.low - OLD.low
            WHERE cluster_id = CAST(NEW.value AS uuid);
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.dimension = 'cluster' THEN
        UPDATE cluster_tally SET voices = voices - OLD.n, detractor_voices = detractor_voices - OLD.low
        WHERE cluster_id = CAST(OLD.value AS uuid);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.dimension = 'cluster' THEN
        UPDATE cluster_tally SET voices = voices + NEW.n, detractor_voices = detractor_voices + NEW.low
        WHERE cluster_id = CAST(NEW.value AS uuid);
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION cluster_tally_voices_init() RETURNS trigger LANGUAGE plpgsql AS $$
-- A new tally row (a new cluster): voices already placed in it, if any. An upsert of an existing row keeps
-- its own.
BEGIN
    IF EXISTS (SELECT 1 FROM cluster_tally WHERE cluster_id = NEW.cluster_id) THEN
        RETURN NEW;
    END IF;
    SELECT coalesce(sum(n), 0), coalesce(sum(low), 0) INTO NEW.voices, NEW.detractor_voices
    FROM survey_tally WHERE dimension = 'cluster' AND value = NEW.cluster_id::text;
    RETURN NEW;
END
$$""",
]

_TRIGGERS = [
    "CREATE TRIGGER cluster_membership_move_lock BEFORE UPDATE OF cluster_id, post_id ON cluster_membership "
    "FOR EACH ROW WHEN ((OLD.cluster_id, OLD.post_id) IS DISTINCT FROM (NEW.cluster_id, NEW.post_id)) "
    "EXECUTE FUNCTION cluster_membership_move_lock()",
    "CREATE TRIGGER cluster_tally_voices AFTER INSERT OR UPDATE ON survey_tally FOR EACH ROW "
    "WHEN (NEW.dimension = 'cluster') EXECUTE FUNCTION cluster_tally_voices()",
    "CREATE TRIGGER cluster_tally_voices_gone AFTER DELETE ON survey_tally FOR EACH ROW "
    "WHEN (OLD.dimension = 'cluster') EXECUTE FUNCTION cluster_tally_voices()",
    "CREATE TRIGGER cluster_tally_voices_init BEFORE INSERT ON cluster_tally "
    "FOR EACH ROW EXECUTE FUNCTION cluster_tally_voices_init()",
]

REBUILD_SQL = (
    """
UPDATE cluster_tally t SET voices = coalesce(s.n, 0), detractor_voices = coalesce(s.low, 0)
FROM cluster_tally t2 LEFT JOIN (
    SELECT value, sum(n)::int AS n, sum(low)::int AS low FROM survey_tally WHERE dimension = 'cluster' GROUP BY value
) AS s ON s.value = t2.cluster_id::text
WHERE t2.cluster_id = t.cluster_id AND (t.voices, t.detractor_voices) IS DISTINCT FROM (coalesce(s.n, 0), coalesce(s.low, 0))""",
    "ANALYZE cluster_tally",
)
"""Recount every tally row's survey voices from survey_tally (this migration, and loads that bypass the
triggers: bench/common.py)."""

# The detractors sort (forum/grouping/reports.py, _ORDER): detractor voices, voices, voters, id.
_INDEX = ["detractor_voices DESC", "voices DESC", "voters DESC", "cluster_id"]


def upgrade() -> None:
    op.add_column("cluster_tally", sa.Column("voices", sa.Integer(), server_default="0", nullable=False))
    op.add_column("cluster_tally", sa.Column("detractor_voices", sa.Integer(), server_default="0", nullable=False))
    # The new tally row's lookup (a new cluster per new post) reads one survey's 'cluster' rows by value.
    op.create_index(
        "ix_survey_tally_cluster", "survey_tally", ["value"], postgresql_where=sa.text("dimension = 'cluster'")
    )
    for statement in _FUNCTIONS + _TRIGGERS:
        op.execute(statement)
    for statement in REBUILD_SQL:
        op.execute(statement)
    op.create_index("ix_cluster_tally_detractors", "cluster_tally", [sa.text(c) for c in _INDEX])


def downgrade() -> None:
    op.drop_index("ix_cluster_tally_detractors", table_name="cluster_tally")
    op.execute("DROP TRIGGER cluster_tally_voices_init ON cluster_tally")
    op.execute("DROP TRIGGER cluster_tally_voices_gone ON survey_tally")
    op.execute("DROP TRIGGER cluster_tally_voices ON survey_tally")
    op.execute("DROP TRIGGER cluster_membership_move_lock ON cluster_membership")
    for name in (
        "cluster_tally_voices_init()",
        "cluster_tally_voices()",
        "cluster_membership_move_lock()",
        "cluster_tally_lock(uuid[], uuid[])",
    ):
        op.execute(f"DROP FUNCTION {name}")
    op.drop_index("ix_survey_tally_cluster", table_name="survey_tally")
    op.drop_column("cluster_tally", "detractor_voices")
    op.drop_column("cluster_tally", "voices")
