"""Stored cluster descriptions (migration 0016): what ``Explainer`` computes for a cluster, kept per audience.

A description (representative, key phrases, languages) and a cluster page's member explanations cost
about 180 ms per cluster to compute at 100k posts, so the triage list reads them from
``cluster_description`` instead:

- a row whose ``revision`` is the tally's (``cluster_tally.revision`` moves with every change of members
  or of a member's text or vector) and younger than ``MAX_AGE`` is served as it is;
- a row behind the tally, or older, is served too, and a ``cluster.describe`` job (one pending per cluster
  and audience) recomputes it: a list is at most one job behind a change, usually a second or two;
- a cluster with no row at all is computed in the request and stored (the first call after a load, or
  for a cluster born since the worker's last sweep);
- a customer's row (``sees_internal`` false) that is not fresh is recomputed in the request instead of
  served: a member may have turned internal since, and a customer must never see it.

The worker also sweeps (at start and every ``SWEEP_SECONDS``) the product team's rows that are missing or
stale, with their member explanations, most voted clusters first, so that a list or a cluster page
rarely meets either. ``MAX_AGE`` covers what no revision
sees: how common a word is on the whole board (key phrases prefer rare words).

Two audiences, never mixed: ``sees_internal`` true (employees and the product team) and false (public
members only: an internal post's title, words and language never reach a customer's description).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forum.encoding import PostEmbedder
from forum.grouping.explanations import Description, Explainer
from forum.grouping.schemas import Explanation, PostRef
from forum.models import ClusterDescription
from forum.queue import enqueue

DESCRIBE_CLUSTER = "cluster.describe"
MAX_AGE = timedelta(minutes=10)
SWEEP_BATCH = 50
"""Clusters described per transaction by the sweep."""
PART_MEMBERS = 5000
"""Clusters are described and explained in parts of about this many members (one members statement and
one vectors statement each): the vectors of a part are in memory at once (~1.5 KB a member and encoder)."""


def _payload(cluster_id: UUID, sees_internal: bool) -> str:
    return f"{cluster_id}:{int(sees_internal)}"


def parse_payload(payload: str) -> tuple[UUID, bool]:
    cluster_id, audience = payload.rsplit(":", 1)
    return UUID(cluster_id), audience == "1"


def _fresh(row: Any, revision: int, now: datetime) -> bool:
    return row.revision == revision and now - row.computed_at < MAX_AGE


def _description(row: Any) -> Description:
    representative = (
        PostRef(post_id=row.representative_id, title=row.representative_title) if row.representative_id else None
    )
    return Description(
        representative=representative,
        key_phrases=list(row.key_phrases),
        languages=dict(row.languages),
        channels=dict(row.channels),
    )


# Members per channel, hidden and deleted posts left out (and internal ones for a customer).
_CHANNELS_SQL = """
SELECT m.cluster_id, p.channel, count(*) AS n
FROM cluster_membership m JOIN post p ON p.id = m.post_id
WHERE m.cluster_id = ANY(CAST(:ids AS uuid[])) AND m.state <> 'rejected' AND post_counts_in_cluster(p)
  AND (:sees_internal OR p.visibility = 'public')
