"""History in time partitions (migration 0017, sql/functions/history.sql): partitions made ahead,
whole partitions dropped by retention with everything retention must keep moved into the archive
partition first, rows outside every partition caught by the DEFAULT partitions, and lookups by id
that read one partition. Against a real PostgreSQL, with ids made at the times the rows claim."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgqueue import ids
from pgqueue.db.pool import open_pool
from pgqueue.queue.rescuer import Rescuer
from pgqueue.services.retention import Retention

DAY = timedelta(days=1)


class Db:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        app = self.one("INSERT INTO pgqueue.apps (name, url) VALUES ('h', 'http://127.0.0.1:9') RETURNING id")["id"]
        self.fn = self.one("INSERT INTO pgqueue.functions (app_id, slug, name, url, config)"
                           " VALUES (%s, 'h-f', 'f', 'http://127.0.0.1:9', '{}') RETURNING id", (app,))["id"]

    def rows(self, query: LiteralString, params: Any = None) -> list[dict[str, Any]]:
        return list(self.conn.execute(query, params).fetchall())

    def one(self, query: LiteralString, params: Any = None) -> dict[str, Any]:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row

    def ids(self, query: LiteralString, params: Any = None) -> set[str]:
        return {next(iter(r.values())) for r in self.rows(query, params)}

    def partition_set(self, day: datetime) -> str:
        """The partition set of the UTC day `day` falls in (made if missing: older days by backfill)."""
        start = day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.conn.execute("SELECT pgqueue.history_backfill_v1(%s, interval '1 day')", (start,))
        self.conn.execute("SELECT pgqueue.history_partition_create_v2(%s, %s)", (start, start + DAY))
        return "p" + start.strftime("%Y%m%dt%H%M")

    def event(self, at: datetime, *, name: str = "h/go") -> str:
        event_id = ids.new_ulid(int(at.timestamp() * 1000))
        self.conn.execute("INSERT INTO pgqueue.events (id, name, data, ts, received_at) VALUES (%s, %s, '{}', %s, %s)",
                          (event_id, name, int(at.timestamp() * 1000), at))
        return event_id

    def run(self, at: datetime, event_ids: list[str], *, ended: datetime | None = None,
            steps: int = 1) -> str:
        """A run made at `at` (live unless `ended`), with `steps` steps and an attempt each."""
        run_id = ids.new_ulid(int(at.timestamp() * 1000))
        self.conn.execute(
            "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts, created_at,"
            " started_at) VALUES (%s, %s, %s, %s, 'running', 3, %s, %s)",
            (run_id, self.fn, event_ids[0], event_ids, at, at))
        for n in range(steps):
            self.conn.execute("INSERT INTO pgqueue.steps (run_id, step_id, op, memo, created_at)"
                              " VALUES (%s, %s, 'StepRun', %s, %s)", (run_id, f"s{n}", Jsonb({"data": n}), at))
            self.conn.execute("INSERT INTO pgqueue.attempts (run_id, item_id, step_id, attempt, outcome, started_at)"
                              " VALUES (%s, 1, %s, 0, 'ok', %s)", (run_id, f"s{n}", at))
        if ended:
            self.end(run_id, ended)
        return run_id

    def end(self, run_id: str, at: datetime, status: str = "completed") -> None:
        """End a run as pgqueue's end paths do: the update, and its end recorded (runs_ended_v1)."""
        self.conn.execute(
            "WITH e AS (UPDATE pgqueue.runs SET status = %s::pgqueue.run_status, ended_at = %s WHERE id = %s"
            " RETURNING id, function_id, status, created_at, ended_at)"
            " SELECT pgqueue.runs_ended_v1(array_agg(id), array_agg(function_id), array_agg(status::text),"
            " array_agg(created_at), array_agg(ended_at)) FROM e", (status, at, run_id))

    def tables(self, suffix: str) -> set[str]:
        return self.ids("SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = 'pgqueue'::regnamespace"
                        " AND c.relname LIKE %s", ("%\\_" + suffix,))


@pytest.fixture
def db(database_url: str) -> Iterator[Db]:
    d = Db(database_url)
    yield d
    d.conn.close()


