"""The Runner service: turns stored events into runs.

Events are claimed from pgqueue.event_inbox with SKIP LOCKED and deleted in the same transaction
that creates their runs, so several runners can work at once and a crash loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.notify import Wakeup
from pgqueue.service import LoopService
from pgqueue.runner import matching, starting, triggers
from pgqueue.store import apps, events, pauses

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunnerTick:
    events_seen: int
    runs_created: int


class Runner(LoopService):
    name = "runner"

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
        super().__init__()

    async def run_once(self) -> RunnerTick:
        async with self.pool.connection() as conn, conn.transaction():
            event_ids = await events.claim_inbox(conn, self.batch_size)
            if not event_ids:
                return RunnerTick(0, 0)
            rows = {r["id"]: r for r in await events.get_many(conn, event_ids)}
            names = sorted({r["name"] for r in rows.values()})
            candidates = await apps.trigger_candidates(conn, names)
            pause_paths = await pauses.paths_for(conn, names)
            starter = starting.RunStarter(conn)
            # Waiting runs first (all of the batch in one lookup), then new runs.
            resumed = await matching.match_events(conn, [
                matching.Incoming(triggers.event_object(rows[e]), rows[e]["received_at"],
                                  pause_paths.get(rows[e]["name"], []))
                for e in event_ids if e in rows
            ])
            for event_id in event_ids:
                row = rows.get(event_id)
                if row is None:
                    continue
                event = triggers.event_object(row)
                matched = triggers.matching_functions(event, candidates)
                paused = [m for m in matched if m["paused_at"] is not None]
                if paused and len(paused) == len(matched):
                    await events.set_skip_reason(conn, event_id, "function paused")
                for trig in matched:
                    if trig["paused_at"] is None:
                        await starter.start(trig, event_id, event)
            created = await starter.close()
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

    async def round(self) -> None:
        await self.drain()

    async def pause(self) -> None:
        await self.wakeup.wait(self.poll_interval_s)
