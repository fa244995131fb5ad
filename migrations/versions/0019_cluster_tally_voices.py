"""cluster tally: survey voices stored on the row (the detractors sort walks an index), members per cluster
and channel (the channel filter); changes of two clusters take their tally rows in one order

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 23:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID
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
#
# The triage list's channel filter (GET /api/clusters?channel=) found the clusters with a counted member from
# the channels by reading every such membership (every one, for ?channel=web). cluster_channel counts the
# counted members per cluster and channel: a membership that starts or stops counting (joins, leaves, moves,
# rejected, its post deleted, restored, hidden or shown) moves one row, as cluster_day's posts (0017); a
# post's channel never changes. Its triggers are named to fire after the tally's (AFTER triggers of one
# event fire by name), which took the cluster's tally row: the lock order above, then this row.
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

_CHANNEL_FUNCTIONS = [
    """
CREATE FUNCTION cluster_channel_add(p_cluster uuid, p_post uuid, p_step int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO cluster_channel AS c (cluster_id, channel, members)
    SELECT p_cluster, p.channel, p_step FROM post p
    WHERE p.id = p_post AND EXISTS (SELECT 1 FROM cluster WHERE id = p_cluster)  -- not a cluster being deleted
    ON CONFLICT (cluster_id, channel) DO UPDATE SET members = c.members + excluded.members
$$""",
    """
CREATE FUNCTION cluster_channel_membership() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_counted boolean := TG_OP <> 'INSERT' AND OLD.state <> 'rejected' AND post_counts_in_cluster(OLD.post_id);
    new_counted boolean := TG_OP <> 'DELETE' AND NEW.state <> 'rejected' AND post_counts_in_cluster(NEW.post_id);
BEGIN
    IF TG_OP = 'UPDATE' AND old_counted = new_counted AND OLD.cluster_id = NEW.cluster_id
       AND OLD.post_id = NEW.post_id THEN
        RETURN NULL;  -- confirmed, similarity, manual: nothing counted moves
    END IF;
    IF old_counted THEN
        PERFORM cluster_channel_add(OLD.cluster_id, OLD.post_id, -1);
    END IF;
    IF new_counted THEN
        PERFORM cluster_channel_add(NEW.cluster_id, NEW.post_id, 1);
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION cluster_channel_post() RETURNS trigger LANGUAGE plpgsql AS $$
-- A post starts or stops counting (deleted, restored, hidden, shown), or is deleted for good (BEFORE DELETE:
-- the row still says whether it counted; its membership then goes by a cascade that finds no post).
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
        FOR m IN SELECT cluster_id FROM cluster_membership WHERE post_id = OLD.id AND state <> 'rejected' LOOP
            PERFORM cluster_channel_add(m.cluster_id, OLD.id, step);
        END LOOP;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NULL END;
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
    # After cluster_tally_membership, cluster_tally_post and cluster_tally_post_delete (by name).
    "CREATE TRIGGER cluster_tally_membership_channel AFTER INSERT OR DELETE OR UPDATE ON cluster_membership "
    "FOR EACH ROW EXECUTE FUNCTION cluster_channel_membership()",
    "CREATE TRIGGER cluster_tally_post_channel AFTER UPDATE OF deleted_at, hidden_at ON post FOR EACH ROW "
    "WHEN ((OLD.deleted_at IS NULL, OLD.hidden_at IS NULL) IS DISTINCT FROM (NEW.deleted_at IS NULL, NEW.hidden_at IS NULL)) "
    "EXECUTE FUNCTION cluster_channel_post()",
    "CREATE TRIGGER cluster_tally_post_delete_channel BEFORE DELETE ON post FOR EACH ROW "
    "EXECUTE FUNCTION cluster_channel_post()",
]

REBUILD_SQL = (
    """
UPDATE cluster_tally t SET voices = coalesce(s.n, 0), detractor_voices = coalesce(s.low, 0)
FROM cluster_tally t2 LEFT JOIN (
    SELECT value, sum(n)::int AS n, sum(low)::int AS low FROM survey_tally WHERE dimension = 'cluster' GROUP BY value
) AS s ON s.value = t2.cluster_id::text
WHERE t2.cluster_id = t.cluster_id AND (t.voices, t.detractor_voices) IS DISTINCT FROM (coalesce(s.n, 0), coalesce(s.low, 0))""",
    "ANALYZE cluster_tally",
    "DELETE FROM cluster_channel",
    """
INSERT INTO cluster_channel (cluster_id, channel, members)
SELECT m.cluster_id, p.channel, count(*) FROM cluster_membership m JOIN post p ON p.id = m.post_id
WHERE m.state <> 'rejected' AND post_counts_in_cluster(p)
GROUP BY m.cluster_id, p.channel""",
    "ANALYZE cluster_channel",
)
"""Recount every tally row's survey voices from survey_tally, and cluster_channel from the memberships (this
migration, and loads that bypass the triggers: bench/common.py)."""

# The detractors sort (forum/grouping/reports.py, _ORDER): detractor voices, voices, voters, id.
_INDEX = ["detractor_voices DESC", "voices DESC", "voters DESC", "cluster_id"]


def upgrade() -> None:
    op.create_table(
        "cluster_channel",
        sa.Column("cluster_id", GUID(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["cluster.id"], name=op.f("fk_cluster_channel_cluster_id_cluster"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cluster_id", "channel", name=op.f("pk_cluster_channel")),
    )
    # The filter's count: the clusters with a member from the asked channels.
    op.create_index(
        "ix_cluster_channel_channel",
        "cluster_channel",
        ["channel", "cluster_id"],
        postgresql_where=sa.text("members > 0"),
    )
    op.add_column("cluster_tally", sa.Column("voices", sa.Integer(), server_default="0", nullable=False))
    op.add_column("cluster_tally", sa.Column("detractor_voices", sa.Integer(), server_default="0", nullable=False))
    # The new tally row's lookup (a new cluster per new post) reads one survey's 'cluster' rows by value.
    op.create_index(
        "ix_survey_tally_cluster", "survey_tally", ["value"], postgresql_where=sa.text("dimension = 'cluster'")
    )
    for statement in _FUNCTIONS + _CHANNEL_FUNCTIONS + _TRIGGERS:
        op.execute(statement)
    for statement in REBUILD_SQL:
        op.execute(statement)
    op.create_index("ix_cluster_tally_detractors", "cluster_tally", [sa.text(c) for c in _INDEX])


def downgrade() -> None:
    op.execute("DROP TRIGGER cluster_tally_post_delete_channel ON post")
    op.execute("DROP TRIGGER cluster_tally_post_channel ON post")
    op.execute("DROP TRIGGER cluster_tally_membership_channel ON cluster_membership")
    for name in ("cluster_channel_post()", "cluster_channel_membership()", "cluster_channel_add(uuid, uuid, int)"):
        op.execute(f"DROP FUNCTION {name}")
    op.drop_table("cluster_channel")
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
