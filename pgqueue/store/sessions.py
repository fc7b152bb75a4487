"""Dashboard sessions (table pgqueue.sessions) and the failed-login counts that throttle the login
(pgqueue.login_failures, pgqueue.login_admit_v1). The HTTP side, and why it is built this way, is in
api/sessions.py and api/throttle.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


@dataclass(frozen=True, slots=True)
class StoredSession:
    credential: str  # 'password', 'api_token' or 'signing_key'
    credential_mac: bytes
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class KeyAttempt:
    """One throttling key's answer to a login attempt (see pgqueue.login_admit_v1)."""

    key: str
    failures: int  # counted so far, this attempt included when admitted
    wait_ms: int  # > 0: refused, this key still waits so long
    lock_ms: int  # admitted: the wait this attempt sets if its password is wrong


async def create(
    conn: Conn, *, token_hash: bytes, credential: str, credential_mac: bytes, ttl_s: int, created_from: str
) -> datetime:
    cur = await conn.execute(q("session_create"), {
        "token_hash": token_hash, "credential": credential, "credential_mac": credential_mac, "ttl_s": ttl_s,
        "created_from": created_from,
    })
    row = await cur.fetchone()
    assert row is not None
    return row["expires_at"]


async def get(conn: Conn, token_hash: bytes) -> StoredSession | None:
    """The unexpired session with this token hash (a primary-key lookup), or None."""
    cur = await conn.execute(q("session_get"), {"token_hash": token_hash})
    row = await cur.fetchone()
    if row is None:
        return None
    return StoredSession(row["credential"], bytes(row["credential_mac"]), row["expires_at"])


async def end(conn: Conn, token_hash: bytes) -> None:
    await conn.execute(q("session_end"), {"token_hash": token_hash})


async def end_all(conn: Conn) -> int:
    cur = await conn.execute(q("session_end_all"))
    row = await cur.fetchone()
    return int(row["ended"]) if row else 0


async def login_admit(
    conn: Conn, limits: dict[str, int], *, lockout_ms: int, max_lockout_ms: int, forget_ms: int
) -> list[KeyAttempt]:
    """Count one login attempt on every key (key → failures allowed before it waits), or refuse it
    unrecorded while any key waits. Commit before checking the password: the rows stay locked until then."""
    cur = await conn.execute(q("login_admit"), {
        "keys": list(limits), "limits": list(limits.values()), "lockout_ms": lockout_ms,
        "max_lockout_ms": max_lockout_ms, "forget_ms": forget_ms,
    })
    return [KeyAttempt(r["key"], r["failures"], r["wait_ms"], r["lock_ms"]) for r in await cur.fetchall()]


async def login_forget(conn: Conn, *, address_key: str, account_key: str | None, account_limit: int) -> None:
    await conn.execute(q("login_forget"), {
        "address_key": address_key, "account_key": account_key, "account_limit": account_limit,
    })