GROUP BY m.cluster_id, p.channel
"""


async def _with_channels(
    session: AsyncSession, sees_internal: bool, described: dict[UUID, Description]
) -> dict[UUID, Description]:
    if described:
        params = {"ids": list(described), "sees_internal": sees_internal}
        for row in await session.execute(text(_CHANNELS_SQL), params):
            described[row.cluster_id].channels[row.channel] = row.n
    return described


def _values(cluster_id: UUID, sees_internal: bool, revision: int, description: Description) -> dict[str, Any]:
    representative = description.representative
    return {
        "cluster_id": cluster_id,
        "sees_internal": sees_internal,
        "revision": revision,
        "representative_id": representative.post_id if representative else None,
        "representative_title": representative.title if representative else None,
        "key_phrases": description.key_phrases,
        "languages": description.languages,
        "channels": description.channels,
        "computed_at": datetime.now(UTC),
    }


def _decode_explanations(stored: dict[str, Any]) -> dict[UUID, Explanation]:
    return {UUID(k): msgspec.convert(v, Explanation) for k, v in stored["members"].items()}


class DescriptionStore:
    """Descriptions and member explanations for one audience, read from ``cluster_description``."""

    def __init__(self, session: AsyncSession, explainer: Explainer) -> None:
        self.session = session
        self.explainer = explainer
        self.sees_internal = explainer.sees_internal

    async def _rows(self, cluster_ids: Sequence[UUID], *, explanations: bool = False) -> dict[UUID, Any]:
        """The stored rows (without the members' explanations, which can be large, unless asked for)."""
        if not cluster_ids:
            return {}
        d = ClusterDescription
        columns = [d.cluster_id, d.revision, d.computed_at, d.representative_id, d.representative_title]
        columns += [d.key_phrases, d.languages, d.channels] + ([d.explanations] if explanations else [])
        rows = await self.session.execute(
            select(*columns).where(d.cluster_id.in_(list(cluster_ids)), d.sees_internal == self.sees_internal)
        )
        return {row.cluster_id: row for row in rows}

    async def _refresh_later(self, cluster_ids: Sequence[UUID]) -> None:
        """In the request's transaction: the job exists once the request commits (a GET commits too)."""
        await enqueue(
            self.session, DESCRIBE_CLUSTER, [_payload(c, self.sees_internal) for c in cluster_ids], dedupe=True
        )

    async def describe(
        self, revisions: dict[UUID, int], stored: dict[UUID, Any] | None = None
    ) -> dict[UUID, Description]:
        """Each cluster's description: stored (fresh or stale, a stale one queued for a refresh), or
        computed now and stored when there is none. ``stored``: the stored rows (as :meth:`_rows` reads
        them, audience included) when the caller has already read them with its own statement."""
        now = datetime.now(UTC)
        rows = stored if stored is not None else await self._rows(list(revisions))
        out = {cluster_id: _description(row) for cluster_id, row in rows.items()}
        stale = [c for c, row in rows.items() if not _fresh(row, revisions[c], now)]
        if self.sees_internal:
            await self._refresh_later(stale)
        else:  # a member may have turned internal since: a customer is never served a stale row
            rows = {c: row for c, row in rows.items() if c not in stale}
        missing = [cluster_id for cluster_id in revisions if cluster_id not in rows]
        if missing:
            computed = await _with_channels(self.session, self.sees_internal, await self.explainer.describe(missing))
            await store(self.session, self.sees_internal, {c: (revisions[c], computed[c]) for c in missing})
            out.update(computed)
        return out

    async def explanations(
        self, cluster_id: UUID, revision: int, post_ids: Sequence[UUID] | None = None
    ) -> dict[UUID, Explanation]:
        """The members' explanations of a cluster page, stored like descriptions (call :meth:`describe`
        first: the row they are kept in exists then). ``post_ids``: only these members' (a page of a large
        cluster reads its 50 out of the stored 1,400 in SQL, not the whole document)."""
        row = (
            await self.session.execute(
                text(_EXPLANATIONS_SQL),
                {
                    "c": cluster_id,
                    "s": self.sees_internal,
                    "all": post_ids is None,
                    "ids": [str(p) for p in post_ids or ()],
                },
            )
        ).first()
        if row is not None and row.explained is not None:
            current = row.explained == revision and datetime.now(UTC) - row.computed_at < MAX_AGE
            if current or self.sees_internal:  # stale ones for the staff only, as for descriptions
                if not current:
                    await self._refresh_later([cluster_id])
                return _decode_explanations({"members": row.members or {}})
        explanations = await self.explainer.explain_members(cluster_id)
        await _store_explanations(self.session, self.sees_internal, {cluster_id: (revision, explanations)})
        if post_ids is not None:
            wanted = set(post_ids)
            return {k: v for k, v in explanations.items() if k in wanted}
        return explanations


# A cluster page's explanations: the stored document's revision and only the members asked for, each looked
# up by its key in the members object (read once, in the subquery: OFFSET 0 keeps it from being inlined), not
# by walking every member with jsonb_each (1.8 -> 1.1 ms for the 1,401 members of the largest cluster at 100k).
_EXPLANATIONS_SQL = """
SELECT x.computed_at, x.explained,
       CASE WHEN :all THEN x.members ELSE (
           SELECT jsonb_object_agg(k, x.members -> k) FROM unnest(CAST(:ids AS text[])) AS k WHERE x.members ? k
       ) END AS members
FROM (
    SELECT d.computed_at, CAST(d.explanations ->> 'revision' AS bigint) AS explained,
           d.explanations -> 'members' AS members
    FROM cluster_description d
    WHERE d.cluster_id = :c AND d.sees_internal = :s
    OFFSET 0
) AS x
"""


async def _store_explanations(
    session: AsyncSession, sees_internal: bool, explained: dict[UUID, tuple[int, dict[UUID, Explanation]]]
) -> None:
    """Each cluster's members' explanations computed at a revision, in one statement; a document already
    at a later revision is kept."""
    if not explained:
        return
    documents = [
        msgspec.json.encode(
            {"revision": revision, "members": {str(k): msgspec.to_builtins(v) for k, v in explanations.items()}}
        ).decode()
        for revision, explanations in explained.values()
    ]
    await session.execute(
        text(
            "UPDATE cluster_description d SET explanations = CAST(v.e AS jsonb)"
            " FROM unnest(CAST(:c AS uuid[]), CAST(:e AS text[]), CAST(:r AS bigint[])) AS v(c, e, r)"
            " WHERE d.cluster_id = v.c AND d.sees_internal = :s"
            " AND (coalesce(CAST(d.explanations ->> 'revision' AS bigint), -1) <= v.r"
            "      OR CAST(d.explanations ->> 'revision' AS bigint)"
            "         > (SELECT t.revision FROM cluster_tally t WHERE t.cluster_id = d.cluster_id))"
        ),
        {"c": list(explained), "e": documents, "r": [r for r, _ in explained.values()], "s": sees_internal},
    )


async def store(session: AsyncSession, sees_internal: bool, described: dict[UUID, tuple[int, Description]]) -> None:
    """Upsert descriptions computed at the given revisions; a row already at a later revision is kept."""
    if not described:
        return
    values = [_values(c, sees_internal, revision, d) for c, (revision, d) in described.items()]
    statement = insert(ClusterDescription).values(values)
    excluded = statement.excluded
    tally = text("(SELECT t.revision FROM cluster_tally t WHERE t.cluster_id = excluded.cluster_id)")
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["cluster_id", "sees_internal"],
            set_={
                "revision": excluded.revision,
                "representative_id": excluded.representative_id,
                "representative_title": excluded.representative_title,
                "key_phrases": excluded.key_phrases,
                "languages": excluded.languages,
                "channels": excluded.channels,
                "computed_at": excluded.computed_at,
            },
            # a row at a later revision is kept, unless the tally's is behind it: a from-scratch recount of
            # the tally (a migration's, or the bench's after it undoes a run) starts revisions again at 0
            where=or_(ClusterDescription.revision <= excluded.revision, ClusterDescription.revision > tally),
        )
    )


