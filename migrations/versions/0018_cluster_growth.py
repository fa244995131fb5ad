"""cluster growth: each cluster's 30-day new posts and new voters stored on its tally row, kept by triggers

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 19:45:00.000000
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The triage list's growth sort (GET /api/clusters?sort=growth) summed the month's cluster_day rows of every
# cluster and sorted every tally row (4 ms at 100k posts, 10-20 ms expected at 1M). Each tally row now
# carries its window's sums, so a growth page walks an index (ix_cluster_tally_growth) like the other sorts,
# and every page reads its growth_30d from the row instead of up to 31 cluster_day rows per cluster.
#
# - growth_posts, growth_voters: the sums of the cluster's cluster_day rows from growth_since on. Kept by
#   cluster_day_add (every change of a cluster_day row adds the same to the tally row when its day is on or
#   after the row's growth_since), and set from cluster_day when a tally row is inserted.
# - growth_since: the first day those sums count. The list counts from the start of the UTC day 30 days
#   ago (S); the day changes, and the days before S must leave the sums.
# - growth_first_day: no cluster_day row from growth_since up to the day before it has a count (NULL: none
#   has any). It only moves down between refreshes (a removal leaves it where it is), so it is a lower bound.
#
# A row's sums are its window's exactly when growth_since <= S <= coalesce(growth_first_day, 'infinity'):
# most rows stay exact across a day change (nothing counted on the day that left). The others are stale:
# the list recomputes them from cluster_day when it reads them (ix_cluster_tally_growth_first_day and
# ix_cluster_tally_growth_since find them), and the worker's sweep refreshes them (cluster_growth_refresh, one
# cluster per transaction: forum/grouping/reports.py, refresh_growth).
#
# Locks: every path now takes a cluster's tally row before its cluster_voter and cluster_day rows (the vote
# trigger and cluster_post_votes lock it first; cluster_day_add locks it before its day row), and after the
# post's row (a vote is written under it; the membership triggers wait for it first). Before, a vote
# (cluster_voter row, then its day row, then the tally) and a membership change in the same cluster (each of
# the post's voters' rows and their day rows, then the tally) could each hold a row the other waited for;
# the tally row is held until commit either way, so taking it earlier costs no concurrency.
_SINCE = "(now() AT TIME ZONE 'UTC')::date - 30"

_SUMS = """SELECT coalesce(sum(d.posts), 0)::int AS posts, coalesce(sum(d.voters), 0)::int AS voters,
           min(d.day) FILTER (WHERE d.posts <> 0 OR d.voters <> 0) AS first_day
    FROM cluster_day d WHERE d.cluster_id = {cluster} AND d.day >= {since}"""

_FUNCTIONS = [
    """
