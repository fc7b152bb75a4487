"""The Runner service: turns stored events into runs.

Events are claimed from pgqueue.event_inbox with SKIP LOCKED and deleted in the same transaction
that creates their runs, so several runners can work at once and a crash loses nothing.

One event cannot hold the others back: each of the two steps (resume waiting runs, start new runs)
runs for the whole batch under a savepoint, and if it fails with anything but a lost connection or
a transient database condition, it is rolled back and redone one event at a time, each under its
own savepoint. An event that still fails is left out, says why on its row (skip_reason) and leaves
the inbox like the rest; otherwise the batch would roll back and be retried forever.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue import errors, telemetry
from pgqueue.db.notify import Wakeup
from pgqueue.db.pool import Conn
from pgqueue.events.objects import event_object
from pgqueue.models import QueueItem
from pgqueue.runner import matching, starting, triggers
from pgqueue.service_loop import LoopService
from pgqueue.store import apps, events, pauses

log = logging.getLogger(__name__)

# SQLSTATE classes that say nothing about the event: connection exceptions, transaction rollback
# (deadlock, serialization), insufficient resources, operator intervention (statement timeout,
# shutdown), system errors; and lock_not_available. The whole batch is retried for these.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_STATES = frozenset({"55P03"})
MAX_REASON_LENGTH = 500


def transient(conn: Conn, exc: Exception) -> bool:
    if conn.closed or conn.broken:
        return True
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    return False


def failure_reason(what: str, exc: Exception) -> str:
    """`<what>: <ExceptionName>: <first line of the message>`, short (errors.brief)."""
    return f"{what}: {errors.brief(exc, limit=MAX_REASON_LENGTH - len(what) - 2)}"


@dataclass(frozen=True, slots=True)
class RunnerTick:
    events_seen: int
    runs_created: int
    handed: int = 0  # calls leased to this process's worker in the round's transaction (Handoff)


class Handoff(Protocol):
    """What the runner needs of a worker to hand it the calls it queues (pgqueue.queue.worker)."""

    async def claim_in(self, conn: Conn) -> list[QueueItem]: ...
    def adopt(self, items: list[QueueItem]) -> None: ...
    def abandon(self, items: list[QueueItem]) -> None: ...


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
        handoff: Handoff | None = None,
    ) -> None:
        """handoff: the worker of this process, when there is one: the runs a round queues are
        claimed for it in the round's own transaction (Handoff), not by a later claim."""
        self.pool = pool
        self.wakeup = wakeup
        self.queue_wakeup = queue_wakeup
        self.handoff = handoff
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        super().__init__()

    async def run_once(self) -> RunnerTick:
        handed: list[QueueItem] = []
        try:
            async with self.pool.connection() as conn, conn.transaction():
                claimed = await events.claim_inbox(conn, self.batch_size)
                if not claimed:
                    return RunnerTick(0, 0)
                traced: Traced = []
                resumed, created = await process(conn, [r["id"] for r in claimed], rows=claimed,
                                                 traced=traced)
                if (created or resumed) and self.handoff is not None:
                    # One hop: the calls just queued are leased to this process's worker in this
                    # transaction (the production claim, flow control included).
                    handed = await self.handoff.claim_in(conn)
        except BaseException:
            if handed and self.handoff is not None:
                self.handoff.abandon(handed)  # rolled back with the transaction
            raise
        if handed and self.handoff is not None:
            self.handoff.adopt(handed)
        telemetry.events_handled(traced)  # committed: each event's span, linked to the runs it started
        if (created or resumed) and self.queue_wakeup:
            self.queue_wakeup.set()
        return RunnerTick(len(claimed), created, len(handed))

    async def drain(self) -> RunnerTick:
        seen = created = handed = 0
        while True:
            tick = await self.run_once()
            seen += tick.events_seen
            created += tick.runs_created
            handed += tick.handed
            if tick.events_seen < self.batch_size:
                return RunnerTick(seen, created, handed)

    async def round(self) -> None:
        await self.drain()

    async def pause(self) -> None:
        await self.wakeup.wait(self.poll_interval_s)


