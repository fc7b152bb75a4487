"""The async connection pool. Connections carry no session state, so a pooler may sit in front."""

from __future__ import annotations

import select
import time

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

Conn = AsyncConnection[dict]


async def _configure(conn: AsyncConnection) -> None:
    conn.row_factory = dict_row  # type: ignore[assignment]


async def _check(conn: AsyncConnection) -> None:
    """Checked out: a healthy idle connection has nothing to read, so only one with unread input
    (the server said goodbye: a terminated backend, a restart, an idle timeout) pays for a round
    trip, which fails and makes the pool replace it. Saves a round trip on every checkout."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    # poll(), not select(): select() cannot watch a descriptor past 1024, which a process holding
    # many sockets (realtime subscribers) gives its database connections
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):
        await AsyncConnectionPool.check_connection(conn)


class Pool(AsyncConnectionPool):
    """A pool whose checkout skips dead connections at once.

    psycopg_pool's own `check=` backs the client off exponentially (1, 2, 4, 8, 16 s) after each
    dead connection it is handed: after a failover or a wave of terminated backends, a request
    found one dead connection after another and gave up after 30 s with the pool full of fresh
    replacements. Here a dead connection is handed back (the pool discards and replaces it) and the
    next one is tried straight away; a whole pool of dead ones costs one quick check each."""

    async def getconn(self, timeout: float | None = None) -> AsyncConnection:  # type: ignore[override]
        # One deadline for the whole checkout, however many dead connections it skips.
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for _ in range(self.max_size + 1):
            conn = await super().getconn(max(deadline - time.monotonic(), 0.0))
            try:
                await _check(conn)
            except psycopg.Error:
                await self.putconn(conn)
                continue
            return conn
        # Every try was dead: hand one out unchecked; its first statement fails like any lost connection.
        return await super().getconn(max(deadline - time.monotonic(), 0.0))


async def open_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 10, name: str = "pgqueue", pooler: bool = False
) -> Pool:
    """`pooler=True` (PgBouncer transaction mode, RDS Proxy): psycopg never prepares statements on
    the server (`prepare_threshold=None`), because the next transaction may run on another backend
    and named statements pin RDS Proxy sessions."""
    kwargs: dict[str, object] = {"autocommit": True, "connect_timeout": 10}
    if pooler:
        kwargs["prepare_threshold"] = None
    pool = Pool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        configure=_configure,
        kwargs=kwargs,
        reconnect_timeout=3600,
    )
    await pool.open(wait=True, timeout=30)
    return pool
