"""A poison event cannot wedge the engine through a trigger expression: regular expressions that take
exponential or quadratic time in a backtracking engine, against a 120 KB string, are evaluated by RE2
in linear time while /health keeps answering, and the right functions run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pgqueue.db.notify import Wakeup
from pgqueue.runner.loop import Runner
from tests.api.conftest import ApiFactory

EXPONENTIAL = 'event.data.s.matches("(a|a)*b")'
QUADRATIC = 'event.data.s.matches(".*@example\\\\.com$")'
BIG = 120_000

REGISTER = {
    "appName": "poison",
    "url": "http://127.0.0.1:9/api/inngest",
    "functions": [
        {"id": "poison-ab", "name": "ab", "triggers": [{"event": "poison/s", "expression": EXPONENTIAL}]},
        {"id": "poison-mail", "name": "mail", "triggers": [{"event": "poison/s", "expression": QUADRATIC}]},
    ],
}


async def _health_while(api: Any, work: asyncio.Task[Any], *, limit_s: float = 30.0) -> list[float]:
    """Latencies of GET /health, one after the other, until `work` is done (and at least five)."""
    latencies: list[float] = []
    deadline = time.monotonic() + limit_s
    while (not work.done() or len(latencies) < 5) and time.monotonic() < deadline:
        started = time.perf_counter()
        resp = await api.client.get("/health")
        latencies.append(time.perf_counter() - started)
        assert resp.status_code == 200, resp.text
    return latencies


async def test_catastrophic_patterns_on_a_big_event_neither_block_nor_misfire(make_api: ApiFactory) -> None:
    api = await make_api()
    assert (await api.client.post("/fn/register", json=REGISTER)).status_code == 200
    events = [
        {"name": "poison/s", "data": {"s": "a" * BIG}},  # neither: no b, no address
        {"name": "poison/s", "data": {"s": "a" * BIG + "b"}},  # (a|a)*b only
        {"name": "poison/s", "data": {"s": "x" * BIG + "@example.com"}},  # the address only
    ]
    ids: list[str] = []
    for event in events:  # one request each: together they would pass the 512 KB request limit
        resp = await api.client.post("/e/key", json=event)
        assert resp.status_code == 200, resp.text
        ids += resp.json()["ids"]

    runner = Runner(api.app.state.pool, wakeup=Wakeup())
    work = asyncio.create_task(runner.drain(), name="runner drain")
    latencies = await _health_while(api, work)
    tick = await asyncio.wait_for(work, timeout=30)

    assert tick.events_seen == 3
    assert max(latencies) < 0.1, f"/health took up to {max(latencies) * 1000:.0f} ms while the runner ran"
    rows = await api.rows(
        "SELECT e.id, e.skip_reason, array_remove(array_agg(f.slug ORDER BY f.slug), NULL) AS functions"
        " FROM pgqueue.events e LEFT JOIN pgqueue.runs r ON r.event_id = e.id"
        " LEFT JOIN pgqueue.functions f ON f.id = r.function_id GROUP BY e.id, e.skip_reason"
    )
    by_id = {row["id"]: row for row in rows}
    assert [by_id[i]["functions"] for i in ids] == [[], ["poison-ab"], ["poison-mail"]]
    assert [by_id[i]["skip_reason"] for i in ids] == [None, None, None]
