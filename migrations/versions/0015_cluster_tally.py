"""cluster tally: unique voters and member counts per cluster, kept by triggers; sort indexes end in id

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 19:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

sa.GUID = GUID
sa.DateTimeUTC = DateTimeUTC

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The triage list (GET /api/clusters) reads one cluster_tally row per cluster instead of aggregating every
# vote of every member. What counts, in one place (post_counts_in_cluster): a live post (not deleted)
# with a membership that is not rejected; a rule such as "a hidden post's votes stop counting" goes in
# that function, and the column it reads in the post trigger's UPDATE OF list.
#
# cluster_voter holds, per cluster and person, how many counted members they voted on (and how many of
# those votes were cast as an employee) and their first vote there; cluster_tally counts those rows. Row
# triggers keep both: a vote or unvote moves one cluster_voter row (and the tally only when a person
# starts or stops counting), a membership change or a post's delete/restore moves that post's voters,
# and member counts are recounted for the one cluster concerned. Every path takes the cluster_voter
# rows before the tally row, so concurrent votes queue instead of deadlocking.
# cluster_voter.user_id has no foreign key on purpose: rows leave with the person's votes (their
# triggers), never by a cascade that could run before them.
_FUNCTIONS = [
    """
CREATE FUNCTION post_counts_in_cluster(p post) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT p.deleted_at IS NULL AND p.hidden_at IS NULL  -- hidden as spam (0014): its votes count nowhere
$$""",
    """
CREATE FUNCTION post_counts_in_cluster(p_post_id uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT post_counts_in_cluster(p) FROM post p WHERE p.id = p_post_id), false)
$$""",
    """
CREATE FUNCTION cluster_voter_step(p_cluster uuid, p_user uuid, p_kind text, p_at timestamptz, p_step int)
RETURNS int[] LANGUAGE plpgsql AS $$
-- One vote starts (p_step 1) or stops (-1) counting in a cluster. Returns the tally's change:
-- {voters, internal_voters}.
DECLARE
    internal int := (p_kind = 'internal')::int;
    r record;
BEGIN
    IF p_step > 0 THEN
        INSERT INTO cluster_voter AS cv (cluster_id, user_id, posts, internal_posts, first_vote)
        VALUES (p_cluster, p_user, 1, internal, p_at)
        ON CONFLICT (cluster_id, user_id) DO UPDATE SET
            posts = cv.posts + 1,
            internal_posts = cv.internal_posts + excluded.internal_posts,
            first_vote = least(cv.first_vote, excluded.first_vote)
        RETURNING cv.posts, cv.internal_posts INTO r;
        RETURN ARRAY[(r.posts = 1)::int, (internal = 1 AND r.internal_posts = 1)::int];
    END IF;
    UPDATE cluster_voter SET posts = posts - 1, internal_posts = internal_posts - internal
    WHERE cluster_id = p_cluster AND user_id = p_user
    RETURNING posts, internal_posts, first_vote INTO r;
    IF NOT FOUND THEN
        RETURN ARRAY[0, 0];
    END IF;
    IF r.posts <= 0 THEN
        DELETE FROM cluster_voter WHERE cluster_id = p_cluster AND user_id = p_user;
        RETURN ARRAY[-1, -(internal = 1 OR r.internal_posts > 0)::int];
    END IF;
    IF r.first_vote = p_at THEN
        UPDATE cluster_voter SET first_vote = coalesce((
            SELECT min(v.created_at) FROM vote v
            JOIN cluster_membership m ON m.post_id = v.post_id AND m.cluster_id = p_cluster AND m.state <> 'rejected'
            WHERE v.user_id = p_user AND post_counts_in_cluster(v.post_id)
        ), first_vote)
        WHERE cluster_id = p_cluster AND user_id = p_user;
    END IF;
    RETURN ARRAY[0, -(internal = 1 AND r.internal_posts = 0)::int];
END
$$""",
    """
