"""Request dependencies: the pool, settings and the kinds of authentication (event key, signing key
or API token, SDK signing key)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from api import auth
from api.limits import runs_before_body
from pgqueue.db.pool import Conn
from pgqueue.errors import SchemaNotReady, Unauthorized
from pgqueue.events import deliveries, keys
from pgqueue.protocol import signing
from pgqueue.settings import Settings
from pgqueue.store import webhooks as webhooks_store


def settings(request: Request) -> Settings:
    return request.app.state.settings


def pool(request: Request) -> AsyncConnectionPool:
    p = request.app.state.pool
    if p is None:
        raise SchemaNotReady("the database is not reachable yet")
    return p


async def connection(request: Request) -> AsyncIterator[Conn]:
    async with pool(request).connection() as conn:
        yield conn


def _environment_key(cfg: Settings, event_key: str) -> bool:
    given = event_key.encode()
    ok = False
    for key in cfg.event_keys:  # constant time, over every configured key
        ok |= hmac.compare_digest(given, key.encode())
    return ok


async def event_key(request: Request, event_key: str) -> dict[str, Any] | None:
    """What the key of /e/{key} is: None for a key of PGQUEUE_EVENT_KEYS (or any key in dev mode),
    else the stored key's row: a webhook, or an event key (its `event_names` filter applies).

    Keys are looked up by hash (pgqueue.store.webhooks.key_hash). Dev mode accepts any key, so it
    looks up only the keys pgqueue makes (whk_ webhooks, evk_ event keys): a plain POST /e costs no
    query. Production refuses an unknown or revoked key with Inngest's 401."""
    cfg = settings(request)
    if _environment_key(cfg, event_key):
        return None
    if cfg.production or event_key.startswith((deliveries.KEY_PREFIX, keys.KEY_PREFIX)):
        async with pool(request).connection() as conn:
            row = await webhooks_store.lookup_key(conn, event_key)
        if row is not None and (row["kind"] == "webhook" or row["revoked_at"] is None):
            return row
    if cfg.production:
        raise Unauthorized("Event key not found")
    return None


def check_signing_key(request: Request) -> None:
    """REST endpoints: `Authorization: Bearer <signing key or its hash, or an API token>` in production.

    Both checks always run (constant time over every configured key and token)."""
    cfg = settings(request)
    if not cfg.production:
        return
    header = request.headers.get("authorization")
    by_key = signing.verify_bearer(header, cfg.signing_keys)
    by_token = auth.verify_api_token(header, cfg.api_tokens)
    if not (by_key or by_token):
        if cfg.api_tokens:
            raise Unauthorized(
                "missing or invalid Authorization bearer token: use the signing key, its hash or an API token"
            )
        raise Unauthorized("missing or invalid Authorization bearer token: use the signing key or its hash")


def check_sdk_key(request: Request) -> None:
    """SDK endpoints (registration): the signing key only, raw or hashed; API tokens are for people."""
    cfg = settings(request)
    if not cfg.production:
        return
    if not signing.verify_bearer(request.headers.get("authorization"), cfg.signing_keys):
        raise Unauthorized("missing or invalid Authorization bearer token: use the signing key or its hash")


# The Depends() forms are coroutines: FastAPI runs a plain function dependency in a worker thread,
# a thread hop on every request (a third of the API's CPU per JS SDK checkpoint).
@runs_before_body
async def require_signing_key(request: Request) -> None:
    check_signing_key(request)


@runs_before_body
async def require_sdk_key(request: Request) -> None:
    check_sdk_key(request)
