"""Adaptive concurrency per app: how many calls a worker keeps in flight to each app.

An app has a best number of calls in flight: below it the app idles between calls, above it the app
answers fewer calls per second (a single-process app past its cliff). The limit is a hill-climber on
what the app delivers, the rate its calls are answered at, because latency is the wrong signal for
the apps that matter most: one uvicorn process running the Python SDK answers *more* calls per
second with 25 in flight than with 2 (it reads and parses more requests per loop turn) while each
call takes 15 times as long, so a latency gradient holds it at 1-2 and loses more than half of its
throughput (bench/e2e.py).

  * Calls are counted in windows (at least `window_s` and `window_rounds` limits' worth of calls
    sent at the current level); a window's rate is compared with the window's before, at the level
    before. Climbing, the limit keeps climbing by `step` unless the rate fell by more than
    `tolerance` (then it turns down); descending, it keeps descending only while that raises the
    rate (else it turns up). So it settles around the app's best, one step either side, and on a
    plateau it climbs to what the worker gives it.
  * A window in which the app was mostly below its limit teaches nothing (it could have taken more,
    or was not asked for more): the limit holds.
  * A timeout, a connection error or a 429/502/503/504 cuts it by `backoff`, once per round:
    failures of calls sent before the last cut count for nothing more (they went out at the old level).

The limit counts calls in their HTTP request only (AppLimits.sending), bounded by [floor, ceiling]
(ceiling: the worker's concurrency); function concurrency limits are enforced by the claim as
before, this only caps on top. Pure logic but for the gate: time comes in as `now` (seconds,
monotonic), so the dynamics are tested with synthetic apps.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from uuid import UUID

from pgqueue.models import QueueItem


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    floor: int = 1
    ceiling: int = 64
    # where a new app starts
    initial: int = 4
    # a window of calls ends after this long and `window_rounds` limits' worth of calls
    window_s: float = 0.5
    window_rounds: int = 4
    # a rate change smaller than this fraction is noise
    tolerance: float = 0.08
    # a step moves the limit by this fraction of itself (at least 1)
    step: float = 0.25
    # the limit's factor on an overload signal
    backoff: float = 0.7
    # calls held per call at the app beyond Little's law's estimate (AppLimits.hold_cap)
    hold_margin: float = 1.5
    # weight of a new call in the smoothed time spent outside and inside HTTP requests
    spread_smoothing: float = 0.05

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor {self.floor}, ceiling {self.ceiling}")


@dataclass(slots=True)
class _Window:
    """Calls sent at one level and finished: the rate they were answered at."""

    opened_at: float
    calls: int = 0
    saturated: int = 0  # calls that ended with the app at its limit
    first_end: float = 0.0
    last_end: float = 0.0

    def rate(self) -> float:
        return (self.calls - 1) / max(self.last_end - self.first_end, 1e-9)


@dataclass(slots=True)
class AdaptiveLimit:
    """One app's limit, a hill-climber on the app's answer rate. `observe` every finished call;
    `value` is the number of calls allowed in flight."""

    policy: LimitPolicy
    limit: int = 1
    direction: int = 1  # +1 climbing, -1 descending
    window: _Window = field(default_factory=lambda: _Window(0.0))
    last_rate: float | None = None  # of the window before, at the level before
    cut_at: float = float("-inf")  # the last overload cut
    slow_start: bool = True  # until the rate first falls

    @classmethod
    def start(cls, policy: LimitPolicy, now: float) -> AdaptiveLimit:
        return cls(policy, limit=min(max(policy.initial, policy.floor), policy.ceiling), window=_Window(now))

    @property
    def value(self) -> int:
        return self.limit

    def observe(
        self, key: Hashable, latency_s: float, *, now: float, in_flight: int, overloaded: bool = False,
        held_back: bool = False,
    ) -> None:
        """A finished call of `key` (its function) that took `latency_s` and ended at `now`, with
        `in_flight` calls to the app in flight as it ended (itself included); `held_back`: more of
        the app's calls were due than the worker took (its claim was capped for the app)."""
        del key  # the rate is the app's, whichever functions it runs
        p = self.policy
        sent_at = now - max(latency_s, 0.0)
        if overloaded:
            # calls sent before the last cut went out at the old level: they were cut for already
            if sent_at >= self.cut_at:
                self.cut_at, self.slow_start = now, False
                self._move(max(p.floor, math.floor(self.limit * p.backoff)), now, direction=-1)
                self.last_rate = None  # a rate measured before the overload says nothing now
            return
        w = self.window
        if sent_at < w.opened_at:
            return  # sent at the level before
        w.calls += 1
        w.saturated += in_flight >= self.limit or held_back
        if w.calls == 1:
            w.first_end = now
        w.last_end = now
        if w.calls < max(p.window_rounds * self.limit, 3) or now - w.opened_at < p.window_s:
            return
        if 4 * w.saturated < w.calls:
            # the app was not kept at its limit: whatever it answered, it could have taken more
            # or it was not asked for more; nothing to learn at this level
            self.window = _Window(now)
            return
        rate = w.rate()
        last, self.last_rate = self.last_rate, rate
        direction = self.direction
        if last is not None:
            gain = rate / last - 1
            if direction > 0 and gain < -p.tolerance:
                direction = -1  # more calls in flight made the app slower: past its best
            elif direction < 0 and gain <= p.tolerance:
                direction = 1  # fewer did not help: its best is higher
        if direction < 0:
            self.slow_start = False
        # slow start (as TCP's): double until the rate first falls, then `step` at a time
        step = self.limit if self.slow_start else max(1, round(self.limit * p.step))
        self._move(min(p.ceiling, max(p.floor, self.limit + direction * step)), now, direction)

    def _move(self, limit: int, now: float, direction: int) -> None:
        self.limit, self.direction = limit, direction
        self.window = _Window(now)


