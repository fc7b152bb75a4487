"""The Runner service: turns stored events into runs.

Events are claimed from pgqueue.event_inbox with SKIP LOCKED and deleted in the same transaction
that creates their runs, so several runners can work at once and a crash loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgqueue import ids
from pgqueue.db.notify import Wakeup
from pgqueue.runner import admission, flow, matching, timeouts, triggers
from pgqueue.store import apps, events, pauses, runs
from pgqueue.store import flow as flow_store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunnerTick:
    events_seen: int
    runs_created: int


class Runner:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        wakeup: Wakeup,
        queue_wakeup: Wakeup | None = None,
        poll_interval_s: float = 1.0,
        batch_size: int = 200,
    ) -> None:
        self.pool = pool
        self.wakeup = wakeup
        self.queue_wakeup = queue_wakeup
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> RunnerTick:
        async with self.pool.connection() as conn, conn.transaction():
            event_ids = await events.claim_inbox(conn, self.batch_size)
            if not event_ids:
                return RunnerTick(0, 0)
            rows = {r["id"]: r for r in await events.get_many(conn, event_ids)}
            names = sorted({r["name"] for r in rows.values()})
            candidates = await apps.trigger_candidates(conn, names)
            pause_paths = await pauses.paths_for(conn, names)
            new_runs = []
            after_create: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
            resumed = created = 0
            for event_id in event_ids:
                row = rows.get(event_id)
                if row is None:
                    continue
                event = triggers.event_object(row)
                resumed += await matching.match_event(conn, event, row["received_at"], pause_paths.get(event["name"], []))
                matched = triggers.matching_functions(event, candidates)
                paused = [m for m in matched if m["paused_at"] is not None]
                if paused and len(paused) == len(matched):
                    await events.set_skip_reason(conn, event_id, "function paused")
                for trig in matched:
                    if trig["paused_at"] is not None:
                        continue
                    run_id = ids.new_ulid()
                    config = trig["config"]
                    fn_id = trig["function_id"]
                    reason = await flow.rate_limited(conn, fn_id, config, event)
                    if reason is None and admission.needs_admission(config):
                        # Runs created so far go in first: a singleton claim looks at live runs.
                        created += await runs.create_many(conn, new_runs)
                        new_runs = []
                        reason = await admission.admit(conn, fn_id, config, run_id, event)
                    if reason is not None:
                        await events.set_skip_reason(conn, event_id, reason)
                        continue
                    run = {
                        "id": run_id,
                        "function_id": fn_id,
                        "event_id": event_id,
                        "event_ids": [event_id],
                        "max_attempts": trig["retries"] + 1,
                        **flow.shape(fn_id, config, event).fields(),
                    }
                    deferred = None
                    if config.get("batchEvents") or config.get("debounce"):
                        created += await runs.create_many(conn, new_runs)
                        new_runs = []
                        deferred = await flow.batch(conn, fn_id, config, event_id, event)
                        if deferred is None:
                            deferred = await flow.debounce(conn, fn_id, config, event_id, event)
                    if deferred is not None and deferred.absorbed_by is not None:
                        continue  # a waiting run took this event
                    if deferred is not None:
                        run["delay_s"] = deferred.delay_s
                        created += await runs.create_many(conn, [run])
                        if deferred.batch_key is not None:
                            await flow_store.batch_open(conn, fn_id, deferred.batch_key, run_id)
                        if deferred.debounce_key is not None:
                            await flow_store.debounce_open(conn, fn_id, deferred.debounce_key, run_id)
                    else:
                        new_runs.append(run)
                    if config.get("cancel") or (config.get("timeouts") or {}).get("start"):
                        after_create.append((run_id, trig, event))
            created += await runs.create_many(conn, new_runs)
            for run_id, trig, event in after_create:
                await matching.register_cancellations(conn, run_id, trig["config"], event)
                await timeouts.schedule_start(conn, run_id, trig)
        if (created or resumed) and self.queue_wakeup:
            self.queue_wakeup.set()
        return RunnerTick(len(event_ids), created)

    async def drain(self) -> RunnerTick:
        seen = created = 0
        while True:
            tick = await self.run_once()
            seen += tick.events_seen
            created += tick.runs_created
            if tick.events_seen < self.batch_size:
                return RunnerTick(seen, created)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pgqueue-runner")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runner tick failed; retrying after the poll interval")
            await self.wakeup.wait(self.poll_interval_s)
