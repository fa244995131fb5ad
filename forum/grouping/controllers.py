from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import LIGHT_USER, SignedIn, requires_product_team
from forum.encoding import PostEmbedder
from forum.grouping.decisions import ClusterDecisions
from forum.grouping.reports import MEMBER_PAGE, ClusterReports
from forum.grouping.review import ReviewQueue
from forum.grouping.schemas import (
    ClusterDetail,
    ClusterRef,
    ClusterSort,
    ClusterSummary,
    MoveRequest,
    SimilarPost,
    SimilarRequest,
    SplitRequest,
    Suggestion,
    SuggestionOutcome,
)
from forum.grouping.services import GroupingService
from forum.grouping.similar import similar_posts
from forum.grouping.thresholds import Thresholds, effective_thresholds
from forum.http import LOCATION, created
from forum.models import Channel, User
from forum.schemas import Limit, Offset, Page


async def provide_grouping(db_session: AsyncSession, state: State) -> AsyncGenerator[GroupingService, None]:
    embedder: PostEmbedder = state["forum_embedder"]
    await embedder.ready()  # the models load once, off the event loop (at start-up, normally)
    defaults = Thresholds.from_settings(state["forum_settings"])
    yield GroupingService(db_session, embedder, await effective_thresholds(db_session, embedder.name, defaults))


async def provide_search(db_session: AsyncSession, state: State) -> AsyncGenerator[GroupingService, None]:
    """As ``provide_grouping`` for a search that groups nothing (as-you-type): no round trip for the
    thresholds the board's team set, which only grouping decisions read."""
    embedder: PostEmbedder = state["forum_embedder"]
    await embedder.ready()
    yield GroupingService(db_session, embedder, Thresholds.from_settings(state["forum_settings"]))


async def provide_review(
    grouping: GroupingService, request: Request[User, Any, Any]
) -> AsyncGenerator[ReviewQueue, None]:
    yield ReviewQueue(grouping, request.user)


async def provide_reports(
    db_session: AsyncSession, state: State, request: Request[User | None, Any, Any]
) -> AsyncGenerator[ClusterReports, None]:
    embedder: PostEmbedder = state["forum_embedder"]
    await embedder.ready()
    yield ClusterReports(db_session, embedder, request.user)


class SimilarController(Controller):
    path = "/api/posts"
    tags = ["grouping"]
    dependencies = {"grouping": Provide(provide_grouping)}

    @post(
        "/similar",
        status_code=200,
        dependencies={"grouping": Provide(provide_search)},
        # The viewer is only asked who it is (scope, id): a light user, read without a transaction.
        opt={"read_only": True, LIGHT_USER: True},
        summary="Posts similar to what is being typed (as-you-type)",
    )
    async def find_similar_posts(
        self, request: Request[SignedIn | None, Any, Any], data: SimilarRequest, grouping: GroupingService
    ) -> Page[SimilarPost]:
        items = await similar_posts(grouping, data, request.user)
        return Page(items=items, total=len(items), limit=data.limit, offset=0)

    @post(
        "/{post_id:uuid}/cluster",
        guards=[requires_product_team],
        status_code=200,
        summary="Move a post to another cluster (product team)",
    )
    async def move_post_to_cluster(
        self, request: Request[User, Any, Any], post_id: UUID, data: MoveRequest, grouping: GroupingService
    ) -> ClusterRef:
        await ClusterDecisions(grouping).move(post_id, data.cluster_id, request.user)
        return ClusterRef(cluster_id=data.cluster_id)


class ClusterController(Controller):
    path = "/api/clusters"
    tags = ["grouping"]
    guards = [requires_product_team]
    dependencies = {
        "grouping": Provide(provide_grouping),
        "reports": Provide(provide_reports),
        "review": Provide(provide_review),
    }

    @get(summary="Clusters ranked by demand: unique voters across their posts (product team)")
    async def list_clusters(
        self,
        reports: ClusterReports,
        sort: ClusterSort = ClusterSort.VOTERS,
        min_members: Annotated[int, Parameter(ge=1, le=1000)] = 1,
        channel: Annotated[
            list[Channel] | None, Parameter(description="Only clusters with a member from this channel; repeatable")
        ] = None,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[ClusterSummary]:
        return await reports.list(sort, min_members, limit, offset, [c.value for c in channel] if channel else None)

    @get(
        "/suggestions",
        summary="The review queue: groupings to accept or dismiss, the ones that matter most first (product team)",
    )
    async def list_cluster_suggestions(
        self, review: ReviewQueue, limit: Limit = 20, offset: Offset = 0
    ) -> Page[Suggestion]:
        return await review.list(limit, offset)

    @post(
        "/suggestions/{suggestion_id:uuid}/accept",
        status_code=200,
        summary="Accept a suggestion: the post joins the cluster, confirmed",
    )
    async def accept_suggestion(self, suggestion_id: UUID, review: ReviewQueue) -> SuggestionOutcome:
        return await review.accept(suggestion_id)

    @post(
        "/suggestions/{suggestion_id:uuid}/dismiss",
        status_code=200,
        summary="Dismiss a suggestion: remembered like a rejection, never proposed again",
    )
    async def dismiss_suggestion(self, suggestion_id: UUID, review: ReviewQueue) -> SuggestionOutcome:
        return await review.dismiss(suggestion_id)

    @get(
        "/{cluster_id:uuid}",
        summary="A cluster with a page of its members (oldest first), why each is there, and their similarity",
    )
    async def get_cluster(
        self,
        cluster_id: UUID,
        reports: ClusterReports,
        limit: Annotated[
            int, Parameter(ge=1, le=100, description=f"Members per page (1-100, default {MEMBER_PAGE})")
        ] = MEMBER_PAGE,
        after: Annotated[
            str | None,
            Parameter(
                max_length=1000,
                description="Continue after a page of members: its `next` cursor (opaque). "
                "The summary and the rejected posts come with every page",
            ),
        ] = None,
    ) -> ClusterDetail:
        return await reports.detail(cluster_id, limit, after)

    @post("/{cluster_id:uuid}/members/{post_id:uuid}/confirm", status_code=200, summary="Confirm a membership")
    async def confirm_cluster_member(
        self,
        request: Request[User, Any, Any],
        cluster_id: UUID,
        post_id: UUID,
        grouping: GroupingService,
        reports: ClusterReports,
    ) -> ClusterDetail:
        await ClusterDecisions(grouping).confirm(cluster_id, post_id, request.user)
        return await reports.detail(cluster_id)

    @post(
        "/{cluster_id:uuid}/members/{post_id:uuid}/reject",
        status_code=200,
        summary="Reject a membership: the post leaves and is never grouped here again",
    )
    async def reject_cluster_member(
        self, request: Request[User, Any, Any], cluster_id: UUID, post_id: UUID, grouping: GroupingService
    ) -> ClusterRef:
        return ClusterRef(cluster_id=await ClusterDecisions(grouping).reject(cluster_id, post_id, request.user))

    @post(
        "/{cluster_id:uuid}/split",
        response_headers=[LOCATION],
        summary="Move some members into a new cluster; answers the new cluster's id",
    )
    async def split_cluster(
        self, request: Request[User, Any, Any], cluster_id: UUID, data: SplitRequest, grouping: GroupingService
    ) -> Response[ClusterRef]:
        new_cluster = await ClusterDecisions(grouping).split(cluster_id, data.post_ids, request.user)
        return created(ClusterRef(cluster_id=new_cluster), f"/api/clusters/{new_cluster}")
