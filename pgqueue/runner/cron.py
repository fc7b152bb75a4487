"""Cron triggers: standard 5-field schedules (croniter) become runs with the internal
`inngest/scheduled.timer` event, exactly once per function and scheduled instant.

A schedule is a row (function, cron spec, next_at). `CronScheduler.run_once(now)` first keeps the
rows in step with the synced triggers (a re-sync that changes or removes a cron string replaces
its schedule), then claims the due rows with SKIP LOCKED and fires them. Each fired slot is also
inserted into pgqueue.cron_ticks, whose primary key (function_id, scheduled_at) guarantees that
several schedulers ticking at once never start the same slot twice.

Time zones: a `TZ=Area/City ` or `CRON_TZ=Area/City ` prefix evaluates the fields in that zone
(default UTC), so `TZ=Asia/Kolkata 30 9 * * *` fires at 04:00 UTC.

Jitter: a cron trigger's `jitter` (1s..5m) delays each tick's run: the slot still fires (its
event and run are created on time), and the run's first call is due `jitter_delay_s()` after the
slot, a delay in [0, jitter] derived from the function and the slot, so every scheduler picks the
same one. A tick fired late waits only what is left of its delay.

Catch-up policy after downtime: when a tick finds that several slots of a schedule passed since it
last fired (the scheduler, or every container and the executor schedule, were down), it fires the
most recent missed slot once, as soon as it runs, and skips the older ones. A schedule never
bursts, and a short outage still produces the run that was due most recently. A new schedule's
first slot is the first one after the function was synced. Paused functions skip their slots
(recorded in cron_ticks with skip_reason 'function paused'); resuming does not replay them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from psycopg_pool import AsyncConnectionPool

from pgqueue import ids
from pgqueue.db.notify import Wakeup
from pgqueue.durations import parse_duration
from pgqueue.events.objects import event_object
from pgqueue.runner import starting
from pgqueue.service_loop import LoopService
from pgqueue.store import schedules as store
from pgqueue.store import events

log = logging.getLogger(__name__)

SCHEDULED_EVENT = "inngest/scheduled.timer"
TICK_RETENTION_S = 7 * 24 * 3600.0
_PRUNE_EVERY_S = 600.0



def split_cron(spec: str) -> tuple[str | None, str]:
    """('Europe/Paris', '0 9 * * 1-5') from 'TZ=Europe/Paris 0 9 * * 1-5' (also CRON_TZ=)."""
    text = spec.strip()
    for prefix in ("TZ=", "CRON_TZ="):
        if text.startswith(prefix):
            tz, _, rest = text[len(prefix):].partition(" ")
            return tz, rest.strip()
    return None, text


@dataclass(frozen=True, slots=True)
class CronTick:
    fired: int  # runs started
    skipped: int  # slots skipped: function paused, or not admitted (idempotency, singleton)
    caught_up: int  # schedules that had missed slots and fired only the latest one
    schedules_added: int
    schedules_removed: int


# -- schedule arithmetic (pure; `now` is always passed in) ----------------------------------------


def _parse(spec: str) -> tuple[ZoneInfo, str]:
    tz_name, fields = split_cron(spec)
    try:
        zone = ZoneInfo(tz_name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz_name!r} in cron {spec!r}") from None
    if len(fields.split()) != 5 or not croniter.is_valid(fields):
        raise ValueError(f"invalid cron {spec!r}")
    return zone, fields


def next_after(spec: str, after: datetime) -> datetime:
    """The first slot strictly after `after`, as a UTC instant."""
    zone, fields = _parse(spec)
    nxt: datetime = croniter(fields, after.astimezone(zone)).get_next(datetime)
    return nxt.astimezone(UTC)


def latest_at_or_before(spec: str, now: datetime) -> datetime:
    """The most recent slot at or before `now`, as a UTC instant."""
    zone, fields = _parse(spec)
    # Slots are whole minutes: one second past the current minute makes a slot at exactly this
    # minute count as "at or before", and never lets a slot later than `now` through.
    base = now.astimezone(zone).replace(second=0, microsecond=0) + timedelta(seconds=1)
    prev: datetime = croniter(fields, base).get_prev(datetime)
    return prev.astimezone(UTC)


def jitter_delay_s(function_id: Any, slot: datetime, jitter_s: float) -> float:
    """The delay in [0, jitter_s] of one slot's run: uniform over slots, the same for every scheduler
    (sha256 of function and slot, not Python's per-process hash()), whole milliseconds."""
    digest = hashlib.sha256(f"{function_id}:{slot.astimezone(UTC).isoformat()}".encode()).digest()
    return round(int.from_bytes(digest[:8], "big") / 2**64 * jitter_s, 3)


def trigger_jitter_s(config: dict[str, Any], spec: str) -> float:
    """The synced `jitter` of the cron trigger `spec`, in seconds (0 when it has none)."""
    for trigger in config.get("triggers") or []:
        if trigger.get("cron") == spec and trigger.get("jitter"):
            return parse_duration(trigger["jitter"])
    return 0.0


def _after_or_never(spec: str, now: datetime) -> datetime:
    try:
        return next_after(spec, now)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)


