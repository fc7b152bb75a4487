"""Start a run of one function: the one path every run takes, whatever started it (an event
trigger, cron, step.invoke, POST /invoke, a replay), so each gets the same flow-control decisions
from the target function's configuration.

Order: paused (skip), rate limit (skip), idempotency and singleton (skip or replace), batching and
debounce (a waiting run may absorb the event), then the run itself with its concurrency keys,
priority and throttle, its cancelOn listeners and its `timeouts.start`. Plain runs are buffered
and created together; anything that must see earlier runs (singleton claims, batch/debounce
windows) flushes the buffer first. `close()` creates what is left and registers the cancel
listeners and start timeouts of the new runs.

What differs by origin, and why:
- step.invoke (`correlation_id`): debounce and batching never absorb the call. The caller waits for
  the result of *its* run; a run that took a later event instead would leave it waiting for ever.
- replay (`replay_of`): rate limit and idempotency are not applied (they decide whether an *event*
  starts a run; the operator has decided), nor debounce and batching (a replay re-runs exactly the
  original events). Concurrency, throttle, priority, singleton, cancelOn and timeouts apply.

A future `ts` on the event (Inngest's "schedule a function for later"): the run is created now and
its first call waits until `ts`, like a run sleeping before its first step, so cancellation,
cancelOn and `timeouts.start` (counted from `ts`) apply to it meanwhile. Only runs an event starts
directly are delayed: step.invoke, replays and cron runs start as usual, and a debounce or batch
window keeps its own time. The delay is taken against this process's clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pgqueue import ids
from pgqueue.db.pool import Conn
from pgqueue.runner import admission, flow, matching, timeouts
from pgqueue.store import events, pauses, runs
from pgqueue.store import flow_control as flow_store

PAUSED = "skipped: the function is paused"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a run comes from, beyond its event: the defaults are an event trigger or cron."""

    correlation_id: str | None = None  # step.invoke: `<parent run>.<step>`
    replay_of: str | None = None
    event_ids: list[str] | None = None  # a replay of a batch keeps all of its events
    # cron `jitter`: the run's first call waits this long (a debounce or batch window keeps its own time)
    delay_s: float = 0.0

    @property
    def folds(self) -> bool:
        """May a debounce or batch window take the event instead of starting a run for it?"""
        return self.correlation_id is None and self.replay_of is None


EVENT = Origin()


def ts_delay_s(event: dict[str, Any], now_s: float | None = None) -> float:
    """How far in the future the event's `ts` lies, in seconds (0 for a past or missing ts)."""
    ts = event.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return 0.0
    now = time.time() if now_s is None else now_s
    return max(0.0, ts / 1000.0 - now)


@dataclass
class RunStarter:
    conn: Conn
    created: int = 0
    last_run_id: str | None = None  # the run that holds the last started event (new or waiting)
    _buffer: list[dict[str, Any]] = field(default_factory=list)
    _followups: list[tuple[str, dict[str, Any], dict[str, Any], float]] = field(default_factory=list)

    async def flush(self) -> None:
        if self._buffer:
            self.created += await runs.create_many(self.conn, self._buffer)
            self._buffer = []

    async def start(
        self, fn: dict[str, Any], event_id: str, event: dict[str, Any], *, run_id: str | None = None,
        origin: Origin = EVENT,
    ) -> str | None:
        """Start (or fold the event into) a run of `fn` (function_id, config, retries, paused_at).
        Returns why no run was started, or None; for events, the reason is stored on the event."""
        conn = self.conn
        config = fn["config"]
        fn_id = fn["function_id"]
        run_id = run_id or ids.new_ulid()
        self.last_run_id = None
        reason = await self._gate(fn, run_id, event, origin)
        if reason is not None:
            if origin.replay_of is None:
                await events.set_skip_reason(conn, event_id, reason)
            return reason
        shape = flow.shape(fn_id, config, event)
        delay_s = origin.delay_s
        if origin.folds:  # started by an event (or cron): a future `ts` schedules the run for then
            delay_s = max(delay_s, ts_delay_s(event))
        run = {
            "id": run_id,
            "function_id": fn_id,
            "event_id": event_id,
            "event_ids": origin.event_ids or [event_id],
            "max_attempts": fn["retries"] + 1,
            "correlation_id": origin.correlation_id,
            "replay_of": origin.replay_of,
            "delay_s": delay_s,
            **shape.fields(),
        }
        if origin.folds and (config.get("batchEvents") or config.get("debounce")):
            await self.flush()
            deferred = await flow.batch(conn, fn_id, config, event_id, event)
            if deferred is None:
                deferred = await flow.debounce(conn, fn_id, config, event_id, event, shape)
            if deferred is not None:
                if deferred.absorbed_by is not None:
                    self.last_run_id = deferred.absorbed_by
                    if deferred.superseded_event is not None:
                        await self._rekey_cancellations(deferred.absorbed_by, config, event)
                    return None  # a waiting run took this event
                run["delay_s"] = deferred.delay_s
                self.created += await runs.create_many(conn, [run])
                if deferred.batch_key is not None:
                    await flow_store.batch_open(conn, fn_id, deferred.batch_key, run_id)
                if deferred.debounce_key is not None:
                    await flow_store.debounce_open(conn, fn_id, deferred.debounce_key, run_id)
                self._follow_up(run_id, fn, event, deferred.delay_s)
                self.last_run_id = run_id
                return None
        self._buffer.append(run)
        self.last_run_id = run_id
        self._follow_up(run_id, fn, event, delay_s)
        return None

    async def _gate(
        self, fn: dict[str, Any], run_id: str, event: dict[str, Any], origin: Origin
    ) -> str | None:
        if fn.get("paused_at") is not None:
            return PAUSED
        config = fn["config"]
        replay = origin.replay_of is not None
        reason = None if replay else await flow.rate_limited(self.conn, fn["function_id"], config, event)
        if reason is None and admission.needs_admission(config):
            await self.flush()  # a singleton claim looks at live runs
            reason = await admission.admit(self.conn, fn["function_id"], config, run_id, event,
                                           idempotency=not replay)
        return reason

    async def _rekey_cancellations(self, run_id: str, config: dict[str, Any], event: dict[str, Any]) -> None:
        """A debounced run now runs with a later event: its cancelOn listeners match that one."""
        if config.get("cancel"):
            await pauses.delete_cancel_listeners(self.conn, run_id)
            await matching.register_cancellations(self.conn, run_id, config, event)

    def _follow_up(self, run_id: str, fn: dict[str, Any], event: dict[str, Any], delay_s: float) -> None:
        config = fn["config"]
        if config.get("cancel") or (config.get("timeouts") or {}).get("start"):
            self._followups.append((run_id, fn, event, delay_s))

    async def close(self) -> int:
        await self.flush()
        for run_id, fn, event, delay_s in self._followups:
            await matching.register_cancellations(self.conn, run_id, fn["config"], event)
            await timeouts.schedule_start(self.conn, run_id, fn, released_in_s=delay_s)
        self._followups = []
        return self.created


async def start_one(
    conn: Conn, fn: dict[str, Any], event_id: str, event: dict[str, Any], *, run_id: str | None = None,
    origin: Origin = EVENT,
) -> tuple[str | None, str | None]:
    """Start one run now, in the caller's transaction: (the id of the run that holds the event, or
    None when none was started; why none was started, or None)."""
    starter = RunStarter(conn)
    reason = await starter.start(fn, event_id, event, run_id=run_id, origin=origin)
    await starter.close()
    return starter.last_run_id, reason
