"""Functions written with the official Python SDK for the queue's order (issue 26); every run
records when its steps ran and when it ended."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id=os.environ.get("PY_APP_ID", "py-queue"))
_lock = threading.Lock()
RECORDS: list[dict[str, Any]] = []  # {"fn", "run_id", "key", "n", "what", "at", "until"}


def _record(fn: str, ctx: inngest.Context, what: str, at: float | None = None) -> None:
    with _lock:
        RECORDS.append({"fn": fn, "run_id": ctx.run_id, "key": ctx.event.data.get("key"),
                        "n": ctx.event.data.get("n"), "what": what, "at": at or time.time(),
                        "until": time.time()})


@client.create_function(
    fn_id="ordered",
    trigger=inngest.TriggerEvent(event="queue/ordered"),
    concurrency=[inngest.Concurrency(limit=2)],
)
async def ordered(ctx: inngest.Context) -> int:
    """Three 0.3 s steps under a limit of 2."""

    async def work() -> int:
        start = time.time()
        await asyncio.sleep(0.3)
        _record("ordered", ctx, "step", at=start)
        return 1

    total = 0
    for i in range(3):
        total += await ctx.step.run(f"work-{i}", work)
    _record("ordered", ctx, "end")
    return total


@client.create_function(
    fn_id="tenant",
    trigger=inngest.TriggerEvent(event="queue/tenant"),
    concurrency=[inngest.Concurrency(limit=5, key="event.data.key")],
)
async def tenant(ctx: inngest.Context) -> int:
    """A tenant's work: one short step, five at a time per tenant."""

    async def work() -> int:
        _record("tenant", ctx, "start")
        await asyncio.sleep(0.05)
        return 1

    return await ctx.step.run("work", work)


@client.create_function(fn_id="neighbour", trigger=inngest.TriggerEvent(event="queue/neighbour"))
async def neighbour(ctx: inngest.Context) -> int:
    """Another function of the same app, no limits."""

    async def work() -> int:
        _record("neighbour", ctx, "start")
        return 1

    return await ctx.step.run("work", work)


@client.create_function(
    fn_id="mixed",
    trigger=inngest.TriggerEvent(event="queue/mixed"),
    concurrency=[inngest.Concurrency(limit=2, key="event.data.key"), inngest.Concurrency(limit=8)],
)
async def mixed(ctx: inngest.Context) -> int:
    """Two steps of a few ms under a key limit and a function limit."""

    async def work() -> int:
        await asyncio.sleep(0.001 * (int(ctx.event.data.get("n", 0)) % 7))
        return 1

    total = await ctx.step.run("a", work) + await ctx.step.run("b", work)
    _record("mixed", ctx, "end")
    return total


app = fastapi.FastAPI()


@app.get("/ledger")
async def ledger() -> dict[str, Any]:
    with _lock:
        return {"records": list(RECORDS)}


inngest.fast_api.serve(app, client, [ordered, tenant, neighbour, mixed])
