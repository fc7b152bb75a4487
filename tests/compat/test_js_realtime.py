"""Realtime with the official JS SDK (`inngest` 4.24.0, tests/compat/js_app/realtime.js).

What is checked: a function that publishes three progress messages (`step.realtime.publish`) and a
`subscribe()` client: the client gets them in order, each before the next one was published, in
dev, production and PgBouncer stacks (the latencies are printed; bench/realtime.py measures them); a
token for one channel reads nothing of another, and a forged one is refused; a step that publishes
and then fails publishes once (its retry's publish is recognised); durable endpoints that stream
(`Accept: text/event-stream`, `stream.push()`) deliver the pushed chunks and then the result, in the
request and after the run went on in pgqueue's queue (the SDK's client follows its redirect to
/v1/realtime/sse); a subscriber that stops reading while 10,000 messages are published is closed
with its buffer bounded while two `subscribe()` clients get every message; a publisher on one API
process reaches a subscriber on another. The browser subscriber is in
tests/dashboard/test_realtime_browser.py.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pgqueue.realtime import tokens
from tests.compat import js_fixtures
from tests.compat.conftest import STACK_MODES, App, Server, server_for_mode, start_server, sync_via_put
from tests.helpers import realtime as rt
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat

NODE_ENV = {"NODE_OPTIONS": "--experimental-websocket"}  # Node 20: the SDK needs a global WebSocket
FUNCTIONS = 2


def start_app(server: Server, app_id: str = "js-realtime") -> App:
    app = js_fixtures.start_js_app(server, app_id=app_id, script="realtime.js", env=NODE_ENV)
    sync_via_put(app, server, expect_functions=FUNCTIONS)
    return app


@pytest.fixture(scope="module", params=STACK_MODES)
def stack(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[tuple[Server, App]]:
    js_fixtures.ensure_js_app_installed()
    server = server_for_mode(request, module_database_url, request.param)
    app = None
    try:
        app = start_app(server)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def subscribe(app: App, channel: str, topics: str = "status", **params: str) -> str:
    query = {"channel": channel, "topics": topics, **params}
    r = httpx.post(f"{app.base}/subscribe", params=query, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def received(app: App, sub: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{app.base}/received", params={"id": sub}, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json())


def wait_received(app: App, sub: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        got = received(app, sub)
        return got if len(got) >= count else None

    return list(wait_until(enough, timeout=timeout, message=f"{count} messages at subscriber {sub}"))


def subscribers(server: Server) -> int:
    with server.client() as c:
        r = c.get("/v1/realtime/stats")
    assert r.status_code == 200, r.text
    return int(r.json()["data"]["subscribers"])


def test_three_progress_messages_reach_a_subscribe_client_in_order(stack: tuple[Server, App]) -> None:
    server, app = stack
    run_key = uuid.uuid4().hex
    sub = subscribe(app, f"progress:{run_key}")
    wait_until(lambda: subscribers(server) >= 1, timeout=15, message="the subscription")

    event_id = server.send("js/realtime.progress", {"id": run_key, "gap_ms": 400})

    got = wait_received(app, sub, 3)
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert [m["data"]["n"] for m in got] == [1, 2, 3]
    assert all(m["kind"] == "data" and m["channel"] == f"progress:{run_key}" and m["topic"] == "status"
               for m in got)
    # each arrived before the function published the next one (they are 400 ms apart)
    assert got[0]["at"] < got[1]["data"]["at"] and got[1]["at"] < got[2]["data"]["at"]
    latencies = [m["at"] - m["data"]["at"] for m in got]
    with server.client() as c:
        how = c.get("/v1/realtime/stats").json()["data"]["mode"]  # listen, or poll behind PgBouncer
    print(f"\n{server.mode} ({how}): publish -> subscribe() client latencies (ms): {latencies}")
    time.sleep(0.3)
    assert len(received(app, sub)) == 3  # nothing else


def test_a_token_for_another_channel_reads_nothing_of_it(stack: tuple[Server, App]) -> None:
    server, app = stack
    mine, theirs = f"mine:{uuid.uuid4().hex}", f"theirs:{uuid.uuid4().hex}"
    r = httpx.get(f"{app.base}/token", params={"channel": mine, "topics": "status"}, timeout=30)
    assert r.status_code == 200, r.text
    key = r.json()["key"]
    # a client that asks for the other channel with this token: the server sends it nothing of either
    spy = subscribe(app, theirs, key=key)
    honest = subscribe(app, mine, key=key)
    wait_until(lambda: subscribers(server) >= 2, timeout=15, message="the subscriptions")
    with server.client() as c:
        for channel in (theirs, mine):
            r = c.post("/v1/realtime/publish", params={"channel": channel, "topic": "status"},
                       json={"to": channel})
            assert r.status_code == 200, r.text
    assert [m["data"] for m in wait_received(app, honest, 1)] == [{"to": mine}]
    time.sleep(0.5)
    assert received(app, spy) == []  # the message of `theirs` never reached it; `mine`'s it dropped
    forged = tokens.mint(theirs, ["status"], signing_keys=("signkey-prod-" + "0f" * 32,), ttl_s=60)
    r = httpx.post(f"{app.base}/subscribe", params={"channel": theirs, "topics": "status", "key": forged},
                   timeout=30)
    assert r.status_code == 502, r.text  # subscribe() rejects: the server refused the handshake (401)


def test_a_step_that_publishes_and_then_fails_publishes_once(stack: tuple[Server, App]) -> None:
    server, app = stack
    run_key = uuid.uuid4().hex
    sub = subscribe(app, f"progress:{run_key}", topics="status,done")
    wait_until(lambda: subscribers(server) >= 1, timeout=15, message="the subscription")

    event_id = server.send("js/realtime.retry", {"id": run_key})

    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert app.count(run["run_id"], "flaky") == 2  # the step ran twice, publishing each time
    got = wait_received(app, sub, 2)
    time.sleep(0.5)
    assert [(m["topic"], m["data"]) for m in received(app, sub)] == [
        ("status", {"stage": "working"}), ("done", {"stage": "done"})]
    assert got[0]["kind"] == "data"


@pytest.mark.parametrize(("path", "chunks"), [("/api/stream-sync", ["a", "b"]),
                                              ("/api/stream-async", ["a", "b", "c"])])
def test_a_durable_endpoint_streams_its_chunks_and_then_its_result(
    stack: tuple[Server, App], path: str, chunks: list[str]
) -> None:
    server, app = stack
    tag = uuid.uuid4().hex
    r = httpx.get(f"{app.base}/stream-client", params={"path": path, "tag": tag}, timeout=90)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["chunks"] == chunks
    assert got["status"] == 200 and httpx.Response(200, content=got["body"]).json() == {"tag": tag}
    with psycopg.connect(server.database_url, autocommit=True, prepare_threshold=None) as conn:
        # the SDK stores the result in the background once the client has it
        run_id = wait_until(lambda: conn.execute(
            "SELECT id FROM pgqueue.runs WHERE endpoint_url LIKE %s AND status = 'completed'",
            (f"%tag={tag}%",)).fetchone(), timeout=30, message="the endpoint's run to complete")[0]
        teed = conn.execute("SELECT string_agg(data #>> '{}', '' ORDER BY id) FROM pgqueue.realtime_messages"
                            " WHERE channel = %s AND topic = '$stream'", (run_id,)).fetchone()[0]
    if path.endswith("async"):
        # after the sleep pgqueue called the endpoint, which teed its stream ("c", then the result)
        # to /v1/realtime/publish/tee; the client read it from /v1/realtime/sse
        assert '"data":"c"' in teed and "inngest.response" in teed and '"data":"a"' not in teed
    else:
        assert teed is None  # all of it went straight to the client


def test_a_stuck_subscriber_is_closed_while_others_get_all_10000_messages(database_url: str) -> None:
    server = start_server(database_url, env={"PGQUEUE_REALTIME_BUFFER_BYTES": "1048576"})
    app = None
    try:
        app = start_app(server, "js-realtime-firehose")
        channel, blob, count = f"firehose:{uuid.uuid4().hex}", "z" * 4000, 10_000
        subs = [subscribe(app, channel, topics="t") for _ in range(2)]
        token = tokens.mint(channel, ["t"], signing_keys=(), ttl_s=60)
        stuck = rt.StuckSubscriber(server.url, token)
        assert stuck.status == "101"
        wait_until(lambda: subscribers(server) >= 3, timeout=15, message="three subscriptions")
        rss_before = _rss_kb(server)
        peak = asyncio.run(_publish_many(server, channel, blob, count))
        stuck.close()
        rss_after = _rss_kb(server)
        firsts = [wait_received(app, s, count, timeout=180) for s in subs]
        with server.client() as c:
            stats = c.get("/v1/realtime/stats").json()["data"]
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()
    # every message, once, in the same (commit) order at both subscribers
    orders = [[m["data"]["n"] for m in got] for got in firsts]
    assert sorted(orders[0]) == list(range(count)) and orders[0] == orders[1]
    assert stats["dropped"] == 1 and "fell behind" in stats["last_drop"]
    assert peak <= 3 * 1_048_576  # what the server held for its subscribers never passed their bounds
    lag = [m["at"] for m in firsts[0]]
    print(f"\n10,000 x 4 kB: server RSS {rss_before // 1024} -> {rss_after // 1024} MB, peak queued"
          f" {peak} bytes; first to last delivery {lag[-1] - lag[0]} ms, median gap"
          f" {statistics.median(b - a for a, b in itertools.pairwise(lag))} ms")
    assert rss_after - rss_before < 40 * 1024  # the stuck subscriber's 40 MB never piled up


def test_a_publisher_on_one_process_reaches_a_subscriber_on_another(database_url: str) -> None:
    # a database of its own: the module's has the other tests' apps, whose functions the event would run too
    first = start_server(database_url, mode="serve")
    second = start_server(database_url, mode="serve", extra_args=("--no-workers",))
    app = None
    try:
        app = start_app(first, "js-realtime-two")
        run_key = uuid.uuid4().hex
        sub = subscribe(app, f"progress:{run_key}", base=second.url)
        wait_until(lambda: subscribers(second) >= 1, timeout=15, message="the subscription on the second")
        assert subscribers(first) == 0
        first.send("js/realtime.progress", {"id": run_key, "gap_ms": 50})
        got = wait_received(app, sub, 3)
    finally:
        if app:
            app.proc.terminate()
        first.proc.terminate()
        second.proc.terminate()
    assert [m["data"]["n"] for m in got] == [1, 2, 3]


# -- helpers ---------------------------------------------------------------------------------------


def _rss_kb(server: Server) -> int:
    status = Path(f"/proc/{server.proc.popen.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


async def _publish_many(server: Server, channel: str, blob: str, count: int) -> int:
    """Publish `count` messages, 50 at a time; the most the server held queued meanwhile (bytes)."""
    peak = 0
    # idle connections expire before uvicorn's 5 s keep-alive timeout closes them under a request
    limits = httpx.Limits(max_connections=50, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60,
                                 limits=limits) as client:
        for start in range(0, count, 50):
            replies = await asyncio.gather(*(
                client.post("/v1/realtime/publish", params={"channel": channel, "topic": "t"},
                            json={"n": n, "b": blob}) for n in range(start, start + 50)))
            assert all(r.status_code == 200 for r in replies), replies[0].text
            if start % 1000 == 0:
                stats = (await client.get("/v1/realtime/stats")).json()["data"]
                peak = max(peak, int(stats["queued_bytes"]))
    return peak
