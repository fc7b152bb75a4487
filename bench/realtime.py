"""Realtime: publish -> subscriber latency (p50/p99) and messages per second with 1, 100 and 1,000
WebSocket subscribers of one channel, beside a raw LISTEN/NOTIFY round trip measured in the same run
on the same PostgreSQL.

Against one `pgqueue serve --no-workers` process (production mode, LISTEN) on an embedded cluster
(fsync on; settings printed). Subscribers are WebSocket clients in this process; a few "probe"
subscribers record when each message arrives, the others only count what they receive.

- raw NOTIFY: one connection LISTENs, another sends `NOTIFY` (autocommit, one transaction each),
  send -> receive.
- publish (SQL): `SELECT pgqueue.publish(...)` on a connection of this process -> probe receives
  (commit, NOTIFY, the server's hub reads the message, the WebSocket frame): pgqueue's share.
- publish (HTTP): `POST /v1/realtime/publish` -> probe receives: what an SDK's publish costs.
- burst: N messages published over HTTP on 20 keep-alive connections (hand-written HTTP/1.1, so
  the client's own cost stays small); messages/s until every probe has all of them, deliveries/s
  (messages x subscribers), the server's CPU per 1,000 deliveries, and how busy the server and this
  client were.

Usage: python bench/realtime.py [--subscribers 1,100,1000] [--messages 200] [--burst 2000]
                                [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402

from bench.common import database, pct, pg_settings  # noqa: E402
from tests.helpers.procs import free_port, pgqueue_argv, start_process, wait_http  # noqa: E402

SIGNING_KEY = "signkey-prod-" + "be" * 32
AUTH = {"authorization": f"Bearer {SIGNING_KEY}"}
PROBES = 5
CHANNEL = "bench"


class Subscribers:
    """`count` WebSocket subscribers of CHANNEL; the first PROBES record (message n, arrival)."""

    def __init__(self, url: str, token: str, count: int) -> None:
        self.url = f"ws://{url.removeprefix('http://')}/v1/realtime/connect?token={token}"
        self.count = count
        self.arrivals: list[dict[int, float]] = [{} for _ in range(min(PROBES, count))]
        self.counted = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = 0

    async def _run(self, index: int) -> None:
        async with connect(self.url, max_queue=None, open_timeout=60, ping_interval=None) as ws:
            self._ready += 1
            probe = self.arrivals[index] if index < len(self.arrivals) else None
            async for frame in ws:
                if probe is not None:
                    probe[json.loads(frame)["data"]["n"]] = time.perf_counter()
                else:
                    self.counted += 1

    async def __aenter__(self) -> Subscribers:
        for i in range(self.count):
            self._tasks.append(asyncio.create_task(self._run(i)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # do not flood the accept queue
        deadline = time.monotonic() + 120
        while self._ready < self.count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._ready} of {self.count} subscribers connected")
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def wait(self, n: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while any(n not in probe for probe in self.arrivals):
            if time.monotonic() > deadline:
                raise TimeoutError(f"message {n} did not reach every probe")
            await asyncio.sleep(0.0005)


class RawPublisher:
    """`POST /v1/realtime/publish` over keep-alive connections with hand-written HTTP/1.1: the burst
    must measure the server, and httpx costs this process milliseconds of CPU per request."""

    def __init__(self, base: str, connections: int) -> None:
        self.host, _, port = base.removeprefix("http://").partition(":")
        self.port = int(port)
        self.connections = connections

    async def burst(self, numbers: range) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in numbers:
            queue.put_nowait(n)

        async def worker() -> None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                while not queue.empty():
                    n = queue.get_nowait()
                    body = json.dumps({"n": n}).encode()
                    writer.write(
                        f"POST /v1/realtime/publish?channel={CHANNEL}&topic=t HTTP/1.1\r\n"
                        f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {SIGNING_KEY}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body)
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200"), head
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    await reader.readexactly(length)
            finally:
                writer.close()

        await asyncio.gather(*(worker() for _ in range(self.connections)))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def raw_notify(url: str, count: int) -> list[float]:
    """NOTIFY from one connection to a LISTEN on another: send -> receive, ms. The listener reads
    all the time (psycopg hands out only what arrives while its notifies() generator runs)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as listener, \
            await psycopg.AsyncConnection.connect(url, autocommit=True) as sender:
        await listener.execute("LISTEN bench_raw")
        arrived: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

        async def listen() -> None:
            async for note in listener.notifies():
                arrived.put_nowait((note.payload, time.perf_counter()))

        reader = asyncio.create_task(listen())
        await asyncio.sleep(0.2)
        out = []
        try:
            for i in range(count):
                start = time.perf_counter()
                await sender.execute("SELECT pg_notify('bench_raw', %s)", (str(i),))
                payload, at = await arrived.get()
                assert payload == str(i)
                out.append((at - start) * 1000)
                await asyncio.sleep(0.005)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return out


