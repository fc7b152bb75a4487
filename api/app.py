"""The FastAPI application: Event API, SDK endpoints, REST API, health and the dashboard.

`create_app(settings)` is used by `pgqueue dev|serve`, tests, and the Lambda handler. With
`run_services=True` the lifespan also runs the runner, worker and rescuer in this process. The
lifespan always runs the realtime hub (pgqueue/realtime/hub.py), which feeds this process's
subscribers. The Lambda handler runs without a lifespan (Mangum would run it on every invocation)
and passes `open_pool_lazily`: the pool and HTTP client are then opened by the first request and
kept for the life of the container; it has no hub (it cannot hold subscriber connections).
`surface="realtime"` is `pgqueue realtime`: the realtime routes and /health only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp

from api import docs, errors, limits, security
from api.dashboard import routes as dashboard
from api.routes import checkpoint as checkpoint_routes
from api.routes import control as control_routes
from api.routes import events as events_routes
from api.routes import functions as functions_routes
from api.routes import gql as gql_routes
from api.routes import inspect as inspect_routes
from api.routes import realtime as realtime_routes
from api.routes import runs as runs_routes
from api.routes import search as search_routes
from api.routes import sessions as sessions_routes
from api.routes import signals as signals_routes
from api.routes import sync as sync_routes
from api.routes import webhooks as webhooks_routes
from pgqueue import __version__
from pgqueue.apps import sync
from pgqueue.db import migrate
from pgqueue.db.pool import open_pool
from pgqueue.executor import invoke
from pgqueue.realtime import publishing
from pgqueue.realtime.hub import Hub
from pgqueue.serverless import kick
from pgqueue.services.process import Services
from pgqueue.settings import Settings

log = logging.getLogger("pgqueue.api")


def realtime_hub(settings: Settings, pool: AsyncConnectionPool) -> Hub:
    """The hub of this process: it LISTENs on the database (on PGQUEUE_REALTIME_LISTEN_URL, a direct
    connection, when the pool goes through a transaction pooler), or polls behind a pooler without one."""
    listen = settings.realtime_listen_url or (None if settings.pooler else settings.database_url)
    return Hub(pool, listen_conninfo=listen, poll_interval_s=settings.realtime_poll_ms / 1000.0,
               buffer_messages=settings.realtime_buffer_messages, buffer_bytes=settings.realtime_buffer_bytes)


def create_app(
    settings: Settings,
    *,
    run_services: bool = True,
    open_pool_lazily: Callable[[], Awaitable[AsyncConnectionPool]] | None = None,
    surface: Literal["all", "realtime"] = "all",
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.database_url, "database_url must be resolved before the app starts"
        app.state.pool = await open_pool(
            settings.database_url, max_size=settings.pool_size, pooler=settings.pooler
        )
        app.state.http = invoke.client_for(settings, call_timeout_s=60.0)
        app.state.realtime = realtime_hub(settings, app.state.pool)
        app.state.realtime.start()
        app.state.realtime_publisher = publishing.Batcher(app.state.pool,
                                                          max_bytes=settings.realtime_max_message_bytes)
        sync_tasks: list[asyncio.Task[None]] = []
        if run_services:
            app.state.services = Services(settings, app.state.pool)
            await app.state.services.start()
            for url in settings.sdk_urls:
                sync_tasks.append(asyncio.create_task(
                    sync.sync_until_reachable(app.state.http, url, settings), name=f"pgqueue-sync-{url}"
                ))
        try:
            yield
        finally:
            for task in sync_tasks:
                task.cancel()
            if app.state.services is not None:
                await app.state.services.stop()
            await app.state.realtime.stop()
            await app.state.http.aclose()
            await app.state.pool.close()

    app = _App(
        title="pgqueue",
        version=__version__,
        description="Durable functions on PostgreSQL alone: an Inngest-compatible server.",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN; api/docs.py serves /docs itself.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.pool = None
    app.state.services = None
    app.state.realtime = None
    app.state.realtime_publisher = None  # group commit of publishes, with the lifespan (not on Lambda)
    app.state.kicker = kick.Kicker.from_settings(settings)
    if open_pool_lazily is not None:
        app.add_middleware(_OpenOnFirstRequest, open_pool=open_pool_lazily, settings=settings)
    # Outermost last: the cross-site guard answers before any route runs, and its refusals (a body
    # left unread) close the connection through the body limit's send.
    app.add_middleware(security.CrossSiteGuard, settings=settings)
    # Every request body is counted against its route's limit before anything reads it.
    app.add_middleware(limits.BodyLimitMiddleware, settings=settings)
    errors.install(app)
    app.include_router(realtime_routes.router)
    app.include_router(realtime_routes.subscribe_router)
    app.include_router(realtime_routes.stats_router)
    if surface == "realtime":
        _health(app, settings)
        return app
    app.include_router(events_routes.router)
    app.include_router(sync_routes.router)
    app.include_router(search_routes.router)
    app.include_router(runs_routes.router)
    app.include_router(signals_routes.router)
    app.include_router(checkpoint_routes.router)
    app.include_router(checkpoint_routes.output_router)
    app.include_router(control_routes.router)
    app.include_router(functions_routes.router)
    app.include_router(inspect_routes.router)
    app.include_router(webhooks_routes.router)
    app.include_router(gql_routes.router)
    app.include_router(sessions_routes.router)
    app.include_router(docs.router)
    dashboard.install(app)
    _health(app, settings)

    @app.get("/dev", tags=["ops"], summary="Dev server information", include_in_schema=False)
    async def dev_info() -> JSONResponse:
        if settings.production:
            return errors.error_response(404, "not found")
        return JSONResponse({"version": f"pgqueue-{__version__}", "mode": "dev", "features": {}})

    return app


def _health(app: FastAPI, settings: Settings) -> None:
    @app.get("/health", tags=["ops"], summary="Liveness and schema check")
    async def health(request: Request) -> JSONResponse:
        try:
            async with request.app.state.pool.connection() as conn:
                version = await migrate.current_version_async(conn)
        except (psycopg.Error, AttributeError) as exc:
            return errors.error_response(503, f"database unreachable: {type(exc).__name__}")
        problem = migrate.schema_problem(version)
        if problem:
            return errors.error_response(503, problem)
        return JSONResponse({"status": "ok", "mode": settings.mode, "schema_version": version})


class _App(FastAPI):
    """FastAPI with the security headers outside its whole middleware stack, so the 500 answer of
    its ServerErrorMiddleware carries them too."""

    def build_middleware_stack(self) -> ASGIApp:
        return security.SecurityHeaders(super().build_middleware_stack(), settings=self.state.settings)


class _OpenOnFirstRequest:
    """ASGI middleware for the Lambda handler: the first request opens the pool and HTTP client;
    later requests (warm invocations of the same container) reuse them. If the database cannot be
    reached the request goes on without a pool and answers 503, and the next request tries again."""

    def __init__(
        self, app: Any, *, open_pool: Callable[[], Awaitable[AsyncConnectionPool]], settings: Settings
    ) -> None:
        self.app = app
        self.open_pool = open_pool
        self.settings = settings
        self._lock: asyncio.Lock | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["app"].state.pool is None:
            state = scope["app"].state
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if state.pool is None:
                    if getattr(state, "http", None) is None:
                        state.http = invoke.client_for(self.settings, call_timeout_s=60.0)
                    try:
                        state.pool = await self.open_pool()
                    except Exception as exc:
                        log.warning("opening the database pool failed: %s", exc)
        await self.app(scope, receive, send)
