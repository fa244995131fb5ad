"""Lossless, reversible merges of duplicate posts.

Merging ``source`` into ``target`` marks the source ``duplicate`` and gives the target every voter of the
source who had not voted on it, *with the original vote time* (rows tagged ``merged_from``); a person who
voted on both counts once. The source's author and creation time stay on record as contributors of the
target (``post_merge``). Unmerging deletes exactly the carried-over votes and restores the source's
status, so counts, statuses and vote times are exactly as before.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from uuid import UUID

from litestar.exceptions import NotFoundException
from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from forum.accounts.schemas import UserPublic
from forum.errors import ConflictError, UnprocessableError
from forum.grouping.locks import hold_grouping_lock, lock_tallies
from forum.merges.schemas import MergedPost, MergeResult
from forum.models import Post, PostMerge, PostStatus, PostVoteDay, StatusChange, StatusEvent, User, Vote
from forum.notifications.services import (
    NotificationKind,
    carry_subscriptions,
    drop_carried_subscriptions,
    notify_subscribers,
)
from forum.posts.services import PostService, author_public, visible_to
from forum.webhooks.schemas import WebhookEvent
from forum.webhooks.services import emit


class MergeService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.posts = PostService(session)

    async def _lock_posts(self, *post_ids: UUID, required: tuple[UUID, ...] | None = None) -> dict[UUID, Post]:
        """Lock the live posts among ``post_ids``; 404 unless every one of ``required`` (default: all) is there."""
        # The grouping lock first: the worker's batch writes two clusters' tally rows in any order
        # (forum/grouping/locks.py). Then the posts in id order, so two opposite merges cannot deadlock.
        await hold_grouping_lock(self.session)
        rows = await self.session.scalars(
            select(Post)
            .where(Post.id.in_(post_ids), Post.deleted_at.is_(None))
            .order_by(Post.id)
            .with_for_update(of=Post, key_share=True)  # FOR NO KEY UPDATE: see posts/services.py, _lock_votable
        )
        found = {post.id: post for post in rows}
        if any(post_id not in found for post_id in (post_ids if required is None else required)):
            raise NotFoundException("Post not found")
        # Then their clusters' tally rows, in id order: a merge changes the target's cluster (carried votes)
        # and the source's (its status), and an opposite merge at once must not take them the other way.
        await lock_tallies(self.session, found)
        return found

    async def merge(self, source_id: UUID, target_id: UUID, actor: User) -> MergeResult:
        if source_id == target_id:
            raise UnprocessableError("A post cannot be merged into itself", field="into")
        posts = await self._lock_posts(source_id, target_id, required=(source_id,))
        if target_id not in posts:
            raise UnprocessableError("There is no post with this id to merge into", field="into")
        source, target = posts[source_id], posts[target_id]
        if source.merged_into_id is not None:
            raise ConflictError(detail="This post is already merged; unmerge it first")
        if target.merged_into_id is not None:
            raise ConflictError(
                detail="The target is itself merged into another post: merge into that one",
                extra={"merged_into": str(target.merged_into_id)},
            )
        if source.status == PostStatus.SHIPPED.value:
            raise ConflictError(detail="This post has shipped: move it out of shipped before merging it")
        if source.hidden_at is not None or target.hidden_at is not None:
            # Its votes would count again on the target, or votes would vanish into a hidden post.
            raise ConflictError(detail="A hidden post is neither merged nor merged into: unhide it first")
        if source.visibility == "public" and target.visibility != "public":
            # Its followers, author and voters would be pointed at a post they cannot see.
            raise UnprocessableError("A public post cannot be merged into an internal one", field="into")
        carried = (
            await self.session.execute(
                insert(Vote)
                .from_select(
                    ["post_id", "user_id", "voter_kind", "created_at", "merged_from_id"],
                    select(
                        literal(target_id), Vote.user_id, Vote.voter_kind, Vote.created_at, literal(source_id)
                    ).where(Vote.post_id == source_id),
                )
                .on_conflict_do_nothing(index_elements=[Vote.post_id, Vote.user_id])
                .returning(Vote.voter_kind, Vote.created_at)
            )
        ).all()
        await self._count(target_id, carried, +1)
        self.session.add(
            PostMerge(
                source_id=source_id, target_id=target_id, merged_by_id=actor.id, source_status_before=source.status
            )
        )
        self.session.add(
            StatusChange(
                post_id=source_id,
                actor_id=actor.id,
                from_status=source.status,
                to_status=PostStatus.DUPLICATE.value,
                event=StatusEvent.MERGED.value,
                related_post_id=target_id,
            )
        )
        source.status = PostStatus.DUPLICATE.value
        source.merged_into_id = target_id
        await self.session.flush()
        await carry_subscriptions(self.session, source_id, target_id)
        payload = {
            "post_id": str(source_id),
            "title": source.title,
            "into_id": str(target_id),
            "into_title": target.title,
        }
        await notify_subscribers(self.session, source_id, NotificationKind.POST_MERGED, payload, exclude=[actor.id])
        webhook = {
            **payload,
            "visibility": source.visibility,
            "into_visibility": target.visibility,
            "votes_carried_over": len(carried),
        }
        await emit(self.session, WebhookEvent.POST_MERGED, webhook)
        return await self._result(source_id, target_id, actor, len(carried))

    async def unmerge(self, source_id: UUID, actor: User) -> MergeResult:
        record = await self.session.scalar(
            select(PostMerge).where(PostMerge.source_id == source_id, PostMerge.unmerged_at.is_(None)).with_for_update()
        )
        if record is None:
            if await self.session.scalar(select(Post.id).where(Post.id == source_id, Post.deleted_at.is_(None))):
                raise ConflictError(detail="This post is not merged")
            raise NotFoundException("Post not found")
        posts = await self._lock_posts(source_id, record.target_id)
        source, target = posts[source_id], posts[record.target_id]
        if target.merged_into_id is not None:
            raise ConflictError(detail="The target has since been merged into another post: unmerge that first")
        removed = (
            await self.session.execute(
                delete(Vote)
                .where(Vote.post_id == target.id, Vote.merged_from_id == source_id)
                .returning(Vote.voter_kind, Vote.created_at)
            )
        ).all()
        await self._count(target.id, removed, -1)
        await drop_carried_subscriptions(self.session, source_id, target.id)
        self.session.add(
            StatusChange(
                post_id=source_id,
                actor_id=actor.id,
                from_status=source.status,
                to_status=record.source_status_before,
                event=StatusEvent.UNMERGED.value,
                related_post_id=target.id,
            )
        )
        source.status = record.source_status_before
        source.merged_into_id = None
        record.unmerged_at = datetime.now(UTC)
        record.unmerged_by_id = actor.id
        await self.session.flush()
        return await self._result(source_id, target.id, actor, len(removed))

    async def _count(self, post_id: UUID, votes: list, step: int) -> None:
        """Move the target's counters and per-day buckets by the carried votes (at their original days)."""
        if not votes:
            return
        internal = sum(1 for v in votes if v.voter_kind == "internal")
        await self.session.execute(
            update(Post)
            .where(Post.id == post_id)
            .values(
                vote_total=Post.vote_total + step * len(votes),
                vote_internal=Post.vote_internal + step * internal,
                vote_external=Post.vote_external + step * (len(votes) - internal),
                updated_at=Post.updated_at,
            )
        )
        for day, count in Counter(v.created_at.astimezone(UTC).date() for v in votes).items():
            upsert = insert(PostVoteDay).values(post_id=post_id, day=day, votes=step * count)
            await self.session.execute(
                upsert.on_conflict_do_update(
                    index_elements=[PostVoteDay.post_id, PostVoteDay.day],
                    set_={"votes": PostVoteDay.votes + step * count},
                )
            )

    async def _result(self, source_id: UUID, target_id: UUID, viewer: User, votes: int) -> MergeResult:
        out = await self.posts.get_many_out([source_id, target_id], viewer)
        return MergeResult(source=out[source_id], target=out[target_id], votes_carried_over=votes)

    async def merged_into(self, target_id: UUID, viewer: User | None) -> list[MergedPost]:
        """The posts merged into ``target_id`` (still merged), earliest asker first."""
        await self.posts.get_visible(target_id, viewer)
        merger = aliased(User)
        source = aliased(Post)
        carried = (
            select(func.count()).where(Vote.post_id == target_id, Vote.merged_from_id == source.id).scalar_subquery()
        )
        rows = (
            await self.session.execute(
                select(PostMerge, source, merger, carried.label("carried"))
                .join(source, source.id == PostMerge.source_id)
                .join(merger, merger.id == PostMerge.merged_by_id)
                .where(PostMerge.target_id == target_id, PostMerge.unmerged_at.is_(None), visible_to(viewer, source))
                .order_by(source.created_at)
            )
        ).all()
        return [
            MergedPost(
                post_id=post.id,
                title=post.title,
                kind=post.kind,
                author=author_public(post.author),
                created_at=post.created_at,
                status_before=merge.source_status_before,
                merged_at=merge.created_at,
                merged_by=UserPublic(id=by.id, display_name=by.display_name, kind=by.kind),
                votes_carried_over=count,
            )
            for merge, post, by, count in rows
        ]
