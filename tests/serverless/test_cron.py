"""Cron triggers with an injected clock: concurrent schedulers, the catch-up policy after an
outage, time zones, paused functions and re-syncs. Nothing sleeps: every tick is given its `now`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from psycopg_pool import AsyncConnectionPool

from pgqueue.admin import actions
from pgqueue.apps import registration
from pgqueue.db.pool import open_pool
from pgqueue.runner import cron
from pgqueue.runner.cron import CronScheduler
from pgqueue.store import apps

APP_URL = "http://127.0.0.1:9/api/inngest"
MINUTE = timedelta(minutes=1)


def fn(slug: str, *triggers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": slug,
        "name": slug,
        "triggers": list(triggers),
        "steps": {
            "step": {
                "id": "step",
                "name": "step",
                "runtime": {"type": "http", "url": f"{APP_URL}?fnId={slug}&stepId=step"},
            }
        },
        **extra,
    }


async def sync(pool: AsyncConnectionPool, *functions: dict[str, Any]) -> None:
    body = {"appName": "cron-app", "url": APP_URL, "sdk": "py:v0.5.19", "functions": list(functions)}
    async with pool.connection() as conn, conn.transaction():
        await apps.sync(conn, registration.parse_register(body))


async def fetch(pool: AsyncConnectionPool, query: str, params: Any = None) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        return list(await cur.fetchall())


async def fired_slots(pool: AsyncConnectionPool, slug: str) -> list[datetime]:
    found = await fetch(
        pool,
        "SELECT t.scheduled_at FROM pgqueue.cron_ticks t JOIN pgqueue.functions f"
        " ON f.id = t.function_id WHERE f.slug = %s AND t.run_id IS NOT NULL"
        " ORDER BY t.scheduled_at",
        (slug,),
    )
    return [r["scheduled_at"] for r in found]


async def run_count(pool: AsyncConnectionPool, slug: str) -> int:
    found = await fetch(
        pool,
        "SELECT count(*) AS n FROM pgqueue.runs r JOIN pgqueue.functions f"
        " ON f.id = r.function_id WHERE f.slug = %s",
        (slug,),
    )
    return int(found[0]["n"])


def next_minute(after: datetime) -> datetime:
    return after.replace(second=0, microsecond=0) + MINUTE


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = await open_pool(database_url, max_size=12)
    yield p
    await p.close()


# -- the schedule arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "now", "latest", "following"),
    [
        ("* * * * *", "2026-03-01T10:00:00Z", "2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z"),
        ("* * * * *", "2026-03-01T10:00:59.9Z", "2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z"),
        ("*/15 * * * *", "2026-03-01T10:14:59Z", "2026-03-01T10:00:00Z", "2026-03-01T10:15:00Z"),
        (
            "TZ=Asia/Kolkata 30 9 * * *",
            "2026-03-01T04:00:30Z",
            "2026-03-01T04:00:00Z",
            "2026-03-02T04:00:00Z",
        ),
        (
            "CRON_TZ=Asia/Kolkata 30 9 * * *",
            "2026-03-01T03:59:59Z",
            "2026-02-28T04:00:00Z",
            "2026-03-01T04:00:00Z",
        ),
        # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC after the March DST change
        (
            "TZ=America/New_York 0 9 * * *",
            "2026-03-07T15:00:00Z",
            "2026-03-07T14:00:00Z",
            "2026-03-08T13:00:00Z",
        ),
    ],
)
def test_slots_in_utc_and_in_time_zones(spec: str, now: str, latest: str, following: str) -> None:
    at = datetime.fromisoformat(now)

    slot = cron.latest_at_or_before(spec, at)

    assert slot == datetime.fromisoformat(latest)
    assert cron.next_after(spec, slot) == datetime.fromisoformat(following)
    assert slot.tzinfo is not None and slot.utcoffset() == timedelta(0)


# -- exactly once under concurrent schedulers -------------------------------------------------------


async def test_five_concurrent_schedulers_over_an_hour_fire_each_minute_once(
    pool: AsyncConnectionPool,
) -> None:
    await sync(pool, fn("cron-app-every-minute", {"cron": "* * * * *"}))
    t0 = next_minute(datetime.now(UTC))  # the schedule's first slot: the first minute after the sync
    schedulers = [CronScheduler(pool) for _ in range(5)]
    rng = random.Random(5)

    fired = 0
    for step in range(120):  # every 30 simulated seconds for an hour, each scheduler at its own jitter
        base = t0 + timedelta(seconds=30 * step)
        ticks = await asyncio.gather(
            *(s.run_once(now=base + timedelta(seconds=rng.uniform(0, 29))) for s in schedulers)
        )
        fired += sum(t.fired for t in ticks)

    assert fired == 60
    assert await run_count(pool, "cron-app-every-minute") == 60
    assert await fired_slots(pool, "cron-app-every-minute") == [t0 + i * MINUTE for i in range(60)]
    events = await fetch(
        pool, "SELECT name, data->>'cron' AS cron, count(*) AS n FROM pgqueue.events GROUP BY 1, 2"
    )
    assert events == [{"name": "inngest/scheduled.timer", "cron": "* * * * *", "n": 60}]
    # every run got its first call queued, like an event-triggered run
    items = await fetch(pool, "SELECT count(*) AS n FROM pgqueue.queue_items WHERE step_id = 'step'")
    assert items == [{"n": 60}]


async def test_a_slot_fires_once_even_if_its_schedule_is_recreated(pool: AsyncConnectionPool) -> None:
    await sync(pool, fn("cron-app-recreated", {"cron": "* * * * *"}))
    t0 = next_minute(datetime.now(UTC))
    scheduler = CronScheduler(pool)
    assert (await scheduler.run_once(now=t0 + timedelta(seconds=5))).fired == 1

    # lose the schedule row (say a re-sync raced a tick): it is re-created from the sync time
    await fetch(pool, "DELETE FROM pgqueue.cron_schedules RETURNING 1")
    again = await scheduler.run_once(now=t0 + timedelta(seconds=40))

    assert again.schedules_added == 1 and again.fired == 0  # slot t0 is taken in cron_ticks
    assert await run_count(pool, "cron-app-recreated") == 1


# -- catch-up policy --------------------------------------------------------------------------------


async def test_after_a_ten_minute_outage_only_the_latest_missed_slot_fires(pool: AsyncConnectionPool) -> None:
    await sync(pool, fn("cron-app-outage", {"cron": "* * * * *"}))
    t0 = next_minute(datetime.now(UTC))
    scheduler = CronScheduler(pool)
    for minute in range(5):  # slots t0 .. t0+4m fire on time
        assert (await scheduler.run_once(now=t0 + minute * MINUTE + timedelta(seconds=2))).fired == 1

    # no scheduler runs from t0+5m to t0+15m; the first tick after the outage is at t0+15m20s
    after = await scheduler.run_once(now=t0 + 15 * MINUTE + timedelta(seconds=20))
    on_time = await scheduler.run_once(now=t0 + 16 * MINUTE + timedelta(seconds=1))

    assert (after.fired, after.caught_up) == (1, 1)
    assert (on_time.fired, on_time.caught_up) == (1, 0)
    assert await fired_slots(pool, "cron-app-outage") == [
        *(t0 + m * MINUTE for m in range(5)),
        t0 + 15 * MINUTE,
        t0 + 16 * MINUTE,
    ]
    assert await run_count(pool, "cron-app-outage") == 7


# -- time zones -------------------------------------------------------------------------------------


async def test_time_zone_prefixes_fire_at_the_right_utc_instant(pool: AsyncConnectionPool) -> None:
    await sync(
        pool,
        fn("cron-app-kolkata", {"cron": "TZ=Asia/Kolkata 30 9 * * *"}),
        fn("cron-app-new-york", {"cron": "CRON_TZ=America/New_York 0 9 * * 1-5"}),
    )
    scheduler = CronScheduler(pool)
    now = datetime.now(UTC)
    await scheduler.run_once(now=now)
    schedules = {
        r["slug"]: r["next_at"]
        for r in await fetch(
            pool,
            "SELECT f.slug, s.next_at FROM pgqueue.cron_schedules s"
            " JOIN pgqueue.functions f ON f.id = s.function_id",
        )
    }

    kolkata = schedules["cron-app-kolkata"]
    assert (kolkata.hour, kolkata.minute) == (4, 0)  # 09:30 IST is 04:00 UTC
    assert now < kolkata <= now + timedelta(days=1)
    new_york = schedules["cron-app-new-york"].astimezone(ZoneInfo("America/New_York"))
    assert (new_york.hour, new_york.minute) == (9, 0) and new_york.isoweekday() <= 5

    tick = await scheduler.run_once(now=kolkata + timedelta(seconds=3))

    assert await fired_slots(pool, "cron-app-kolkata") == [kolkata]
    assert tick.fired == 1 + int(schedules["cron-app-new-york"] <= kolkata + timedelta(seconds=3))


# -- paused functions and re-syncs ------------------------------------------------------------------


async def test_paused_functions_skip_their_ticks(pool: AsyncConnectionPool) -> None:
    await sync(pool, fn("cron-app-paused", {"cron": "* * * * *"}))
    t0 = next_minute(datetime.now(UTC))
    scheduler = CronScheduler(pool)
    async with pool.connection() as conn:
        await actions.set_paused(conn, "cron-app-paused", True)

    paused = [await scheduler.run_once(now=t0 + m * MINUTE + timedelta(seconds=1)) for m in range(3)]
    async with pool.connection() as conn:
        await actions.set_paused(conn, "cron-app-paused", False)
    resumed = await scheduler.run_once(now=t0 + 3 * MINUTE + timedelta(seconds=1))

    assert [t.skipped for t in paused] == [1, 1, 1] and sum(t.fired for t in paused) == 0
    assert resumed.fired == 1 and resumed.caught_up == 0  # resuming does not replay skipped slots
    assert await fired_slots(pool, "cron-app-paused") == [t0 + 3 * MINUTE]
    skipped = await fetch(
        pool, "SELECT skip_reason, count(*) AS n FROM pgqueue.cron_ticks WHERE run_id IS NULL GROUP BY 1"
    )
    assert skipped == [{"skip_reason": "function paused", "n": 3}]


async def test_a_resync_replaces_or_removes_the_schedule(pool: AsyncConnectionPool) -> None:
    await sync(
        pool, fn("cron-app-resync", {"cron": "* * * * *"}), fn("cron-app-dropped", {"cron": "*/5 * * * *"})
    )
    t0 = next_minute(datetime.now(UTC))
    scheduler = CronScheduler(pool)
    assert (await scheduler.run_once(now=t0 + timedelta(seconds=1))).fired >= 1

    # new schedule for one function (once a year), the other function is gone from the app
    await sync(pool, fn("cron-app-resync", {"cron": "0 0 1 1 *"}, {"event": "cron-app/manual"}))
    tick = await scheduler.run_once(now=t0 + timedelta(seconds=2))
    later = [await scheduler.run_once(now=t0 + m * MINUTE + timedelta(seconds=1)) for m in range(1, 6)]

    assert (tick.schedules_removed, tick.schedules_added) == (2, 1)
    schedules = await fetch(
        pool,
        "SELECT f.slug, s.cron, s.next_at FROM pgqueue.cron_schedules s"
        " JOIN pgqueue.functions f ON f.id = s.function_id",
    )
    assert [(r["slug"], r["cron"]) for r in schedules] == [("cron-app-resync", "0 0 1 1 *")]
    next_at = schedules[0]["next_at"]
    assert (next_at.month, next_at.day, next_at.hour, next_at.minute) == (1, 1, 0, 0)
    assert sum(t.fired for t in later) == 0
    assert await run_count(pool, "cron-app-resync") == 1


async def test_singleton_cron_functions_skip_a_slot_while_a_run_is_active(pool: AsyncConnectionPool) -> None:
    await sync(pool, fn("cron-app-single", {"cron": "* * * * *"}, singleton={"mode": "skip"}))
    t0 = next_minute(datetime.now(UTC))
    scheduler = CronScheduler(pool)

    ticks = [await scheduler.run_once(now=t0 + m * MINUTE + timedelta(seconds=1)) for m in range(3)]

    assert [(t.fired, t.skipped) for t in ticks] == [(1, 0), (0, 1), (0, 1)]  # the first run never ends here
    reasons = await fetch(pool, "SELECT skip_reason FROM pgqueue.cron_ticks WHERE run_id IS NULL")
    assert len(reasons) == 2 and all("singleton" in r["skip_reason"] for r in reasons)


# -- jitter -----------------------------------------------------------------------------------------


async def first_calls(pool: AsyncConnectionPool, slug: str) -> list[dict[str, Any]]:
    """Per run of `slug`, oldest first: its slot, and how long after its creation its call is due."""
    return await fetch(
        pool,
        "SELECT t.scheduled_at, q.run_at - r.created_at AS waits, r.function_id"
        " FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id"
        " JOIN pgqueue.cron_ticks t ON t.run_id = r.id"
        " JOIN pgqueue.queue_items q ON q.run_id = r.id AND q.step_id = 'step'"
        " WHERE f.slug = %s ORDER BY t.scheduled_at",
        (slug,),
    )


async def test_jitter_delays_each_ticks_first_call_by_its_own_delay(pool: AsyncConnectionPool) -> None:
    await sync(pool, fn("cron-app-jitter", {"cron": "* * * * *", "jitter": "30s"}),
               fn("cron-app-plain", {"cron": "* * * * *"}))
    t0 = next_minute(datetime.now(UTC))
    scheduler = CronScheduler(pool)
    for m in range(40):  # each tick exactly on its slot
        await scheduler.run_once(now=t0 + m * MINUTE)

    calls = await first_calls(pool, "cron-app-jitter")
    assert [c["scheduled_at"] for c in calls] == [t0 + m * MINUTE for m in range(40)]
    waits = [c["waits"].total_seconds() for c in calls]
    # the run is created at its slot; its first call is due jitter_delay_s(function, slot) later
    expected = [cron.jitter_delay_s(c["function_id"], c["scheduled_at"], 30.0) for c in calls]
    assert waits == pytest.approx(expected, abs=1e-6)
    assert all(0 <= w <= 30 for w in waits)
    assert min(waits) < 5 and max(waits) > 25  # spread over the whole range, not one fixed offset
    assert len(set(waits)) > 30
    # without jitter the call is due at once
    assert {c["waits"] for c in await first_calls(pool, "cron-app-plain")} == {timedelta(0)}


async def test_a_late_tick_waits_only_what_is_left_of_its_delay(pool: AsyncConnectionPool) -> None:
    await sync(pool, fn("cron-app-late", {"cron": "*/10 * * * *", "jitter": "5m"}))
    t0 = cron.next_after("*/10 * * * *", datetime.now(UTC))
    t1 = t0 + 10 * MINUTE
    scheduler = CronScheduler(pool)
    [row] = await fetch(pool, "SELECT id FROM pgqueue.functions WHERE slug = 'cron-app-late'")
    delay = cron.jitter_delay_s(row["id"], t0, 300.0)

    await scheduler.run_once(now=t0 + timedelta(seconds=20))
    await scheduler.run_once(now=t1 + timedelta(seconds=301))  # after the longest delay it could have

    first, second = await first_calls(pool, "cron-app-late")
    assert (first["scheduled_at"], second["scheduled_at"]) == (t0, t1)
    assert first["waits"].total_seconds() == pytest.approx(max(delay - 20, 0), abs=1e-6)
    assert second["waits"] == timedelta(0)


async def test_start_timeout_counts_from_the_jittered_start(pool: AsyncConnectionPool) -> None:
    await sync(pool, fn("cron-app-jitter-timeout", {"cron": "* * * * *", "jitter": "1m"},
                        timeouts={"start": "10s"}))
    t0 = next_minute(datetime.now(UTC))
    await CronScheduler(pool).run_once(now=t0)
    [call] = await first_calls(pool, "cron-app-jitter-timeout")
    [timeout] = await fetch(
        pool,
        "SELECT q.run_at - r.created_at AS waits FROM pgqueue.queue_items q"
        " JOIN pgqueue.runs r ON r.id = q.run_id WHERE q.step_id = '$start-timeout'",
    )
    assert timeout["waits"] - call["waits"] == timedelta(seconds=10)


def test_jitter_delay_is_deterministic_and_within_range() -> None:
    slot = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    same = {cron.jitter_delay_s("f1", slot, 30.0) for _ in range(3)}
    assert len(same) == 1 and 0 <= same.pop() <= 30
    # the same instant given in another zone is the same slot
    assert cron.jitter_delay_s("f1", slot, 30.0) == cron.jitter_delay_s(
        "f1", slot.astimezone(ZoneInfo("Asia/Kolkata")), 30.0)
    delays = [cron.jitter_delay_s("f1", slot + m * MINUTE, 30.0) for m in range(2000)]
    assert all(0 <= d <= 30 for d in delays)
    assert 13 < sum(delays) / len(delays) < 17  # uniform: mean near 15 s
    assert cron.jitter_delay_s("f2", slot, 30.0) != cron.jitter_delay_s("f1", slot, 30.0)
