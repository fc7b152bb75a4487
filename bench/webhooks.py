"""Webhook deliveries per second with a trivial transform beside POST /e in the same run: one
event per request (a webhook delivery carries one), C requests in flight, against one `pgqueue dev`
process on the same PostgreSQL. The two are measured in alternating rounds so that drift hits both
alike. Also printed: the transform alone (a fresh QuickJS runtime per call, in this process).

Usage: python bench/webhooks.py [--requests 2000] [--concurrency 16] [--rounds 2] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import database, pct, pg_settings  # noqa: E402
from pgqueue.events import transforms  # noqa: E402
from tests.helpers.procs import free_port, pgqueue_argv, start_process, wait_http  # noqa: E402

TRIVIAL = "function transform(evt) { return { name: 'bench/hook', data: evt } }"


async def blast(url: str, n: int, concurrency: int, *, event_api: bool) -> tuple[float, list[float]]:
    """Requests per second and each request's latency (ms)."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def one(client: httpx.AsyncClient) -> None:
        for i in counter:
            body = {"name": "bench/plain", "data": {"n": i}} if event_api else {"n": i, "kind": "push"}
            started = time.perf_counter()
            r = await client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})
            latencies.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200, r.text

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return n / elapsed, latencies


def transform_alone(n: int = 2000) -> float:
    budget = transforms.Budget()
    inputs = {
        "evt": {"n": 1, "kind": "push"},
        "headers": {"Content-Type": "application/json"},
        "query": {},
        "raw": '{"n": 1, "kind": "push"}',
    }
    start = time.perf_counter()
    for _ in range(n):
        transforms.run_sync(TRIVIAL, inputs, budget)
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    with database(args.database_url) as url:
        port = free_port()
        server = start_process(
            "bench-webhooks",
            pgqueue_argv("dev", "--port", str(port)),
            env={"DATABASE_URL": url, "PGQUEUE_LOG_LEVEL": "warning"},
            url=f"http://127.0.0.1:{port}",
        )
        try:
            wait_http(server, "/health")
            r = httpx.post(
                f"{server.url}/v1/webhooks", json={"name": "bench", "transform": TRIVIAL}, timeout=30
            )
            assert r.status_code == 201, r.text
            hook_url = r.json()["data"]["url"]
            # warm both paths up (connections, plans)
            asyncio.run(blast(f"{server.url}/e/bench", 200, args.concurrency, event_api=True))
            asyncio.run(blast(hook_url, 200, args.concurrency, event_api=False))
            results: dict[str, list[tuple[float, list[float]]]] = {"POST /e": [], "webhook": []}
            for _ in range(args.rounds):
                results["POST /e"].append(
                    asyncio.run(
                        blast(f"{server.url}/e/bench", args.requests, args.concurrency, event_api=True)
                    )
                )
                results["webhook"].append(
                    asyncio.run(blast(hook_url, args.requests, args.concurrency, event_api=False))
                )
        finally:
            server.terminate()
        settings = pg_settings(url)
    print(
        f"PostgreSQL {settings.get('server_version')} (fsync={settings.get('fsync')},"
        f" synchronous_commit={settings.get('synchronous_commit')}); one `pgqueue dev` process;"
        f" {args.requests} requests x {args.rounds} rounds, {args.concurrency} in flight, one event each"
    )
    print(f"{'path':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    rates = {}
    for name, rounds in results.items():
        rate = statistics.mean(r for r, _ in rounds)
        lat = [x for _, ls in rounds for x in ls]
        rates[name] = rate
        print(f"{name:<10}{rate:>10.0f}{pct(lat, 50):>10.1f}{pct(lat, 99):>10.1f}")
    print(f"webhook / POST /e: {rates['webhook'] / rates['POST /e']:.2f}")
    print(
        f"the trivial transform alone (fresh QuickJS runtime per call): {transform_alone():.3f} ms per call"
    )


if __name__ == "__main__":
    main()
