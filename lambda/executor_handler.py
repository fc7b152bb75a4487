"""AWS Lambda entry point of the executor: `executor_handler.handler`.

Events it takes:
- the EventBridge schedule (Scheduler with input {"action": "tick"}, or a classic rule's
  "Scheduled Event" from source aws.events): run one tick;
- a kick from the API ({"action": "kick"}, asynchronous invoke): the same tick, sooner;
- a hand-over from an executor whose budget ended with work due now or within a minute
  ({"action": "kick", "hop": n}): the same tick; chains stop after PGQUEUE_WAKE_MAX_HOPS hops;
- {"action": "migrate"}: apply the schema migrations (the Terraform stack invokes it on apply).

A tick does all due work (cron, rescue, queue) within the invocation's remaining time minus a
safety margin, then releases every lease it still holds before returning, so an invocation that
runs out of time never strands work: its successor (invoked before it returns), the next tick or a
kick continues it. While work comes due within PGQUEUE_TICK_LINGER_S (60 s on Lambda), one
executor stays up for it, so sleeps, retries and wait timeouts are not rounded up to the schedule.
The pool and event loop live at module level and are reused by warm invocations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgqueue import telemetry
from pgqueue.db import migrate
from pgqueue.db.pool import open_pool
from pgqueue.serverless import aws, kick, tick

# Time kept back from the invocation's deadline for releasing leases and publishing metrics.
SAFETY_MARGIN_S = 5.0
DEFAULT_BUDGET_S = 60.0  # when the context does not say (local calls)
SCHEDULE_SOURCES = ("aws.events", "aws.scheduler")

log = logging.getLogger("pgqueue.executor")
source = aws.LambdaSettings()  # re-read from the secrets at most every aws.SETTINGS_TTL_S
settings = source.current
aws.configure_logging(settings)
pool_opens = 0
_pool: AsyncConnectionPool | None = None
_loop = asyncio.new_event_loop()
_invoke: kick.Invoke | None = None


def action_of(event: Any) -> str:
    """'tick', 'kick' or 'migrate'; ValueError for anything else (HTTP events included)."""
    if not isinstance(event, dict):
        raise ValueError(f"the executor takes a JSON object, got {type(event).__name__}")
    if "requestContext" in event or "httpMethod" in event:
        raise ValueError("this is the executor: send HTTP requests to api_handler.handler")
    action = event.get("action")
    if action is None:
        scheduled = event.get("source") in SCHEDULE_SOURCES or event.get("detail-type") == "Scheduled Event"
        if scheduled or not event:
            return "tick"
        raise ValueError(f"unknown executor event (no action, source {event.get('source')!r})")
    if action not in ("tick", "kick", "migrate"):
        raise ValueError(f"unknown executor action {action!r}: use tick, kick or migrate")
    return str(action)


def budget_s(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return DEFAULT_BUDGET_S
    seconds = remaining() / 1000.0
    # Short invocations (tests, tiny timeouts) keep back a fifth rather than the full margin.
    return max(seconds - min(SAFETY_MARGIN_S, seconds / 5), 0.0)


async def _pool_once() -> AsyncConnectionPool:
    global _pool, pool_opens
    if _pool is not None and getattr(_pool, "_pgqueue_url", None) != settings.database_url:
        await _pool.close()  # the secret now names another database
        _pool = None
    if _pool is None:
        assert settings.database_url
        pool_opens += 1
        _pool = await open_pool(
            settings.database_url, min_size=1, max_size=settings.pool_size, name="pgqueue-executor",
            pooler=True,
        )
        _pool._pgqueue_url = settings.database_url  # type: ignore[attr-defined]
    return _pool


async def _tick(deadline: float) -> tick.TickResult:
    pool = await _pool_once()  # a cold start's connect time comes out of the budget too
    return await tick.run_tick(
        pool,
        settings=settings,
        budget_s=max(deadline - time.monotonic(), 0.0),
        metrics_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
    )


def hop_of(event: dict[str, Any]) -> int:
    hop = event.get("hop", 0)
    return hop if isinstance(hop, int) and not isinstance(hop, bool) and hop >= 0 else 0


def hand_over(outcome: tick.TickResult, hop: int) -> bool:
    """Invoke the next executor when this one's budget ended with work due soon. Never raises."""
    global _invoke
    if not outcome.successor_needed(settings.tick_linger_s) or hop >= settings.wake_max_hops:
        return False
    target = settings.kick_function or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    if _invoke is None:
        _invoke = kick.boto3_invoke()
    if not target or _invoke is None:
        return False
    try:
        _invoke(target, json.dumps({"action": "kick", "hop": hop + 1}).encode())
    except Exception as exc:
        log.warning("invoking the next executor failed (the schedule will pick the work up): %s", exc)
        return False
    return True


def handler(event: Any, context: Any) -> dict[str, Any]:
    global settings
    settings = source.get()
    action = action_of(event)
    if action == "migrate":
        assert settings.database_url
        result = migrate.migrate(settings.database_url)
        return {"action": action, "version": result.version, "applied": list(result.applied)}
    deadline = time.monotonic() + budget_s(context)
    try:
        outcome = _loop.run_until_complete(_tick(deadline))
    finally:
        telemetry.flush()  # traces (optional): a frozen container exports nothing until it thaws
    hop = hop_of(event)
    return {"action": action, **outcome.to_dict(), "hop": hop, "handed_over": hand_over(outcome, hop)}
