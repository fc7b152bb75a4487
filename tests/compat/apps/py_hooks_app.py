"""Functions written with the official Python SDK for the webhook and delayed-run tests: one
triggered by the event a GitHub webhook's transform makes, one that records when its first step
ran (a future `ts`)."""

from __future__ import annotations

import os
import time
from typing import Any

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id=os.environ.get("PY_APP_ID", "py-hooks"))
STARTS: dict[str, float] = {}  # run id -> when its first step ran (seconds since the epoch)


@client.create_function(fn_id="on-push", trigger=inngest.TriggerEvent(event="github/push"))
async def on_push(ctx: inngest.Context) -> Any:
    data = ctx.event.data
    return await ctx.step.run(
        "summarise", lambda: f"{data['pusher']} pushed {data['commits']} to {data['repo']}"
    )


@client.create_function(fn_id="later", trigger=inngest.TriggerEvent(event="hooks/later"))
async def later(ctx: inngest.Context) -> Any:
    def first() -> float:
        STARTS.setdefault(ctx.run_id, time.time())
        return STARTS[ctx.run_id]

    started = await ctx.step.run("first", first)
    return {"started": started, "ts": ctx.event.ts}


app = fastapi.FastAPI()


@app.get("/ledger")
async def ledger() -> dict[str, Any]:
    return {"starts": STARTS}


inngest.fast_api.serve(app, client, [on_push, later])
