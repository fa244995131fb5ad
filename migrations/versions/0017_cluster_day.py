"""cluster day: new posts and new voters per cluster and UTC day, kept by triggers; the triage list's sort indexes

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 17:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

sa.GUID = GUID

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The triage list's growth (GET /api/clusters: growth_30d, and sort=growth) counts a cluster's new posts and
# new voters since the start of the UTC day 30 days ago. Counting them from the memberships and
# cluster_voter meant a range per cluster (every cluster, for the growth sort: 25 ms at 100k posts); this
# table keeps them per cluster and day instead, so a cluster's growth is at most 31 rows and the growth
# sort sums the last 31 days' rows.
#
# - voters: cluster_voter rows by the day of their first_vote (migration 0015 keeps cluster_voter), moved
#   by a trigger on cluster_voter when a row comes, goes or its first vote moves;
# - posts: counted memberships (not rejected, post_counts_in_cluster) by the day of their post's
#   created_at (cluster_membership.post_created_at, migration 0016), moved by a trigger on
#   cluster_membership (joins, leaves, moves, rejections, a post's created_at copied in) and one on post
#   (deleted, restored, hidden, shown; BEFORE DELETE for a hard delete, while the row still says it counted).
#
# Rows are added to, never recounted; a row can reach zero and stay. REBUILD_SQL recounts the table from
# scratch (this migration, and bulk loads that bypass the triggers: bench/common.py).
_DAY = "(({ts}) AT TIME ZONE 'UTC')::date"

_FUNCTIONS = [
    f"""
CREATE FUNCTION cluster_day_add(p_cluster uuid, p_at timestamptz, p_posts int, p_voters int)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO cluster_day AS d (cluster_id, day, posts, voters)
    SELECT p_cluster, {_DAY.format(ts="p_at")}, p_posts, p_voters
    WHERE p_at IS NOT NULL AND EXISTS (SELECT 1 FROM cluster WHERE id = p_cluster)  -- not a cluster being deleted
    ON CONFLICT (cluster_id, day) DO UPDATE SET posts = d.posts + excluded.posts, voters = d.voters + excluded.voters
$$""",
    """
