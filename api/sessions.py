"""Server-side dashboard sessions (serve mode), kept in pgqueue.sessions so that every server process
and every Lambda container sees the same ones and a session can end before it expires.

The cookie is `s1.<token>`, 32 random bytes; the table holds only the token's SHA-256, so reading
the table gives no usable session. A signed-in request costs one primary-key lookup, and then a
check, in memory, that the credential which opened the session (its HMAC, api/auth.py) is still one
the login accepts: changing PGQUEUE_ADMIN_PASSWORD, removing or rotating an API token, or setting a
password where the signing key used to open the dashboard ends those sessions on the next request
(of a process running the new configuration). Logout deletes the row; "sign out everywhere" deletes
them all. Sessions last SESSION_TTL_S from the login, with no sliding renewal (that would cost a
write per request).

Dev mode has no login and nothing to end: its session is the signed cookie of api/auth.py.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

from fastapi import Request

from api import auth, deps
from pgqueue.store import sessions as store

log = logging.getLogger("pgqueue.api")

COOKIE_VERSION = "s1"
_NOT_LOOKED_UP = object()


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def _token_of(cookie: str | None) -> str | None:
    if not cookie or len(cookie) > 100:
        return None
    version, _, token = cookie.partition(".")
    if version != COOKIE_VERSION or not 32 <= len(token) <= 64 or not token.isascii():
        return None
    return token


async def open_session(request: Request, credential: auth.Credential, address: str) -> auth.Session:
    """Store a new session for a login with `credential` from `address`; the returned session is
    fresh and carries the cookie value to set."""
    token = secrets.token_urlsafe(32)
    token_hash = _token_hash(token)
    async with deps.pool(request).connection() as conn:
        expires_at = await store.create(
            conn, token_hash=token_hash, credential=credential.kind, credential_mac=credential.mac,
            ttl_s=auth.SESSION_TTL_S, created_from=address[:64],
        )
    return auth.Session("admin", token_hash.hex(), int(expires_at.timestamp()), fresh=True,
                        cookie=f"{COOKIE_VERSION}.{token}")


async def current(request: Request) -> auth.Session | None:
    """The request's session, or None: in serve mode a stored, unexpired session whose credential is
    still accepted; in dev mode a valid signed cookie. Looked up once per request."""
    cached: Any = getattr(request.state, "pgqueue_session", _NOT_LOOKED_UP)
    if cached is not _NOT_LOOKED_UP:
        return cached  # type: ignore[no-any-return]
    session = await _lookup(request)
    request.state.pgqueue_session = session
    return session


async def _lookup(request: Request) -> auth.Session | None:
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    cfg = deps.settings(request)
    if not cfg.production:
        return auth.decode(cookie, auth.session_key(request))
    token = _token_of(cookie)
    if token is None:
        return None
    token_hash = _token_hash(token)
    async with deps.pool(request).connection() as conn:
        stored = await store.get(conn, token_hash)
        if stored is None:
            return None
        if not auth.still_accepted(cfg, stored.credential_mac):
            # the password or token that opened it changed: this session is over for good
            await store.end(conn, token_hash)
            log.info("dashboard session ended: the %s that opened it is no longer accepted",
                     stored.credential.replace("_", " "))
            return None
    return auth.Session("admin", token_hash.hex(), int(stored.expires_at.timestamp()))


async def end(request: Request, session: auth.Session) -> None:
    """Logout: the session's row goes, so its cookie opens nothing anywhere from now on."""
    if not deps.settings(request).production:
        return
    async with deps.pool(request).connection() as conn:
        await store.end(conn, bytes.fromhex(session.sid))
    request.state.pgqueue_session = None


async def end_all(request: Request, *, by: str) -> int:
    """Sign out everywhere: every dashboard session ends. Returns how many there were."""
    async with deps.pool(request).connection() as conn:
        ended = await store.end_all(conn)
    request.state.pgqueue_session = None
    log.warning("ended every dashboard session (%d), asked by %s", ended, by)
    return ended