CREATE FUNCTION cluster_tally_add(p_cluster uuid, p_delta int[]) RETURNS void LANGUAGE sql AS $$
    UPDATE cluster_tally SET voters = voters + p_delta[1], internal_voters = internal_voters + p_delta[2]
    WHERE cluster_id = p_cluster AND (p_delta[1] <> 0 OR p_delta[2] <> 0)
$$""",
    """
CREATE FUNCTION cluster_post_votes(p_cluster uuid, p_post uuid, p_step int) RETURNS void LANGUAGE plpgsql AS $$
-- Every vote of one post starts or stops counting in a cluster (a membership or a post changed).
DECLARE
    v record;
    delta int[] := ARRAY[0, 0];
    d int[];
BEGIN
    FOR v IN SELECT user_id, voter_kind, created_at FROM vote WHERE post_id = p_post ORDER BY user_id LOOP
        d := cluster_voter_step(p_cluster, v.user_id, v.voter_kind, v.created_at, p_step);
        delta := ARRAY[delta[1] + d[1], delta[2] + d[2]];
    END LOOP;
    PERFORM cluster_tally_add(p_cluster, delta);
END
$$""",
    """
CREATE FUNCTION cluster_members_recount(p_cluster uuid) RETURNS void LANGUAGE sql AS $$
    INSERT INTO cluster_tally AS t (cluster_id, voters, internal_voters, member_count, idea_count,
                                    critique_count, first_posted_at, last_activity_at, top_post_id)
    SELECT p_cluster, 0, 0, s.members, s.ideas, s.critiques, s.first_posted_at, s.last_activity_at, s.top_post_id
    FROM (
        SELECT count(*) AS members, count(*) FILTER (WHERE p.kind = 'idea') AS ideas,
               count(*) FILTER (WHERE p.kind = 'critique') AS critiques, min(p.created_at) AS first_posted_at,
               max(p.updated_at) AS last_activity_at,
               (array_agg(p.id ORDER BY p.vote_total DESC, p.created_at, p.id))[1] AS top_post_id
        FROM cluster_membership m JOIN post p ON p.id = m.post_id
        WHERE m.cluster_id = p_cluster AND m.state <> 'rejected' AND post_counts_in_cluster(p)
    ) AS s
    WHERE EXISTS (SELECT 1 FROM cluster WHERE id = p_cluster)
    ON CONFLICT (cluster_id) DO UPDATE SET
        member_count = excluded.member_count, idea_count = excluded.idea_count,
        critique_count = excluded.critique_count, first_posted_at = excluded.first_posted_at,
        last_activity_at = excluded.last_activity_at, top_post_id = excluded.top_post_id, revision = t.revision + 1
$$""",
    """
CREATE FUNCTION cluster_tally_vote() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c uuid;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        SELECT m.cluster_id INTO c FROM cluster_membership m
        WHERE m.post_id = OLD.post_id AND m.state <> 'rejected' AND post_counts_in_cluster(OLD.post_id);
        IF c IS NOT NULL THEN
            PERFORM cluster_tally_add(c, cluster_voter_step(c, OLD.user_id, OLD.voter_kind, OLD.created_at, -1));
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        c := NULL;
        SELECT m.cluster_id INTO c FROM cluster_membership m
        WHERE m.post_id = NEW.post_id AND m.state <> 'rejected' AND post_counts_in_cluster(NEW.post_id);
        IF c IS NOT NULL THEN
            PERFORM cluster_tally_add(c, cluster_voter_step(c, NEW.user_id, NEW.voter_kind, NEW.created_at, 1));
        END IF;
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION cluster_tally_membership() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.cluster_id = NEW.cluster_id AND OLD.post_id = NEW.post_id
       AND (OLD.state = 'rejected') = (NEW.state = 'rejected') THEN
        RETURN NULL;  -- confirmed, similarity, manual: nothing the tally counts
    END IF;
    -- Votes are written under their post's row lock (PostService, MergeService): wait for those in
    -- flight, so that the votes read below are all there are.
    PERFORM 1 FROM post WHERE id IN (OLD.post_id, NEW.post_id) ORDER BY id FOR SHARE;
    IF TG_OP <> 'INSERT' AND OLD.state <> 'rejected' THEN
        IF post_counts_in_cluster(OLD.post_id) THEN
            PERFORM cluster_post_votes(OLD.cluster_id, OLD.post_id, -1);
        END IF;
        PERFORM cluster_members_recount(OLD.cluster_id);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.state <> 'rejected' THEN
        INSERT INTO cluster_tally (cluster_id, voters, internal_voters, member_count, idea_count, critique_count)
        VALUES (NEW.cluster_id, 0, 0, 0, 0, 0) ON CONFLICT DO NOTHING;  -- a new cluster: a row to count in
        IF post_counts_in_cluster(NEW.post_id) THEN
            PERFORM cluster_post_votes(NEW.cluster_id, NEW.post_id, 1);
        END IF;
        PERFORM cluster_members_recount(NEW.cluster_id);
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION cluster_tally_post() RETURNS trigger LANGUAGE plpgsql AS $$
-- A post is deleted or restored (its voters and its membership stop or start counting), or its kind
-- changes; BEFORE DELETE takes a post's voters out while its row is still there to say it counted.
DECLARE
    c uuid;
    counted_before boolean := post_counts_in_cluster(OLD);
