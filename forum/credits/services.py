"""Shipping closes the loop: contributors are credited in an append-only ledger and everyone hears.

Who is credited when post P ships (``ShipService.ship``):
- the authors of P, of every post merged into it (recursively) and of every post *confirmed* in its
  cluster, ranked by their original creation time: rank 1 is the **pioneer**;
- the first N unique voters across those posts, by their original vote time (a person counts once, at
  their earliest vote; votes carried over by merges keep their time);
- the authors of the critiques linked to P (``critic``).
Points come from the policy in the settings (earlier ranks earn more). Shipping an already shipped post
credits nothing new; moving a post out of ``shipped`` revokes its credits with compensating entries,
so the ledger never changes, it only grows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.grouping.locks import hold_grouping_lock
from forum.models import (
    CreditEntry,
    CreditReason,
    CritiqueLink,
    Post,
    PostStatus,
    ShipEvent,
    StatusChange,
    StatusEvent,
    User,
    visible_to,
)
from forum.notifications.services import NotificationKind, notify_subscribers, notify_users
from forum.schemas import timestamp
from forum.surveys.loop import notify_voices_of_ship
from forum.webhooks.schemas import WebhookEvent
from forum.webhooks.services import emit

CONTRIBUTING_POSTS_SQL = """
WITH RECURSIVE merged(id) AS (
    SELECT CAST(:post_id AS uuid)
    UNION
    SELECT pm.source_id FROM post_merge pm JOIN merged m ON pm.target_id = m.id WHERE pm.unmerged_at IS NULL
),
confirmed AS (
    SELECT peer.post_id AS id
    FROM cluster_membership mine
    JOIN cluster_membership peer ON peer.cluster_id = mine.cluster_id
    WHERE mine.post_id = :post_id AND mine.state <> 'rejected' AND peer.state = 'confirmed'
)
SELECT p.id FROM post p
WHERE p.deleted_at IS NULL AND p.hidden_at IS NULL AND p.id IN (SELECT id FROM merged UNION SELECT id FROM confirmed)
"""


@dataclass
class CreditPolicy:
    voters: int = 10
    author_points: list[int] = field(default_factory=lambda: [100, 80, 60, 40, 20, 10])
    voter_points: list[int] = field(default_factory=lambda: [20, 18, 16, 14, 12, 10, 8, 6, 4, 2])
    critic_points: int = 30

    @classmethod
    def from_settings(cls, settings: Any) -> CreditPolicy:
        return cls(
            voters=settings.credit_voters,
            author_points=settings.credit_author_points,
            voter_points=settings.credit_voter_points,
            critic_points=settings.credit_critic_points,
        )

    @staticmethod
    def _by_rank(points: list[int], rank: int) -> int:
        return points[min(rank, len(points)) - 1]

    def author(self, rank: int) -> int:
        return self._by_rank(self.author_points, rank)

    def voter(self, rank: int) -> int:
        return self._by_rank(self.voter_points, rank)


# The posts a status change of :post may write, locked in id order, then their clusters' tally rows (migration
# 0019): the post, and the critiques that shipping marks addressed (when :shipping) or that un-shipping its
# active shipping reopens. One statement: the CTE's locks are taken before the function's argument is read.
_LOCK_STATUS_CHANGE = text(
    """
