"""One bounded round of all background work, for deployments without a long-lived process.

`run_tick()` is what `pgqueue tick` and the executor Lambda call on a schedule (and after a kick):
fire due cron slots, rescue expired leases (and sweep parked items, prune expired keys), prune
old runs, then drain: turn stored events into runs and claim/execute due queue items — delayed
work, sleeps and wait timeouts are just items whose time came — until nothing is due or the
time budget runs out. Leases still held at the end are handed back (without using an attempt),
so the next tick, or a container worker, picks them up at once.

It runs the same services as `pgqueue worker` (their `run_once()`s): there is one way to run work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TextIO

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.pool import open_pool
from pgqueue.services.process import Services
from pgqueue.settings import Settings
from pgqueue.store import executors as store

log = logging.getLogger(__name__)

DEADLINE_ERROR = {
    "name": "CallTimedOut",
    "message": "the call was still running when the executor invocation reached its deadline",
}

METRICS_NAMESPACE = "pgqueue"
METRICS_DIMENSION = "FunctionName"
# name -> (TickResult field, CloudWatch unit): what the tick publishes as EMF.
METRICS: dict[str, tuple[str, str]] = {
    "QueueDepth": ("due", "Count"),
    "OldestDueAgeSeconds": ("oldest_due_age_s", "Seconds"),
    "LeasedItems": ("leased", "Count"),
    "ScheduledItems": ("scheduled", "Count"),
    "InboxEvents": ("inbox", "Count"),
    "ItemsClaimed": ("items_claimed", "Count"),
    "ItemsReleased": ("items_released", "Count"),
    "RunsCreated": ("runs_created", "Count"),
    "CronRunsFired": ("cron_fired", "Count"),
    "RescuedItems": ("rescued", "Count"),
}

_POLL_S = 0.2
_LINGER_POLL_S = 1.0  # how often a lingering executor looks for new events


@dataclass(frozen=True, slots=True)
class TickResult:
    cron_fired: int
    cron_skipped: int
    rescued: int
    events_seen: int
    runs_created: int
    items_claimed: int
    items_released: int
    # the queue when the tick ended
    due: int
    scheduled: int
    leased: int
    inbox: int
    oldest_due_age_s: float
    idle: bool  # stopped because nothing was due (False: the budget ran out first)
    duration_s: float
    next_wake_in_s: float | None = None  # the next queue item or cron slot (negative: overdue)

    def successor_needed(self, linger_s: float) -> bool:
        """The budget ran out with work due now or within linger_s: a serverless executor should
        invoke its successor rather than leave the work to the next scheduled tick."""
        return not self.idle and self.next_wake_in_s is not None and self.next_wake_in_s <= linger_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def run_tick(
    target: Settings | AsyncConnectionPool,
    *,
    budget_s: float,
    settings: Settings | None = None,
    now: datetime | None = None,
    grace_s: float | None = None,
    linger_s: float | None = None,
    metrics_name: str | None = None,
    metrics_stream: TextIO | None = None,
) -> TickResult:
    """Do all due background work within `budget_s` seconds, then release any lease still held.

    target: Settings (a pool is opened and closed here) or an open pool (reused, e.g. across warm
    Lambda invocations; pass `settings` for the executor's keys and limits).
    now: the cron clock (tests inject it); queue times are the database's.
    grace_s: the tail of the budget in which nothing new is claimed, so calls in flight can end
    (default: a quarter of the budget, at most 10 s).
    linger_s: keep going while an item or cron slot comes due within this many seconds (default
    settings.tick_linger_s; 0: stop when idle). One executor at a time lingers, looking for new
    events every second.
    metrics_name: when set, print one CloudWatch EMF line with the queue metrics, dimension
    FunctionName=<metrics_name>.
    """
    started = time.monotonic()
    cfg = settings or (target if isinstance(target, Settings) else Settings())
    own_pool = isinstance(target, Settings)
    if isinstance(target, Settings):
        assert target.database_url, "run_tick needs settings with a database_url"
        pool = await open_pool(target.database_url, max_size=target.pool_size, pooler=target.pooler)
    else:
        pool = target
    services = Services(cfg, pool)
    linger = cfg.tick_linger_s if linger_s is None else linger_s
    try:
        result = await _tick(services, started, budget_s, now=now, grace_s=grace_s, linger_s=linger)
    finally:
        await services.client.aclose()
        await services.fetch_client.aclose()
        if own_pool:
            await pool.close()
    if metrics_name is not None:
        (metrics_stream or sys.stdout).write(json.dumps(emf_record(result, metrics_name)) + "\n")
        (metrics_stream or sys.stdout).flush()
    return result


async def _tick(
    services: Services, started: float, budget_s: float, *, now: datetime | None, grace_s: float | None,
    linger_s: float,
) -> TickResult:
    deadline = started + max(budget_s, 0.0)
    grace = min(budget_s / 4, 10.0) if grace_s is None else grace_s
    claim_until = deadline - grace

    cron = await services.cron.run_once(now)
    rescue = await services.rescuer.run_once()
    if services.retention is not None:
        try:
            await services.retention.run_once()
        except Exception:
            log.exception("retention round failed; the next tick retries")

    worker = services.worker
    heartbeat = asyncio.create_task(worker.heartbeat(), name="pgqueue-tick-heartbeat")
    events_seen = runs_created = claimed = 0
    idle = False
    fruitless = 0  # rounds in a row where items were due but none could be claimed (flow control)
    announced = False  # told kickers this executor stopped looking (executor_kicks.scan_ended_at)
    me = uuid.uuid4()  # this tick's claim on lingering
    lingered = False
    try:
        while time.monotonic() < claim_until:
            drained = await services.runner.drain()
            events_seen += drained.events_seen
            runs_created += drained.runs_created
            claimed += drained.handed  # calls the runner leased to the worker in its transaction
            got = (await worker.run_once()).claimed
            claimed += got
            if got or drained.events_seen:
                announced = False
            if got:
                fruitless = 0
                continue
            tasks = [task for _, task in worker.inflight.values()]
            left = claim_until - time.monotonic()
            if tasks:
                await asyncio.wait(
                    tasks, timeout=max(min(_POLL_S, left), 0), return_when=asyncio.FIRST_COMPLETED
                )
                continue
            if drained.events_seen:
                continue
            if not announced:
                # From here on kicks go out again; then look once more, because events committed
                # before this mark had their kicks skipped on the understanding that we would.
                async with services.pool.connection() as conn:
                    await store.scan_ended(conn)
                announced = True
                continue
            async with services.pool.connection() as conn:
                wake_in = await store.next_wake_in(conn)
            left = claim_until - time.monotonic()
            if wake_in is None or wake_in > max(linger_s, 0.0):
                idle = True
                break
            if wake_in > left:
                break  # due soon, but after this budget: not idle, the successor takes it
            if wake_in <= 0:
                fruitless += 1
                if fruitless >= 3:  # due but not claimable now (concurrency, throttle): not our work
                    idle = True
                    break
                await services.cron.run_once(now)  # a cron slot may be what is due
                await asyncio.sleep(min(_POLL_S, max(left, 0)))
                continue
            # Work comes due within linger_s: one executor stays up for it, polling for new events.
            async with services.pool.connection() as conn:
                if not await store.claim_linger(conn, me, wake_in + _LINGER_POLL_S * 2):
                    idle = True  # another executor is lingering for it
                    break
            lingered = True
            await asyncio.sleep(min(wake_in, _LINGER_POLL_S, max(left, 0)))
        # Stage two: no new claims; calls in flight get the rest of the budget.
        tasks = [task for _, task in worker.inflight.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0))
        leftover = len(worker.inflight)
        # What is left is cancelled and handed back as a counted interruption: a call that never
        # fits in an invocation's budget fails its run (CallTimedOut) instead of looping.
        await worker.stop(grace_s=0, interrupt_error=DEADLINE_ERROR)
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    async with services.pool.connection() as conn:
        if lingered:
            await store.release_linger(conn, me)
        next_wake = await store.next_wake_in(conn)
    async with services.pool.connection() as conn:
        m = await store.queue_metrics(conn)
    return TickResult(
        cron_fired=cron.fired,
        cron_skipped=cron.skipped,
        rescued=rescue.rescued,
        events_seen=events_seen,
        runs_created=runs_created,
        items_claimed=claimed,
        items_released=leftover,
        due=int(m["due"]),
        scheduled=int(m["scheduled"]),
        leased=int(m["leased"]),
        inbox=int(m["inbox"]),
        oldest_due_age_s=round(float(m["oldest_due_age_s"]), 3),
        idle=idle,
        duration_s=round(time.monotonic() - started, 3),
        next_wake_in_s=None if next_wake is None else round(next_wake, 3),
    )


def emf_record(result: TickResult, name: str, *, timestamp_ms: int | None = None) -> dict[str, Any]:
    """A CloudWatch Embedded Metric Format record of the tick's metrics (one JSON log line)."""
    values = result.to_dict()
    record: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [[METRICS_DIMENSION]],
                    "Metrics": [{"Name": metric, "Unit": unit} for metric, (_, unit) in METRICS.items()],
                }
            ],
        },
        METRICS_DIMENSION: name,
        "idle": result.idle,
        "duration_s": result.duration_s,
    }
    for metric, (field_name, _) in METRICS.items():
        record[metric] = values[field_name]
    return record