_REVISIONS_SQL = """
SELECT t.cluster_id, t.revision, t.member_count, d.revision AS stored, d.computed_at,
       CAST(d.explanations ->> 'revision' AS bigint) AS explained
FROM cluster_tally t
LEFT JOIN cluster_description d ON d.cluster_id = t.cluster_id AND d.sees_internal = :s
WHERE t.cluster_id = ANY(CAST(:ids AS uuid[]))
"""
STALE_SQL = """
SELECT t.cluster_id FROM cluster_tally t
LEFT JOIN cluster_description d ON d.cluster_id = t.cluster_id AND d.sees_internal
WHERE t.member_count > 0
  AND (d.cluster_id IS NULL OR d.revision <> t.revision
       OR d.computed_at < least(now() - CAST(:max_age AS interval), CAST(:started AS timestamptz))
       OR d.explanations IS NULL OR CAST(d.explanations ->> 'revision' AS bigint) <> t.revision)
ORDER BY t.voters DESC, t.member_count DESC, t.cluster_id
LIMIT :limit
"""


async def refresh(
    session: AsyncSession,
    embedder: PostEmbedder,
    cluster_ids: Sequence[UUID],
    sees_internal: bool,
    *,
    explain_all: bool = False,
    frequencies: dict[str, int] | None = None,
) -> int:
    """Recompute the descriptions that are missing or stale, and the member explanations that are behind
    (those a cluster page asked for once; with ``explain_all``, the sweep's, missing ones too). What is
    fresh is left alone, so a repeated job does nothing. Returns how many clusters it touched.
    ``frequencies``: board frequencies of stems counted earlier in the same sweep (see ``Explainer``)."""
    await embedder.ready()  # loaded once per process (the worker's is, a script's may not be)
    rows = (await session.execute(text(_REVISIONS_SQL), {"s": sees_internal, "ids": list(cluster_ids)})).all()
    now = datetime.now(UTC)
    describe = [r for r in rows if r.stored is None or r.stored != r.revision or now - r.computed_at >= MAX_AGE]
    # A staff member's explanations change only with the cluster's revision (members, texts, vectors): a
    # description refreshed for its age (board-wide word frequencies) keeps them. A customer's follow the
    # description (a member may have turned internal).
    explain = [
        r
        for r in rows
        if (r.explained is None and explain_all)
        or (r.explained is not None and (r.explained != r.revision or (r in describe and not sees_internal)))
    ]
    explainer = Explainer(session, embedder, None, sees_internal=sees_internal, frequencies=frequencies)
    described, explained = {r.cluster_id for r in describe}, {r.cluster_id for r in explain}
    for part in _parts([r for r in rows if r.cluster_id in described | explained]):
        descriptions, explanations = await explainer.describe_and_explain(
            [r.cluster_id for r in part if r.cluster_id in described],
            [r.cluster_id for r in part if r.cluster_id in explained],
        )
        descriptions = await _with_channels(session, sees_internal, descriptions)
        await store(
            session,
            sees_internal,
            {r.cluster_id: (r.revision, descriptions[r.cluster_id]) for r in part if r.cluster_id in described},
        )
        await _store_explanations(
            session,
            sees_internal,
            {r.cluster_id: (r.revision, explanations[r.cluster_id]) for r in part if r.cluster_id in explained},
        )
    return len({r.cluster_id for r in describe + explain})


