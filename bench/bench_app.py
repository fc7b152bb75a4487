"""The benchmark's app: a no-op 3-step function written with the official Python SDK.

It records when each run's first step started (for latency) and nothing else.
"""

from __future__ import annotations

import os
import time
from typing import Any

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id=os.environ.get("BENCH_APP_ID", "bench"))
FIRST_STEP: dict[str, float] = {}


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


app = fastapi.FastAPI()


@app.get("/first-steps")
async def first_steps() -> dict[str, Any]:
    return FIRST_STEP


@app.post("/reset")
async def reset() -> dict[str, Any]:
    FIRST_STEP.clear()
    return {}


inngest.fast_api.serve(app, client, [noop3])
