"""The application, assembled in one place from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
)
from litestar import Litestar, Request, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.routes import HTTPRoute
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from forum import __version__
from forum.accounts.controllers import AuthController, MeController, UserController
from forum.auth import build_jwt_auth
from forum.board.controllers import BoardController, ExportController, RoadmapController, TagController
from forum.credits.controllers import CreditController
from forum.critiques.controllers import CritiqueLinkController
from forum.database import commit_before_answering, release_embedded_postgres, resolve_database_url
from forum.email.controllers import EmailPreferenceController, UnsubscribeController
from forum.email.smtp import Mailer, unsubscribe_key
from forum.encoding import PostEmbedder, post_language, settle_heap
from forum.errors import document_problems, exception_handlers, problem, problem_page
from forum.grouping.controllers import ClusterController, SimilarController
from forum.http import check_request, declared_query_parameters
from forum.keys.controllers import ApiKeyController
from forum.merges.controllers import MergeController
from forum.middleware import Budget, RejectNulMiddleware, SharedRateLimitMiddleware
from forum.notifications.controllers import InboxController, SubscriptionController
from forum.notifications.services import EMAIL_ENABLED
from forum.openapi import build_openapi_config, exact_request_bodies, name_pages, schema_assets
from forum.posts.controllers import PostController
from forum.settings import Settings
from forum.surveys.controllers import SurveyController, VoiceController
from forum.web.plugin import WebPlugin
from forum.webhooks.controllers import WebhookController
from forum.worker_process import STOP_SECONDS, WorkerProcess

logger = logging.getLogger("forum")

AUTH_PATHS = ("/api/auth/login", "/api/auth/register", "/login", "/signup")
READ_ONLY_POSTS = ("/api/posts/similar",)  # POST only to carry a body: it runs the model, so its own budget
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
READY_WAIT_SECONDS = 1.0  # how long start-up waits for the warm-up before serving (503 on /health meanwhile)
WARM_UP_TEXTS = ("Pause a scooter rental", "Pausar el alquiler de un patinete")


@get("/health", tags=["system"], summary="Readiness: models loaded and database reachable", exclude_from_auth=True)
async def health(db_session: AsyncSession, state: State) -> Any:
    warm_up: asyncio.Task[None] | None = state.get("forum_warm_up")
    if warm_up is not None and not warm_up.done():
        return problem(503, "The models are still loading", headers={"Retry-After": "2"}, models="loading")
    if warm_up is not None and (warm_up.cancelled() or warm_up.exception() is not None):
        return problem(503, "The models failed to load", headers={"Retry-After": "30"}, models="failed")
    try:
        await db_session.execute(text("SELECT 1"))
    except Exception as exc:
        logger.warning("health check failed: %s", exc)
        return problem(503, "The database is unavailable", headers={"Retry-After": "5"}, database="unavailable")
    answer = {"status": "ok", "database": "ok", "models": "ready", "version": __version__}
    worker: WorkerProcess | None = state.get("forum_worker")
    if worker is not None:  # the embedded worker's process: not part of readiness (jobs wait in the queue)
        answer["worker"] = worker.state
    return answer


def _rate_limits(settings: Settings) -> list[Any]:
    if not settings.rate_limit_enabled:
        return []

    def is_auth(request: Request[Any, Any, Any]) -> bool:
        return request.method == "POST" and request.url.path in AUTH_PATHS

    def is_similar(request: Request[Any, Any, Any]) -> bool:
        return request.method == "POST" and request.url.path in READ_ONLY_POSTS

    def is_write(request: Request[Any, Any, Any]) -> bool:
        return request.method not in SAFE_METHODS

    budgets = [
        Budget("auth", settings.rate_limit_auth_per_minute, is_auth),
        Budget("similar", settings.rate_limit_similar_per_minute, is_similar),
        Budget("write", settings.rate_limit_writes_per_minute, is_write),
    ]
    return [SharedRateLimitMiddleware(budgets)]


def _background_lifespan(settings: Settings, database_url: str):
    """Load the models off the event loop at startup; run the embedding worker beside the server."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        worker = supervising = None
        if settings.run_worker_in_server:  # first: its models load while the server's do
            worker = WorkerProcess(database_url)
            app.state["forum_worker"] = worker
            supervising = asyncio.create_task(worker.run())
            supervising.add_done_callback(_log_worker_exit)
        # Batchers belong to the loop that serves requests: built here, not in create_app.
        embedder = PostEmbedder.from_spec(settings.embedding_model)
        app.state["forum_embedder"] = embedder
        warm_up = asyncio.create_task(_warm_up(embedder))
        app.state["forum_warm_up"] = warm_up  # /health answers 503 until it is done
        # A fast encoder (the tests' hashing one) is ready before the first request; a real model answers
        # 503 on /health meanwhile instead of holding up the server's start.
        await asyncio.wait([warm_up], timeout=READY_WAIT_SECONDS)
        try:
            yield
        finally:
            if worker is not None and supervising is not None:
                worker.stop()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(supervising, timeout=STOP_SECONDS + 10)
            with contextlib.suppress(Exception):
                await warm_up
            if settings.uses_embedded_database:
                await app.state["forum_alchemy_config"].get_engine().dispose()
                release_embedded_postgres()  # worker processes never run atexit: the last one out stops it

    return lifespan


