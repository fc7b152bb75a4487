"""The adaptive per-app limit's dynamics, fed synthetic latencies on a synthetic clock.

An app is modelled as latency(n): how long a call takes with n calls in flight. The simulation keeps
`limit.value` calls in flight, round after round; a round ends when its calls do."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest

from pgqueue.models import QueueItem
from pgqueue.queue.adaptive import AdaptiveLimit, AppLimits, LimitPolicy

Model = Callable[[int], float]


def parallel_until(n_best: int, service_s: float = 0.010, cliff: float = 1.0) -> Model:
    """Up to n_best calls run side by side; beyond, they queue (latency grows with n / n_best) and
    each extra call also costs `cliff` times a service time: throughput falls past n_best."""
    def latency(n: int) -> float:
        if n <= n_best:
            return service_s
        return service_s * (n / n_best) * (1 + cliff * (n - n_best) / n_best)
    return latency


def run(
    limit: AdaptiveLimit, model: Model, *, seconds: float, now: float = 0.0, key: str = "f"
) -> tuple[float, list[int]]:
    """Drive `limit` for `seconds` of synthetic time; the clock at the end and the levels seen."""
    levels: list[int] = []
    end = now + seconds
    while now < end:
        n = limit.value
        latency = model(n)
        now += latency
        for _ in range(n):
            limit.observe(key, latency, now=now, in_flight=n)
        levels.append(limit.value)
    return now, levels


def settled(levels: list[int]) -> list[int]:
    """The levels of the last quarter of a run."""
    return levels[-max(len(levels) // 4, 1):]


POLICY = LimitPolicy(ceiling=64)


def test_a_new_app_starts_at_the_floor_and_converges_near_its_best_level() -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    assert limit.value == 1 and limit.probing
    _, levels = run(limit, parallel_until(8), seconds=30)
    tail = settled(levels)
    assert 6 <= min(tail) and max(tail) <= 16, tail


@pytest.mark.parametrize("best", [2, 4, 16, 32])
def test_the_level_follows_the_apps_best(best: int) -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    _, levels = run(limit, parallel_until(best), seconds=50)
    tail = settled(levels)
    assert best * 0.6 <= sum(tail) / len(tail) <= best * 2, (best, tail)


def test_an_app_without_a_cliff_gets_the_ceiling() -> None:
    limit = AdaptiveLimit.start(LimitPolicy(ceiling=32), now=0.0)
    _, levels = run(limit, lambda n: 0.050, seconds=20)
    assert levels[-1] == 32


def test_the_floor_and_the_ceiling_hold() -> None:
    limit = AdaptiveLimit.start(LimitPolicy(floor=3, ceiling=5), now=0.0)
    _, levels = run(limit, parallel_until(1, cliff=5.0), seconds=20)
    assert min(levels) >= 3
    limit = AdaptiveLimit.start(LimitPolicy(floor=3, ceiling=5), now=0.0)
    _, levels = run(limit, lambda n: 0.01, seconds=20)
    assert max(levels) == 5


def test_overload_signals_cut_the_limit_once_per_round() -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    now, _ = run(limit, lambda n: 0.01, seconds=5)
    assert limit.value == 64
    for _ in range(64):  # a round of timeouts sent together: one cut
        limit.observe("f", 10.0, now=now, in_flight=64, overloaded=True)
    assert limit.value == int(64 * 0.7)
    for _ in range(200):  # errors round after round: down to the floor, never below
        now += 1.0
        limit.observe("f", 0.5, now=now, in_flight=limit.value, overloaded=True)
    assert limit.value == 1


def test_latency_of_a_slow_function_is_not_taken_for_load() -> None:
    # One app, two functions: a fast one (5 ms) and a slow one (500 ms), both flat with load.
    limit = AdaptiveLimit.start(LimitPolicy(ceiling=32), now=0.0)
    now = 0.0
    for _ in range(400):
        n = limit.value
        now += 0.5
        for i in range(n):
            slow = i % 2 == 0
            limit.observe("slow" if slow else "fast", 0.5 if slow else 0.005, now=now, in_flight=n)
    assert limit.value == 32


def test_it_climbs_again_when_the_app_scales_up() -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    now, levels = run(limit, parallel_until(4), seconds=30)
    assert max(settled(levels)) <= 8
    _, levels = run(limit, parallel_until(24), seconds=60, now=now)  # four more processes
    tail = settled(levels)
    assert sum(tail) / len(tail) >= 16, tail


def test_a_probe_refreshes_the_baseline_of_an_app_that_became_slower() -> None:
    policy = LimitPolicy(ceiling=64, probe_interval_s=10.0)
    limit = AdaptiveLimit.start(policy, now=0.0)
    now, _ = run(limit, parallel_until(16, service_s=0.01), seconds=20)
    # every call now takes 10x as long, with the same best level: without a fresh baseline the
    # limit would sit at the floor
    _, levels = run(limit, parallel_until(16, service_s=0.1), seconds=120, now=now)
    tail = settled(levels)
    assert sum(tail) / len(tail) >= 10, tail


def test_it_does_not_grow_while_its_limit_is_not_used() -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    now = 0.0
    for _ in range(500):
        now += 0.01
        limit.observe("f", 0.01, now=now, in_flight=1)
    assert limit.value <= POLICY.initial


def _item(app: object, kind: str = "call") -> QueueItem:
    return QueueItem(id=1, run_id="r", function_id=uuid4(), kind=kind, step_id="s", step_name=None, attempt=0,
                     max_attempts=1, lease_token=uuid4(), run_at=None, app_id=app)  # type: ignore[arg-type]


def test_the_registry_caps_each_app_by_its_free_slots() -> None:
    clock = [0.0]
    limits = AppLimits(LimitPolicy(ceiling=8), clock=lambda: clock[0])
    a, b = uuid4(), uuid4()
    assert limits.caps() == {} and limits.default_cap() == 1  # an app not seen yet: its probe's level
    item = _item(a)
    limits.started(item)
    assert limits.caps() == {str(a): 0} and limits.saturated()
    limits.started(_item(b, kind="sleep"))  # timers never count
    assert limits.caps() == {str(a): 0}
    for _ in range(3):  # the probe's calls
        clock[0] += 0.01
        limits.observe(item, 0.01, overloaded=False)
    assert limits.caps() == {str(a): 3}  # back at the initial level, one in flight
    limits.finished(item)
    assert limits.caps() == {str(a): 4} and not limits.saturated()
    assert [(lv.app_id, lv.limit, lv.in_flight) for lv in limits.levels()] == [(a, 4, 0)]
    limits.forget_idle(set())
    assert limits.levels() == []