# (event row, ids of the runs it started or joined): what process() did, for the caller to trace
# once its transaction has committed (pgqueue.telemetry.events_handled).
Traced = list[tuple[dict[str, Any], list[str]]]


async def process(
    conn: Conn, event_ids: Sequence[str], *, rows: Sequence[dict[str, Any]] | None = None,
    candidates: Sequence[dict[str, Any]] | None = None, traced: Traced | None = None,
) -> tuple[int, int]:
    """Resume waiting runs and start new runs for events claimed from the inbox, in the caller's
    transaction: (runs resumed or cancelled, runs created). `rows`: the events, when the caller
    read them already; `candidates`: the trigger candidates of the events' names, likewise;
    `traced` collects the events' runs."""
    by_id = {r["id"]: r for r in (rows if rows is not None else await events.get_many(conn, event_ids))}
    batch = [by_id[e] for e in event_ids if e in by_id]
    names = sorted({r["name"] for r in batch})
    if candidates is None:
        candidates = await apps.trigger_candidates(conn, names)
    pause_paths = await pauses.paths_for(conn, names)
    incoming = [
        matching.Incoming(event_object(r), r["received_at"], pause_paths.get(r["name"], []))
        for r in batch
    ]

    async def resume(part: Sequence[int]) -> int:
        return await matching.match_events(conn, [incoming[i] for i in part])

    async def start(part: Sequence[int]) -> int:
        starter = starting.RunStarter(conn)
        started = [(batch[i], await _start_for_event(starter, batch[i]["id"], incoming[i].event, candidates))
                   for i in part]
        created = await starter.close()
        if traced is not None:
            traced.extend(started)  # only what this (sub)transaction really did
        return created

    # Waiting runs first (all of the batch in one lookup), then new runs; a stage with nothing to
    # do for any event of the batch (no pause on these names, no function triggered by them) is
    # skipped with its savepoint's round trips.
    resumed = created = 0
    if any(item.paths for item in incoming):
        resumed = await _isolated(conn, batch, "could not resume waiting runs", resume)
    if candidates:
        created = await _isolated(conn, batch, "could not start runs", start)
    return resumed, created


async def _isolated(
    conn: Conn, batch: Sequence[dict[str, Any]], what: str, step: Callable[[Sequence[int]], Awaitable[int]],
) -> int:
    """`step` over the whole batch under one savepoint; if that fails, over each event under its
    own savepoint, recording why on each event that fails alone. Transient errors propagate:
    the batch rolls back and comes back from the inbox."""
    try:
        async with conn.transaction():
            return await step(range(len(batch)))
    except Exception as exc:
        if transient(conn, exc):
            raise
        if len(batch) == 1:
            await _give_up(conn, batch[0]["id"], what, exc)
            return 0
        # The event at fault is logged, with the exception, when it fails alone below.
        log.warning("runner: %s for a batch of %d events (%s); retrying one event at a time",
                    what, len(batch), type(exc).__name__)
    done = 0
    for i, row in enumerate(batch):
        try:
            async with conn.transaction():
                done += await step([i])
        except Exception as exc:
            if transient(conn, exc):
                raise
            await _give_up(conn, row["id"], what, exc)
    return done


async def _give_up(conn: Conn, event_id: str, what: str, exc: Exception) -> None:
    reason = failure_reason(what, exc)
    log.error("runner: event %s: %s", event_id, reason, exc_info=exc)
    await events.set_skip_reason(conn, event_id, reason)


async def _start_for_event(
    starter: starting.RunStarter, event_id: str, event: dict[str, Any], candidates: Sequence[dict[str, Any]]
) -> list[str]:
    """Start the event's runs; returns the ids of the runs that took it (new, or a waiting batch or
    debounce run)."""
    run_ids: list[str] = []
    matched = triggers.matching_functions(event, candidates)
    paused = [m for m in matched if m["paused_at"] is not None]
    if paused and len(paused) == len(matched):
        await events.set_skip_reason(starter.conn, event_id, "function paused")
    for trig in matched:
        if trig["paused_at"] is None:
            await starter.start(trig, event_id, event)
            if starter.last_run_id is not None:
                run_ids.append(starter.last_run_id)
    return run_ids
