"""The real FastAPI app driven in-process over httpx's ASGI transport, against a fresh migrated database.

ASGITransport does not run the lifespan, so the fixtures enter it themselves: the pool the routes
use is opened and closed exactly as under uvicorn. Services (runner, worker) stay off; tests that
need a run call `Runner.run_once()` themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from api.app import create_app
from pgqueue.protocol import signing
from pgqueue.settings import Settings

SIGNING_KEY = "signkey-prod-" + "0123456789abcdef" * 4
FALLBACK_KEY = "signkey-prod-" + "fedcba9876543210" * 4
OTHER_KEY = "signkey-test-" + "00112233445566778899aabbccddeeff" * 2
EVENT_KEY = "api-test-event-key"
BEARER = {"authorization": f"Bearer {signing.hashed_key(SIGNING_KEY)}"}

# Tables whose row counts show whether a request stored anything.
EVENT_TABLES = ("events", "event_inbox", "event_dedupe")
APP_TABLES = ("apps", "functions", "function_triggers")


@dataclass
class Api:
    client: httpx.AsyncClient
    database_url: str
    settings: Settings
    app: Any

    async def counts(self, tables: tuple[str, ...] = EVENT_TABLES) -> dict[str, int]:
        out: dict[str, int] = {}
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            for table in tables:
                cur = await conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pgqueue", table))
                )
                row = await cur.fetchone()
                assert row is not None
                out[table] = int(row[0])
        return out

    async def rows(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, row_factory=psycopg.rows.dict_row
        ) as conn:
            cur = await conn.execute(query, params)
            return list(await cur.fetchall())

    async def execute(self, query: str, params: Any = None) -> None:
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            await conn.execute(query, params)


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(database_url: str) -> AsyncIterator[ApiFactory]:
    """make_api(**settings) → an Api over a running app; everything is closed after the test.
    These tests look at what ingest stores, so the events stay in the inbox for a runner the test
    drives (inline_start=False) unless a test asks for the one-hop start."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(url: str = database_url, **overrides: Any) -> Api:
            settings = Settings(database_url=url, **{"inline_start": False, **overrides}).validated()
            app = create_app(settings, run_services=False)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
            )
            return Api(client, url, settings, app)

        yield make


@contextlib.asynccontextmanager
async def module_api(pg_admin_url: str, template_db: str, **overrides: Any) -> AsyncIterator[Api]:
    from tests.conftest import create_database, drop_database

    url = create_database(pg_admin_url, template_db)
    try:
        settings = Settings(database_url=url, **overrides).validated()
        app = create_app(settings, run_services=False)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost"
            ) as client,
        ):
            yield Api(client, url, settings, app)
    finally:
        drop_database(pg_admin_url, url)


SERVE_SETTINGS: dict[str, Any] = {
    "mode": "serve",
    "signing_key": SIGNING_KEY,
    "signing_key_fallback": FALLBACK_KEY,
    "event_keys": (EVENT_KEY,),
    # The registered test URLs are on loopback, which production refuses at sync unless allowed.
    "allow_loopback": True,
}


@pytest.fixture(scope="module")
async def shared_api(pg_admin_url: str, template_db: str) -> AsyncIterator[Api]:
    """One dev-mode app and database for a whole module: for requests that must store nothing,
    where each test asserts the tables are unchanged (cheaper than a database per case)."""
    async with module_api(pg_admin_url, template_db) as api:
        yield api


@pytest.fixture(scope="module")
async def shared_serve_api(pg_admin_url: str, template_db: str) -> AsyncIterator[Api]:
    """The production-mode counterpart of `shared_api`."""
    async with module_api(pg_admin_url, template_db, **SERVE_SETTINGS) as api:
        yield api


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    """Dev mode: any event key, no bearer token."""
    return await make_api()


@pytest.fixture
async def serve_api(make_api: ApiFactory) -> Api:
    """Production mode with a current and a fallback signing key and one event key."""
    return await make_api(**SERVE_SETTINGS)


def assert_error(resp: httpx.Response, status: int, *fragments: str) -> str:
    """The response is exactly `{"error": <str>, "status": <status>}`; returns the message."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "status"}, body
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body["error"])
    return str(body["error"])


def register_body(
    *functions: dict[str, Any],
    app: str = "shop",
    url: str = "http://127.0.0.1:9/api/inngest",
    app_key: str = "appName",
) -> dict[str, Any]:
    return {
        app_key: app,
        "url": url,
        "v": "0.1",
        "deployType": "ping",
        "sdk": "py:v0.5.19",
        "framework": "fastapi",
        "functions": list(functions),
    }


def function(slug: str, *triggers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": slug,
        "name": slug,
        "triggers": list(triggers) or [{"event": "shop/order.created"}],
        "steps": {
            "step": {
                "id": "step",
                "name": "step",
                "runtime": {"type": "http", "url": f"http://127.0.0.1:9/api/inngest?fnId={slug}&stepId=step"},
                "retries": {"attempts": 3},
            }
        },
        **extra,
    }