async def retention_round(db: Db, *, days: float = 7, now: datetime | None = None, **kw: Any) -> Any:
    pool = await open_pool(db.url, max_size=2)
    try:
        return await Retention(pool, retention_days=days, **kw).run_once(now=now)
    finally:
        await pool.close()


# -- partitions made ahead ---------------------------------------------------------------------------


def test_a_new_database_has_partitions_from_today_to_three_days_ahead(db: Db) -> None:
    sets = db.rows("SELECT starts_at, ends_at FROM pgqueue.history_partitions ORDER BY starts_at")

    now = datetime.now(UTC)
    assert sets[0]["starts_at"] <= now < sets[0]["ends_at"]
    assert sets[-1]["ends_at"] >= now + 3 * DAY - timedelta(hours=1)
    assert all(a["ends_at"] == b["starts_at"] for a, b in zip(sets, sets[1:], strict=False))  # no gap
    for suffix in db.ids("SELECT suffix FROM pgqueue.history_partitions"):
        assert db.tables(suffix) == {f"{t}_{suffix}" for t in ("events", "runs", "steps", "attempts")}


async def test_the_rescuer_makes_partitions_ahead_of_need(db: Db) -> None:
    # as if the rescuer had never run: no set at all (the archive below them stays)
    for row in db.rows("DELETE FROM pgqueue.history_partitions RETURNING suffix"):
        for table in ("events", "runs", "steps", "attempts"):
            db.conn.execute(f"DROP TABLE pgqueue.{table}_{row['suffix']}")  # type: ignore[arg-type]
    pool = await open_pool(db.url, max_size=2)
    try:
        made = await Rescuer(pool, partition_width_s=6 * 3600).make_partitions()
    finally:
        await pool.close()

    sets = db.rows("SELECT starts_at, ends_at FROM pgqueue.history_partitions ORDER BY 1")
    now = datetime.now(UTC)
    assert made == len(sets) >= 3  # 6-hour sets from the current one until three sets ahead
    assert sets[0]["starts_at"] <= now < sets[0]["ends_at"]
    assert all(s["ends_at"] - s["starts_at"] == timedelta(hours=6) for s in sets)
    assert all(a["ends_at"] == b["starts_at"] for a, b in zip(sets, sets[1:], strict=False))
    assert sets[-1]["ends_at"] >= now + timedelta(hours=18)


def test_a_row_with_no_partition_waits_in_the_default_one_and_moves_when_its_partition_is_made(db: Db) -> None:
    far = datetime.now(UTC) + 40 * DAY  # past every partition made ahead (a clock far off)
    stray_event = db.event(far)
    stray_run = db.run(far, [stray_event])
    assert db.ids("SELECT id FROM pgqueue.runs_default") == {stray_run}
    odd = "not-a-ulid"  # ids pgqueue never makes still have a home
    db.conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'h/odd', '{}', 0)", (odd,))

    suffix = db.partition_set(far)

    assert db.ids("SELECT id FROM pgqueue.runs_default") == set()
    assert db.ids(f"SELECT id FROM pgqueue.runs_{suffix}") == {stray_run}  # type: ignore[arg-type]
    assert db.ids(f"SELECT run_id FROM pgqueue.steps_{suffix}") == {stray_run}  # type: ignore[arg-type]
    assert db.ids("SELECT id FROM pgqueue.events_default") == {odd}


# -- lookups read one partition ----------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "SELECT * FROM pgqueue.runs WHERE id = $1",
    "SELECT * FROM pgqueue.events WHERE id = $1",
    "SELECT * FROM pgqueue.steps WHERE run_id = $1",
    "SELECT * FROM pgqueue.attempts WHERE run_id = $1",
])
def test_a_lookup_by_id_reads_one_partition_in_a_kept_plan(db: Db, query: str) -> None:
    for offset in range(-3, 1):  # a few more partition sets, with rows
        at = datetime.now(UTC) + offset * DAY
        db.partition_set(at)
        db.run(at, [db.event(at)])
    some_id = ids.new_ulid()
    db.conn.execute("SET plan_cache_mode = force_generic_plan")  # as plpgsql keeps it
    db.conn.execute(f"PREPARE lookup(text) AS {query}")  # type: ignore[arg-type]

    explain = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE lookup({})")
    plan = "\n".join(r["QUERY PLAN"] for r in db.conn.execute(explain.format(sql.Literal(some_id))).fetchall())

    sets = db.one("SELECT count(*) AS n FROM pgqueue.history_partitions")["n"]
    assert f"Subplans Removed: {sets + 1}" in plan, plan  # every partition but the id's: sets, archive, default
    assert plan.count("Index Scan") + plan.count("Index Only Scan") == 1, plan
    assert "Seq Scan" not in plan, plan


