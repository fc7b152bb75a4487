"""Flow-control SQL functions called directly with an injected `now`: exact admission decisions,
no sleeping. Plus claim fairness and concurrency parking against a real database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def throttle(
    conn: psycopg.Connection, t: float, *, limit: int = 2, period_ms: int = 1000, burst: int = 1
) -> float:
    row = conn.execute("SELECT pgqueue.throttle_admit_v2('throttle:k', %s, %s, %s, %s)",
                       (limit, period_ms, burst, at(t))).fetchone()
    assert row is not None
    return float(row[0])


def test_throttle_spaces_starts_by_the_emission_interval(conn: psycopg.Connection) -> None:
    # 2 per second, burst 1: limit + burst = 3 starts at once, then one every 0.5 s.
    assert [throttle(conn, 0) for _ in range(3)] == [0, 0, 0]
    assert throttle(conn, 0) == pytest.approx(0.5)
    assert throttle(conn, 0.25) == pytest.approx(0.25)
    assert throttle(conn, 0.5) == 0
    assert throttle(conn, 0.5) == pytest.approx(0.5)
    # idle time does not bank more than limit + burst
    assert [throttle(conn, 10) for _ in range(4)] == [0, 0, 0, pytest.approx(0.5)]


def test_throttle_burst_allows_extra_starts_at_once(conn: psycopg.Connection) -> None:
    assert [throttle(conn, 0, limit=1, period_ms=1000, burst=3) for _ in range(4)] == [0, 0, 0, 0]
    assert throttle(conn, 0, limit=1, period_ms=1000, burst=3) == pytest.approx(1.0)


def test_rate_limit_allows_limit_per_period_then_skips(conn: psycopg.Connection) -> None:
    def admit(t: float) -> bool:
        row = conn.execute("SELECT pgqueue.rate_limit_admit_v2('rl:k', 3, 60000, %s)", (at(t),)).fetchone()
        return bool(row and row[0])

    # 3 per minute: one per 20 s bucket, so never more than 3 in any minute
    assert [admit(0), admit(1), admit(2), admit(3)] == [True, False, False, False]
    assert admit(19.9) is False
    assert admit(20) is True  # one emission interval (60 s / 3) after the first
    assert admit(20.1) is False
    assert [admit(40), admit(59.9), admit(60)] == [True, False, True]


def _function(conn: psycopg.Connection, slug: str, config: dict | None = None) -> uuid.UUID:
    app = conn.execute(
        "INSERT INTO pgqueue.apps (name, url) VALUES (%s, 'http://127.0.0.1:9') "
        "ON CONFLICT (name) DO UPDATE SET url = excluded.url RETURNING id", ("sqltest",)).fetchone()
    assert app is not None
    row = conn.execute(
        "INSERT INTO pgqueue.functions (app_id, slug, name, url, config) VALUES (%s, %s, %s, 'http://127.0.0.1:9', %s) "
        "RETURNING id", (app[0], slug, slug, json.dumps(config or {}))).fetchone()
    assert row is not None
    return row[0]


def _runs(conn: psycopg.Connection, fn: uuid.UUID, n: int, **extra: object) -> list[str]:
    ids = [f"{fn.hex[:8]}-{i:06d}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    event_id = f"ev-{uuid.uuid4().hex}"
    conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'x/y', '{}', 0)", (event_id,))
    runs = [{"id": rid, "function_id": str(fn), "event_id": event_id, "event_ids": [event_id], "max_attempts": 1,
             **extra} for rid in ids]
    conn.execute("SELECT pgqueue.run_create_v1(%s::jsonb)", (json.dumps(runs),))
    return ids


def _claim(conn: psycopg.Connection, n: int) -> list[str]:
    return [r[0] for r in conn.execute("SELECT run_id FROM pgqueue.claim_v1('w', %s, 30000)", (n,)).fetchall()]


def test_a_deep_backlog_does_not_delay_another_function(conn: psycopg.Connection) -> None:
    busy = _function(conn, "busy")
    quiet = _function(conn, "quiet")
    _runs(conn, busy, 10_000)
    [single] = _runs(conn, quiet, 1)
    claimed = _claim(conn, 50)
    assert len(claimed) == 50
    assert single in claimed  # within the first claim round


def test_concurrency_key_admits_up_to_its_limit_and_parks_the_rest(conn: psycopg.Connection) -> None:
    fn = _function(conn, "limited")
    a = _runs(conn, fn, 5, ckeys=["fn:x:a"], climits=[2])
    b = _runs(conn, fn, 1, ckeys=["fn:x:b"], climits=[2])
    claimed = _claim(conn, 50)
    assert sorted(claimed) == sorted(a[:2] + b)
    parked = conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE blocked AND blocked_key = 'fn:x:a'").fetchone()
    assert parked == (3,)
    assert _claim(conn, 50) == []  # parked items are not scanned again
    # Finishing one leased item unparks exactly one waiting item.
    conn.execute("DELETE FROM pgqueue.queue_items WHERE run_id = %s", (a[0],))
    assert _claim(conn, 50) == [a[2]]
    # The sweep unparks what a lost wake-up left behind, up to the free capacity.
    conn.execute("DELETE FROM pgqueue.queue_items WHERE run_id = ANY(%s)", ([a[1], a[2]],))
    conn.execute("UPDATE pgqueue.queue_items SET blocked = true, blocked_key = 'fn:x:a' WHERE run_id = ANY(%s)",
                 ([a[3], a[4]],))
    assert conn.execute("SELECT pgqueue.concurrency_unblock_v1()").fetchone() == (2,)
    assert sorted(_claim(conn, 50)) == sorted(a[3:])


def test_throttled_first_call_is_delayed_not_dropped(conn: psycopg.Connection) -> None:
    fn = _function(conn, "thr")
    throttle_cfg = {"limit": 1, "period_ms": 60000, "burst": 1}
    ids = _runs(conn, fn, 3, throttle_key="throttle:thr:", throttle=throttle_cfg)
    assert len(_claim(conn, 50)) == 2  # limit + burst at once
    delayed = conn.execute(
        "SELECT count(*) FROM pgqueue.queue_items WHERE run_id = ANY(%s) AND state = 'available' "
        "AND run_at > now() + interval '50 seconds'", (ids,)).fetchone()
    assert delayed == (1,)


def test_priority_orders_within_a_function(conn: psycopg.Connection) -> None:
    fn = _function(conn, "prio")
    low = _runs(conn, fn, 1)
    high = _runs(conn, fn, 1, priority_s=60)
    assert _claim(conn, 1) == high
    assert _claim(conn, 1) == low


def test_debounce_moves_the_start_and_keeps_the_last_event(conn: psycopg.Connection) -> None:
    fn = _function(conn, "deb")
    [run] = _runs(conn, fn, 1, delay_s=5)
    conn.execute("SELECT pgqueue.debounce_open_v1(%s, 'k', %s)", (fn, run))
    first_at = conn.execute("SELECT first_at FROM pgqueue.debounces").fetchone()[0]  # type: ignore[index]
    conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES ('e2', 'x/y', '{}', 0)")
    row = conn.execute("SELECT * FROM pgqueue.debounce_push_v1(%s, 'k', 'e2', 5, 7, %s)",
                       (fn, first_at + timedelta(seconds=4))).fetchone()
    assert row is not None and row[0] == run
    run_at, event_ids = conn.execute(
        "SELECT q.run_at, r.event_ids FROM pgqueue.queue_items q JOIN pgqueue.runs r ON r.id = q.run_id "
        "WHERE q.run_id = %s", (run,)).fetchone()  # type: ignore[misc]
    assert event_ids == ["e2"]
    assert run_at == first_at + timedelta(seconds=7)  # capped by the timeout, not now + period
    # Once the run has been claimed, a new event opens a new window.
    conn.execute("UPDATE pgqueue.queue_items SET run_at = now() - interval '1 second' WHERE run_id = %s", (run,))
    assert _claim(conn, 1) == [run]
    assert conn.execute("SELECT * FROM pgqueue.debounce_push_v1(%s, 'k', 'e2', 5, 7)", (fn,)).fetchone() is None


def test_batch_fills_then_starts(conn: psycopg.Connection) -> None:
    fn = _function(conn, "bat")
    [run] = _runs(conn, fn, 1, delay_s=60)
    conn.execute("SELECT pgqueue.batch_open_v1(%s, '', %s)", (fn, run))
    assert conn.execute("SELECT pgqueue.batch_append_v1(%s, '', 'e2', 3)", (fn,)).fetchone() == (run,)
    assert _claim(conn, 5) == []  # not full: waits for its timeout
    assert conn.execute("SELECT pgqueue.batch_append_v1(%s, '', 'e3', 3)", (fn,)).fetchone() == (run,)
    assert _claim(conn, 5) == [run]  # full: starts now
    assert conn.execute("SELECT pgqueue.batch_append_v1(%s, '', 'e4', 3)", (fn,)).fetchone() == (None,)
    events = conn.execute("SELECT event_ids FROM pgqueue.runs WHERE id = %s", (run,)).fetchone()
    assert events is not None and len(events[0]) == 3


def test_flow_control_views_show_usage_parking_and_buckets(conn: psycopg.Connection) -> None:
    fn = _function(conn, "viewed")
    _runs(conn, fn, 3, ckeys=["fn:v:a"], climits=[1])
    _claim(conn, 10)
    usage = conn.execute(
        "SELECT function_slug, concurrency_key, \"limit\", in_use, queued, parked FROM pgqueue.concurrency_usage"
    ).fetchall()
    assert usage == [("viewed", "fn:v:a", 1, 1, 0, 2)]
    queue = conn.execute("SELECT due, parked, leased FROM pgqueue.flow_queue WHERE function_slug = 'viewed'").fetchone()
    assert queue == (0, 2, 1)
    conn.execute("SELECT pgqueue.throttle_admit_v2(%s, 1, 60000, 1, now())", (f"throttle:{fn}:user-1",))
    bucket = conn.execute("SELECT kind, function_slug, key FROM pgqueue.throttle_state").fetchone()
    assert bucket == ("throttle", "viewed", "user-1")
    [run] = _runs(conn, fn, 1, delay_s=30)
    conn.execute("SELECT pgqueue.batch_open_v1(%s, 'b', %s)", (fn, run))
    assert conn.execute("SELECT key, size, events FROM pgqueue.pending_batches").fetchone() == ("b", 1, 1)


def _blocked(conn: psycopg.Connection, run_ids: list[str]) -> dict[str, str | None]:
    rows = conn.execute("SELECT run_id, blocked_key FROM pgqueue.queue_items WHERE run_id = ANY(%s)",
                        (run_ids,)).fetchall()
    return {r[0]: r[1] for r in rows}


def test_a_wake_up_passes_on_when_the_woken_item_parks_on_its_other_key(conn: psycopg.Connection) -> None:
    """Limits of 2 per function and 1 per key. Two slots of the function free at once and wake two
    items parked on it, both of key c: the second parks on c, and the function's slot it was woken
    for goes to the next item parked on the function, not to the rescuer's sweep."""
    fn = _function(conn, "two-keys")

    def runs(key: str, n: int = 1) -> list[str]:
        return _runs(conn, fn, n, ckeys=[f"fn:{fn}:k:{key}", f"fn:{fn}"], climits=[1, 2])

    r1, r2 = runs("a") + runs("b")
    r3, r4 = runs("c", 2)
    [r5] = runs("d")
    assert sorted(_claim(conn, 50)) == sorted([r1, r2])
    assert set(_blocked(conn, [r3, r4, r5]).values()) == {f"fn:{fn}"}
    conn.execute("DELETE FROM pgqueue.queue_items WHERE run_id = ANY(%s)", ([r1, r2],))  # two slots free
    assert _blocked(conn, [r3, r4, r5]) == {r3: None, r4: None, r5: f"fn:{fn}"}
    assert _claim(conn, 50) == [r3]
    assert _blocked(conn, [r4, r5]) == {r4: f"fn:{fn}:k:c", r5: None}, "r4 parked on c, r5 woken"
    assert _claim(conn, 50) == [r5]
    assert conn.execute("SELECT pgqueue.concurrency_unblock_v1()").fetchone() == (0,), "nothing was missed"