BEGIN
    SELECT m.cluster_id INTO c FROM cluster_membership m WHERE m.post_id = OLD.id AND m.state <> 'rejected';
    IF TG_OP = 'DELETE' THEN
        IF c IS NOT NULL AND counted_before THEN
            PERFORM cluster_post_votes(c, OLD.id, -1);
        END IF;
        RETURN OLD;
    END IF;
    IF c IS NULL THEN
        RETURN NULL;
    END IF;
    IF counted_before <> post_counts_in_cluster(NEW) THEN
        PERFORM cluster_post_votes(c, NEW.id, CASE WHEN counted_before THEN -1 ELSE 1 END);
    END IF;
    PERFORM cluster_members_recount(c);
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION cluster_tally_activity() RETURNS trigger LANGUAGE plpgsql AS $$
-- A counted member's votes or last edit changed: the cluster's most voted member (its title) and its
-- last activity. Only a gain can make another member the top one, and only a loss of the top one needs
-- the members recounted; both read the top member under the tally row's lock, so concurrent votes in a
-- cluster compare against each other's committed counts.
DECLARE
    c uuid;
    t record;
    top record;
BEGIN
    IF NOT post_counts_in_cluster(NEW) THEN
        RETURN NULL;
    END IF;
    SELECT m.cluster_id INTO c FROM cluster_membership m WHERE m.post_id = NEW.id AND m.state <> 'rejected';
    IF c IS NULL OR (NEW.vote_total < OLD.vote_total AND NEW.updated_at = OLD.updated_at
                     AND NOT EXISTS (SELECT 1 FROM cluster_tally WHERE cluster_id = c AND top_post_id = NEW.id)) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO t FROM cluster_tally WHERE cluster_id = c FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NEW.updated_at <> OLD.updated_at THEN  -- an edit: what describes the cluster may have changed
        UPDATE cluster_tally SET last_activity_at = greatest(last_activity_at, NEW.updated_at),
                                 revision = revision + 1
        WHERE cluster_id = c;
    END IF;
    IF NEW.vote_total = OLD.vote_total THEN
        RETURN NULL;
    END IF;
    IF t.top_post_id = NEW.id AND NEW.vote_total < OLD.vote_total THEN
        PERFORM cluster_members_recount(c);
    ELSIF t.top_post_id IS DISTINCT FROM NEW.id AND NEW.vote_total > OLD.vote_total THEN
        SELECT vote_total, created_at, id INTO top FROM post WHERE id = t.top_post_id;
        IF NOT FOUND OR NEW.vote_total > top.vote_total
           OR (NEW.vote_total = top.vote_total AND (NEW.created_at, NEW.id) < (top.created_at, top.id)) THEN
            UPDATE cluster_tally SET top_post_id = NEW.id WHERE cluster_id = c;
        END IF;
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION cluster_tally_vectors() RETURNS trigger LANGUAGE plpgsql AS $$
-- A member's vector changed (re-embedded after an edit): its cluster's cached description is stale.
BEGIN
    UPDATE cluster_tally t SET revision = t.revision + 1
    FROM cluster_membership m
    WHERE m.post_id = NEW.post_id AND m.state <> 'rejected' AND t.cluster_id = m.cluster_id;
    RETURN NULL;