def test_an_event_id_sent_twice_is_stored_once(db: Db) -> None:
    event_id = ids.new_ulid()
    batch = Jsonb([{"id": event_id, "name": "h/dup", "data": {}, "ts": 1}])

    db.conn.execute("SELECT pgqueue.event_ingest_v1(%s)", (batch,))
    db.conn.execute("SELECT pgqueue.event_ingest_v1(%s)", (batch,))

    assert db.one("SELECT count(*) AS n FROM pgqueue.events WHERE id = %s", (event_id,))["n"] == 1


# -- retention by partition --------------------------------------------------------------------------


async def test_retention_drops_expired_partitions_and_keeps_what_is_still_needed(db: Db) -> None:
    now = datetime.now(UTC)
    old = (now - 20 * DAY).replace(hour=12)
    suffix = db.partition_set(old)
    db.partition_set(old + DAY)  # the next set: the old events expire with its runs
    gone_event = db.event(old)
    gone = db.run(old, [gone_event], ended=old + timedelta(seconds=3), steps=2)
    live_event = db.event(old)
    live = db.run(old, [live_event])  # a 20-day sleep
    long_event = db.event(old)
    long_run = db.run(old, [long_event], ended=now - 2 * DAY)  # ended within the window
    idem_event = db.event(old)
    idem = db.run(old, [idem_event], ended=old + timedelta(seconds=1))
    db.conn.execute("INSERT INTO pgqueue.idempotency_keys (function_id, key, run_id, expires_at)"
                    " VALUES (%s, 'k', %s, now() + interval '1 hour')", (db.fn, idem))
    inbox_event, dedupe_event, lonely = db.event(old), db.event(old), [db.event(old) for _ in range(3)]
    db.conn.execute("INSERT INTO pgqueue.event_inbox (event_id) VALUES (%s)", (inbox_event,))
    db.conn.execute("INSERT INTO pgqueue.event_dedupe (external_id, event_id, expires_at)"
                    " VALUES ('x1', %s, now() + interval '1 hour')", (dedupe_event,))
    replayed_event = db.event(old)
    replay = ids.new_ulid()  # a replay today of the old event pins it (run_create_v2)
    db.conn.execute("SELECT pgqueue.run_create_v2(%s)", (Jsonb([{
        "id": replay, "function_id": str(db.fn), "event_id": replayed_event, "event_ids": [replayed_event],
        "max_attempts": 1}]),))
    assert db.ids("SELECT event_id FROM pgqueue.event_pins WHERE run_id = %s", (replay,)) == {replayed_event}

    tick = await retention_round(db, now=now)

    assert {(suffix, "runs"), (suffix, "events")} <= {(e.suffix, e.part) for e in tick.expired}
    assert db.ids("SELECT id FROM pgqueue.runs WHERE id < %s", (ids.new_ulid(int((old + DAY).timestamp() * 1000)),)) \
        == {live, long_run, idem}
    assert db.ids("SELECT run_id FROM pgqueue.steps WHERE run_id = ANY (%s)", ([gone, live, long_run, idem],)) \
        == {live, long_run, idem}
    assert db.ids("SELECT run_id FROM pgqueue.attempts WHERE run_id = %s", (gone,)) == set()
    kept_events = db.ids("SELECT id FROM pgqueue.events WHERE id = ANY (%s)",
                         ([gone_event, live_event, long_event, idem_event, inbox_event, dedupe_event,
                           replayed_event, *lonely],))
    assert kept_events == {live_event, long_event, idem_event, inbox_event, dedupe_event, replayed_event}
    # the set's partitions are gone; what was kept is in the archive, whose bound moved over them
    assert db.tables(suffix) == set()
    assert db.ids("SELECT id FROM pgqueue.runs_archive") == {live, long_run, idem}
    assert db.ids("SELECT run_id FROM pgqueue.steps_archive") == {live, long_run, idem}
    assert db.rows("SELECT 1 FROM pgqueue.history_partitions WHERE suffix = %s", (suffix,)) == []


