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
from forum.grouping.pairs import scores_of, scores_within
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


class Explainer:
    def __init__(
        self, session: AsyncSession, embedder: PostEmbedder, viewer: User | None, *, sees_internal: bool | None = None
    ) -> None:
        """``sees_internal``: explain for an audience rather than for one viewer (the background job that
        stores descriptions has no viewer)."""
        self.session = session
        self.embedder = embedder
        self.sees_internal = bool(viewer and viewer.sees_internal) if sees_internal is None else sees_internal

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
        members = await self._members(cluster_ids)
        if not self.sees_internal:
            members = {c: [m for m in group if m.visibility == "public"] for c, group in members.items()}
        scores = await scores_within(self.session, self.embedder, [c for c, m in members.items() if len(m) > 1])
        shared: set[str] = set()
        for group in members.values():
            counts = Counter(lexeme for member in group for lexeme in member.lexemes)
            common = [(n, lexeme) for lexeme, n in counts.items() if n >= min(2, len(group))]
            shared.update(lexeme for _, lexeme in sorted(common, reverse=True)[:KEY_PHRASE_CANDIDATES])
        frequency: dict[str, int] = {}
        if shared:
            rows = await self.session.execute(text(_FREQUENCY_SQL), {"lexemes": sorted(shared)})
            frequency = {row.lexeme: int(row.n) for row in rows}
        out = {}
        for cluster_id, group in members.items():
            by_id = {member.post_id: member for member in group}
            central = terms.most_central([member.post_id for member in group], scores)
            out[cluster_id] = Description(
                representative=PostRef(post_id=central, title=self._title(by_id[central])) if central else None,
                key_phrases=terms.key_phrases(
                    {m.post_id: m.lexemes for m in group}, {m.post_id: m.text for m in group}, frequency
                ),
                languages=dict(Counter(member.language for member in group).most_common()),
            )
        return out

    async def explain_members(self, cluster_id: UUID, *, align: bool = True) -> dict[UUID, Explanation]:
        """Each current member's nearest other member, their similarity and shared words."""
        group = (await self._members([cluster_id]))[cluster_id]
        scores = await scores_within(self.session, self.embedder, [cluster_id]) if len(group) > 1 else {}
        by_id = {member.post_id: member for member in group}
        nearest = {m.post_id: terms.nearest_of(m.post_id, by_id, scores) for m in group}
        pairs = [(by_id[a], by_id[n[0]]) for a, n in nearest.items() if n is not None]
        aligned = await self._aligned(pairs) if align else {}
        return {member.post_id: self._explanation(member, by_id, nearest[member.post_id], aligned) for member in group}

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
