"""Adaptive concurrency per app against a real pgqueue server and a scripted app on loopback.

The app (an asyncio HTTP server) answers each call of its "cliff" app side by side up to BEST calls at
once; past that, calls queue, and every call in the server beyond BEST makes each call slower, so
its throughput falls as more calls are sent. Its "calm" app takes the same time at any level. Its
"serial" app answers one call at a time, each cheaper the more are waiting: latency grows with every
call in flight while throughput rises, as the Python SDK on one uvicorn process does. Assertions are
on levels (what the worker allows, what the app saw at once), never on timings of this machine."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest

from tests.compat.conftest import Server, start_server
from tests.helpers.procs import wait_until

BEST = 4
SERVICE_S = 0.02
SDK = {"X-Inngest-SDK": "inngest-py:v0.5.19", "X-Inngest-Req-Version": "2"}


@dataclass
class Behaviour:
    active: int = 0  # calls in the server right now (running or queued)
    peak: int = 0  # most calls at once since the last reset
    calls: int = 0
    failing: bool = False  # answer 503 (an overloaded proxy) instead
    cliff: bool = True
    serial: bool = False  # one call at a time, each cheaper the more are waiting (a single-process SDK app)


@dataclass
class ScriptedApp:
    """An HTTP/1.1 server with keep-alive on its own event loop thread."""

    apps: dict[str, Behaviour] = field(
        default_factory=lambda: {"cliff": Behaviour(), "calm": Behaviour(cliff=False),
                                 "serial": Behaviour(cliff=False, serial=True)})
    port: int = 0

    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def serve() -> None:
            self.sem = asyncio.Semaphore(BEST)
            self.one = asyncio.Lock()
            server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.server = server
            started.set()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        assert started.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def base(self, app: str) -> str:
        return f"http://127.0.0.1:{self.port}/{app}"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                status, body, extra = await self._call(line.decode().split()[1])
                head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}",
                        "Content-Type: application/json", *(f"{k}: {v}" for k, v in extra.items())]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _call(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        app = urlsplit(path).path.strip("/")
        fn = parse_qs(urlsplit(path).query).get("fnId", [""])[0]
        b = self.apps[app]
        b.calls += 1
        if b.failing:
            await asyncio.sleep(SERVICE_S)
            return 503, b"<html>busy</html>", {}
        b.active += 1
        b.peak = max(b.peak, b.active)
        try:
            if b.serial:
                async with self.one:
                    # reading more requests per loop turn: a call costs less the more are queued,
                    # so latency grows with every call in flight while throughput rises (to 16)
                    await asyncio.sleep(SERVICE_S * (1 - 0.6 * min(b.active, 16) / 16))
            elif b.cliff:
                async with self.sem:
                    # every call waiting beyond BEST costs the running ones time (context switches,
                    # memory): the app does less work per second the more it is sent
                    await asyncio.sleep(SERVICE_S * (1 + max(b.active - BEST, 0) / BEST))
            else:
                await asyncio.sleep(SERVICE_S)
        finally:
            b.active -= 1
        return 200, json.dumps(f"done {fn}").encode(), SDK


@pytest.fixture
def app() -> Iterator[ScriptedApp]:
    scripted = ScriptedApp()
    scripted.start()
    yield scripted
    scripted.stop()


def register(server: Server, app: ScriptedApp, name: str) -> None:
    base = app.base(name)
    body = {
        "appName": name, "url": base, "sdk": "py:v0.5.19",
        "functions": [{"id": f"{name}-work", "name": "work", "triggers": [{"event": f"{name}/work"}],
                       "steps": {"step": {
                           "id": "step", "name": "step", "retries": {"attempts": 1},
                           "runtime": {"type": "http", "url": f"{base}?fnId={name}-work&stepId=step"}}}}],
    }
    r = httpx.post(f"{server.url}/fn/register", json=body)
    assert r.status_code == 200, r.text


def send(server: Server, name: str, n: int) -> None:
    with server.client() as c:
        for offset in range(0, n, 200):
            events = [{"name": f"{name}/work", "data": {"i": offset + i}}
                      for i in range(min(200, n - offset))]
            assert c.post(f"/e/{server.event_key}", json=events).status_code == 200


def ended(server: Server, app: str) -> int:
    with psycopg.connect(server.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id"
            " JOIN pgqueue.apps a ON a.id = f.app_id WHERE a.name = %s AND r.status = 'completed'",
            (app,)).fetchone()
    assert row is not None
    return int(row[0])


def level(server: Server, app: str) -> dict[str, Any] | None:
    with psycopg.connect(server.database_url) as conn:
        cur = conn.execute("SELECT concurrency_limit, in_flight, workers FROM pgqueue.app_concurrency "
                           "WHERE app_name = %s", (app,))
        row = cur.fetchone()
    return None if row is None else {"limit": row[0], "in_flight": row[1], "workers": row[2]}


def drain(server: Server, app: str, total: int, timeout: float = 120) -> None:
    wait_until(lambda: ended(server, app) >= total, timeout=timeout, interval=0.2,
               message=f"{total} runs of {app}")


def test_the_worker_holds_a_saturating_app_near_its_best_level(database_url: str, app: ScriptedApp) -> None:
    server = start_server(database_url, env={"PGQUEUE_WORKER_CONCURRENCY": "64",
                                             "PGQUEUE_ADAPTIVE_CONCURRENCY": "1"})
    try:
        register(server, app, "cliff")
        register(server, app, "calm")
        send(server, "cliff", 300)  # warm-up: the limit finds its level
        drain(server, "cliff", 300)
        app.apps["cliff"].peak = 0
        send(server, "cliff", 1500)
        seen: list[int] = []

        def sample() -> bool:
            lv = level(server, "cliff")
            if lv is not None:
                seen.append(lv["limit"])
            return len(seen) >= 3 and ended(server, "cliff") >= 700

        wait_until(sample, timeout=120, interval=0.5, message="levels of the cliff app while it is busy")
        # near the app's best level (4), far below the worker's 64: it settles where the app's
        # latency is about twice its no-load latency, and lower when pgqueue itself is the bottleneck
        # (a busy machine) and the app never queues
        assert all(1 <= s <= 4 * BEST for s in seen[-3:]), seen
        assert app.apps["cliff"].peak <= 4 * BEST, (app.apps["cliff"].peak, seen)

        # a second app is served at once while the first one is saturated with a backlog
        send(server, "calm", 100)
        drain(server, "calm", 100, timeout=60)
        assert ended(server, "cliff") < 1800, "the calm app's runs waited for the cliff app's backlog"

        with server.client() as c:
            metrics = c.get("/metrics").text
            page = c.get("/apps").text
        assert 'pgqueue_app_concurrency_limit{app="cliff"}' in metrics, metrics
        assert 'pgqueue_app_in_flight{app="cliff"}' in metrics
        assert "data-adaptive-concurrency" in page and "allowed" in page
        drain(server, "cliff", 1800, timeout=180)
    finally:
        server.proc.terminate()


def test_an_app_whose_latency_grows_with_load_is_given_what_raises_its_throughput(
        database_url: str, app: ScriptedApp) -> None:
    # A latency gradient holds such an app at 1-2 calls in flight (each call takes 6x as long at
    # 16 as at 1); the rate it answers at is what counts, and that rises to 16 in flight.
    server = start_server(database_url, env={"PGQUEUE_WORKER_CONCURRENCY": "64",
                                             "PGQUEUE_ADAPTIVE_CONCURRENCY": "1"})
    try:
        register(server, app, "serial")
        send(server, "serial", 1500)
        seen: list[int] = []

        def sample() -> bool:
            lv = level(server, "serial")
            if lv is not None:
                seen.append(lv["limit"])
            return ended(server, "serial") >= 1000

        wait_until(sample, timeout=120, interval=0.5, message="levels of the serial app while it is busy")
        assert max(seen) >= 8 and app.apps["serial"].peak >= 8, (seen, app.apps["serial"].peak)
        drain(server, "serial", 1500)
    finally:
        server.proc.terminate()


def test_overload_answers_shrink_the_limit(database_url: str, app: ScriptedApp) -> None:
    server = start_server(database_url, env={"PGQUEUE_WORKER_CONCURRENCY": "32",
                                             "PGQUEUE_ADAPTIVE_CONCURRENCY": "1"})
    try:
        register(server, app, "calm")
        send(server, "calm", 2000)  # the same time at any level: the limit climbs to the ceiling
        wait_until(lambda: (level(server, "calm") or {}).get("limit", 0) >= 16, timeout=120, interval=0.5,
                   message="the calm app's limit to grow")
        app.apps["calm"].failing = True  # now every call is a 503 from an overloaded proxy
        wait_until(lambda: (level(server, "calm") or {}).get("limit", 99) <= 2, timeout=60, interval=0.5,
                   message="the limit to shrink on 503s")
    finally:
        server.proc.terminate()


def test_turned_off_every_app_gets_the_workers_concurrency(database_url: str, app: ScriptedApp) -> None:
    server = start_server(database_url, env={"PGQUEUE_WORKER_CONCURRENCY": "64",
                                             "PGQUEUE_ADAPTIVE_CONCURRENCY": "0"})
    try:
        register(server, app, "cliff")
        send(server, "cliff", 200)
        drain(server, "cliff", 200)
        assert app.apps["cliff"].peak >= 32  # the fixed level, whatever the app's latency
        assert level(server, "cliff") is None  # no levels are reported
    finally:
        server.proc.terminate()
