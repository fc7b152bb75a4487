"""The connection pool checks a connection on checkout only when the server has said something to
it while idle; a connection whose backend is gone is replaced without the caller seeing an error."""

from __future__ import annotations

import asyncio
import os
import resource

import psycopg
import pytest

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


async def test_a_pool_of_dead_connections_serves_the_next_checkout_without_backing_off(database_url: str) -> None:
    # A failover or a wave of terminated backends leaves every idle connection dead. psycopg_pool's
    # own check backs the client off 1 s after the first dead one, then 2 s, 4 s...: a checkout
    # with a short timeout used to fail even though fresh connections were on their way.
    pool = await open_pool(database_url, min_size=4, max_size=4)
    try:
        with psycopg.connect(database_url, autocommit=True) as admin:
            for _ in range(3):
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                await asyncio.sleep(0.3)
                async with pool.connection(timeout=0.8) as conn:
                    assert (await (await conn.execute("SELECT 1 AS one")).fetchone())["one"] == 1
    finally:
        await pool.close()


async def test_checkout_works_in_a_process_with_more_than_1024_open_files(database_url: str) -> None:
    """A realtime process holds a socket per subscriber: the pool's connections then get file
    descriptors past 1024, which select() cannot watch (it raised ValueError on every checkout)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.fail(f"the test needs an open-files limit of at least 1200 (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        pool = await open_pool(database_url, max_size=2)
        try:
            async with pool.connection() as conn:
                assert conn.fileno() > 1024
                assert await (await conn.execute("SELECT 1 AS one")).fetchone() == {"one": 1}
            async with pool.connection() as conn:  # the checkout check runs on this one
                assert await (await conn.execute("SELECT 2 AS two")).fetchone() == {"two": 2}
        finally:
            await pool.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
