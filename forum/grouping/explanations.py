"""Explanations read from the database: a cluster's representative, key phrases and languages; for a
member (or a suggested post) its nearest member, their similarity and the words they share.

Everything is computed when it is read, from stored vectors and stems (no model call), except the
cross-language word pairs of a detail page (:meth:`Explainer.explain`, ``align=True``), which encode
the words of the titles involved in one batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.encoding import PostEmbedder
from forum.grouping import terms
from forum.grouping.neighbours import MemberVectors, member_vectors
from forum.grouping.pairs import scores_of
from forum.grouping.schemas import Explanation, NearestMember, PostRef
from forum.models import User

ALIGN_MIN_COSINE = 0.6
"""Two words (or bigrams) of titles in different languages are paired from this cosine up (measured in
docs/duplicates.md, "Explanations")."""


@dataclass
class _Member:
    post_id: UUID
    cluster_id: UUID | None
    title: str
    text: str
    language: str
    visibility: str
    lexemes: set[str]


@dataclass
class Description:
    representative: PostRef | None
    key_phrases: list[str]
    languages: dict[str, int]
    channels: dict[str, int] = field(default_factory=dict)
    """Members per channel (filled where descriptions are stored: forum/grouping/descriptions.py)."""


_MEMBERS_SQL = """
SELECT m.cluster_id, p.id AS post_id, p.title, p.body, coalesce(p.language, 'und') AS language, p.visibility,
       tsvector_to_array(p.search) AS lexemes
FROM cluster_membership m JOIN post p ON p.id = m.post_id AND p.deleted_at IS NULL AND p.hidden_at IS NULL
WHERE m.state <> 'rejected' AND m.cluster_id = ANY(CAST(:clusters AS uuid[]))
ORDER BY p.created_at, p.id
"""
_POSTS_SQL = """
SELECT NULL::uuid AS cluster_id, p.id AS post_id, p.title, p.body, coalesce(p.language, 'und') AS language,
       p.visibility, tsvector_to_array(p.search) AS lexemes
FROM post p WHERE p.id = ANY(CAST(:posts AS uuid[]))
"""
# How many live posts hold each stem: the rarer of two equally shared stems is the better key phrase.
# Counted up to FREQUENCY_CAP (through the GIN index on ``search``): beyond that a stem is just common.
FREQUENCY_CAP = 1000
_FREQUENCY_SQL = f"""
SELECT l.lexeme, (SELECT count(*) FROM (SELECT 1 FROM post p WHERE p.deleted_at IS NULL
                  AND p.search @@ CAST(quote_literal(l.lexeme) AS tsquery) LIMIT {FREQUENCY_CAP}) AS capped) AS n