def _parts(rows: Sequence[Any]) -> list[list[Any]]:
    """``rows`` (with ``member_count``) in consecutive parts of at most ``PART_MEMBERS`` members (a larger
    cluster alone)."""
    parts: list[list[Any]] = []
    size = 0
    for row in rows:
        if not parts or size + row.member_count > PART_MEMBERS:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += row.member_count
    return parts


async def refresh_stale(
    session_maker: async_sessionmaker[AsyncSession], embedder: PostEmbedder, *, limit: int | None = None
) -> int:
    """The sweep: the product team's descriptions that are missing or stale, most voted clusters first,
    ``SWEEP_BATCH`` per transaction, until none is left (or ``limit`` were refreshed). Returns how many.
    A description written since the sweep started is not old to it (a sweep longer than ``MAX_AGE`` went
    back to its first clusters), and a batch of clusters all seen before ends it (rows a refresh did not
    replace were chosen by every batch: a 100k board's first sweep never ended, issue 14)."""
    done = 0
    seen: set[UUID] = set()
    frequencies: dict[str, int] = {}  # counted once per sweep: a few thousand stems, not 12 per cluster
    params = {"max_age": MAX_AGE, "limit": SWEEP_BATCH, "started": datetime.now(UTC)}
    while limit is None or done < limit:
        async with session_maker() as session, session.begin():
            ids = list(await session.scalars(text(STALE_SQL), params))
            if not ids or seen.issuperset(ids):
                return done
            refreshed = await refresh(session, embedder, ids, True, explain_all=True, frequencies=frequencies)
        seen.update(ids)
        done += refreshed
        if refreshed == 0:  # described meanwhile by a request or a job
            return done
    return done