def test_the_sweep_leaves_slots_that_due_items_will_take(conn: psycopg.Connection) -> None:
    """A slot freed and the item it woke not claimed yet: no wake-up was missed, the sweep finds
    nothing (it used to unpark a second item for the same slot and count it as missed)."""
    fn = _function(conn, "sweep")
    r = _runs(conn, fn, 4, ckeys=[f"fn:{fn}:k:a"], climits=[2])
    assert sorted(_claim(conn, 50)) == sorted(r[:2])
    conn.execute("DELETE FROM pgqueue.queue_items WHERE run_id = %s", (r[0],))
    assert _blocked(conn, r[2:]) == {r[2]: None, r[3]: f"fn:{fn}:k:a"}
    assert conn.execute("SELECT pgqueue.concurrency_unblock_v1()").fetchone() == (0,)
    assert _claim(conn, 50) == [r[2]]


def test_continuations_of_older_runs_go_before_newer_runs(conn: psycopg.Connection) -> None:
    """Inngest's score: a first-attempt call due within 2 s sorts by its run's start (from the run
    id) minus the priority factor; a retry or an item scheduled further ahead keeps its own time."""
    from pgqueue import ids

    fn = _function(conn, "ordered")
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    old, newer = ids.new_ulid(now_ms - 60_000), ids.new_ulid(now_ms - 1_000)
    event_id = ids.new_ulid()
    conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'x/y', '{}', 0)", (event_id,))
    runs = [{"id": rid, "function_id": str(fn), "event_id": event_id, "event_ids": [event_id],
             "max_attempts": 3} for rid in (newer, old)]
    conn.execute("SELECT pgqueue.run_create_v1(%s::jsonb)", (json.dumps(runs),))
    # the old run's item queued after the newer run's (its next step, say): the old run goes first
    conn.execute("UPDATE pgqueue.queue_items SET run_at = now() WHERE run_id = %s", (old,))
    assert _claim(conn, 1) == [old]
    assert _claim(conn, 1) == [newer]
    sort_at = conn.execute(
        "UPDATE pgqueue.queue_items SET state = 'available', lease_token = NULL, lease_expires_at = NULL,"
        " leased_by = NULL, leased_at = NULL, attempt = 1, run_at = now() - interval '1 second'"
        " WHERE run_id = %s RETURNING sort_at, run_at", (old,)).fetchone()
    assert sort_at is not None and sort_at[0] == sort_at[1], "a retry keeps its own time"
    later = conn.execute(
        "UPDATE pgqueue.queue_items SET attempt = 0, run_at = now() + interval '10 seconds'"
        " WHERE run_id = %s RETURNING sort_at, run_at", (old,)).fetchone()
    assert later is not None and later[0] == later[1], "an item scheduled further ahead keeps its own time"
    started = datetime.fromtimestamp((now_ms - 60_000) / 1000, UTC)
    soon = conn.execute("UPDATE pgqueue.queue_items SET run_at = now() + interval '1 second'"
                        " WHERE run_id = %s RETURNING sort_at, %s::timestamptz", (old, started)).fetchone()
    assert soon is not None and soon[0] == soon[1], "due within 2 s: the run's start"


def test_a_woken_item_deleted_before_its_claim_passes_the_wake_up_on(conn: psycopg.Connection) -> None:
    """A bulk cancellation deletes a leased item (waking the next parked one) and then, in the
    same transaction, the item it woke: the slot goes to the next parked item."""
    fn = _function(conn, "cancelled")
    r = _runs(conn, fn, 4, ckeys=[f"fn:{fn}:k:a"], climits=[1])
    assert _claim(conn, 50) == [r[0]]
    with conn.transaction():
        conn.execute("DELETE FROM pgqueue.queue_items WHERE run_id = %s", (r[0],))
        assert _blocked(conn, r[1:]) == {r[1]: None, r[2]: f"fn:{fn}:k:a", r[3]: f"fn:{fn}:k:a"}
        conn.execute("DELETE FROM pgqueue.queue_items WHERE run_id = %s", (r[1],))
    assert _blocked(conn, r[2:]) == {r[2]: None, r[3]: f"fn:{fn}:k:a"}
    assert conn.execute("SELECT pgqueue.concurrency_unblock_v1()").fetchone() == (0,)
    assert _claim(conn, 50) == [r[2]]