async def _warm_up(embedder: PostEmbedder) -> None:
    """Load the models, the language detector and the first model call's lazy state, off the loop: the
    first as-you-type call is then as fast as the next ones. Logs when the server is ready."""
    started = time.perf_counter()
    try:
        await embedder.ready()
        for text_ in WARM_UP_TEXTS:  # every route's encoders (English and non-English queries)
            await embedder.encode_query(text_)
        await asyncio.to_thread(post_language, "warm up", "")
        settle_heap()
    except Exception:
        logger.exception("the models failed to load: /health answers 503")
        raise
    logger.info("forum is ready: %s loaded and warmed in %.1f s", embedder.name, time.perf_counter() - started)


def _log_worker_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the embedding worker's supervisor stopped", exc_info=task.exception())


def _answer_options_with_every_method(app: Litestar) -> None:
    """Litestar's automatic OPTIONS handler lists the methods of the route it was first made for, and
    routes are rebuilt as controllers sharing a path register (``/api/me`` said ``GET`` only, without
    ``PATCH``): point each one at its final route, whose methods are all of the path's."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        for cell in getattr(handler.fn, "__closure__", None) or ():
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents = route


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    if settings.smtp_url:
        Mailer.from_settings(settings, "")  # a bad FORUM_SMTP_URL stops the start, not the first email
    database_url = resolve_database_url(settings)
    alchemy = SQLAlchemyAsyncConfig(
        connection_string=database_url,
        # With SMTP, every notification also queues its email (forum/email/services.py).
        # advanced-alchemy's cache and file-object listeners serve features forum does not use; left on, the
        # cache one asked the engine for its execution options on every commit, building an options engine
        # each time (about 2 % of a vote's CPU, issue 14). Off in the session's info, it returns at once.
        session_config=AsyncSessionConfig(
            expire_on_commit=False,
            info={
                EMAIL_ENABLED: bool(settings.smtp_url),
                "enable_cache_listener": False,
                "enable_file_object_listener": False,
            },
        ),
        enable_file_object_listener=False,
        engine_config=EngineConfig(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            # No pre-ping: it cost three round trips per request (29 % of a vote's event-loop time,
            # docs/benchmarks.md). A connection the database dropped fails its request with a 503 and
            # SQLAlchemy then discards every pooled connection older than that failure.
            pool_pre_ping=False,
            pool_recycle=1800,
        ),
    )
    # Set after construction: the session's scope key is made unique per config in __post_init__.
    alchemy.before_send_handler = commit_before_answering(alchemy.session_scope_key)
    jwt_auth = build_jwt_auth(settings.jwt_secret(), settings.token_ttl_minutes)
    app = Litestar(
        route_handlers=[
            health,
            problem_page,
            schema_assets,
            AuthController,
            MeController,
            UserController,
            PostController,
            SimilarController,
            MergeController,
            ClusterController,
            CritiqueLinkController,
            CreditController,
            InboxController,
            SubscriptionController,
            EmailPreferenceController,
            UnsubscribeController,
            WebhookController,
            ApiKeyController,
            SurveyController,
            VoiceController,
            BoardController,
            RoadmapController,
            TagController,
            ExportController,
        ],
        lifespan=[_background_lifespan(settings, database_url)],
        plugins=[SQLAlchemyPlugin(config=alchemy), WebPlugin(settings.jwt_secret())],
        on_app_init=[jwt_auth.on_app_init],
        middleware=[RejectNulMiddleware(), *_rate_limits(settings)],
        exception_handlers=exception_handlers,
        before_request=check_request,
        cors_config=CORSConfig(allow_origins=settings.cors_origins, allow_credentials=False)
        if settings.cors_origins
        else None,
        openapi_config=build_openapi_config(),
        request_max_body_size=settings.max_body_bytes,
        state=State(
            {
                "forum_settings": settings,
                "forum_alchemy_config": alchemy,
                "forum_jwt_auth": jwt_auth,
                "forum_unsubscribe_key": unsubscribe_key(settings.jwt_secret()),
            }
        ),
        debug=settings.debug,
    )
    app.state["forum_query_parameters"] = declared_query_parameters(app)
    name_pages(app.openapi_schema)  # built now, with every route, and served from this object
    exact_request_bodies(app.openapi_schema, [h for route in app.routes for h in getattr(route, "route_handlers", ())])
    document_problems(app.openapi_schema)
    _answer_options_with_every_method(app)
    return app
