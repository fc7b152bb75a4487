"""The adaptive per-app limit's dynamics, fed synthetic apps on a synthetic clock.

An app is modelled as latency(n): how long a call takes with n calls in flight, so it answers
n / latency(n) calls per second. The simulation keeps `limit.value` calls in flight, their ends
spread evenly, as a steady stream of calls would."""

from __future__ import annotations

import asyncio
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


def single_process(service_s: float = 0.004, amortised: float = 0.5, knee: int = 24) -> Model:
    """A single-process asyncio app (the Python SDK on uvicorn): it serves one call at a time, but
    the more are waiting the more it reads per loop turn, so up to `knee` in flight each call costs
    it less: throughput rises while latency grows in proportion to n (the shape bench/e2e.py shows)."""
    def latency(n: int) -> float:
        per_call = service_s * (1 - amortised * min(n, knee) / knee)
        return n * per_call
    return latency


def run(
    limit: AdaptiveLimit, model: Model, *, seconds: float, now: float = 0.0, held_back: bool = False
) -> tuple[float, list[int]]:
    """Drive `limit` for `seconds` of synthetic time; the clock at the end and the levels seen."""
    levels: list[int] = []
    end = now + seconds
    while now < end:
        n = limit.value
        latency = model(n)
        for _ in range(n):  # one round: n calls, their ends spread over one latency
            now += latency / n
            limit.observe("f", latency, now=now, in_flight=n, held_back=held_back)
        levels.append(limit.value)
    return now, levels


def settled(levels: list[int]) -> list[int]:
    """The levels of the last quarter of a run."""
    return levels[-max(len(levels) // 4, 1):]


def mean(levels: list[int]) -> float:
    return sum(levels) / len(levels)


POLICY = LimitPolicy(ceiling=64)


@pytest.mark.parametrize("best", [2, 4, 8, 16, 32])
def test_the_level_follows_an_apps_best_and_stays_off_its_cliff(best: int) -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    _, levels = run(limit, parallel_until(best), seconds=120)
    tail = settled(levels)
    assert best * 0.6 <= mean(tail) <= best * 1.5, (best, tail)
    assert max(tail) <= best * 1.5 + 1, (best, tail)


def test_a_single_process_app_whose_latency_grows_with_load_is_not_held_low() -> None:
    # Latency grows with every call in flight, yet the app answers more per second up to 24:
    # a latency gradient would hold it at 1-2.
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    _, levels = run(limit, single_process(), seconds=60)
    assert mean(settled(levels)) >= 16, settled(levels)


def test_an_app_without_a_cliff_gets_the_ceiling() -> None:
    limit = AdaptiveLimit.start(LimitPolicy(ceiling=32), now=0.0)
    _, levels = run(limit, lambda n: 0.050, seconds=60)
    assert mean(settled(levels)) >= 24, settled(levels)
    assert max(levels) == 32


def test_the_floor_and_the_ceiling_hold() -> None:
    limit = AdaptiveLimit.start(LimitPolicy(floor=3, ceiling=5), now=0.0)
    _, levels = run(limit, parallel_until(1, cliff=5.0), seconds=20)
    assert min(levels) >= 3
    limit = AdaptiveLimit.start(LimitPolicy(floor=3, ceiling=5), now=0.0)
    _, levels = run(limit, lambda n: 0.01, seconds=20)
    assert max(levels) == 5


def test_overload_signals_cut_the_limit_once_per_round() -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    now, _ = run(limit, lambda n: 0.01, seconds=10)
    assert limit.value >= 48
    before = limit.value
    for _ in range(before):  # a round of timeouts sent together: one cut
        limit.observe("f", 10.0, now=now, in_flight=before, overloaded=True)
    assert limit.value == int(before * 0.7)
    for _ in range(200):  # errors round after round: down to the floor, never below
        now += 1.0
        limit.observe("f", 0.5, now=now, in_flight=limit.value, overloaded=True)
    assert limit.value == 1


def test_it_climbs_again_when_the_app_scales_up() -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    now, levels = run(limit, parallel_until(4), seconds=60)
    assert max(settled(levels)) <= 7
    _, levels = run(limit, parallel_until(24), seconds=120, now=now)  # more processes
    assert mean(settled(levels)) >= 16, settled(levels)


def test_it_holds_while_the_app_is_not_kept_at_its_limit() -> None:
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    now = 0.0
    for _ in range(2000):  # a trickle: one call at a time, nothing held back
        now += 0.01
        limit.observe("f", 0.01, now=now, in_flight=1)
    assert limit.value == POLICY.initial


def test_it_climbs_while_the_claim_holds_calls_back() -> None:
    # the app was not at its limit when calls ended, but more were due than the worker took:
    # there is demand, and the limit (which sets how many are taken) must find out if more helps
    limit = AdaptiveLimit.start(POLICY, now=0.0)
    now = 0.0
    for _ in range(2000):
        now += 0.002
        limit.observe("f", 0.004, now=now, in_flight=1, held_back=True)
    assert limit.value > POLICY.initial


def _item(app: object, kind: str = "call", id: int = 1) -> QueueItem:
    return QueueItem(id=id, run_id="r", function_id=uuid4(), kind=kind, step_id="s", step_name=None,
                     attempt=0, max_attempts=1, lease_token=uuid4(), run_at=None, app_id=app)  # type: ignore[arg-type]


def test_the_registry_caps_what_each_app_holds_by_its_limit_and_pipeline() -> None:
    clock = [0.0]
    limits = AppLimits(LimitPolicy(ceiling=8, initial=2), clock=lambda: clock[0], max_held=20)
    a, b = uuid4(), uuid4()
    assert limits.caps() == {} and limits.default_cap() == 2  # an app not seen yet
    item = _item(a)
    limits.started(item)
    assert limits.hold_cap(a) == 5  # 2 at the app, and (no measure yet) as much time outside
    assert limits.caps() == {str(a): 4} and not limits.saturated()
    limits.started(_item(b, kind="sleep"))  # timers never count
    assert limits.caps() == {str(a): 4}

    async def call() -> None:
        async with limits.sending(item):
            clock[0] += 0.01  # 10 ms at the app
        clock[0] += 0.09  # then 90 ms storing its result
        limits.finished(item)

    asyncio.run(call())
    # calls spend 9x as long outside their HTTP request: 2 at the app need about 2 * (1 + 1.5 * 9)
    assert limits.hold_cap(a) == 20  # bounded by the worker's concurrency
    assert [(lv.app_id, lv.limit, lv.in_flight) for lv in limits.levels()] == [(a, 2, 0)]
    limits.forget_idle(set())
    assert limits.levels() == []


def test_the_gate_lets_only_the_limit_into_their_http_request() -> None:
    limits = AppLimits(LimitPolicy(ceiling=8, initial=2))
    app = uuid4()
    items = [_item(app, id=i) for i in range(5)]
    peak = 0

    async def call(item: QueueItem, release: asyncio.Event) -> None:
        nonlocal peak
        limits.started(item)
        async with limits.sending(item):
            peak = max(peak, limits.in_flight[app])
            await release.wait()
        limits.finished(item)

    async def main() -> None:
        release = asyncio.Event()
        tasks = [asyncio.create_task(call(i, release)) for i in items]
        await asyncio.sleep(0.01)
        assert limits.in_flight[app] == 2 and limits.held[app] == 5  # three wait at the gate
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert peak == 2 and not limits.in_flight and not limits.held
