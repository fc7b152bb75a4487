"""Adaptive concurrency per app: how many calls a worker keeps in flight to each app.

An app has a best in-flight level. Below it the app idles between calls; above it the app's latency
grows faster than its throughput, and for a single-process SDK app throughput falls (one uvicorn
worker running the Python SDK does about twice the runs/s at 4 calls in flight as at 20). Each app
gets a limit that follows a latency gradient, as Netflix's concurrency-limits Gradient2 does, against
the latency the app had with almost nothing in flight:

  * a call's latency is compared with its function's no-load baseline (functions of one app can take
    very different times; a slow function must not read as an overloaded app);
  * while the smoothed ratio stays within `tolerance`, the limit grows by about sqrt(limit)/2 per
    round of calls (one limit's worth); beyond it, it shrinks in proportion to the excess (by at most
    a quarter per round);
  * a timeout, a connection error or a 429/502/503/504 cuts it by `backoff`, once per round: failures
    of calls sent before the last cut count for nothing more (they went out at the old level);
  * it only grows while it is used (at least half of it in flight), so an idle app keeps a modest limit;
  * every `probe_interval_s` it probes: the limit drops to the floor until a few calls sent at that
    level have refreshed the baselines, then returns where it was. Baselines otherwise only go down,
    so without the probe an app that became slower for good would be held at the floor, and
    baselines read under load would let the limit creep up.

An app that scales up answers faster at the same level, so the ratio falls and the limit grows again.
The limit is bounded by [floor, ceiling] (ceiling: the worker's concurrency); function concurrency
limits are enforced by the claim as before, this only caps on top. Pure logic: time comes in as
`now` (seconds, monotonic), so the dynamics are tested with synthetic latencies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from uuid import UUID

from pgqueue.models import QueueItem


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    floor: int = 1
    ceiling: int = 64
    # latency up to this multiple of the no-load baseline counts as "not queueing at the app"
    tolerance: float = 2.0
    # how far a round of calls moves the limit towards its target: higher reacts faster
    smoothing: float = 0.5
    # weight of a new latency ratio in the smoothed ratio
    ratio_smoothing: float = 0.25
    # the limit's factor on an overload signal
    backoff: float = 0.7
    probe_interval_s: float = 60.0
    # fresh samples at the floor that end a probe
    probe_samples: int = 3
    # where a new app starts once its first probe is done
    initial: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor {self.floor}, ceiling {self.ceiling}")


@dataclass(slots=True)
class _Baseline:
    latency_s: float
    fresh_since: float  # the probe (or first sample) that set it


@dataclass(slots=True)
class AdaptiveLimit:
    """One app's limit. `observe` every finished call; `value` is the number of calls allowed in flight."""

    policy: LimitPolicy
    limit: float = 0.0
    ratio: float | None = None
    baselines: dict[Hashable, _Baseline] = field(default_factory=dict[Hashable, _Baseline])
    probe_at: float | None = None  # a probe runs since then; None: none running
    probe_fresh: int = 0
    resume_at: float = 0.0  # the limit a probe returns to
    last_probe: float = 0.0
    cut_at: float = float("-inf")  # the last overload cut

    @classmethod
    def start(cls, policy: LimitPolicy, now: float) -> AdaptiveLimit:
        """A new app starts with a probe: one call at a time until its baselines are known."""
        limit = cls(policy, limit=float(policy.floor))
        limit.probe_at, limit.last_probe = now, now
        limit.resume_at = float(min(max(policy.initial, policy.floor), policy.ceiling))
        return limit

    @property
    def value(self) -> int:
        return max(self.policy.floor, min(self.policy.ceiling, math.floor(self.limit + 1e-9)))

    @property
    def probing(self) -> bool:
        return self.probe_at is not None

    def observe(
        self, key: Hashable, latency_s: float, *, now: float, in_flight: int, overloaded: bool = False
    ) -> None:
        """A finished call of `key` (its function) that took `latency_s` and ended at `now`, with
        `in_flight` calls to the app in flight as it ended (itself included)."""
        p = self.policy
        latency_s = max(latency_s, 1e-6)
        sent_at = now - latency_s
        if overloaded:
            # calls sent before the last cut went out at the old level: they were cut for already
            if sent_at >= self.cut_at:
                self.cut_at = now
                self.limit = max(float(p.floor), self.limit * p.backoff)
                if self.probing:
                    self.resume_at = max(float(p.floor), self.resume_at * p.backoff)
            return
        base = self.baselines.get(key)
        if self.probe_at is not None and sent_at >= self.probe_at:
            # sent during the probe, at the floor: this is what no load looks like now
            if base is None or base.fresh_since < self.probe_at:
                base = self.baselines[key] = _Baseline(latency_s, self.probe_at)
            else:
                base.latency_s = min(base.latency_s, latency_s)
            self.probe_fresh += 1
            if self.probe_fresh >= p.probe_samples:
                self.probe_at, self.probe_fresh = None, 0
                self.limit, self.ratio = self.resume_at, None
            return
        if base is None:
            base = self.baselines[key] = _Baseline(latency_s, now)
        elif latency_s < base.latency_s:
            base.latency_s = latency_s
        if self.probe_at is not None:
            return  # sent before the probe, at the old level: says nothing about no load
        if now - self.last_probe >= p.probe_interval_s:
            self.probe_at, self.last_probe, self.probe_fresh = now, now, 0
            self.resume_at, self.limit = self.limit, float(p.floor)
            return
        ratio = latency_s / base.latency_s
        self.ratio = ratio if self.ratio is None else self.ratio + p.ratio_smoothing * (ratio - self.ratio)
        if self.ratio <= p.tolerance:
            # not queueing: grow, if the limit is used at all (else there is no evidence more would help)
            target = self.limit + math.sqrt(self.limit) if in_flight >= self.limit / 2 else self.limit
        else:
            target = self.limit * max(0.5, p.tolerance / self.ratio)
        # A round (one limit's worth of calls, sent at the same level) moves the limit by about
        # `smoothing` of the way to its target, however many calls it has.
        step = p.smoothing / max(self.limit, 1.0)
        self.limit = min(float(p.ceiling), max(float(p.floor), self.limit + step * (target - self.limit)))


