"""A future `ts` schedules an event's runs for that time (Inngest's "schedule a function for
later"): the run exists at once, its first call waits until `ts`; more than a year ahead is a 400."""

from __future__ import annotations

import time

from pgqueue.db.notify import Wakeup
from pgqueue.runner.loop import Runner
from tests.api.conftest import Api, assert_error, function, register_body


async def _register(api: Api, **extra: object) -> None:
    fn = function("shop-later", {"event": "shop/remind"}, **extra)
    r = await api.client.post("/fn/register", json=register_body(fn))
    assert r.status_code == 200, r.text


async def _first_call(api: Api, run_id: str) -> dict[str, object]:
    [item] = await api.rows(
        "SELECT kind, step_id, state::text AS state, extract(epoch FROM run_at) * 1000 AS run_at_ms"
        " FROM pgqueue.queue_items WHERE run_id = %s AND kind = 'call'",
        (run_id,),
    )
    return item


async def test_a_future_ts_creates_the_run_now_and_schedules_its_first_call_for_ts(api: Api) -> None:
    await _register(api)
    ts = int(time.time() * 1000) + 60_000
    r = await api.client.post("/e/key", json={"name": "shop/remind", "ts": ts, "data": {"n": 1}})
    assert r.status_code == 200, r.text
    [event_id] = r.json()["ids"]
    await Runner(api.app.state.pool, wakeup=Wakeup()).drain()
    [run] = (await api.client.get(f"/v1/events/{event_id}/runs")).json()["data"]
    assert run["status"] == "Queued"
    item = await _first_call(api, run["run_id"])
    assert item["step_id"] == "step" and item["state"] == "available"
    assert abs(float(item["run_at_ms"]) - ts) < 1_000, (item, ts)  # type: ignore[arg-type]
    # It can be cancelled while it waits, like a sleeping run.
    assert (await api.client.delete(f"/v1/runs/{run['run_id']}")).status_code == 200
    assert (await api.client.get(f"/v1/runs/{run['run_id']}")).json()["data"]["status"] == "Cancelled"


async def test_a_past_or_absent_ts_starts_at_once(api: Api) -> None:
    await _register(api)
    now_ms = time.time() * 1000
    r = await api.client.post(
        "/e/key", json=[{"name": "shop/remind", "ts": int(now_ms) - 3_600_000}, {"name": "shop/remind"}]
    )
    assert r.status_code == 200, r.text
    await Runner(api.app.state.pool, wakeup=Wakeup()).drain()
    for event_id in r.json()["ids"]:
        [run] = (await api.client.get(f"/v1/events/{event_id}/runs")).json()["data"]
        item = await _first_call(api, run["run_id"])
        assert float(item["run_at_ms"]) < time.time() * 1000 + 1  # type: ignore[arg-type]


async def test_timeouts_start_counts_from_ts(api: Api) -> None:
    await _register(api, timeouts={"start": "10s"})
    ts = int(time.time() * 1000) + 120_000
    r = await api.client.post("/e/key", json={"name": "shop/remind", "ts": ts})
    await Runner(api.app.state.pool, wakeup=Wakeup()).drain()
    [run] = (await api.client.get(f"/v1/events/{r.json()['ids'][0]}/runs")).json()["data"]
    [timeout] = await api.rows(
        "SELECT extract(epoch FROM run_at) * 1000 AS run_at_ms FROM pgqueue.queue_items"
        " WHERE run_id = %s AND step_id = '$start-timeout'",
        (run["run_id"],),
    )
    assert abs(float(timeout["run_at_ms"]) - (ts + 10_000)) < 1_000


async def test_a_ts_more_than_a_year_ahead_is_refused(api: Api) -> None:
    year_ms = 365 * 24 * 3600 * 1000
    far = int(time.time() * 1000) + year_ms + 3_600_000
    r = await api.client.post("/e/key", json={"name": "shop/remind", "ts": far})
    assert_error(r, 400, "`ts` is more than a year in the future")
    assert await api.counts() == {"events": 0, "event_inbox": 0, "event_dedupe": 0}
    near = int(time.time() * 1000) + year_ms - 3_600_000
    assert (await api.client.post("/e/key", json={"name": "shop/remind", "ts": near})).status_code == 200
