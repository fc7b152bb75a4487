"""The Worker service: claim due items, run each through the executor, keep their leases alive.

Leases are extended while a call runs, but never past claim time + `max_lease_s` (the call's own
deadline plus time to store its result), so a call the executor fails to end still loses its lease.
An engine error while executing hands the item back as a counted interruption (pgqueue.queue.interrupts).

Adaptive concurrency (`adaptive`, pgqueue.queue.adaptive): calls to each app are capped by the app's
own limit, in the claim itself (pgqueue.claim_v5), so an app at its limit leaves the worker's slots
to the others; the levels are written to pgqueue.worker_app_levels every `report_interval_s`.

Two-stage shutdown: stop claiming, give in-flight calls `grace_s` to finish, then cancel what is
left and hand its leases back (without using an attempt) so another worker picks them up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.notify import Wakeup
from pgqueue.models import QueueItem
from pgqueue.queue import interrupts
from pgqueue.queue.adaptive import AppLimits
from pgqueue.store import queue

log = logging.getLogger(__name__)

MAX_CONTINUED_CALLS = 100  # a run continues on one lease for at most this many calls...
CONTINUE_BUDGET_S = 30.0  # ...and this long, then its next call goes back to the queue

ExecuteFn = Callable[[QueueItem], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class WorkerTick:
    claimed: int


class Worker:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        execute: ExecuteFn,
        *,
        wakeup: Wakeup,
        concurrency: int = 64,
        lease_ms: int = 30_000,
        poll_interval_s: float = 1.0,
        claim_batch: int = 50,
        fn_default_limit: int = 1000,
        name: str | None = None,
        max_lease_s: float = 7200.0 + 60.0,
        backoff_scale: float = 1.0,
        adaptive: AppLimits | None = None,
        report_interval_s: float = 2.0,
    ) -> None:
        self.pool = pool
        self.execute = execute
        self.wakeup = wakeup
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.poll_interval_s = poll_interval_s
        self.claim_batch = claim_batch
        self.fn_default_limit = fn_default_limit
        self.max_lease_s = max_lease_s
        self.backoff_scale = backoff_scale
        self.adaptive = adaptive
        self.report_interval_s = report_interval_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.inflight: dict[int, tuple[QueueItem, asyncio.Task[None]]] = {}
        self._handed = 0  # slots of items claimed by claim_in and not adopted or abandoned yet
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._report_task: asyncio.Task[None] | None = None
        self._slot_freed = asyncio.Event()

    # -- one round ---------------------------------------------------------------------------
    async def run_once(self) -> WorkerTick:
        if self._free() <= 0 or self._stopping:
            return WorkerTick(0)
        async with self.pool.connection() as conn:
            items = await self._claim(conn)
        self._start(items)
        return WorkerTick(len(items))

    def _free(self) -> int:
        return self.concurrency - len(self.inflight) - self._handed

    async def _claim(self, conn: Any) -> list[QueueItem]:
        """Lease as many due items as there are free slots (at most a claim batch), capped per app
        by adaptive concurrency when it is on."""
        free = self._free()
        if free <= 0 or self._stopping:
            return []
        caps = self.adaptive.caps() if self.adaptive is not None else None
        default_cap = self.adaptive.default_cap() if self.adaptive is not None else None
        return await queue.claim(conn, self.name, min(free, self.claim_batch), self.lease_ms,
                                 fn_default_limit=self.fn_default_limit, app_caps=caps,
                                 app_default_cap=default_cap)

    # -- hand-off: a claim in another service's transaction ------------------------------------
    async def claim_in(self, conn: Any) -> list[QueueItem]:
        """Claim in the caller's transaction (the runner's, right after it queued runs), so their
        first calls need neither a wake-up nor a claim of their own. The caller hands the items
        over with `adopt` once its transaction commits, or gives the slots back with `abandon`
        if it rolls back (the leases roll back with it)."""
        items = await self._claim(conn)
        self._handed += len(items)
        return items

    def adopt(self, items: list[QueueItem]) -> None:
        self._handed -= len(items)
        self._start(items)

    def abandon(self, items: list[QueueItem]) -> None:
        self._handed -= len(items)

    def _start(self, items: list[QueueItem]) -> None:
        for item in items:
            if self.adaptive is not None:
                self.adaptive.started(item)
            task = asyncio.create_task(self._run_item(item), name=f"pgqueue-item-{item.id}-{item.step_id}")
            self.inflight[item.id] = (item, task)

    async def _run_item(self, item: QueueItem) -> None:
        # A run whose call ends in one step's output continues on the item's lease: the next call
        # goes out at once with the context the group commit returned (pgqueue.complete_v2), so a
        # started run finishes before the worker takes new work, without a claim per step. Bounded
        # in calls and time, so a long run goes back to the queue (and its fairness) now and then.
        chain_started = time.monotonic()
        calls = 0
        try:
            while True:
                calls += 1
                allowed = (not self._stopping and calls < MAX_CONTINUED_CALLS
                           and time.monotonic() - chain_started < CONTINUE_BUDGET_S)
                result = await self.execute(dataclasses.replace(item, may_continue=allowed))
                context = getattr(result, "context", None)
                if context is None:
                    break
                item = item.continued(context)
                entry = self.inflight.get(item.id)
                if entry is not None:
                    self.inflight[item.id] = (item, entry[1])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("executing item %s of run %s failed; handing it back", item.id, item.run_id)
            # Hand the lease back now rather than waiting for it to expire, counted so a persistent
            # failure ends the run (EngineError); if the database is unreachable this fails too and
            # the rescuer takes over later.
            try:
                await interrupts.interrupt(self.pool, [(item.id, item.lease_token)],
                                           interrupts.engine_error(exc), backoff_scale=self.backoff_scale)
            except Exception as exc:
                log.warning("could not release item %s (%s); it is rescued when its lease expires", item.id, exc)
        finally:
            self.inflight.pop(item.id, None)
            if self.adaptive is not None:
                self.adaptive.finished(item)
            self._slot_freed.set()

    # -- service -----------------------------------------------------------------------------
    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="pgqueue-worker")
        self._heartbeat_task = asyncio.create_task(self.heartbeat(), name="pgqueue-heartbeat")
        if self.adaptive is not None:
            self._report_task = asyncio.create_task(self._report_levels(), name="pgqueue-app-levels")

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                tick = await self.run_once()
                if tick.claimed and len(self.inflight) < self.concurrency:
                    continue
                if len(self.inflight) >= self.concurrency:
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_interval_s):
                            await self._slot_freed.wait()
                    continue
                if self.adaptive is not None and self.adaptive.saturated():
                    # Due work may be held back only by an app's limit: the next claim is worth
                    # making when one of its calls ends, or when new work arrives.
                    await self._slot_or_wakeup()
                    continue
                async with self.pool.connection() as conn:
                    due_in = await queue.next_due_in(conn)
                timeout = self.poll_interval_s if due_in is None else min(max(due_in, 0.001), self.poll_interval_s)
                await self.wakeup.wait(timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker round failed; retrying after the poll interval")
                await asyncio.sleep(self.poll_interval_s)

    async def _slot_or_wakeup(self) -> None:
        self._slot_freed.clear()
        slot = asyncio.create_task(self._slot_freed.wait(), name="pgqueue-worker-slot")
        woken = asyncio.create_task(self.wakeup.wait(self.poll_interval_s), name="pgqueue-worker-wakeup")
        try:
            await asyncio.wait((slot, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (slot, woken):
                task.cancel()
            await asyncio.gather(slot, woken, return_exceptions=True)

    async def _report_levels(self) -> None:
        """Write this worker's adaptive levels to pgqueue.worker_app_levels, until cancelled."""
        assert self.adaptive is not None
        while True:
            await asyncio.sleep(self.report_interval_s)
            try:
                await self.report_levels()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reporting adaptive concurrency levels failed")

    async def report_levels(self) -> None:
        if self.adaptive is None:
            return
        levels = self.adaptive.levels()
        async with self.pool.connection() as conn:
            await queue.report_app_levels(conn, self.name,
                                          [(lv.app_id, lv.limit, lv.in_flight) for lv in levels])

    async def heartbeat(self) -> None:
        """Keep the leases of calls in flight alive, until cancelled (the worker's own loop starts
        it; a serverless tick, which runs the worker's rounds itself, runs it beside them)."""
        interval = self.lease_ms / 3000.0
        suspects: set[int] = set()
        while True:
            await asyncio.sleep(interval)
            leases = self._leases()
            if not leases:
                continue
            try:
                async with self.pool.connection() as conn:
                    kept = await queue.extend_leases(conn, leases, self.lease_ms, max_lease_s=self.max_lease_s)
                # An item whose result was just stored is gone from the queue a moment before its
                # task leaves `inflight`; one still missing at the next heartbeat really lost it.
                missing = ({i for i, _ in leases} - kept) & self.inflight.keys()
                lost = missing & suspects
                suspects = missing - lost
                if lost:
                    log.warning("lost leases on items %s (rescued elsewhere); their results will be dropped", sorted(lost))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("extending leases failed")

    def _leases(self) -> list[tuple[int, UUID]]:
        return [(item.id, item.lease_token) for item, _ in self.inflight.values()]

    async def stop(self, grace_s: float = 30.0, *, interrupt_error: dict[str, Any] | None = None) -> None:
        """interrupt_error: hand leftover calls back as counted interruptions with this error (an
        executor invocation's deadline) instead of a plain release (a process shutting down)."""
        self._stopping = True
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        tasks = [t for _, t in self.inflight.values()]
        if tasks:
            log.info("waiting up to %.0fs for %d in-flight calls", grace_s, len(tasks))
            await asyncio.wait(tasks, timeout=grace_s)
        leftover = self._leases()
        for _, task in list(self.inflight.values()):
            task.cancel()
        if leftover:
            with contextlib.suppress(Exception):
                if interrupt_error is not None:
                    released = await interrupts.interrupt(self.pool, leftover, interrupt_error,
                                                          backoff_scale=self.backoff_scale)
                else:
                    async with self.pool.connection() as conn:
                        released = await queue.release(conn, leftover)
                log.info("released %d leases on shutdown", released)
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._report_task:
            self._report_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._report_task
            with contextlib.suppress(Exception):
                async with self.pool.connection() as conn:
                    await queue.forget_app_levels(conn, self.name)
        if self._heartbeat_task:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
