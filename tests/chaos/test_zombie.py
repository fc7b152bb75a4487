"""A zombie worker (its lease expired, another worker finished the item) reports late: its writes
change nothing. Deterministic: real database, the production claim/rescue/apply functions."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from pgqueue.db.pool import open_pool
from pgqueue.executor.apply import Applier
from pgqueue.protocol.outcome import Op, Ops
from pgqueue.store import queue
from tests.sql.test_flow_control import _function, _runs


async def test_late_zombie_changes_nothing(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        fn = _function(conn, "zombie")
        [run_id] = _runs(conn, fn, 1, max_attempts=3)
    pool = await open_pool(database_url, max_size=4)
    try:
        applier = Applier(backoff_scale=0)
        async with pool.connection() as conn:
            [zombie] = await queue.claim(conn, "worker-a", 1, 1000)
            # Worker A stalls; its lease expires and the rescuer hands the item back.
            await conn.execute("UPDATE pgqueue.queue_items SET lease_expires_at = now() - interval '1 second'")
            [rescued] = await queue.rescue_expired(conn, max_interrupts=5)
            assert not rescued["exhausted"]
            [fresh] = await queue.claim(conn, "worker-b", 1, 30_000)
        assert fresh.id == zombie.id and fresh.lease_token != zombie.lease_token
        started = datetime.now(UTC)
        winner = Ops((Op(op="StepRun", id="s1", name="s1", data="from B", has_data=True),), 2, False, None)
        loser = Ops((Op(op="StepRun", id="s1", name="s1", data="from A (late)", has_data=True),
                     Op(op="StepRun", id="s2", name="s2", data="A only", has_data=True)), 2, False, None)
        async with pool.connection() as conn:
            assert (await applier.apply(conn, fresh, winner, started_at=started)).applied
            late = await applier.apply(conn, zombie, loser, started_at=started)
        assert late.applied is False
        with psycopg.connect(database_url) as conn:
            steps = conn.execute("SELECT step_id, memo FROM pgqueue.steps WHERE run_id = %s ORDER BY seq",
                                 (run_id,)).fetchall()
            items = conn.execute("SELECT step_id, state::text FROM pgqueue.queue_items WHERE run_id = %s",
                                 (run_id,)).fetchall()
        assert steps == [("s1", {"data": "from B"})]
        assert items == [("step", "available")]  # B's follow-up discovery call, nothing of A's
    finally:
        await pool.close()