CREATE OR REPLACE FUNCTION cluster_day_add(p_cluster uuid, p_at timestamptz, p_posts int, p_voters int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    d date := (p_at AT TIME ZONE 'UTC')::date;
    since date;
BEGIN
    IF p_at IS NULL OR NOT EXISTS (SELECT 1 FROM cluster WHERE id = p_cluster) THEN
        RETURN;  -- no day; or a cluster being deleted
    END IF;
    SELECT growth_since INTO since FROM cluster_tally WHERE cluster_id = p_cluster FOR NO KEY UPDATE;
    IF FOUND AND d >= since THEN
        UPDATE cluster_tally SET growth_posts = growth_posts + p_posts, growth_voters = growth_voters + p_voters,
            growth_first_day = CASE WHEN p_posts > 0 OR p_voters > 0 THEN least(growth_first_day, d)
                                    ELSE growth_first_day END
        WHERE cluster_id = p_cluster;
    END IF;
    INSERT INTO cluster_day AS cd (cluster_id, day, posts, voters) VALUES (p_cluster, d, p_posts, p_voters)
    ON CONFLICT (cluster_id, day) DO UPDATE SET posts = cd.posts + excluded.posts, voters = cd.voters + excluded.voters;
END
$$""",
    f"""
CREATE FUNCTION cluster_tally_growth_init() RETURNS trigger LANGUAGE plpgsql AS $$
-- A new tally row (a new cluster): its window's sums from cluster_day (whose rows may come first: the
-- membership's cluster_day trigger runs before its tally trigger). An upsert of an existing row keeps its own.
DECLARE
    s record;
BEGIN
    IF EXISTS (SELECT 1 FROM cluster_tally WHERE cluster_id = NEW.cluster_id) THEN
        RETURN NEW;
    END IF;
    NEW.growth_since := {_SINCE};
    {_SUMS.format(cluster="NEW.cluster_id", since="NEW.growth_since")} INTO s;
    NEW.growth_posts := s.posts;
    NEW.growth_voters := s.voters;
    NEW.growth_first_day := s.first_day;
    RETURN NEW;
END
$$""",
    f"""
CREATE FUNCTION cluster_growth_refresh(p_cluster uuid) RETURNS boolean LANGUAGE plpgsql AS $$
-- Recount a tally row's window from cluster_day for today's window start. The row is locked first, and the
-- recount is a later statement (a new snapshot): whoever changed the cluster's cluster_day rows held the
-- tally row (cluster_day_add), so their change is either committed and counted here, or still to come and
-- compared with the new growth_since when they get the row.
DECLARE
    since date := {_SINCE};
BEGIN
    PERFORM 1 FROM cluster_tally WHERE cluster_id = p_cluster FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE cluster_tally t SET growth_since = since, growth_posts = s.posts, growth_voters = s.voters,
                               growth_first_day = s.first_day
    FROM ({_SUMS.format(cluster="p_cluster", since="since")}) AS s
    WHERE t.cluster_id = p_cluster;
    RETURN true;
END
$$""",
    # 0017's membership trigger, waiting for the votes in flight on the post first (as 0015's tally trigger,
    # which runs after it, does): it now takes tally rows, which a vote takes under its post's row lock.
    """
CREATE OR REPLACE FUNCTION cluster_day_membership() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_counted boolean := TG_OP <> 'INSERT' AND OLD.state <> 'rejected' AND post_counts_in_cluster(OLD.post_id);
    new_counted boolean := TG_OP <> 'DELETE' AND NEW.state <> 'rejected' AND post_counts_in_cluster(NEW.post_id);
BEGIN
    IF TG_OP = 'UPDATE' AND old_counted = new_counted AND OLD.cluster_id = NEW.cluster_id
       AND OLD.post_created_at IS NOT DISTINCT FROM NEW.post_created_at THEN
        RETURN NULL;  -- confirmed, similarity, manual: nothing counted moves
    END IF;
    IF old_counted OR new_counted THEN
        PERFORM 1 FROM post WHERE id IN (OLD.post_id, NEW.post_id) ORDER BY id FOR SHARE;
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
    # 0015's vote trigger and cluster_post_votes, taking the tally row before the cluster_voter rows.
    """
CREATE OR REPLACE FUNCTION cluster_post_votes(p_cluster uuid, p_post uuid, p_step int) RETURNS void
LANGUAGE plpgsql AS $$
-- Every vote of one post starts or stops counting in a cluster (a membership or a post changed).
DECLARE
    v record;
    delta int[] := ARRAY[0, 0];
    d int[];
BEGIN
    PERFORM 1 FROM cluster_tally WHERE cluster_id = p_cluster FOR NO KEY UPDATE;  -- before the voters' rows
    FOR v IN SELECT user_id, voter_kind, created_at FROM vote WHERE post_id = p_post ORDER BY user_id LOOP
        d := cluster_voter_step(p_cluster, v.user_id, v.voter_kind, v.created_at, p_step);
        delta := ARRAY[delta[1] + d[1], delta[2] + d[2]];
    END LOOP;
    PERFORM cluster_tally_add(p_cluster, delta);
END
$$""",
    """
CREATE OR REPLACE FUNCTION cluster_tally_vote() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c uuid;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        SELECT m.cluster_id INTO c FROM cluster_membership m
        WHERE m.post_id = OLD.post_id AND m.state <> 'rejected' AND post_counts_in_cluster(OLD.post_id);
        IF c IS NOT NULL THEN
            PERFORM 1 FROM cluster_tally WHERE cluster_id = c FOR NO KEY UPDATE;  -- before the voter's row
            PERFORM cluster_tally_add(c, cluster_voter_step(c, OLD.user_id, OLD.voter_kind, OLD.created_at, -1));
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        c := NULL;
        SELECT m.cluster_id INTO c FROM cluster_membership m
        WHERE m.post_id = NEW.post_id AND m.state <> 'rejected' AND post_counts_in_cluster(NEW.post_id);
        IF c IS NOT NULL THEN
            PERFORM 1 FROM cluster_tally WHERE cluster_id = c FOR NO KEY UPDATE;
            PERFORM cluster_tally_add(c, cluster_voter_step(c, NEW.user_id, NEW.voter_kind, NEW.created_at, 1));
        END IF;
    END IF;
    RETURN NULL;
END
$$""",
]