END
$$""",
]

_TRIGGERS = [
    "CREATE TRIGGER cluster_tally_vote AFTER INSERT OR DELETE OR UPDATE OF post_id, user_id, voter_kind, created_at "
    "ON vote FOR EACH ROW EXECUTE FUNCTION cluster_tally_vote()",
    "CREATE TRIGGER cluster_tally_membership AFTER INSERT OR DELETE OR UPDATE ON cluster_membership "
    "FOR EACH ROW EXECUTE FUNCTION cluster_tally_membership()",
    "CREATE TRIGGER cluster_tally_post AFTER UPDATE OF deleted_at, hidden_at, kind, created_at ON post "
    "FOR EACH ROW WHEN ((OLD.deleted_at, OLD.hidden_at, OLD.kind, OLD.created_at) IS DISTINCT FROM "
    "(NEW.deleted_at, NEW.hidden_at, NEW.kind, NEW.created_at)) EXECUTE FUNCTION cluster_tally_post()",
    "CREATE TRIGGER cluster_tally_activity AFTER UPDATE OF vote_total, updated_at ON post FOR EACH ROW "
    "WHEN ((OLD.vote_total, OLD.updated_at) IS DISTINCT FROM (NEW.vote_total, NEW.updated_at)) "
    "EXECUTE FUNCTION cluster_tally_activity()",
    "CREATE TRIGGER cluster_tally_vectors AFTER INSERT OR UPDATE OF embedding ON post_embedding "
    "FOR EACH ROW EXECUTE FUNCTION cluster_tally_vectors()",
    "CREATE TRIGGER cluster_tally_post_delete BEFORE DELETE ON post FOR EACH ROW EXECUTE FUNCTION cluster_tally_post()",
]

REBUILD_SQL = (
    "DELETE FROM cluster_voter",
    "DELETE FROM cluster_tally",
    """
INSERT INTO cluster_voter (cluster_id, user_id, posts, internal_posts, first_vote)
SELECT m.cluster_id, v.user_id, count(*), count(*) FILTER (WHERE v.voter_kind = 'internal'), min(v.created_at)
FROM cluster_membership m JOIN post p ON p.id = m.post_id JOIN vote v ON v.post_id = m.post_id
WHERE m.state <> 'rejected' AND post_counts_in_cluster(p)
GROUP BY m.cluster_id, v.user_id""",
    """
INSERT INTO cluster_tally (cluster_id, voters, internal_voters, member_count, idea_count, critique_count,
                           first_posted_at, last_activity_at, top_post_id)
SELECT c.id, coalesce(vs.voters, 0), coalesce(vs.internal_voters, 0), coalesce(ms.members, 0),
       coalesce(ms.ideas, 0), coalesce(ms.critiques, 0), ms.first_posted_at, ms.last_activity_at, ms.top_post_id
FROM cluster c
LEFT JOIN (SELECT cluster_id, count(*) AS voters, count(*) FILTER (WHERE internal_posts > 0) AS internal_voters
           FROM cluster_voter GROUP BY cluster_id) vs ON vs.cluster_id = c.id
LEFT JOIN (SELECT m.cluster_id, count(*) AS members, count(*) FILTER (WHERE p.kind = 'idea') AS ideas,
                  count(*) FILTER (WHERE p.kind = 'critique') AS critiques, min(p.created_at) AS first_posted_at,
                  max(p.updated_at) AS last_activity_at,
                  (array_agg(p.id ORDER BY p.vote_total DESC, p.created_at, p.id))[1] AS top_post_id
           FROM cluster_membership m JOIN post p ON p.id = m.post_id
           WHERE m.state <> 'rejected' AND post_counts_in_cluster(p) GROUP BY m.cluster_id) ms ON ms.cluster_id = c.id