@dataclass(frozen=True, slots=True)
class AppLevel:
    app_id: UUID
    limit: int
    in_flight: int  # calls in their HTTP request to the app


@dataclass(slots=True)
class _Held:
    """One claimed call, from the claim until its result is stored."""

    since: float
    waited_s: float = 0.0  # at the gate, for a free slot at the app
    http_s: float | None = None  # in its HTTP request (None: not sent)


@dataclass(slots=True)
class _Pipeline:
    """How long an app's calls spend outside their HTTP request (claim, building, storing the
    result), relative to inside it: smoothed, per app."""

    outside_s: float = 0.0
    http_s: float = 0.0

    @property
    def spread(self) -> float:
        return self.outside_s / self.http_s if self.http_s > 0 else 1.0


class AppLimits:
    """The worker's limits, one per app: at most `limit` calls of an app in their HTTP request at
    once (the gate, `sending`), and enough claimed to keep them coming.

    The limit counts calls at the app only: a call also spends time in pgqueue (claim, building the
    request, storing the result in a group commit), often more than at a fast app, and counting that
    time would leave the app idle between calls. The claim takes an app's calls up to its hold cap
    (`caps()`, pgqueue.claim_v5's p_app_caps): by Little's law `limit * (1 + outside/inside)` calls
    held keep `limit` at the app; calls claimed beyond a free slot wait at the gate. The cap is what
    keeps an app with a backlog from taking every worker slot: the rest stay for the other apps."""

    def __init__(self, policy: LimitPolicy, *, clock: Callable[[], float] = time.monotonic,
                 max_held: int | None = None) -> None:
        self.policy = policy
        self.clock = clock
        self.max_held = max_held or policy.ceiling
        self.limits: dict[UUID, AdaptiveLimit] = {}
        self.held: dict[UUID, int] = {}
        self.in_flight: dict[UUID, int] = {}  # in their HTTP request
        self._items: dict[int, _Held] = {}
        self._pipelines: dict[UUID, _Pipeline] = {}
        self._waiters: dict[UUID, deque[asyncio.Future[None]]] = {}

    def _limit(self, app_id: UUID) -> AdaptiveLimit:
        limit = self.limits.get(app_id)
        if limit is None:
            limit = self.limits[app_id] = AdaptiveLimit.start(self.policy, self.clock())
        return limit

    def hold_cap(self, app_id: UUID) -> int:
        """Calls of the app this worker may hold: enough to keep `limit` of them at the app."""
        limit = self._limit(app_id).value
        spread = self._pipelines.get(app_id, _Pipeline()).spread
        return min(self.max_held, max(limit + 1, math.ceil(limit * (1 + self.policy.hold_margin * spread))))

    def caps(self) -> dict[str, int]:
        return {str(app): max(self.hold_cap(app) - self.held.get(app, 0), 0)
                for app in self.limits.keys() | self.held.keys()}

    def default_cap(self) -> int:
        return self.policy.floor + 1

    def saturated(self) -> bool:
        """Some app holds all it may (a call it finishes may let the claim take more)."""
        return any(n >= self.hold_cap(app) for app, n in self.held.items() if n > 0)

    def started(self, item: QueueItem) -> None:
        if item.kind == "call" and item.app_id is not None:
            self._limit(item.app_id)
            self.held[item.app_id] = self.held.get(item.app_id, 0) + 1
            self._items[item.id] = _Held(self.clock())

    def finished(self, item: QueueItem) -> None:
        if item.kind != "call" or item.app_id is None:
            return
        n = self.held.get(item.app_id, 0) - 1
        if n > 0:
            self.held[item.app_id] = n
        else:
            self.held.pop(item.app_id, None)
        held = self._items.pop(item.id, None)
        if held is not None and held.http_s is not None:
            outside = max(self.clock() - held.since - held.waited_s - held.http_s, 0.0)
            pipe = self._pipelines.get(item.app_id)
            if pipe is None:
                self._pipelines[item.app_id] = _Pipeline(outside, held.http_s)
            else:
                a = self.policy.spread_smoothing
                pipe.outside_s += a * (outside - pipe.outside_s)
                pipe.http_s += a * (held.http_s - pipe.http_s)

    @contextlib.asynccontextmanager
    async def sending(self, item: QueueItem) -> AsyncIterator[None]:
        """Around a call's HTTP request: waits for a free slot at the app (its limit), counts it."""
        app = item.app_id
        if item.kind != "call" or app is None:
            yield
            return
        held = self._items.get(item.id)
        t0 = self.clock()
        while self.in_flight.get(app, 0) >= self._limit(app).value:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(app, deque()).append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters[app].remove(waiter)
        sent = self.clock()
        self.in_flight[app] = self.in_flight.get(app, 0) + 1
        try:
            yield
        finally:
            n = self.in_flight[app] - 1
            if n > 0:
                self.in_flight[app] = n
            else:
                del self.in_flight[app]
            if held is not None:
                held.waited_s, held.http_s = sent - t0, self.clock() - sent
            self._wake(app)

    def _wake(self, app: UUID) -> None:
        """Let as many waiting calls of `app` go as it has free slots (they check again)."""
        waiters = self._waiters.get(app)
        free = self._limit(app).value - self.in_flight.get(app, 0)
        while waiters and free > 0:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def observe(self, item: QueueItem, latency_s: float, overloaded: bool) -> None:
        """The executor's report of one call to the app (its HTTP time only), made inside `sending`."""
        if item.app_id is None:
            return
        app = item.app_id
        self._limit(app).observe(item.function_id, latency_s, now=self.clock(),
                                 in_flight=self.in_flight.get(app, 0), overloaded=overloaded,
                                 held_back=self.held.get(app, 0) >= self.hold_cap(app))

    def levels(self) -> list[AppLevel]:
        return [AppLevel(app, limit.value, self.in_flight.get(app, 0)) for app, limit in self.limits.items()]

    def forget_idle(self, keep: set[UUID]) -> None:
        """Drop the limits of apps with nothing held that are not in `keep` (apps seen lately)."""
        for app in list(self.limits):
            if app not in keep and not self.held.get(app):
                del self.limits[app]
                self._pipelines.pop(app, None)