_TRIGGERS = [
    "CREATE TRIGGER cluster_tally_growth_init BEFORE INSERT ON cluster_tally "
    "FOR EACH ROW EXECUTE FUNCTION cluster_tally_growth_init()",
]

REBUILD_SQL = (
    f"""
UPDATE cluster_tally t SET growth_since = {_SINCE}, growth_posts = coalesce(s.posts, 0),
                           growth_voters = coalesce(s.voters, 0), growth_first_day = s.first_day
FROM cluster_tally t2 LEFT JOIN (
    SELECT cluster_id, sum(posts)::int AS posts, sum(voters)::int AS voters,
           min(day) FILTER (WHERE posts <> 0 OR voters <> 0) AS first_day
    FROM cluster_day WHERE day >= {_SINCE} GROUP BY cluster_id
) AS s ON s.cluster_id = t2.cluster_id
WHERE t2.cluster_id = t.cluster_id""",
    "ANALYZE cluster_tally",
)
"""Recount every tally row's window from cluster_day (run after 0017's REBUILD_SQL)."""

_INDEXES = {
    # The growth sort (forum/grouping/reports.py, _ORDER): growth DESC, voters DESC, cluster_id.
    "ix_cluster_tally_growth": ["(growth_posts + growth_voters) DESC", "voters DESC", "cluster_id"],
    # The stale rows: growth_first_day < S, or growth_since > S (a row refreshed on a later day than a
    # reader's transaction started).
    "ix_cluster_tally_growth_first_day": ["growth_first_day"],
    "ix_cluster_tally_growth_since": ["growth_since"],
}


def _migration(name: str):
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    # A row written without the trigger (a bulk load's rebuild) is stale (-infinity) until it is refreshed.
    op.add_column(
        "cluster_tally",
        sa.Column("growth_since", sa.Date(), server_default=sa.text("'-infinity'::date"), nullable=False),
    )
    op.add_column("cluster_tally", sa.Column("growth_posts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("cluster_tally", sa.Column("growth_voters", sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "cluster_tally",
        sa.Column("growth_first_day", sa.Date(), server_default=sa.text("'-infinity'::date"), nullable=True),
    )
    for statement in _FUNCTIONS + _TRIGGERS:
        op.execute(statement)
    for name, columns in _INDEXES.items():
        op.create_index(name, "cluster_tally", [sa.text(c) for c in columns])
    for statement in REBUILD_SQL:  # its ANALYZE also gathers the growth index's expression statistics
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER cluster_tally_growth_init ON cluster_tally")
    op.execute("DROP FUNCTION cluster_tally_growth_init()")
    op.execute("DROP FUNCTION cluster_growth_refresh(uuid)")
    for name in _INDEXES:
        op.drop_index(name, table_name="cluster_tally")
    for column in ("growth_first_day", "growth_voters", "growth_posts", "growth_since"):
        op.drop_column("cluster_tally", column)
    # The earlier definitions of the functions this migration replaced.
    earlier = _migration("0015_cluster_tally")._FUNCTIONS + _migration("0017_cluster_day")._FUNCTIONS
    for name in ("cluster_day_add(", "cluster_day_membership(", "cluster_post_votes(", "cluster_tally_vote("):
        [body] = [f for f in earlier if f"CREATE FUNCTION {name}" in f]
        op.execute(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
