"""Start a run of one function for one event: the decisions shared by event triggers and cron.

Order: rate limit (skip), idempotency and singleton (skip or replace), batching and debounce
(a waiting run may absorb the event), then the run itself with its concurrency keys, priority and
throttle. Plain runs are buffered and created together; anything that must see earlier runs
(singleton claims, batch/debounce windows) flushes the buffer first. `close()` creates what is left
and registers cancel listeners and start timeouts of the new runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgqueue import ids
from pgqueue.db.pool import Conn
from pgqueue.runner import admission, flow, matching, timeouts
from pgqueue.store import events, runs
from pgqueue.store import flow as flow_store


@dataclass
class RunStarter:
    conn: Conn
    created: int = 0
    _buffer: list[dict[str, Any]] = field(default_factory=list)
    _followups: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    async def flush(self) -> None:
        if self._buffer:
            self.created += await runs.create_many(self.conn, self._buffer)
            self._buffer = []

    async def start(
        self, fn: dict[str, Any], event_id: str, event: dict[str, Any], *, run_id: str | None = None
    ) -> str | None:
        """Start (or fold the event into) a run of `fn` (function_id, config, retries).
        Returns why no run was started for this event, or None; the reason is stored on the event."""
        conn = self.conn
        config = fn["config"]
        fn_id = fn["function_id"]
        run_id = run_id or ids.new_ulid()
        reason = await flow.rate_limited(conn, fn_id, config, event)
        if reason is None and admission.needs_admission(config):
            await self.flush()  # a singleton claim looks at live runs
            reason = await admission.admit(conn, fn_id, config, run_id, event)
        if reason is not None:
            await events.set_skip_reason(conn, event_id, reason)
            return reason
        run = {
            "id": run_id,
            "function_id": fn_id,
            "event_id": event_id,
            "event_ids": [event_id],
            "max_attempts": fn["retries"] + 1,
            **flow.shape(fn_id, config, event).fields(),
        }
        if config.get("batchEvents") or config.get("debounce"):
            await self.flush()
            deferred = await flow.batch(conn, fn_id, config, event_id, event)
            if deferred is None:
                deferred = await flow.debounce(conn, fn_id, config, event_id, event)
            if deferred is not None:
                if deferred.absorbed_by is not None:
                    return None  # a waiting run took this event
                run["delay_s"] = deferred.delay_s
                self.created += await runs.create_many(conn, [run])
                if deferred.batch_key is not None:
                    await flow_store.batch_open(conn, fn_id, deferred.batch_key, run_id)
                if deferred.debounce_key is not None:
                    await flow_store.debounce_open(conn, fn_id, deferred.debounce_key, run_id)
                self._follow_up(run_id, fn, event)
                return None
        self._buffer.append(run)
        self._follow_up(run_id, fn, event)
        return None

    def _follow_up(self, run_id: str, fn: dict[str, Any], event: dict[str, Any]) -> None:
        config = fn["config"]
        if config.get("cancel") or (config.get("timeouts") or {}).get("start"):
            self._followups.append((run_id, fn, event))

    async def close(self) -> int:
        await self.flush()
        for run_id, fn, event in self._followups:
            await matching.register_cancellations(self.conn, run_id, fn["config"], event)
            await timeouts.schedule_start(self.conn, run_id, fn)
        self._followups = []
        return self.created