WITH posts AS (
    SELECT id FROM post
    WHERE id = :post
       OR (:shipping AND id IN (SELECT critique_id FROM critique_link WHERE idea_id = :post))
       OR id IN (SELECT CAST(jsonb_object_keys(addressed) AS uuid) FROM ship_event
                 WHERE post_id = :post AND revoked_at IS NULL)
    ORDER BY id FOR NO KEY UPDATE
)
SELECT cluster_tally_lock(ARRAY(SELECT id FROM posts), '{}')
"""
)


class ShipService:
    def __init__(self, session: AsyncSession, policy: CreditPolicy | None = None) -> None:
        self.session = session
        self.policy = policy or CreditPolicy()

    async def lock_status_change(self, post_id: UUID, *, shipping: bool) -> None:
        """Before a status change's first lock: its critiques may sit in other clusters, so it takes the
        grouping lock (the worker writes two clusters' tally rows in any order), then the posts by id and
        their tally rows by cluster id (forum/grouping/locks.py). It took the idea, the idea's tally row, then
        each critique: a vote on a critique of the idea's cluster (critique, then that row) deadlocked."""
        await hold_grouping_lock(self.session)
        await self.session.execute(_LOCK_STATUS_CHANGE, {"post": post_id, "shipping": shipping})

    async def contributing_posts(self, post_id: UUID) -> list[UUID]:
        return list(await self.session.scalars(text(CONTRIBUTING_POSTS_SQL), {"post_id": post_id}))

    async def ship(self, post: Post, actor: User) -> ShipEvent | None:
        """Credit the contributors of a post that just moved to ``shipped``. Idempotent per shipping."""
        active = await self.session.scalar(
            select(ShipEvent).where(ShipEvent.post_id == post.id, ShipEvent.revoked_at.is_(None))
        )
        if active is not None:
            return None
        event = ShipEvent(post_id=post.id, shipped_by_id=actor.id, addressed={})
        self.session.add(event)
        await self.session.flush()
        entries = await self._credits(post.id, event.id)
        self.session.add_all(entries)
        event.addressed = await self._address_critiques(post, actor)
        await self.session.flush()

        per_user: dict[UUID, list[CreditEntry]] = defaultdict(list)
        for entry in entries:
            per_user[entry.user_id].append(entry)
        for user_id, (about_id, about_title) in (await self._described_to(post, entries)).items():
            mine = per_user[user_id]
            await notify_users(
                self.session,
                [user_id],
                NotificationKind.CREDIT_AWARDED,
                {
                    "post_id": str(about_id),
                    "title": about_title,
                    "points": sum(e.points for e in mine),
                    "credits": [{"reason": e.reason, "rank": e.rank, "points": e.points} for e in mine],
                },
                post_id=about_id,
            )
        credits_payload = [_entry_payload(e) for e in entries]
        await emit(self.session, WebhookEvent.POST_SHIPPED, {**_post_payload(post), "credits": credits_payload})
        if entries:
            await emit(
                self.session,
                WebhookEvent.CREDIT_AWARDED,
                {"post_id": str(post.id), "visibility": post.visibility, "credits": credits_payload},
            )
        await notify_voices_of_ship(self.session, post)  # survey respondents who voiced this need
        return event

    async def _described_to(self, post: Post, entries: list[CreditEntry]) -> dict[UUID, tuple[UUID, str]]:
        """For each credited person, the post their notification is about: the shipped post if they may see
        it, else the first post of their own through which they contributed that they may see (a customer
        whose public post was grouped with an internal idea hears about *their* post). Nobody hears of a
        post they may not see; a person who may see none of them is not notified."""
        if not entries:
            return {}
        users = {
            u.id: u for u in await self.session.scalars(select(User).where(User.id.in_({e.user_id for e in entries})))
        }
        described: dict[UUID, tuple[UUID, str]] = {}
        for entry in entries:
            if entry.user_id in described:
                continue
            user = users[entry.user_id]
            if await self._sees(user, post.id):
                described[entry.user_id] = (post.id, post.title)
            elif await self._sees(user, entry.source_post_id):
                source = await self.session.get(Post, entry.source_post_id)
                assert source is not None
                described[entry.user_id] = (source.id, source.title)
        return described

    async def _sees(self, user: User, post_id: UUID) -> bool:
        return bool(await self.session.scalar(select(Post.id).where(Post.id == post_id, visible_to(user))))

    async def unship(self, post: Post, actor: User) -> None:
        """The post left ``shipped``: compensate every credit of the active shipping and reopen critiques."""
        event = await self.session.scalar(
            select(ShipEvent).where(ShipEvent.post_id == post.id, ShipEvent.revoked_at.is_(None)).with_for_update()
        )
        if event is None:
            return
        event.revoked_at = datetime.now(UTC)
        event.revoked_by_id = actor.id
        entries = list(
            await self.session.scalars(
                select(CreditEntry).where(CreditEntry.ship_event_id == event.id, CreditEntry.revokes_id.is_(None))
            )
        )
        for entry in entries:
            self.session.add(
                CreditEntry(
                    user_id=entry.user_id,
                    post_id=entry.post_id,
                    source_post_id=entry.source_post_id,
                    ship_event_id=event.id,
                    reason=entry.reason,
                    rank=entry.rank,
                    points=-entry.points,
                    contributed_at=entry.contributed_at,
                    revokes_id=entry.id,
                )
            )
        for critique_id, status_before in (event.addressed or {}).items():
            critique = await self.session.get(Post, UUID(critique_id), with_for_update={"key_share": True})
            if critique is not None and critique.status == PostStatus.ADDRESSED.value:
                self.session.add(
                    StatusChange(
                        post_id=critique.id,
                        actor_id=actor.id,
                        from_status=critique.status,
                        to_status=status_before,
                        event=StatusEvent.UNADDRESSED.value,
                        related_post_id=post.id,
                    )
                )
                critique.status = status_before
        for user_id, (about_id, about_title) in (await self._described_to(post, entries)).items():
            await notify_users(
                self.session,
                [user_id],
                NotificationKind.CREDIT_REVOKED,
                {"post_id": str(about_id), "title": about_title},
                post_id=about_id,
            )
        await self.session.flush()

    async def _credits(self, post_id: UUID, event_id: UUID) -> list[CreditEntry]:
        posts = await self.contributing_posts(post_id)
        entries: list[CreditEntry] = []

        def add(user_id: UUID, source: UUID, reason: CreditReason, rank: int, points: int, at: datetime) -> None:
            entries.append(
                CreditEntry(
                    user_id=user_id,
                    post_id=post_id,
                    source_post_id=source,
                    ship_event_id=event_id,
                    reason=reason.value,
                    rank=rank,
                    points=points,
                    contributed_at=at,
                )
            )

        authors = (
            await self.session.execute(
                text(
                    """
                    SELECT author_id, min(created_at) AS at, (array_agg(id ORDER BY created_at, id))[1] AS source
                    FROM post WHERE id = ANY(:posts) GROUP BY author_id ORDER BY at, author_id
                    """
                ),
                {"posts": posts},
            )
        ).all()
        for rank, row in enumerate(authors, start=1):
            reason = CreditReason.PIONEER if rank == 1 else CreditReason.AUTHOR
            add(row.author_id, row.source, reason, rank, self.policy.author(rank), row.at)

        voters = (
            await self.session.execute(
                text(
                    """
                    SELECT v.user_id, min(v.created_at) AS at,
                           (array_agg(coalesce(v.merged_from_id, v.post_id) ORDER BY v.created_at))[1] AS source
                    FROM vote v JOIN user_account u ON u.id = v.user_id AND u.is_active
                    WHERE v.post_id = ANY(:posts)
                    GROUP BY v.user_id ORDER BY at, v.user_id LIMIT :limit
                    """
                ),
                {"posts": posts, "limit": self.policy.voters},
            )
        ).all()
        for rank, row in enumerate(voters, start=1):
            add(row.user_id, row.source, CreditReason.EARLY_VOTER, rank, self.policy.voter(rank), row.at)

        critics = (
            await self.session.execute(
                text(
                    """
                    SELECT p.author_id, min(p.created_at) AS at, (array_agg(p.id ORDER BY p.created_at))[1] AS source
                    FROM critique_link l JOIN post p ON p.id = l.critique_id AND p.deleted_at IS NULL
                                        AND p.hidden_at IS NULL
                    WHERE l.idea_id = ANY(:posts)
                    GROUP BY p.author_id ORDER BY at, p.author_id
                    """
                ),
                {"posts": posts},
            )
        ).all()
        for rank, row in enumerate(critics, start=1):
            add(row.author_id, row.source, CreditReason.CRITIC, rank, self.policy.critic_points, row.at)
        return entries

    async def _address_critiques(self, idea: Post, actor: User) -> dict[str, str]:
        """Mark the idea's linked critiques ``addressed`` and tell their authors and followers."""
        critiques = list(
            await self.session.scalars(
                select(Post)
                .where(
                    Post.id.in_(select(CritiqueLink.critique_id).where(CritiqueLink.idea_id == idea.id)),
                    Post.deleted_at.is_(None),
                    Post.status.not_in([PostStatus.ADDRESSED.value, PostStatus.DUPLICATE.value]),
                )
                .order_by(Post.id)
                .with_for_update(of=Post, key_share=True)
            )
        )
        addressed: dict[str, str] = {}
        for critique in critiques:
            addressed[str(critique.id)] = critique.status
            self.session.add(
                StatusChange(
                    post_id=critique.id,
                    actor_id=actor.id,
                    from_status=critique.status,
                    to_status=PostStatus.ADDRESSED.value,
                    event=StatusEvent.ADDRESSED.value,
                    related_post_id=idea.id,
                )
            )
            critique.status = PostStatus.ADDRESSED.value
            payload = {
                "post_id": str(critique.id),
                "title": critique.title,
                "idea_id": str(idea.id),
                "idea_title": idea.title,
            }
            await notify_users(
                self.session, [critique.author_id], NotificationKind.CRITIQUE_ADDRESSED, payload, post_id=critique.id
            )
            await notify_subscribers(
                self.session,
                critique.id,
                NotificationKind.CRITIQUE_ADDRESSED,
                payload,
                exclude=[critique.author_id, actor.id],
            )
        return addressed


def _post_payload(post: Post) -> dict[str, Any]:
    return {
        "post_id": str(post.id),
        "title": post.title,
        "kind": post.kind,
        "status": post.status,
        "visibility": post.visibility,
    }


def _entry_payload(entry: CreditEntry) -> dict[str, Any]:
    return {
        "user_id": str(entry.user_id),
        "reason": entry.reason,
        "rank": entry.rank,
        "points": entry.points,
        "source_post_id": str(entry.source_post_id),
        "contributed_at": timestamp(entry.contributed_at),
    }