@dataclass(frozen=True, slots=True)
class AppLevel:
    app_id: UUID
    limit: int
    in_flight: int


class AppLimits:
    """The worker's limits, one per app, and its calls in flight per app.

    `caps()` is what the claim may still take per app (pgqueue.claim_v5's p_app_caps); an app
    without a limit yet may take `default_cap()` (its first probe's level)."""

    def __init__(self, policy: LimitPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.limits: dict[UUID, AdaptiveLimit] = {}
        self.in_flight: dict[UUID, int] = {}

    def _limit(self, app_id: UUID) -> AdaptiveLimit:
        limit = self.limits.get(app_id)
        if limit is None:
            limit = self.limits[app_id] = AdaptiveLimit.start(self.policy, self.clock())
        return limit

    def caps(self) -> dict[str, int]:
        return {str(app): max(self._limit(app).value - self.in_flight.get(app, 0), 0)
                for app in self.limits.keys() | self.in_flight.keys()}

    def default_cap(self) -> int:
        return self.policy.floor

    def saturated(self) -> bool:
        """Some app is at its limit with calls in flight (a slot it frees may let the claim take more)."""
        return any(n >= self._limit(app).value for app, n in self.in_flight.items() if n > 0)

    def started(self, item: QueueItem) -> None:
        if item.kind == "call" and item.app_id is not None:
            self._limit(item.app_id)
            self.in_flight[item.app_id] = self.in_flight.get(item.app_id, 0) + 1

    def finished(self, item: QueueItem) -> None:
        if item.kind == "call" and item.app_id is not None:
            n = self.in_flight.get(item.app_id, 0) - 1
            if n > 0:
                self.in_flight[item.app_id] = n
            else:
                self.in_flight.pop(item.app_id, None)

    def observe(self, item: QueueItem, latency_s: float, overloaded: bool) -> None:
        """The executor's report of one call to the app (its HTTP time only)."""
        if item.app_id is None:
            return
        self._limit(item.app_id).observe(item.function_id, latency_s, now=self.clock(),
                                         in_flight=self.in_flight.get(item.app_id, 0), overloaded=overloaded)

    def levels(self) -> list[AppLevel]:
        return [AppLevel(app, limit.value, self.in_flight.get(app, 0)) for app, limit in self.limits.items()]

    def forget_idle(self, keep: set[UUID]) -> None:
        """Drop the limits of apps with nothing in flight that are not in `keep` (apps seen lately)."""
        for app in list(self.limits):
            if app not in keep and not self.in_flight.get(app):
                del self.limits[app]