""",
)
"""Recount both tables from the votes and memberships (this migration, and bulk loads that bypass the
triggers), in one set-based pass."""


# The post lists' sort indexes end in the id, the last key of every sort, so that a keyset page
# (``after=``) is an index range from its cursor. Without it PostgreSQL estimates the row comparison at
# about one row deep in a list and sorts every post behind the cursor instead (0.2-0.3 s at 100k posts).
_SORT_INDEXES = {
    "ix_post_top": (["vote_total", "created_at"], ["vote_total", "created_at", "id"]),
    "ix_post_new": (["created_at"], ["created_at", "id"]),
    "ix_post_discussed": (["comment_count", "created_at"], ["comment_count", "created_at", "id"]),
}


def _sort_indexes(which: int) -> None:
    for name, columns in _SORT_INDEXES.items():
        op.drop_index(name, table_name="post")
        op.create_index(name, "post", columns[which], postgresql_where=sa.text("deleted_at IS NULL"))


def upgrade() -> None:
    _sort_indexes(1)
    op.create_table(
        "cluster_tally",
        sa.Column("cluster_id", sa.GUID(length=16), nullable=False),
        sa.Column("voters", sa.Integer(), nullable=False),
        sa.Column("internal_voters", sa.Integer(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("idea_count", sa.Integer(), nullable=False),
        sa.Column("critique_count", sa.Integer(), nullable=False),
        sa.Column("first_posted_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("last_activity_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("top_post_id", sa.GUID(length=16), nullable=True),
        sa.Column("revision", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["cluster.id"], name=op.f("fk_cluster_tally_cluster_id_cluster"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cluster_id", name=op.f("pk_cluster_tally")),
    )
    op.create_table(
        "cluster_voter",
        sa.Column("cluster_id", sa.GUID(length=16), nullable=False),
        sa.Column("user_id", sa.GUID(length=16), nullable=False),
        sa.Column("posts", sa.Integer(), nullable=False),
        sa.Column("internal_posts", sa.Integer(), nullable=False),
        sa.Column("first_vote", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["cluster.id"], name=op.f("fk_cluster_voter_cluster_id_cluster"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cluster_id", "user_id", name=op.f("pk_cluster_voter")),
    )
    op.create_index("ix_cluster_voter_first_vote", "cluster_voter", ["cluster_id", "first_vote"], unique=False)
    for statement in _FUNCTIONS + _TRIGGERS:
        op.execute(statement)
    for statement in REBUILD_SQL:
        op.execute(statement)


def downgrade() -> None:
    _sort_indexes(0)
    op.execute("DROP TRIGGER cluster_tally_post_delete ON post")
    op.execute("DROP TRIGGER cluster_tally_vectors ON post_embedding")
    op.execute("DROP TRIGGER cluster_tally_activity ON post")
    op.execute("DROP TRIGGER cluster_tally_post ON post")
    op.execute("DROP TRIGGER cluster_tally_membership ON cluster_membership")
    op.execute("DROP TRIGGER cluster_tally_vote ON vote")
    for name in (
        "cluster_tally_vectors()",
        "cluster_tally_activity()",
        "cluster_tally_post()",
        "cluster_tally_membership()",
        "cluster_tally_vote()",
        "cluster_members_recount(uuid)",
        "cluster_post_votes(uuid, uuid, int)",
        "cluster_tally_add(uuid, int[])",
        "cluster_voter_step(uuid, uuid, text, timestamptz, int)",
        "post_counts_in_cluster(uuid)",
        "post_counts_in_cluster(post)",
    ):
        op.execute(f"DROP FUNCTION {name}")
    op.drop_table("cluster_voter")
    op.drop_table("cluster_tally")
