"""One poisoned event in a batch must not hold back the others.

Two Runner instances on separate pools share an inbox of 50 healthy events (two functions) and two
poisoned ones. The faults are real database errors injected for this test only: a trigger on
pgqueue.runs refuses the run of one event (so starting its runs fails), and a trigger on
pgqueue.pauses refuses to consume the cancel listener one event matches (so resuming waiting runs
fails). Every healthy event must become a run in a bounded number of ticks, the inbox must drain,
and each poisoned event must say why it started nothing, in the REST API and on its dashboard page.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from pgqueue.apps import registration
from pgqueue.db.notify import Wakeup
from pgqueue.db.pool import open_pool
from pgqueue.events import ingest
from pgqueue.runner.loop import Runner
from pgqueue.settings import Settings
from pgqueue.store import apps, events

FUNCTIONS: list[dict[str, Any]] = [
    {"id": "alpha", "triggers": [{"event": "poison/a"}]},
    {"id": "beta", "triggers": [{"event": "poison/b"}]},
    # A long-lived run with a cancel listener: the target of the matching fault.
    {"id": "gamma", "triggers": [{"event": "poison/g"}], "cancel": [{"event": "poison/stop"}]},
]
HEALTHY = 50
MAX_ROUNDS = 8


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=database_url).validated(), run_services=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c,
    ):
        yield c


@pytest.fixture
async def pools(database_url: str) -> AsyncIterator[list[AsyncConnectionPool]]:
    opened = [await open_pool(database_url, max_size=2) for _ in range(2)]
    try:
        async with opened[0].connection() as conn, conn.transaction():
            await apps.sync(conn, registration.parse_register(
                {"appName": "poison", "url": "http://127.0.0.1:9/api/inngest", "functions": FUNCTIONS}))
        yield opened
    finally:
        for pool in opened:
            await pool.close()


async def send(pool: AsyncConnectionPool, raw: list[dict[str, Any]]) -> list[str]:
    parsed = ingest.parse_events(json.dumps(raw).encode(), seed_header=None, max_event_bytes=1 << 20,
                                 max_events=len(raw))
    async with pool.connection() as conn, conn.transaction():
        await events.ingest(conn, parsed)
    return [e.id for e in parsed]


async def scalar(pool: AsyncConnectionPool, query: str, params: Any = None) -> Any:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    assert row is not None
    return next(iter(row.values()))


async def inject_faults(pool: AsyncConnectionPool, bad_start: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(f"""
            CREATE FUNCTION public.poison_run() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.event_id = '{bad_start}' THEN
                    RAISE EXCEPTION 'injected fault: no run for event %', NEW.event_id;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER poison_run BEFORE INSERT ON pgqueue.runs
                FOR EACH ROW EXECUTE FUNCTION public.poison_run();
            CREATE FUNCTION public.poison_pause() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'injected fault: pause % cannot be consumed', OLD.id;
            END $$;
            CREATE TRIGGER poison_pause BEFORE DELETE ON pgqueue.pauses
                FOR EACH ROW WHEN (OLD.event_name = 'poison/stop') EXECUTE FUNCTION public.poison_pause();
        """)  # type: ignore[arg-type]


async def test_two_runners_drain_a_poisoned_inbox(
    pools: list[AsyncConnectionPool], client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = pools
    runners = [Runner(pool, wakeup=Wakeup(), batch_size=20) for pool in pools]
    [listener_event] = await send(first, [{"name": "poison/g"}])
    await runners[0].drain()
    listener_run = await scalar(first, "SELECT id FROM pgqueue.runs WHERE event_id = %s", (listener_event,))

    healthy_a = await send(first, [{"name": "poison/a", "data": {"n": i}} for i in range(HEALTHY // 2)])
    [bad_start] = await send(first, [{"name": "poison/a", "data": {"poison": True}}])
    [bad_match] = await send(second, [{"name": "poison/stop"}])
    healthy_b = await send(second, [{"name": "poison/b", "data": {"n": i}} for i in range(HEALTHY // 2)])
    await inject_faults(first, bad_start)

    caplog.set_level(logging.WARNING, logger="pgqueue.runner.loop")
    rounds = 0
    while await scalar(first, "SELECT count(*) AS n FROM pgqueue.event_inbox"):
        rounds += 1
        assert rounds <= MAX_ROUNDS, "the runners keep retrying a poisoned batch"
        await asyncio.gather(*(r.run_once() for r in runners))

    started = "SELECT count(*) AS n FROM pgqueue.runs WHERE event_id = %s"
    for event_id in healthy_a + healthy_b:
        assert await scalar(first, started, (event_id,)) == 1
    assert await scalar(first, "SELECT count(*) AS n FROM pgqueue.runs") == HEALTHY + 1
    # The cancel that could not be applied was rolled back whole: the run still waits for work.
    status = "SELECT status::text AS s FROM pgqueue.runs WHERE id = %s"
    assert await scalar(first, status, (listener_run,)) == "queued"

    resp = await client.get(f"/v1/events/{bad_start}/runs")
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == []
    reason = resp.json()["metadata"]["skip_reason"]
    assert reason.startswith("could not start runs: RaiseException: injected fault: no run for event")
    assert "Traceback" not in reason and "\n" not in reason
    resp = await client.get(f"/v1/events/{bad_match}/runs")
    assert resp.json()["metadata"]["skip_reason"].startswith(
        "could not resume waiting runs: RaiseException: injected fault: pause")
    healthy = await client.get(f"/v1/events/{healthy_b[0]}/runs")
    assert len(healthy.json()["data"]) == 1 and healthy.json()["metadata"]["skip_reason"] is None

    page = await client.get(f"/events/{bad_start}")
    assert page.status_code == 200
    assert "Why no run: could not start runs: RaiseException: injected fault" in page.text

    # Each poisoned event is logged once, with its exception.
    for event_id in (bad_start, bad_match):
        logged = [r for r in caplog.records if event_id in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None, [r.getMessage() for r in logged]
