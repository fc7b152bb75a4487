"""Flow-control functions written with the official Python SDK; every step records when it ran."""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
import time
from typing import Any

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id=os.environ.get("PY_APP_ID", "py-flow"))
_lock = threading.Lock()
SPANS: list[dict[str, Any]] = []  # {"fn", "key", "n", "start", "end"}


def _span(fn: str, ctx: inngest.Context, start: float, end: float, **extra: Any) -> None:
    with _lock:
        SPANS.append({"fn": fn, "run_id": ctx.run_id, "key": ctx.event.data.get("key"), "n": ctx.event.data.get("n"),
                      "start": start, "end": end, **extra})


@client.create_function(
    fn_id="conc-key",
    trigger=inngest.TriggerEvent(event="flow/conc"),
    concurrency=[inngest.Concurrency(limit=2, key="event.data.key")],
)
async def conc_key(ctx: inngest.Context) -> int:
    async def work() -> int:
        start = time.time()
        await asyncio.sleep(float(ctx.event.data.get("seconds", 0.05)))
        _span("conc-key", ctx, start, time.time())
        return 1

    return await ctx.step.run("work", work)


@client.create_function(
    fn_id="throttled",
    trigger=inngest.TriggerEvent(event="flow/throttle"),
    throttle=inngest.Throttle(limit=1, period=datetime.timedelta(seconds=1), burst=1),
)
async def throttled(ctx: inngest.Context) -> None:
    now = time.time()
    _span("throttled", ctx, now, now)


@client.create_function(
    fn_id="debounced",
    trigger=inngest.TriggerEvent(event="flow/debounce"),
    debounce=inngest.Debounce(period=datetime.timedelta(seconds=1), key="event.data.key"),
)
async def debounced(ctx: inngest.Context) -> Any:
    now = time.time()
    _span("debounced", ctx, now, now)
    return ctx.event.data.get("n")


@client.create_function(
    fn_id="rate-limited",
    trigger=inngest.TriggerEvent(event="flow/rate"),
    rate_limit=inngest.RateLimit(limit=2, period=datetime.timedelta(seconds=60), key="event.data.key"),
)
async def rate_limited(ctx: inngest.Context) -> Any:
    now = time.time()
    _span("rate-limited", ctx, now, now)
    return ctx.event.data.get("n")


@client.create_function(
    fn_id="batched",
    trigger=inngest.TriggerEvent(event="flow/batch"),
    batch_events=inngest.Batch(max_size=3, timeout=datetime.timedelta(seconds=2)),
)
async def batched(ctx: inngest.Context) -> list[Any]:
    now = time.time()
    _span("batched", ctx, now, now, size=len(ctx.events))
    return [e.data.get("n") for e in ctx.events]


@client.create_function(
    fn_id="prioritized",
    trigger=inngest.TriggerEvent(event="flow/prio"),
    concurrency=[inngest.Concurrency(limit=1)],
    priority=inngest.Priority(run="event.data.prio"),
)
async def prioritized(ctx: inngest.Context) -> Any:
    async def work() -> Any:
        start = time.time()
        await asyncio.sleep(0.2)
        _span("prioritized", ctx, start, time.time())
        return ctx.event.data.get("n")

    return await ctx.step.run("work", work)


@client.create_function(
    fn_id="start-timeout",
    trigger=inngest.TriggerEvent(event="flow/start-timeout"),
    concurrency=[inngest.Concurrency(limit=1)],
    timeouts=inngest.Timeouts(start=datetime.timedelta(seconds=1)),
)
async def start_timeout(ctx: inngest.Context) -> Any:
    async def work() -> Any:
        start = time.time()
        await asyncio.sleep(float(ctx.event.data.get("seconds", 0)))
        _span("start-timeout", ctx, start, time.time())
        return ctx.event.data.get("n")

    return await ctx.step.run("work", work)


@client.create_function(
    fn_id="debounced-start-timeout",
    trigger=inngest.TriggerEvent(event="flow/debounce-start-timeout"),
    debounce=inngest.Debounce(period=datetime.timedelta(seconds=2), key="event.data.key"),
    timeouts=inngest.Timeouts(start=datetime.timedelta(seconds=1)),
)
async def debounced_start_timeout(ctx: inngest.Context) -> Any:
    now = time.time()
    _span("debounced-start-timeout", ctx, now, now)
    return ctx.event.data.get("n")


app = fastapi.FastAPI()


@app.get("/ledger")
async def ledger() -> dict[str, Any]:
    with _lock:
        return {"spans": list(SPANS)}


inngest.fast_api.serve(app, client, [conc_key, throttled, debounced, rate_limited, batched, prioritized, start_timeout,
                                         debounced_start_timeout])
