"""Request dependencies: the pool, settings and the kinds of authentication (event key, signing key
or API token, SDK signing key)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from api import auth
from api.limits import runs_before_body
from pgqueue.db.pool import Conn
from pgqueue.errors import SchemaNotReady, Unauthorized
from pgqueue.protocol import signing
from pgqueue.settings import Settings


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


def require_event_key(request: Request, event_key: str) -> None:
    """Dev mode accepts any key; production accepts only configured keys (constant time)."""
    cfg = settings(request)
    if not cfg.production:
        return
    given = event_key.encode()
    ok = False
    for key in cfg.event_keys:
        ok |= hmac.compare_digest(given, key.encode())
    if not ok:
        raise Unauthorized("Event key not found")


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
