"""The benchmark's app, written with the official Python SDK: a no-op 3-step function, which
records when each run's first step started (for latency), and the ordering scenario's function
(three 0.3 s steps, concurrency 2), which records when each run ended.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id=os.environ.get("BENCH_APP_ID", "bench"))
FIRST_STEP: dict[str, float] = {}
ENDED: dict[str, float] = {}
ORDERED_STEP_S = 0.3
ORDERED_LIMIT = 2


@client.create_function(fn_id="noop-3", trigger=inngest.TriggerEvent(event="bench/noop"))
async def noop3(ctx: inngest.Context) -> int:
    async def one() -> int:
        FIRST_STEP.setdefault(str(ctx.event.data.get("k")), time.time())
        return 1

    async def two() -> int:
        return 2

    async def three() -> int:
        return 3

    return await ctx.step.run("one", one) + await ctx.step.run("two", two) + await ctx.step.run("three", three)


@client.create_function(fn_id="ordered-3", trigger=inngest.TriggerEvent(event="bench/ordered"),
                        concurrency=[inngest.Concurrency(limit=ORDERED_LIMIT)])
async def ordered3(ctx: inngest.Context) -> int:
    async def work() -> int:
        await asyncio.sleep(ORDERED_STEP_S)
        return 1

    total = 0
    for step in ("one", "two", "three"):
        total += await ctx.step.run(step, work)
    ENDED[str(ctx.event.data.get("k"))] = time.time()
    return total


app = fastapi.FastAPI()


@app.get("/first-steps")
async def first_steps() -> dict[str, Any]:
    return FIRST_STEP


@app.get("/ended")
async def ended() -> dict[str, Any]:
    return {"ended": ENDED, "step_s": ORDERED_STEP_S, "limit": ORDERED_LIMIT}


@app.post("/reset")
async def reset() -> dict[str, Any]:
    FIRST_STEP.clear()
    ENDED.clear()
    return {}


inngest.fast_api.serve(app, client, [noop3, ordered3])
