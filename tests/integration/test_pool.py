"""The connection pool checks a connection on checkout only when the server has said something to
it while idle; a connection whose backend is gone is replaced without the caller seeing an error."""

from __future__ import annotations

import asyncio

import psycopg

from pgqueue.db.pool import open_pool


async def test_a_terminated_backend_is_replaced_on_checkout(database_url: str) -> None:
    pool = await open_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.connection() as conn:
            before = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())["pid"]
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (before,))
        await asyncio.sleep(0.3)  # the FATAL message reaches the idle connection's socket
        async with pool.connection() as conn:
            after = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())["pid"]
        assert after != before
    finally:
        await pool.close()


async def test_a_healthy_connection_is_reused_as_is(database_url: str) -> None:
    pool = await open_pool(database_url, min_size=1, max_size=1)
    try:
        pids = set()
        for _ in range(5):
            async with pool.connection() as conn:
                pids.add((await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())["pid"])
        assert len(pids) == 1
    finally:
        await pool.close()