FROM unnest(CAST(:lexemes AS text[])) AS l(lexeme)
"""
KEY_PHRASE_CANDIDATES = 12
"""Per cluster, the stems shared by the most members whose board frequency is looked up."""
KEY_PHRASE_SAMPLE = 500
"""Key phrases are counted over at most this many members of a cluster, evenly spread over its members."""
MAX_ALIGNED_PAIRS = 200
"""Per cluster, the members (oldest first) whose cross-language pairs are aligned: each costs the encoder
a few phrases, and a cluster page shows 50 at a time."""


def _member(row: Any) -> _Member:
    body = row.body or ""
    return _Member(
        post_id=row.post_id,
        cluster_id=row.cluster_id,
        title=row.title,
        text=f"{row.title}\n{body}" if body else row.title,
        language=row.language,
        visibility=row.visibility,
        lexemes=set(row.lexemes or ()),
    )


def _sample(group: list[_Member]) -> list[_Member]:
    """At most ``KEY_PHRASE_SAMPLE`` members, evenly spread (every member of a smaller cluster)."""
    if len(group) <= KEY_PHRASE_SAMPLE:
        return group
    return [group[i] for i in np.linspace(0, len(group) - 1, KEY_PHRASE_SAMPLE).round().astype(int)]


class Explainer:
    def __init__(
        self,
        session: AsyncSession,
        embedder: PostEmbedder,
        viewer: User | None,
        *,
        sees_internal: bool | None = None,
        frequencies: dict[str, int] | None = None,
    ) -> None:
        """``sees_internal``: explain for an audience rather than for one viewer (the background job that
        stores descriptions has no viewer). ``frequencies``: board frequencies of stems already counted, kept
        across calls (the sweep shares one: the same common stems recur in most clusters)."""
        self.session = session
        self.embedder = embedder
        self.sees_internal = bool(viewer and viewer.sees_internal) if sees_internal is None else sees_internal
        self.frequencies = frequencies if frequencies is not None else {}

    def _title(self, member: _Member) -> str | None:
        """The title, if the viewer may see the post (the same rule as everywhere: internal posts exist
        only for employees and the product team)."""
        if member.visibility == "public" or self.sees_internal:
            return member.title
        return None

    async def _members(self, cluster_ids: Iterable[UUID]) -> dict[UUID, list[_Member]]:
        clusters = list(cluster_ids)
        out: dict[UUID, list[_Member]] = {cluster_id: [] for cluster_id in clusters}
        if clusters:
            for row in await self.session.execute(text(_MEMBERS_SQL), {"clusters": clusters}):
                out[row.cluster_id].append(_member(row))
        return out

    async def describe(self, cluster_ids: Sequence[UUID]) -> dict[UUID, Description]:
        """Representative post, key phrases and languages of each cluster. For a viewer who does not see
        internal posts, from the public members alone: nothing of an internal post (its title, its words,
        its language) shows through."""
        return (await self.describe_and_explain(cluster_ids, ()))[0]

    async def explain_members(self, cluster_id: UUID, *, align: bool = True) -> dict[UUID, Explanation]:
        """Each current member's nearest other member, their similarity and shared words."""
        return (await self.describe_and_explain((), [cluster_id], align=align))[1][cluster_id]

    async def describe_and_explain(
        self, describe: Sequence[UUID], explain: Sequence[UUID], *, align: bool = True
    ) -> tuple[dict[UUID, Description], dict[UUID, dict[UUID, Explanation]]]:
        """:meth:`describe` of ``describe`` and :meth:`explain_members` of each of ``explain``, from one
        members statement and one vectors statement (forum/grouping/neighbours.py: bounded work per
        cluster, whatever its size)."""
        members = await self._members(dict.fromkeys([*describe, *explain]))
        described = {c: members[c] for c in describe}
        if not self.sees_internal:
            described = {c: [m for m in group if m.visibility == "public"] for c, group in described.items()}
        groups = [*described.values(), *(members[c] for c in explain)]
        ids = list(dict.fromkeys(m.post_id for group in groups if len(group) > 1 for m in group))
        table = await member_vectors(self.session, self.embedder, ids) if ids else None

        def vectors(group: list[_Member]) -> MemberVectors | None:
            return table.select([m.post_id for m in group]) if table is not None and len(group) > 1 else None

        descriptions = await self._descriptions({c: (group, vectors(group)) for c, group in described.items()})
        explanations = {}
        for cluster_id in explain:
            group = members[cluster_id]
            explanations[cluster_id] = await self._explanations(group, vectors(group), align)
        return descriptions, explanations

    async def _descriptions(
        self, groups: dict[UUID, tuple[list[_Member], MemberVectors | None]]
    ) -> dict[UUID, Description]:
        shared: set[str] = set()
        for group, _ in groups.values():
            counts = Counter(lexeme for member in _sample(group) for lexeme in member.lexemes)
            common = [(n, lexeme) for lexeme, n in counts.items() if n >= min(2, len(group))]
            shared.update(lexeme for _, lexeme in sorted(common, reverse=True)[:KEY_PHRASE_CANDIDATES])
        missing = sorted(shared - self.frequencies.keys())
        if missing:
            rows = await self.session.execute(text(_FREQUENCY_SQL), {"lexemes": missing})
            self.frequencies.update({row.lexeme: int(row.n) for row in rows})
        frequency = self.frequencies
        out = {}
        for cluster_id, (group, vectors) in groups.items():
            found = vectors.central() if vectors is not None else None
            central = group[found] if found is not None else (group[0] if group else None)
            out[cluster_id] = Description(
                representative=PostRef(post_id=central.post_id, title=self._title(central)) if central else None,
                key_phrases=terms.key_phrases(
                    {m.post_id: m.lexemes for m in _sample(group)}, {m.post_id: m.text for m in group}, frequency
                ),
                languages=dict(Counter(member.language for member in group).most_common()),
            )
        return out

    async def _explanations(
        self, group: list[_Member], vectors: MemberVectors | None, align: bool
    ) -> dict[UUID, Explanation]:
        nearest = vectors.nearest() if vectors is not None else [None] * len(group)
        found = {m.post_id: (group[n[0]].post_id, n[1]) if n else None for m, n in zip(group, nearest, strict=True)}
        by_id = {member.post_id: member for member in group}
        pairs = [(by_id[a], by_id[n[0]]) for a, n in found.items() if n is not None]
        aligned = await self._aligned(pairs[:MAX_ALIGNED_PAIRS]) if align else {}
        return {m.post_id: self._explanation(m, by_id, found[m.post_id], aligned) for m in group}

    async def explain_post(self, post_id: UUID, cluster_id: UUID, *, align: bool = False) -> Explanation:
        """Why ``post_id`` (not a member) would belong in ``cluster_id``."""
        group = (await self._members([cluster_id]))[cluster_id]
        group = [member for member in group if member.post_id != post_id]
        posts = [_member(row) for row in await self.session.execute(text(_POSTS_SQL), {"posts": [post_id]})]
        if not posts:
            return Explanation(nearest=None, shared_terms=[], aligned_terms=[])
        post = posts[0]
        by_id = {member.post_id: member for member in group}
        scores = await scores_of(self.session, self.embedder, [(post_id, other) for other in by_id])
        found = terms.nearest_of(post_id, by_id, scores)
        aligned = await self._aligned([(post, by_id[found[0]])]) if align and found else {}
        return self._explanation(post, by_id, found, aligned)

    def _explanation(
        self,
        member: _Member,
        others: dict[UUID, _Member],
        nearest: tuple[UUID, float] | None,
        aligned: dict[tuple[UUID, UUID], list[str]],
    ) -> Explanation:
        if nearest is None:
            return Explanation(nearest=None, shared_terms=[], aligned_terms=[])
        other = others[nearest[0]]
        return Explanation(
            nearest=NearestMember(post_id=other.post_id, title=self._title(other), similarity=round(nearest[1], 4)),
            shared_terms=terms.shared_terms(member.lexemes, other.lexemes, member.text, other.text),
            aligned_terms=aligned.get((member.post_id, other.post_id), []),
        )

    async def _aligned(self, pairs: Sequence[tuple[_Member, _Member]]) -> dict[tuple[UUID, UUID], list[str]]:
        """For pairs in different languages: their titles' words and bigrams paired by the encoder that
        compares those languages (one batch for every phrase of the page)."""
        crossing = [(a, b) for a, b in pairs if a.language != b.language]
        if not crossing:
            return {}
        model = self._cross_language_model()
        phrases = {a.post_id: terms.candidate_phrases(a.title) for pair in crossing for a in pair}
        unique = sorted({phrase for found in phrases.values() for phrase in found})
        if not unique:
            return {}
        vectors = np.asarray(await self.embedder.batchers[model].encode_many(unique), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        by_phrase = dict(zip(unique, vectors, strict=True))
        return {
            (a.post_id, b.post_id): terms.aligned_terms(
                phrases[a.post_id], phrases[b.post_id], by_phrase, ALIGN_MIN_COSINE
            )
            for a, b in crossing
        }

    def _cross_language_model(self) -> str:
        if self.embedder.multilingual is not None:
            return self.embedder.multilingual.scorer.multilingual_name
        return self.embedder.models[0]
