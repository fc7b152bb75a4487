"""Dashboard sessions (table pgqueue.sessions). The HTTP side, and why it is built this way, is in
api/sessions.py."""

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
