"""The inspection views, pgqueue.metrics(), the admin functions (cancel_run, retry_run), the
read-only grant script, against a database with known contents (retention: test_history.py)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgqueue import ids
from pgqueue.db.pool import open_pool
from pgqueue.runs import transitions
from pgqueue.store import runs

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)  # reset by the `db` fixture: every test seeds relative to its own start


class Db:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)

    def rows(self, query: LiteralString, params: Any = None) -> list[dict[str, Any]]:
        return list(self.conn.execute(query, params).fetchall())

    def one(self, query: LiteralString, params: Any = None) -> dict[str, Any]:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row

    def run(self, query: LiteralString, params: Any = None) -> None:
        self.conn.execute(query, params)

    # -- seeding -----------------------------------------------------------------------------
    def app(self, name: str = "shop") -> uuid.UUID:
        return self.one(
            "INSERT INTO pgqueue.apps (name, url, synced_at) VALUES (%s, 'http://127.0.0.1:9/api/inngest', now())"
            " RETURNING id", (name,),
        )["id"]

    def function(self, app_id: uuid.UUID, slug: str, retries: int = 2) -> uuid.UUID:
        config = {"id": slug, "name": slug, "triggers": [{"event": f"{slug}/go"}], "retries": retries}
        return self.one(
            "INSERT INTO pgqueue.functions (app_id, slug, name, url, config, retries)"
            " VALUES (%s, %s, %s, 'http://127.0.0.1:9/api/inngest?fnId=x&stepId=step', %s, %s) RETURNING id",
            (app_id, slug, slug, Jsonb(config), retries),
        )["id"]

    def event(self, name: str = "shop/go", *, received_at: datetime | None = None, external_id: str | None = None,
              data: Any = None) -> str:
        received_at = received_at or NOW
        event_id = ids.new_ulid(int(received_at.timestamp() * 1000))  # ids are made with their rows
        self.run(
            "INSERT INTO pgqueue.events (id, name, data, ts, external_id, received_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (event_id, name, Jsonb(data if data is not None else {"n": 1}), ids.ulid_time_ms(event_id), external_id,
             received_at),
        )
        return event_id

    def run_row(self, function_id: uuid.UUID, event_id: str, *, status: str = "running",
                created_at: datetime | None = None, ended_at: datetime | None = None, error: Any = None,
                output: Any = None, correlation_id: str | None = None) -> str:
        created_at = created_at or NOW
        run_id = ids.new_ulid(int(created_at.timestamp() * 1000))
        if status in ("completed", "failed", "cancelled") and ended_at is None:
            ended_at = created_at + timedelta(seconds=1)
        self.run(
            "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts, created_at,"
            " started_at, ended_at, error, output, correlation_id)"
            " VALUES (%s, %s, %s, ARRAY[%s], %s::pgqueue.run_status, 3, %s, %s, %s, %s, %s, %s)",
            (run_id, function_id, event_id, event_id, status, created_at,
             None if status == "queued" else created_at, ended_at,
             Jsonb(error) if error is not None else None, Jsonb(output) if output is not None else None,
             correlation_id),
        )
        if ended_at is not None:  # recorded as pgqueue's end paths record it (run_failures, counts)
            self.run("SELECT pgqueue.runs_ended_v1(ARRAY[%s], ARRAY[%s::uuid], ARRAY[%s], ARRAY[%s::timestamptz],"
                     " ARRAY[%s::timestamptz])", (run_id, function_id, status, created_at, ended_at))
        return run_id

    def item(self, run_id: str, function_id: uuid.UUID, *, step_id: str = "step", kind: str = "call",
             run_at: datetime | None = None, attempt: int = 0, leased_until: datetime | None = None,
             step_name: str | None = None) -> int:
        run_at = run_at or NOW - timedelta(seconds=1)
        leased = leased_until is not None
        return int(self.one(
            "INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, step_name, state, run_at, attempt,"
            " max_attempts, lease_token, lease_expires_at, leased_by, leased_at)"
            " VALUES (%s, %s, %s, %s, %s, %s::pgqueue.item_state, %s, %s, 3, %s, %s, %s, %s) RETURNING id",
            (run_id, function_id, kind, step_id, step_name, "leased" if leased else "available", run_at, attempt,
             uuid.uuid4() if leased else None, leased_until, "test-worker" if leased else None,
             NOW - timedelta(minutes=2) if leased else None),
        )["id"])

    def step(self, run_id: str, step_id: str, name: str, memo: Any, *, op: str = "StepRun", attempt: int = 0,
             at: datetime | None = None) -> None:
        at = at or NOW
        self.run(
            "INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (run_id, step_id, name, op, Jsonb(memo), attempt, at),
        )

    def attempt(self, run_id: str, step_id: str, attempt: int, outcome: str, *, start: datetime,
                ms: int = 20, error: Any = None, status_code: int | None = 206) -> None:
        self.run(
            "INSERT INTO pgqueue.attempts (run_id, item_id, step_id, attempt, outcome, status_code, error, started_at,"
            " ended_at) VALUES (%s, 1, %s, %s, %s, %s, %s, %s, %s)",
            (run_id, step_id, attempt, outcome, status_code, Jsonb(error) if error is not None else None, start,
             start + timedelta(milliseconds=ms)),
        )

    def pause(self, run_id: str, *, kind: str = "wait", step_id: str | None = "w1") -> None:
        self.run(
            "INSERT INTO pgqueue.pauses (run_id, kind, step_id, step_name, event_name, expires_at)"
            " VALUES (%s, %s, %s, %s, 'shop/approved', now() + interval '1 hour')",
            (run_id, kind, step_id, step_id),
        )


@pytest.fixture
def db(database_url: str) -> Db:
    global NOW
    NOW = datetime.now(UTC)
    d = Db(database_url)
    yield d  # type: ignore[misc]
    d.conn.close()


@pytest.fixture
def seeded(db: Db) -> dict[str, Any]:
    """Two functions; runs in every interesting state; items in every queue state."""
    app = db.app()
    fa, fb = db.function(app, "shop-a"), db.function(app, "shop-b")
    s: dict[str, Any] = {"app": app, "fa": fa, "fb": fb}
    # a: one due item, one retrying (future, attempt 1), one sleeping (future, attempt 0), one in flight
    s["due"] = db.run_row(fa, db.event(), status="queued")
    db.item(s["due"], fa)
    s["retrying"] = db.run_row(fa, db.event())
    db.item(s["retrying"], fa, run_at=NOW + timedelta(minutes=5), attempt=1)
    s["sleeping"] = db.run_row(fa, db.event())
    db.item(s["sleeping"], fa, kind="sleep", step_id="nap", step_name="nap", run_at=NOW + timedelta(hours=1))
    s["leased"] = db.run_row(fa, db.event())
    db.item(s["leased"], fa, leased_until=NOW + timedelta(seconds=30))
    # b: an expired lease the rescuer missed, an overdue call, an orphan, a waiting run
    s["expired"] = db.run_row(fb, db.event())
    db.item(s["expired"], fb, leased_until=NOW - timedelta(minutes=1))
    s["overdue"] = db.run_row(fb, db.event(), status="queued", created_at=NOW - timedelta(minutes=20))
    db.item(s["overdue"], fb, run_at=NOW - timedelta(minutes=10))
    s["orphan"] = db.run_row(fb, db.event(), created_at=NOW - timedelta(minutes=5))
    s["waiting"] = db.run_row(fb, db.event())
    db.pause(s["waiting"])
    # finished runs: two failures (one a day and a half ago), one completed, one cancelled
    s["failed"] = db.run_row(fa, db.event(), status="failed", created_at=NOW - timedelta(minutes=3),
                             error={"name": "RuntimeError", "message": "boom"})
    db.attempt(s["failed"], "step", 0, "retry", start=NOW - timedelta(minutes=3), error={"message": "boom"})
    db.attempt(s["failed"], "step", 1, "failed", start=NOW - timedelta(minutes=2), error={"message": "boom"},
               status_code=500)
    s["old_failed"] = db.run_row(fa, db.event(), status="failed", created_at=NOW - timedelta(hours=36),
                                 error={"name": "Error", "message": "old"})
    s["completed"] = db.run_row(fb, db.event(), status="completed", output={"ok": True})
    s["cancelled"] = db.run_row(fb, db.event(), status="cancelled", error={"name": "Cancelled", "message": "x"})
    return s


# -- views ----------------------------------------------------------------------------------------


def test_queue_depth_counts_items_per_function_and_status(db: Db, seeded: dict[str, Any]) -> None:
    rows = db.rows("SELECT function_slug, status, items, runs FROM pgqueue.queue_depth ORDER BY 1, 2")

    assert [(r["function_slug"], r["status"], r["items"], r["runs"]) for r in rows] == [
        ("shop-a", "due", 1, 1),
        ("shop-a", "leased", 1, 1),
        ("shop-a", "retrying", 1, 1),
        ("shop-a", "scheduled", 1, 1),
        ("shop-b", "due", 1, 1),
        ("shop-b", "leased", 1, 1),
    ]
    overdue = db.one("SELECT oldest_age_s FROM pgqueue.queue_depth WHERE function_slug = 'shop-b' AND status = 'due'")
    assert 590 < overdue["oldest_age_s"] < 700


def test_active_leases_lists_held_items_and_flags_expired_ones(db: Db, seeded: dict[str, Any]) -> None:
    rows = db.rows("SELECT run_id, function_slug, leased_by, expired, expires_in_s FROM pgqueue.active_leases"
                   " ORDER BY lease_expires_at")

    assert [(r["run_id"], r["expired"]) for r in rows] == [(seeded["expired"], True), (seeded["leased"], False)]
    assert rows[0]["expires_in_s"] < -50 and 0 < rows[1]["expires_in_s"] <= 30
    assert {r["leased_by"] for r in rows} == {"test-worker"}


def test_stuck_runs_names_each_reason(db: Db, seeded: dict[str, Any]) -> None:
    rows = db.rows("SELECT run_id, reason, function_slug, age_s FROM pgqueue.stuck_runs ORDER BY reason")

    assert [(r["reason"], r["run_id"]) for r in rows] == [
        ("lease_expired", seeded["expired"]),
        ("orphaned", seeded["orphan"]),
        ("overdue", seeded["overdue"]),
    ]
    assert all(r["function_slug"] == "shop-b" and r["age_s"] > 30 for r in rows)
    # neither a fresh lease, a waiting run, a sleeping run nor a due call counts
    assert not {seeded[k] for k in ("leased", "waiting", "sleeping", "due", "retrying")} & {r["run_id"] for r in rows}


def test_recent_failures_are_the_last_24_hours_newest_first(db: Db, seeded: dict[str, Any]) -> None:
    rows = db.rows("SELECT * FROM pgqueue.recent_failures_payload")

    assert [r["run_id"] for r in rows] == [seeded["failed"]]
    assert rows[0]["error_name"] == "RuntimeError"
    assert rows[0]["error_message"] == "boom"
    assert rows[0]["failed_attempts"] == 2
    assert rows[0]["function_slug"] == "shop-a" and rows[0]["app_name"] == "shop"
    # The view without payload: the same rows, without the error's message and body.
    public = db.rows("SELECT * FROM pgqueue.recent_failures")
    assert public == [{k: v for k, v in rows[0].items() if k not in ("error_message", "error")}]


def test_run_timeline_orders_queued_attempts_steps_and_end(db: Db, seeded: dict[str, Any]) -> None:
    fa = seeded["fa"]
    start = NOW - timedelta(seconds=10)
    run_id = db.run_row(fa, db.event(), status="completed", created_at=start, ended_at=start + timedelta(seconds=5),
                        output={"total": 3})
    db.attempt(run_id, "step", 0, "retry", start=start + timedelta(seconds=1), error={"message": "flaky"})
    db.attempt(run_id, "step", 1, "ok", start=start + timedelta(seconds=2), ms=30)
    db.step(run_id, "h1", "charge", {"data": {"charged": 3}}, attempt=1, at=start + timedelta(seconds=2, milliseconds=20))
    db.step(run_id, "h2", "nap", None, op="Sleep", at=start + timedelta(seconds=3))
    db.step(run_id, "h3", "notify", {"error": {"name": "Error", "message": "smtp down"}}, op="StepFailed",
            at=start + timedelta(seconds=4))

    rows = db.rows("SELECT * FROM pgqueue.run_timeline_payload WHERE run_id = %s ORDER BY at, seq", (run_id,))

    assert [(r["entry"], r["step_name"], r["outcome"]) for r in rows] == [
        ("queued", None, None),
        ("attempt", None, "retry"),
        ("attempt", None, "ok"),
        ("step", "charge", "ok"),
        ("step", "nap", "ok"),
        ("step", "notify", "failed"),
        ("ended", None, None),
    ]
    charge, nap, notify = rows[3], rows[4], rows[5]
    assert charge["output"] == {"charged": 3} and charge["error"] is None and charge["attempt"] == 2
    assert nap["output"] is None and nap["op"] == "Sleep"
    assert notify["output"] is None and notify["error"] == {"name": "Error", "message": "smtp down"}
    assert rows[1]["error"] == {"message": "flaky"} and rows[2]["duration_ms"] == 30
    assert rows[-1]["status"] == "completed" and rows[-1]["output"] == {"total": 3}
    assert rows[-1]["duration_ms"] == 5000
    # The view without payload: the same entries with the errors' names, no outputs or error bodies.
    public = db.rows("SELECT * FROM pgqueue.run_timeline WHERE run_id = %s ORDER BY at, seq", (run_id,))
    assert [{k: v for k, v in r.items() if k != "error_name"} for r in public] == [
        {k: v for k, v in r.items() if k not in ("output", "error")} for r in rows]
    assert [r["error_name"] for r in public] == [None, None, None, None, None, "Error", None]


def test_metrics_is_one_row_of_headline_numbers(db: Db, seeded: dict[str, Any]) -> None:
    m = db.one("SELECT * FROM pgqueue.metrics()")

    assert m["runs_queued"] == 2  # due, overdue
    assert m["runs_running"] == 6  # retrying, sleeping, leased, expired, orphan, waiting
    assert (m["runs_completed_1h"], m["runs_failed_1h"], m["runs_cancelled_1h"]) == (1, 1, 1)
    assert m["items_due"] == 2 and m["items_scheduled"] == 2 and m["items_leased"] == 2
    assert m["leases_expired"] == 1
    assert 590 < m["oldest_due_age_s"] < 700
    assert m["pauses_waiting"] == 1
    assert m["events_received_1h"] == 12 and m["events_pending"] == 0
    assert m["stuck_runs"] == 3
    assert (m["apps"], m["functions"], m["functions_paused"]) == (1, 2, 0)


def test_views_are_cheap_on_an_empty_database(db: Db) -> None:
    for view in ("queue_depth", "active_leases", "stuck_runs", "recent_failures", "run_timeline",
                 "recent_failures_payload", "run_timeline_payload"):
        assert db.rows(sql.SQL("SELECT * FROM {}").format(sql.Identifier("pgqueue", view)).as_string()) == []  # type: ignore[arg-type]
    m = db.one("SELECT * FROM pgqueue.metrics()")
    assert m["runs_queued"] == 0 and m["oldest_due_age_s"] == 0


# -- the SQL ULID ---------------------------------------------------------------------------------


def test_sql_ulids_encode_exactly_like_python(db: Db) -> None:
    for ms, entropy in ((0, 0), (1_700_000_000_123, 12345), (2**48 - 1, 2**80 - 1), (1_234_567, 2**79)):
        assert db.one("SELECT pgqueue.ulid_encode_v1(%s, %s) AS u", (ms, entropy))["u"] == ids.encode_ulid(ms, entropy)
    fresh = db.one("SELECT pgqueue.ulid_encode_v1(1700000000000, pgqueue.ulid_entropy_v1()) AS u")["u"]
    assert ids.ulid_time_ms(fresh) == 1_700_000_000_000


# -- cancel_run -----------------------------------------------------------------------------------


def _finish_events(db: Db, run_id: str) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT e.id, e.name, e.data, e.ts, (SELECT count(*) FROM pgqueue.event_inbox i WHERE i.event_id = e.id) AS queued"
        " FROM pgqueue.events e WHERE e.data ->> 'run_id' = %s ORDER BY e.id", (run_id,),
    )


async def test_cancel_run_in_sql_leaves_what_the_python_cancel_leaves(db: Db, seeded: dict[str, Any]) -> None:
    fa = seeded["fa"]
    twins = []
    for _ in range(2):
        ev = db.event("shop/go", data={"order": 7}, external_id="order-7" if not twins else "order-7b")
        run_id = db.run_row(fa, ev, correlation_id="parent.step")
        db.item(run_id, fa, step_id="nap", kind="sleep", run_at=NOW + timedelta(hours=1))
        db.pause(run_id, kind="cancel", step_id=None)
        db.run("INSERT INTO pgqueue.singletons (function_id, key, run_id) VALUES (%s, %s, %s)", (fa, run_id, run_id))
        twins.append(run_id)
    by_sql, by_python = twins

    out = db.one("SELECT * FROM pgqueue.cancel_run(%s, 'stopped by hand')", (by_sql,))
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True, row_factory=dict_row) as conn:
        async with conn.transaction():
            await runs.lock(conn, by_python)
            assert await transitions.cancel(conn, by_python, reason="stopped by hand")

    assert out["run_id"] == by_sql and out["status"] == "cancelled"
    for run_id in twins:
        run = db.one("SELECT status::text, error, ended_at FROM pgqueue.runs WHERE id = %s", (run_id,))
        assert run["status"] == "cancelled" and run["ended_at"] is not None
        assert run["error"] == {"name": "Cancelled", "message": "stopped by hand"}
        for table in ("queue_items", "pauses", "singletons"):
            left = db.one(sql.SQL("SELECT count(*) AS n FROM {} WHERE run_id = %s").format(  # type: ignore[arg-type]
                sql.Identifier("pgqueue", table)).as_string(), (run_id,))
            assert left["n"] == 0, table
    sql_events, py_events = _finish_events(db, by_sql), _finish_events(db, by_python)
    assert [e["name"] for e in sql_events] == ["inngest/function.cancelled", "inngest/function.finished"]
    assert [e["name"] for e in py_events] == [e["name"] for e in sql_events]
    assert [e["id"] for e in sql_events] == [out["cancelled_event_id"], out["finished_event_id"]]
    for sql_event, py_event in zip(sql_events, py_events, strict=True):
        assert len(sql_event["id"]) == 26 and ids.ulid_time_ms(sql_event["id"]) == sql_event["ts"]
        assert sql_event["queued"] == 1
        trigger = db.one("SELECT e.ts FROM pgqueue.events e JOIN pgqueue.runs r ON r.event_id = e.id"
                         " WHERE r.id = %s", (by_sql,))
        expected = dict(py_event["data"], run_id=by_sql)  # the twin differs only in its own ids
        expected["event"] = dict(expected["event"], id="order-7", ts=trigger["ts"])
        expected["events"] = [expected["event"]]
        assert sql_event["data"] == expected


def test_cancel_run_refuses_leased_ended_and_unknown_runs(db: Db, seeded: dict[str, Any]) -> None:
    with pytest.raises(psycopg.errors.LockNotAvailable, match="leased"):
        db.run("SELECT * FROM pgqueue.cancel_run(%s, 'no')", (seeded["leased"],))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="already ended with status completed"):
        db.run("SELECT * FROM pgqueue.cancel_run(%s, 'no')", (seeded["completed"],))
    with pytest.raises(psycopg.errors.NoDataFound, match="not found"):
        db.run("SELECT * FROM pgqueue.cancel_run('01JZZZZZZZZZZZZZZZZZZZZZZZ', 'no')")
    assert db.one("SELECT status::text FROM pgqueue.runs WHERE id = %s", (seeded["leased"],))["status"] == "running"


def test_cancelling_a_run_started_by_a_finish_event_emits_nothing(db: Db, seeded: dict[str, Any]) -> None:
    run_id = db.run_row(seeded["fa"], db.event("inngest/function.failed"))

    out = db.one("SELECT * FROM pgqueue.cancel_run(%s)", (run_id,))

    assert out["status"] == "cancelled" and out["cancelled_event_id"] is None
    assert _finish_events(db, run_id) == []


# -- retry_run ------------------------------------------------------------------------------------


def test_retry_run_resumes_a_failed_run_from_its_failed_step(db: Db, seeded: dict[str, Any]) -> None:
    run_id = seeded["failed"]
    db.step(run_id, "h1", "charge", {"data": 1})
    db.step(run_id, "h2", "notify", {"error": {"name": "Error", "message": "smtp down"}}, op="StepFailed")

    out = db.one("SELECT * FROM pgqueue.retry_run(%s)", (run_id,))

    assert (out["status"], out["steps_cleared"]) == ("running", 1)
    run = db.one("SELECT status::text, error, ended_at,"
                 " (SELECT count(*) FROM pgqueue.steps s WHERE s.run_id = r.id) AS step_count"
                 " FROM pgqueue.runs r WHERE id = %s", (run_id,))
    assert run == {"status": "running", "error": None, "ended_at": None, "step_count": 1}
    assert [r["name"] for r in db.rows("SELECT name FROM pgqueue.steps WHERE run_id = %s", (run_id,))] == ["charge"]
    items = db.rows("SELECT kind, step_id, state::text, attempt FROM pgqueue.queue_items WHERE run_id = %s", (run_id,))
    assert items == [{"kind": "call", "step_id": "step", "state": "available", "attempt": 0}]


def test_retry_run_keeps_the_runs_concurrency_keys_and_priority(db: Db, seeded: dict[str, Any]) -> None:
    run_id = seeded["failed"]
    db.run("UPDATE pgqueue.runs SET ckeys = '{fn:k}', climits = '{1}', priority_s = 7 WHERE id = %s", (run_id,))

    db.one("SELECT * FROM pgqueue.retry_run(%s)", (run_id,))

    item = db.one("SELECT ckeys, climits, priority_s FROM pgqueue.queue_items WHERE run_id = %s", (run_id,))
    assert item == {"ckeys": ["fn:k"], "climits": [1], "priority_s": 7}


def test_retry_run_refuses_runs_that_did_not_fail(db: Db, seeded: dict[str, Any]) -> None:
    for key in ("completed", "cancelled", "due"):
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="only failed runs"):
            db.run("SELECT * FROM pgqueue.retry_run(%s)", (seeded[key],))
    with pytest.raises(psycopg.errors.NoDataFound):
        db.run("SELECT * FROM pgqueue.retry_run('nope')")


# -- the read-only role ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client")
def test_readonly_grant_script_is_idempotent_and_grants_views_only(db: Db, seeded: dict[str, Any]) -> None:
    role = f"pgqueue_reader_{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(2):
            done = subprocess.run(
                ["psql", db.url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"reader={role}",
                 "-f", str(REPO / "sql" / "grants" / "readonly.sql")],
                capture_output=True, text=True, timeout=60, check=False,
            )
            assert done.returncode == 0, done.stderr
        with db.conn.transaction():
            db.run(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)).as_string())  # type: ignore[arg-type]
            assert len(db.rows("SELECT * FROM pgqueue.queue_depth")) == 6
            assert db.one("SELECT stuck_runs FROM pgqueue.metrics()")["stuck_runs"] == 3
            assert db.rows("SELECT * FROM pgqueue.run_timeline WHERE run_id = %s", (seeded["failed"],))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with db.conn.transaction():
                    db.run("SELECT * FROM pgqueue.runs")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with db.conn.transaction():
                    db.run("SELECT * FROM pgqueue.cancel_run(%s, 'x')", (seeded["due"],))
    finally:
        db.run(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)).as_string())  # type: ignore[arg-type]
        db.run(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)).as_string())  # type: ignore[arg-type]