async def latency(subs: Subscribers, numbers: range, publish: Any) -> list[float]:
    """Publish message n for each n, one at a time: publish -> the last probe has it, ms."""
    out = []
    for n in numbers:
        start = time.perf_counter()
        await publish(n)
        await subs.wait(n)
        out.append((max(probe[n] for probe in subs.arrivals) - start) * 1000)
        await asyncio.sleep(0.005)
    return out


async def run(url: str, sizes: list[int], messages: int, burst: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"DATABASE_URL": url, "PGQUEUE_SIGNING_KEY": SIGNING_KEY, "PGQUEUE_EVENT_KEYS": "bench",
           "PGQUEUE_LOG_LEVEL": "warning", "PGQUEUE_POOL_SIZE": "20",
           # a burst to 1,000 subscribers in this one client process: big buffers, nobody is dropped
           "PGQUEUE_REALTIME_BUFFER_MESSAGES": str(burst + messages + 10),
           "PGQUEUE_REALTIME_BUFFER_BYTES": str(256 * 1024 * 1024)}
    proc = start_process("bench-realtime", pgqueue_argv("serve", "--no-workers", "--port", str(port),
                                                        "--host", "127.0.0.1"), env=env, url=base)
    try:
        wait_http(proc, "/health", timeout=60)
        settings = pg_settings(url)
        print(f"PostgreSQL {settings['server_version']}, fsync={settings['fsync']},"
              f" synchronous_commit={settings['synchronous_commit']}; load average {os.getloadavg()[0]:.1f}")
        notify = await raw_notify(url, messages)
        print(f"\nraw LISTEN/NOTIFY round trip: p50 {pct(notify, 50):.2f} ms, p99 {pct(notify, 99):.2f} ms"
              f" ({len(notify)} notifications)")
        print("\n| subscribers | publish (SQL) -> subscriber p50 / p99 ms | publish (HTTP) -> subscriber"
              " p50 / p99 ms | burst messages/s | deliveries/s | server CPU ms per 1,000 deliveries |"
              " CPU busy during the burst: server / this client |")
        print("|---|---|---|---|---|---|---|")
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120,
                                     limits=httpx.Limits(max_connections=40)) as client:
            r = await client.post("/v1/realtime/token", json=[{"channel": CHANNEL, "name": "t"}])
            token = r.json()["jwt"]
            for size in sizes:
                await run_size(url, client, proc.popen.pid, base, token, size, messages, burst)
    finally:
        proc.terminate()


async def run_size(url: str, client: httpx.AsyncClient, pid: int, base: str, token: str, size: int,
                   messages: int, burst: int) -> None:
    async def http_publish(n: int) -> None:
        r = await client.post("/v1/realtime/publish", params={"channel": CHANNEL, "topic": "t"},
                              json={"n": n})
        assert r.status_code == 200, r.text

    async with Subscribers(base, token, size) as subs, \
            await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        async def sql_publish(n: int) -> None:
            await conn.execute("SELECT pgqueue.publish(%s, 't', %s::jsonb)", (CHANNEL, json.dumps({"n": n})))

        via_sql = await latency(subs, range(0, messages), sql_publish)
        via_http = await latency(subs, range(messages, 2 * messages), http_publish)
        offset = 2 * messages
        cpu_before, start = cpu_s(pid), time.perf_counter()
        client_before = cpu_s(os.getpid())
        await RawPublisher(base, 20).burst(range(offset, offset + burst))
        for n in range(offset, offset + burst):
            await subs.wait(n)
        elapsed = time.perf_counter() - start
        cpu = cpu_s(pid) - cpu_before
        client_cpu = cpu_s(os.getpid()) - client_before
    deliveries = burst * size
    print(f"| {size:,} | {pct(via_sql, 50):.1f} / {pct(via_sql, 99):.1f} | {pct(via_http, 50):.1f} /"
          f" {pct(via_http, 99):.1f} | {burst / elapsed:,.0f} | {deliveries / elapsed:,.0f} |"
          f" {cpu * 1000 / (deliveries / 1000):.1f} | {cpu / elapsed:.0%} / {client_cpu / elapsed:.0%} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1,100,1000")
    parser.add_argument("--messages", type=int, default=200, help="messages per latency measurement")
    parser.add_argument("--burst", type=int, default=2000, help="messages in the throughput burst")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    # 1,000 sockets on each side (the server inherits the limit)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sizes = [int(s) for s in args.subscribers.split(",")]
    with database(args.database_url) as url:
        asyncio.run(run(url, sizes, args.messages, args.burst))


if __name__ == "__main__":
    main()