# -- the service ------------------------------------------------------------------------------------


class CronScheduler(LoopService):
    name = "cron"

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        queue_wakeup: Wakeup | None = None,
        interval_s: float = 1.0,
        batch_size: int = 100,
    ) -> None:
        self.pool = pool
        self.queue_wakeup = queue_wakeup
        self.interval_s = interval_s
        self.batch_size = batch_size
        super().__init__()
        self._last_prune = float("-inf")

    async def run_once(self, now: datetime | None = None) -> CronTick:
        now = now or datetime.now(UTC)
        fired = skipped = caught_up = 0
        async with self.pool.connection() as conn:
            async with conn.transaction():
                added, removed = await self._sync_schedules(conn, now)
            while True:
                async with conn.transaction():
                    due = await store.due(conn, now, self.batch_size)
                    for row in due:
                        try:
                            # a savepoint per schedule: one that cannot fire does not hold up the others
                            async with conn.transaction():
                                f, s, c = await self._fire(conn, row, now)
                        except Exception:
                            log.exception("cron: firing %s failed; its slot is skipped", row["slug"])
                            following = _after_or_never(row["cron"], now)
                            await store.advance(conn, row["function_id"], row["cron"], following)
                            continue
                        fired, skipped, caught_up = fired + f, skipped + s, caught_up + c
                if len(due) < self.batch_size:
                    break
            if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
                self._last_prune = time.monotonic()
                await store.prune_ticks(conn, TICK_RETENTION_S)
        if fired and self.queue_wakeup:
            self.queue_wakeup.set()
        if caught_up:
            log.warning("cron: %d schedule(s) missed slots while no scheduler ran; fired the latest of each",
                        caught_up)
        return CronTick(fired, skipped, caught_up, added, removed)

    async def _sync_schedules(self, conn: Any, now: datetime) -> tuple[int, int]:
        removed = await store.prune_schedules(conn)
        added = 0
        for row in await store.missing_schedules(conn):
            # Anchor at the sync; a sync "in the future" (clock skew, injected clocks) anchors at now.
            anchor = min(row["synced_at"], now)
            try:
                first = next_after(row["cron"], anchor)
            except ValueError as exc:
                log.warning("cron: function %s: %s; schedule ignored", row["function_id"], exc)
                continue
            added += await store.insert_schedule(conn, row["function_id"], row["cron"], first)
        return added, removed

    async def _fire(self, conn: Any, row: dict[str, Any], now: datetime) -> tuple[int, int, int]:
        spec = row["cron"]
        try:
            slot = latest_at_or_before(spec, now)
            following = next_after(spec, slot)
        except ValueError as exc:
            log.warning("cron: function %s: %s; schedule dropped", row["slug"], exc)
            await store.advance(conn, row["function_id"], spec, _after_or_never(spec, now))
            return 0, 0, 0
        caught_up = int(slot > row["next_at"])
        await store.advance(conn, row["function_id"], spec, following)
        if row["paused_at"] is not None:
            await store.claim_tick(
                conn, row["function_id"], slot, spec, run_id=None, skip_reason="function paused"
            )
            return 0, 1, caught_up
        run_id = ids.new_ulid()
        if not await store.claim_tick(conn, row["function_id"], slot, spec, run_id=run_id):
            return 0, 0, caught_up  # another scheduler fired this slot
        reason = await self._start_run(conn, row, slot, run_id, now)
        if reason is not None:
            await store.skip_tick(conn, row["function_id"], slot, reason)
            return 0, 1, caught_up
        return 1, 0, caught_up

    async def _start_run(
        self, conn: Any, row: dict[str, Any], slot: datetime, run_id: str, now: datetime
    ) -> str | None:
        """Create the slot's event and run, the way the runner starts event-triggered runs, its first
        call delayed by the trigger's jitter. Returns why no run started, or None."""
        event_row = await events.insert_direct(
            conn,
            SCHEDULED_EVENT,
            {"cron": row["cron"], "fn_id": row["slug"], "scheduled_at": slot.isoformat()},
        )
        fn = {"function_id": row["function_id"], "config": row["config"], "retries": row["retries"]}
        jitter_s = trigger_jitter_s(row["config"], row["cron"])
        origin = starting.EVENT
        if jitter_s > 0:
            starts_at = slot + timedelta(seconds=jitter_delay_s(row["function_id"], slot, jitter_s))
            origin = starting.Origin(delay_s=max((starts_at - now).total_seconds(), 0.0))
        _, reason = await starting.start_one(conn, fn, event_row["id"], event_object(event_row),
                                             run_id=run_id, origin=origin)
        return reason

    # -- service loop ---------------------------------------------------------------------------
    async def round(self) -> None:
        await self.run_once()

    async def pause(self) -> None:
        await asyncio.sleep(self.interval_s)