async def test_the_archive_is_pruned_as_its_runs_end(db: Db) -> None:
    now = datetime.now(UTC)
    old = (now - 20 * DAY).replace(hour=12)
    db.partition_set(old)
    db.partition_set(old + DAY)
    event = db.event(old)
    live = db.run(old, [event])
    await retention_round(db, now=now)
    assert db.ids("SELECT id FROM pgqueue.runs_archive") == {live}
    assert db.ids("SELECT id FROM pgqueue.events_archive") == {event}

    db.end(live, now - 8 * DAY)  # it ended before the window (it lived 12 days)
    pruned = await retention_round(db, now=now)

    assert (pruned.runs_deleted, pruned.events_deleted) == (1, 1)
    assert db.ids("SELECT id FROM pgqueue.runs_archive") == set()
    assert db.ids("SELECT run_id FROM pgqueue.steps_archive") == set()
    assert db.ids("SELECT id FROM pgqueue.events_archive") == set()
    assert db.ids("SELECT run_id FROM pgqueue.live_runs WHERE run_id = %s", (live,)) == set()


def test_each_table_has_its_sets_one_archive_and_one_default_partition(db: Db) -> None:
    # hot-path statements lock every partition of what they read: their number stays the window's
    sets = db.one("SELECT count(*) AS n FROM pgqueue.history_partitions")["n"]
    for table in ("events", "runs", "steps", "attempts"):
        partitions = db.ids("SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                            " WHERE i.inhparent = %s::regclass", (f"pgqueue.{table}",))
        assert {f"{table}_archive", f"{table}_default"} <= partitions
        assert len(partitions) == sets + 2, partitions


async def test_an_expiry_gives_up_on_a_busy_table_and_the_next_round_does_it(db: Db) -> None:
    now = datetime.now(UTC)
    old = (now - 20 * DAY).replace(hour=12)
    suffix = db.partition_set(old)
    db.run(old, [db.event(old)], ended=old + timedelta(seconds=1))
    reader = psycopg.connect(db.url)
    try:
        reader.execute("SELECT count(*) FROM pgqueue.runs")  # a long report holds the table
        busy = await retention_round(db, now=now, lock_timeout_ms=200)
    finally:
        reader.rollback()
        reader.close()
    again = await retention_round(db, now=now)

    assert busy.expired == () and not busy.done
    assert [(e.suffix, e.part, e.kept) for e in again.expired][:1] == [(suffix, "runs", 0)]
    assert db.tables(suffix) == set()


async def test_dropping_a_partition_writes_as_little_wal_for_many_rows_as_for_few(db: Db) -> None:
    now = datetime.now(UTC)
    wal = {}
    for n, days_ago in ((2_000, 21), (40_000, 20)):
        old = (now - days_ago * DAY).replace(hour=12)
        db.partition_set(old)
        event = db.event(old)
        db.conn.execute(
            "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts, created_at,"
            " ended_at) SELECT left(pgqueue.ulid_bound_v1(%s), 10) || lpad(i::text, 16, '0'), %s, %s, ARRAY[%s],"
            " 'completed', 1, %s, %s FROM generate_series(1, %s) AS i", (old, db.fn, event, event, old, old, n))
        before = db.one("SELECT pg_current_wal_insert_lsn() AS l")["l"]
        tick = await retention_round(db, now=now - (days_ago - 21) * DAY)  # this set's turn only
        wal[n] = db.one("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn AS b", (before,))["b"]
        assert tick.expired and tick.expired[0].kept == 0
        assert db.one("SELECT count(*) AS n FROM pgqueue.runs WHERE created_at = %s", (old,))["n"] == 0

    # 20 times the rows, not 20 times the WAL: dropping writes catalog changes, not a record per row
    # (deleting 40,000 runs row by row writes several MB)
    assert wal[40_000] < 2 * wal[2_000], wal


def test_history_functions_refuse_other_tables(db: Db) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="not a history table"):
        db.conn.execute("SELECT pgqueue.history_merge_v1('functions', 'p20000101t0000', 'id', '0', '{}')")