CREATE FUNCTION cluster_day_voter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM cluster_day_add(OLD.cluster_id, OLD.first_vote, 0, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM cluster_day_add(NEW.cluster_id, NEW.first_vote, 0, 1);
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION cluster_day_membership() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_counted boolean := TG_OP <> 'INSERT' AND OLD.state <> 'rejected' AND post_counts_in_cluster(OLD.post_id);
    new_counted boolean := TG_OP <> 'DELETE' AND NEW.state <> 'rejected' AND post_counts_in_cluster(NEW.post_id);
BEGIN
    IF TG_OP = 'UPDATE' AND old_counted = new_counted AND OLD.cluster_id = NEW.cluster_id
       AND OLD.post_created_at IS NOT DISTINCT FROM NEW.post_created_at THEN
        RETURN NULL;  -- confirmed, similarity, manual: nothing counted moves
    END IF;
    IF old_counted THEN
        PERFORM cluster_day_add(OLD.cluster_id, OLD.post_created_at, -1, 0);
    END IF;
    IF new_counted THEN
        PERFORM cluster_day_add(NEW.cluster_id, NEW.post_created_at, 1, 0);
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION cluster_day_post() RETURNS trigger LANGUAGE plpgsql AS $$
-- A post starts or stops counting (deleted, restored, hidden, shown), or is deleted for good: its
-- membership's day moves with it. BEFORE DELETE: the row still says whether it counted.
DECLARE
    m record;
    step int;
BEGIN
    IF TG_OP = 'DELETE' THEN
        step := CASE WHEN post_counts_in_cluster(OLD) THEN -1 ELSE 0 END;
    ELSE
        step := post_counts_in_cluster(NEW)::int - post_counts_in_cluster(OLD)::int;
    END IF;
    IF step <> 0 THEN
        FOR m IN SELECT cluster_id, post_created_at FROM cluster_membership
                 WHERE post_id = OLD.id AND state <> 'rejected' LOOP
            PERFORM cluster_day_add(m.cluster_id, m.post_created_at, step, 0);
        END LOOP;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NULL END;
END
$$""",
]

_TRIGGERS = [
    "CREATE TRIGGER cluster_day_voter AFTER INSERT OR DELETE ON cluster_voter "
    "FOR EACH ROW EXECUTE FUNCTION cluster_day_voter()",
    "CREATE TRIGGER cluster_day_voter_moved AFTER UPDATE OF cluster_id, first_vote ON cluster_voter FOR EACH ROW "
    "WHEN ((OLD.cluster_id, OLD.first_vote) IS DISTINCT FROM (NEW.cluster_id, NEW.first_vote)) "
    "EXECUTE FUNCTION cluster_day_voter()",
    "CREATE TRIGGER cluster_day_membership AFTER INSERT OR DELETE OR UPDATE ON cluster_membership "
    "FOR EACH ROW EXECUTE FUNCTION cluster_day_membership()",
    "CREATE TRIGGER cluster_day_post AFTER UPDATE OF deleted_at, hidden_at ON post FOR EACH ROW "
    "WHEN ((OLD.deleted_at IS NULL, OLD.hidden_at IS NULL) IS DISTINCT FROM (NEW.deleted_at IS NULL, NEW.hidden_at IS NULL)) "
    "EXECUTE FUNCTION cluster_day_post()",
    "CREATE TRIGGER cluster_day_post_delete BEFORE DELETE ON post FOR EACH ROW EXECUTE FUNCTION cluster_day_post()",
]

REBUILD_SQL = (
    "DELETE FROM cluster_day",
    f"""
INSERT INTO cluster_day (cluster_id, day, posts, voters)
SELECT cluster_id, day, sum(posts), sum(voters) FROM (
    SELECT m.cluster_id, {_DAY.format(ts="m.post_created_at")} AS day, 1 AS posts, 0 AS voters
    FROM cluster_membership m JOIN post p ON p.id = m.post_id
    WHERE m.state <> 'rejected' AND post_counts_in_cluster(p) AND m.post_created_at IS NOT NULL
    UNION ALL
    SELECT cluster_id, {_DAY.format(ts="first_vote")}, 0, 1 FROM cluster_voter
) AS events
GROUP BY cluster_id, day""",
    "ANALYZE cluster_day",
)
"""Recount cluster_day from the memberships and cluster_voter (run after cluster_voter is current)."""

# The triage list's sorts (forum/grouping/reports.py, _ORDER) walk these for a page instead of sorting
# every cluster's row.
_SORT_INDEXES = {
    "ix_cluster_tally_voters": ["voters DESC", "member_count DESC", "cluster_id"],
    "ix_cluster_tally_members": ["member_count DESC", "voters DESC", "cluster_id"],
    "ix_cluster_tally_new": ["first_posted_at DESC", "cluster_id"],
}


def upgrade() -> None:
    op.create_table(
        "cluster_day",
        sa.Column("cluster_id", sa.GUID(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("posts", sa.Integer(), nullable=False),
        sa.Column("voters", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["cluster.id"], name=op.f("fk_cluster_day_cluster_id_cluster"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cluster_id", "day", name=op.f("pk_cluster_day")),
    )
    op.create_index("ix_cluster_day_day", "cluster_day", ["day", "cluster_id"], postgresql_include=["posts", "voters"])
    for name, columns in _SORT_INDEXES.items():
        op.create_index(name, "cluster_tally", [sa.text(c) for c in columns])
    for statement in _FUNCTIONS + _TRIGGERS:
        op.execute(statement)
    for statement in REBUILD_SQL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER cluster_day_post_delete ON post")
    op.execute("DROP TRIGGER cluster_day_post ON post")
    op.execute("DROP TRIGGER cluster_day_membership ON cluster_membership")
    op.execute("DROP TRIGGER cluster_day_voter_moved ON cluster_voter")
    op.execute("DROP TRIGGER cluster_day_voter ON cluster_voter")
    for name in (
        "cluster_day_post()",
        "cluster_day_membership()",
        "cluster_day_voter()",
        "cluster_day_add(uuid, timestamptz, int, int)",
    ):
        op.execute(f"DROP FUNCTION {name}")
    for name in _SORT_INDEXES:
        op.drop_index(name, table_name="cluster_tally")
    op.drop_table("cluster_day")
