"""The FastAPI application: Event API, SDK endpoints, REST API, health and the dashboard.

`create_app(settings)` is used by `pgqueue dev|serve`, tests, and the Lambda handler. With
`run_services=True` the lifespan also runs the runner, worker and rescuer in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api import errors
from api.routes import control as control_routes
from api.routes import events as events_routes
from api.routes import runs as runs_routes
from api.routes import sync as sync_routes
from pgqueue import __version__, appsync
from pgqueue.db import migrate
from pgqueue.db.pool import open_pool
from pgqueue.executor import invoke
from pgqueue.services import Services
from pgqueue.settings import Settings

log = logging.getLogger("pgqueue.api")


def create_app(settings: Settings, *, run_services: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.database_url, "database_url must be resolved before the app starts"
        app.state.pool = await open_pool(settings.database_url, max_size=settings.pool_size)
        app.state.http = invoke.new_client(connect_timeout_s=settings.connect_timeout_s, call_timeout_s=60.0)
        sync_tasks: list[asyncio.Task[None]] = []
        if run_services:
            app.state.services = Services(settings, app.state.pool)
            await app.state.services.start()
            for url in settings.sdk_urls:
                sync_tasks.append(asyncio.create_task(
                    appsync.sync_until_reachable(app.state.http, url, settings), name=f"pgqueue-sync-{url}"
                ))
        try:
            yield
        finally:
            for task in sync_tasks:
                task.cancel()
            if app.state.services is not None:
                await app.state.services.stop()
            await app.state.http.aclose()
            await app.state.pool.close()

    app = FastAPI(
        title="pgqueue",
        version=__version__,
        description="Durable functions on PostgreSQL alone: an Inngest-compatible server.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = None
    app.state.services = None
    errors.install(app)
    app.include_router(events_routes.router)
    app.include_router(sync_routes.router)
    app.include_router(runs_routes.router)
    app.include_router(control_routes.router)

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

    @app.get("/dev", tags=["ops"], summary="Dev server information", include_in_schema=False)
    async def dev_info() -> JSONResponse:
        if settings.production:
            return errors.error_response(404, "not found")
        return JSONResponse({"version": f"pgqueue-{__version__}", "mode": "dev", "features": {}})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        mode = "production" if settings.production else "development"
        return HTMLResponse(
            "<!doctype html><html><head><title>pgqueue</title></head><body>"
            f"<h1>pgqueue</h1><p>Server running in {mode} mode.</p>"
            "<ul><li><a href='/v1/apps'>Apps</a></li><li><a href='/v1/runs'>Runs</a></li>"
            "<li><a href='/v1/events'>Events</a></li><li><a href='/docs'>API docs</a></li></ul>"
            "</body></html>"
        )

    return app
