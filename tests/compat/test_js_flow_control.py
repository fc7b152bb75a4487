"""Flow control and the rest of the step API with the official JS SDK (tests/compat/js_app/flow.js),
in dev, production and PgBouncer stacks, judged from the app's own records: concurrency with a key,
two limits, env scope; throttle and rate limit with keys; debounce with a timeout; batching with a
key and `if`; priority; idempotency; singleton; timeouts; step.sendEvent (memoised across a retry),
step.sleepUntil and RetryAfterError; a cron trigger with a TZ= prefix."""

from __future__ import annotations

import random
import string
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from tests.compat.conftest import STACK_MODES, App, Server, server_for_mode, sync_via_put
from tests.compat.js_fixtures import ensure_js_app_installed, start_js_app
from tests.compat.test_python_flow_control import max_overlap
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat

FLOW_JS_FUNCTIONS = 17


@pytest.fixture(scope="module", params=STACK_MODES)
def js_flow(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[tuple[Server, App]]:
    ensure_js_app_installed()
    server = server_for_mode(request, module_database_url, request.param)
    app = None
    try:
        app = start_js_app(server, app_id="js-flow", script="flow.js")
        sync_via_put(app, server, expect_functions=FLOW_JS_FUNCTIONS)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def _tag() -> str:
    return "".join(random.Random().choice(string.ascii_lowercase) for _ in range(8))


def ledger(app: App) -> dict[str, Any]:
    return dict(httpx.get(app.base + "/ledger", timeout=10).json())


def spans(app: App, fn: str, tag: str) -> list[dict[str, Any]]:
    """This test's spans of `fn`: keys are prefixed with the test's tag (the module shares a database
    and an app across tests)."""
    return [s for s in ledger(app)["spans"] if s["fn"] == fn and str(s.get("key") or "").startswith(tag)]


def send_many(server: Server, events: list[dict[str, Any]]) -> list[str]:
    with server.client() as c:
        r = c.post(f"/e/{server.event_key}", json=events)
    assert r.status_code == 200, r.text
    return list(r.json()["ids"])


def test_concurrency_key_and_two_limits_and_env_scope(js_flow: tuple[Server, App]) -> None:
    server, app = js_flow
    t = _tag()
    send_many(server, [{"name": "js-flow/conc", "data": {"key": f"{t}-k{i % 2}", "n": i, "seconds": 0.3}}
                       for i in range(8)])
    send_many(server, [{"name": "js-flow/two", "data": {"key": t, "user": f"{t}-u{i % 2}", "n": i,
                                                        "seconds": 0.3}} for i in range(6)])
    send_many(server, [{"name": "js-flow/env", "data": {"key": t, "tenant": t, "n": i, "seconds": 0.2}}
                       for i in range(3)])
    wait_until(lambda: len(spans(app, "conc-key", t)) == 8 and len(spans(app, "two-limits", t)) == 6
               and len(spans(app, "env-scoped", t)) == 3, timeout=60, message="every run")
    per_key: dict[str, list[tuple[float, float]]] = {}
    for s in spans(app, "conc-key", t):
        per_key.setdefault(s["key"], []).append((s["start"], s["end"]))
    assert {k: max_overlap(v) for k, v in per_key.items()} == {f"{t}-k0": 2, f"{t}-k1": 2}
    assert max_overlap([(s["start"], s["end"]) for s in spans(app, "two-limits", t)]) <= 2
    assert max_overlap([(s["start"], s["end"]) for s in spans(app, "env-scoped", t)]) == 1


def test_throttle_with_a_key(js_flow: tuple[Server, App]) -> None:
    """limit 1 per second per key, burst 1: limit + burst = 2 start at once, then one per second."""
    server, app = js_flow
    t = _tag()
    send_many(server, [{"name": "js-flow/throttle", "data": {"key": t, "n": i}} for i in range(4)])
    send_many(server, [{"name": "js-flow/throttle", "data": {"key": f"{t}-other", "n": 9}}])
    wait_until(lambda: len(spans(app, "throttled", t)) == 5, timeout=30, message="5 throttled runs")
    starts = sorted(s["start"] for s in spans(app, "throttled", t) if s["key"] == t)
    assert starts[1] - starts[0] < 0.9 and starts[2] - starts[0] >= 0.9 and starts[3] - starts[2] >= 0.9


def test_rate_limit_with_a_key(js_flow: tuple[Server, App]) -> None:
    """limit 2 per 60 s: one run per 30 s bucket, so of five events sent at once only the first runs."""
    server, app = js_flow
    t = _tag()
    ids = send_many(server, [{"name": "js-flow/rate", "data": {"key": t, "n": n}} for n in range(5)])
    send_many(server, [{"name": "js-flow/rate", "data": {"key": f"{t}-other", "n": 9}}])
    server.wait_runs(ids[0], timeout=30)
    wait_until(lambda: len(spans(app, "rate-limited", t)) == 2, timeout=30, message="two keys' runs")
    time.sleep(0.5)
    assert sorted(s["n"] for s in spans(app, "rate-limited", t)) == [0, 9]
    for skipped in ids[1:]:
        assert "rate limit" in server.get(f"/v1/events/{skipped}")["data"]["skip_reason"]


def test_debounce_timeout_caps_the_wait(js_flow: tuple[Server, App]) -> None:
    """period 1 s, timeout 3 s: events every 0.4 s keep pushing the run, but it starts at most 3 s
    after the first event of its window, with the last event it had."""
    server, app = js_flow
    t = _tag()
    first_sent = time.time()
    for n in range(12):
        server.send("js-flow/debounce", {"key": t, "n": n})
        time.sleep(0.4)
    wait_until(lambda: any(s["n"] == 11 for s in spans(app, "debounced", t)), timeout=30,
               message="the run of the last event")
    runs = sorted(spans(app, "debounced", t), key=lambda s: s["start"])
    assert 2.5 <= runs[0]["start"] - first_sent <= 4.5, runs
    assert runs[0]["n"] < 11 and runs[-1]["n"] == 11  # the window closed at its timeout, not the end


def test_batch_with_a_key_and_an_if(js_flow: tuple[Server, App]) -> None:
    server, app = js_flow
    t = _tag()
    send_many(server, [{"name": "js-flow/batch", "data": {"key": t, "n": n, "batch": True}}
                       for n in range(3)])
    send_many(server, [{"name": "js-flow/batch", "data": {"key": f"{t}-b", "n": 7, "batch": True}},
                       {"name": "js-flow/batch", "data": {"key": t, "n": 9, "batch": False}}])
    wait_until(lambda: len(spans(app, "batched", t)) == 3, timeout=30, message="three batch runs")
    got = sorted((s["key"], sorted(s["ns"])) for s in spans(app, "batched", t))
    assert got == [(t, [0, 1, 2]), (t, [9]), (f"{t}-b", [7])]


def test_priority_orders_queued_work(js_flow: tuple[Server, App]) -> None:
    server, app = js_flow
    t = _tag()
    first = server.send("js-flow/prio", {"key": t, "n": "first", "prio": 0, "seconds": 1.0})
    server.wait_runs(first, terminal=False)
    time.sleep(0.2)
    send_many(server, [{"name": "js-flow/prio", "data": {"key": t, "n": n, "prio": p, "seconds": 0.05}}
                       for n, p in (("low", -2), ("mid", 0), ("high", 300))])
    wait_until(lambda: len(spans(app, "prioritized", t)) == 4, timeout=30, message="4 prioritized runs")
    order = [s["n"] for s in sorted(spans(app, "prioritized", t), key=lambda s: s["start"])]
    assert order == ["first", "high", "mid", "low"]


def test_idempotency_and_singleton(js_flow: tuple[Server, App]) -> None:
    server, app = js_flow
    t = _tag()
    orders = send_many(server, [{"name": "js-flow/order", "data": {"key": t, "order": t}} for _ in range(3)])
    first = server.send("js-flow/singleton", {"key": t, "n": 1, "seconds": 1.5})
    server.wait_runs(first, terminal=False)
    second = server.send("js-flow/singleton", {"key": t, "n": 2})
    server.wait_runs(first, timeout=30)
    time.sleep(0.5)
    assert len(spans(app, "idempotent", t)) == 1
    assert sum(bool(server.runs_for(i)) for i in orders) == 1
    assert [s["n"] for s in spans(app, "singleton", t)] == [1]
    assert "singleton" in server.get(f"/v1/events/{second}")["data"]["skip_reason"]


def test_start_and_finish_timeouts(js_flow: tuple[Server, App]) -> None:
    server, app = js_flow
    t = _tag()
    holder = server.send("js-flow/start-timeout", {"key": t, "n": "holder", "seconds": 2.5})
    server.wait_runs(holder, terminal=False)
    time.sleep(0.3)
    waiting = server.send("js-flow/start-timeout", {"key": t, "n": "waiting", "seconds": 0})
    slow = server.send("js-flow/finish-timeout", {"key": t})
    [cancelled] = server.wait_runs(waiting, timeout=30)
    assert cancelled["status"] == "Cancelled" and "timeouts.start" in cancelled["error"]["message"]
    [done] = server.wait_runs(holder, timeout=30)
    assert done["status"] == "Completed"
    [finished] = server.wait_runs(slow, timeout=30)
    assert finished["status"] == "Cancelled" and "timeouts.finish" in finished["error"]["message"]
    time.sleep(1.5)  # past the sleep: the second step never runs
    assert len(spans(app, "finish-timeout-first", t)) == 1 and spans(app, "finish-timeout-second", t) == []


def test_send_event_is_memoised_across_a_retry(js_flow: tuple[Server, App]) -> None:
    server, app = js_flow
    t = _tag()
    event_id = server.send("js-flow/send", {"tag": t})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert ledger(app)["calls"][f"{run['run_id']}:fail-once"] == 1
    sent = [e for e in server.get("/v1/events?name=js-flow/echo&limit=500")["data"]
            if e["data"].get("tag") == t]
    assert len(sent) == 1 and run["output"]["ids"] == [sent[0]["id"]]
    [echo] = server.wait_runs(sent[0]["internal_id"], timeout=30)
    assert echo["status"] == "Completed" and echo["output"] == {"tag": t}


def test_sleep_until_and_retry_after(js_flow: tuple[Server, App]) -> None:
    server, app = js_flow
    until = datetime.now(UTC) + timedelta(seconds=2)
    sleeping = server.send("js-flow/sleep-until", {"until": until.isoformat()})
    retrying = server.send("js-flow/retry-after", {})
    [slept] = server.wait_runs(sleeping, timeout=30)
    assert slept["status"] == "Completed", slept
    assert until.timestamp() <= slept["output"]["woke"] < until.timestamp() + 5
    [retried] = server.wait_runs(retrying, timeout=30)
    assert retried["status"] == "Completed" and retried["output"] == "ok", retried
    times = ledger(app)["calls"][f"{retried['run_id']}:times"]
    assert len(times) == 2 and times[1] - times[0] >= 1.9, times  # backoff is ms here; 2 s was asked


def test_cron_trigger_with_a_time_zone(js_flow: tuple[Server, App]) -> None:
    """`TZ=Europe/Paris 0 9 * * *` from the JS SDK: the next slot is 09:00 in Paris."""
    server, _ = js_flow
    with psycopg.connect(server.database_url, prepare_threshold=None) as conn:
        row = conn.execute(
            "SELECT s.cron, s.next_at FROM pgqueue.cron_schedules s JOIN pgqueue.functions f"
            " ON f.id = s.function_id WHERE f.slug = 'js-flow-cron-paris'").fetchone()
    assert row is not None
    cron, next_at = row
    assert cron == "TZ=Europe/Paris 0 9 * * *"
    local = next_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute, local.second) == (9, 0, 0)
    assert timedelta(0) < next_at - datetime.now(UTC) <= timedelta(days=1)
