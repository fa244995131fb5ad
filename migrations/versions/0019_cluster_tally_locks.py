"""cluster tally locks: changes that touch two clusters take their tally rows in one order

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 23:10:00.000000
"""

from collections.abc import Sequence

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
]

_TRIGGERS = [
    "CREATE TRIGGER cluster_membership_move_lock BEFORE UPDATE OF cluster_id, post_id ON cluster_membership "
    "FOR EACH ROW WHEN ((OLD.cluster_id, OLD.post_id) IS DISTINCT FROM (NEW.cluster_id, NEW.post_id)) "
    "EXECUTE FUNCTION cluster_membership_move_lock()",
]


def upgrade() -> None:
    for statement in _FUNCTIONS + _TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER cluster_membership_move_lock ON cluster_membership")
    op.execute("DROP FUNCTION cluster_membership_move_lock()")
    op.execute("DROP FUNCTION cluster_tally_lock(uuid[], uuid[])")
