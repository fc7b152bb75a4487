"""The hot-path functions keep their plans for the session (plpgsql), and a kept plan is made for the
tables as they were then. Made while the tables were small and kept while they grow (autovacuum
analyses them, and so replaces the plans, only every so often), a plan must still probe the big
tables by key: a plan that scans them costs a whole table per call.

Each test warms one session's plans on near-empty tables, grows the tables to thousands of rows
without analysing them (autovacuum is off for this module's database), and counts the rows the
session's next call reads by sequential scan (pg_stat_xact_user_tables)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from pgqueue import ids
from pgqueue.db.queries import q

ROWS = 5_000
TABLES = ("runs", "events", "steps", "queue_items")

# A table and its partitions (the history tables are partitioned by time): statistics are kept per
# partition, and storage parameters can be set only on the partitions.
_FAMILY = """
SELECT c.relname::text AS relname,
       coalesce((SELECT p.relname::text FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                 WHERE i.inhrelid = c.oid), c.relname::text) AS family
FROM pg_class c
WHERE c.relnamespace = 'pgqueue'::regnamespace AND c.relkind = 'r'
"""


@pytest.fixture
def conn(module_database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(module_database_url, autocommit=True) as c:
        for relname, family in c.execute(_FAMILY).fetchall():
            if family in (*TABLES, "event_inbox"):
                name = sql.Identifier("pgqueue", relname)
                c.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(name))
        for table in (*TABLES, "event_inbox"):
            c.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.Identifier("pgqueue", table)))
        yield c


def function(conn: psycopg.Connection) -> uuid.UUID:
    app = conn.execute("INSERT INTO pgqueue.apps (name, url) VALUES (%s, 'http://127.0.0.1:9') RETURNING id",
                       (f"plans-{uuid.uuid4().hex[:8]}",)).fetchone()
    assert app is not None
    row = conn.execute("INSERT INTO pgqueue.functions (app_id, slug, name, url, config) VALUES"
                       " (%s, %s, 'f', 'http://127.0.0.1:9', '{}') RETURNING id",
                       (app[0], f"plans-{uuid.uuid4().hex[:8]}")).fetchone()
    assert row is not None
    return row[0]


def events(n: int) -> list[dict[str, object]]:
    out = []
    for _ in range(n):
        event_id = ids.new_ulid()
        out.append({"id": event_id, "name": "plans/x", "data": {}, "ts": ids.ulid_time_ms(event_id)})
    return out


def ingest(conn: psycopg.Connection, batch: list[dict[str, object]]) -> None:
    conn.execute("SELECT pgqueue.event_ingest_v1(%s::jsonb)", (json.dumps(batch),))


def create_runs(conn: psycopg.Connection, fn: uuid.UUID, n: int) -> list[str]:
    [event] = events(1)
    ingest(conn, [event])
    runs = [{"id": ids.new_ulid(), "function_id": str(fn), "event_id": event["id"],
             "event_ids": [event["id"]], "max_attempts": 1} for _ in range(n)]
    conn.execute("SELECT pgqueue.run_create_v2(%s::jsonb)", (json.dumps(runs),))
    return [str(r["id"]) for r in runs]


def claim(conn: psycopg.Connection, n: int) -> list[tuple[int, str, str]]:
    rows = conn.execute("SELECT id, run_id, lease_token FROM pgqueue.claim_v6('plans', %s, 60000, 1000000,"
                        " NULL, NULL)", (n,)).fetchall()
    return [(r[0], r[1], str(r[2])) for r in rows]


def complete(conn: psycopg.Connection, leased: list[tuple[int, str, str]], kind: str) -> None:
    batch = []
    for item_id, run_id, token in leased:
        elem: dict[str, object] = {"item_id": item_id, "lease_token": token, "run_id": run_id,
                                   "item_step_id": "step", "attempt": 0, "started_at": "2026-01-01T00:00:00Z",
                                   "request_version": 1, "kind": kind}
        if kind == "step":
            elem.update(step_id=f"s-{item_id}", step_name="s", memo={"data": 1})
        else:
            event_id = ids.new_ulid()
            elem.update(output=None, status_code=200, event_id=event_id, event_ts=ids.ulid_time_ms(event_id))
        batch.append(elem)
    conn.execute("SELECT * FROM pgqueue.complete_v1(%s::jsonb, 1000, 100000000)",
                 (json.dumps(batch),)).fetchall()


def flush_counters(conn: psycopg.Connection) -> None:
    """The xact views read this backend's counters not yet sent to the shared statistics, which
    gather across transactions until they are sent (at most once a second): send them now, so the
    next transaction counts only its own reads."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")  # the backend flushes when it goes idle after the statement above


def fetched(conn: psycopg.Connection, table: str) -> int:
    """Rows of `table` fetched through its indexes in the current transaction."""
    row = conn.execute("SELECT sum(s.idx_tup_fetch) FROM pg_stat_xact_user_tables s"
                       f" JOIN ({_FAMILY}) f USING (relname) WHERE s.schemaname = 'pgqueue' AND f.family = %s",
                       (table,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def scanned(conn: psycopg.Connection) -> dict[str, int]:
    """Rows read by sequential scans of the big tables in the current transaction."""
    rows = conn.execute("SELECT f.family, sum(s.seq_tup_read) FROM pg_stat_xact_user_tables s"
                        f" JOIN ({_FAMILY}) f USING (relname) WHERE s.schemaname = 'pgqueue'"
                        " AND f.family = ANY (%s) GROUP BY f.family", (list(TABLES),)).fetchall()
    return {name: int(n) for name, n in rows if n}


def warm_then_grow(conn: psycopg.Connection, fn: uuid.UUID) -> None:
    """Ten rounds of every hot-path call on near-empty tables (plpgsql goes over to its generic
    plan after five), then thousands of rows in every table, not analysed."""
    for _ in range(10):
        create_runs(conn, fn, 1)
        complete(conn, claim(conn, 1), "step")
        complete(conn, claim(conn, 1), "done")
    for _ in range(ROWS // 1000):
        ingest(conn, events(1000))
    # Runs that have stored steps, and a queue of ROWS first calls behind them.
    deep = create_runs(conn, fn, ROWS)
    conn.execute("INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)"
                 " SELECT r, 's', 's', 'StepRun', '{\"data\": 1}', 0 FROM unnest(%s::text[]) AS r", (deep,))


def test_ingesting_an_event_probes_the_stored_ids(conn: psycopg.Connection) -> None:
    warm_then_grow(conn, function(conn))
    flush_counters(conn)
    with conn.transaction():
        ingest(conn, events(3))
        assert scanned(conn) == {}


def test_a_claim_reads_only_what_it_takes(conn: psycopg.Connection) -> None:
    warm_then_grow(conn, function(conn))
    flush_counters(conn)
    with conn.transaction():
        assert len(claim(conn, 5)) == 5
        assert scanned(conn) == {}


def test_the_group_commit_reads_only_its_runs(conn: psycopg.Connection) -> None:
    warm_then_grow(conn, function(conn))
    leased = claim(conn, 6)
    flush_counters(conn)
    with conn.transaction():
        complete(conn, leased[:3], "step")
        complete(conn, leased[3:], "done")
        assert scanned(conn) == {}
        # each run's own steps, probed by key: not every stored step (a hashed subplan read all 5,000)
        assert fetched(conn, "steps") <= 20, fetched(conn, "steps")


def test_the_group_commit_finds_its_leases_by_key_among_many(conn: psycopg.Connection) -> None:
    """The fence reads the batch's own items, not every leased item (with the batch read again for
    each of them)."""
    warm_then_grow(conn, function(conn))
    leased = claim(conn, 2_000)
    assert len(leased) == 2_000
    flush_counters(conn)
    with conn.transaction():
        complete(conn, leased[:6], "step")
        assert fetched(conn, "queue_items") < 100


@pytest.fixture
def many_leased(conn: psycopg.Connection) -> list[tuple[int, str, str]]:
    """2,000 leases taken after the table was analysed with none: to the planner the partial
    indexes of leases look empty, so walking one of them looks cheaper than the primary key."""
    fn = function(conn)
    create_runs(conn, fn, 2_100)
    conn.execute("ANALYZE pgqueue.queue_items")
    leased = claim(conn, 2_000)
    assert len(leased) == 2_000
    return leased


def test_an_applys_fence_reads_its_item_not_every_lease(
    conn: psycopg.Connection, many_leased: list[tuple[int, str, str]],
) -> None:
    for _ in range(6):  # past the prepared statement's custom plans
        item_id, _, token = many_leased[0]
        conn.execute(q("queue_lock_if_leased"), {"id": item_id, "lease_token": token},
                     prepare=True).fetchall()
    flush_counters(conn)
    with conn.transaction():
        for item_id, _, token in many_leased[1:6]:
            rows = conn.execute(q("queue_lock_if_leased"), {"id": item_id, "lease_token": token},
                                prepare=True).fetchall()
            assert len(rows) == 1
        assert fetched(conn, "queue_items") < 50


def test_a_checkpoints_fence_reads_its_item_not_every_lease(
    conn: psycopg.Connection, many_leased: list[tuple[int, str, str]],
) -> None:
    def store(item_id: int, run_id: str, token: str) -> str:
        row = conn.execute("SELECT verdict FROM pgqueue.checkpoint_store_v1(%s, %s, %s, NULL, '[]')",
                           (run_id, item_id, token)).fetchone()
        assert row is not None
        return str(row[0])

    for lease in many_leased[:6]:  # past plpgsql's custom plans
        store(*lease)
    flush_counters(conn)
    with conn.transaction():
        assert [store(*lease) for lease in many_leased[6:11]] == ["ok"] * 5
        assert fetched(conn, "queue_items") < 50


def test_starting_a_run_reads_its_row_not_every_queued_run(conn: psycopg.Connection) -> None:
    """The run_context query starts a run the claim could not (`status = 'queued'` matches the
    leading column of runs_live, which looks empty to the planner after an analyse with no run
    queued)."""
    deep = create_runs(conn, function(conn), 2_000)
    conn.execute("UPDATE pgqueue.runs SET status = 'completed', ended_at = now() WHERE id = ANY (%s)",
                 (deep,))
    conn.execute("ANALYZE pgqueue.runs")
    conn.execute("UPDATE pgqueue.runs SET status = 'queued', ended_at = NULL WHERE id = ANY (%s)", (deep,))
    for run_id in deep[:6]:  # past the prepared statement's custom plans
        conn.execute(q("run_context"), {"run_id": run_id}, prepare=True).fetchall()
    flush_counters(conn)
    with conn.transaction():
        for run_id in deep[6:11]:
            [(context,)] = conn.execute(q("run_context"), {"run_id": run_id}, prepare=True).fetchall()
            assert context["started_now"] is True
        assert fetched(conn, "runs") < 50


def test_a_parallel_runs_context_reads_its_own_items_not_the_queue(conn: psycopg.Connection) -> None:
    """run_context_v1 asks whether a run that has run steps in parallel still waits for anything
    (ctx.disable_immediate_execution): one probe of the run's items and pauses by key, however
    long the queue has grown since the plan was made."""
    fn = function(conn)

    def parallel(n: int) -> list[str]:
        runs = create_runs(conn, fn, n)
        conn.execute("UPDATE pgqueue.runs SET force_step_plan = true, request_version = 2"
                     " WHERE id = ANY (%s)", (runs,))
        return runs

    for run_id in parallel(10):
        conn.execute("SELECT pgqueue.run_context_v1(%s)", (run_id,)).fetchall()
    deep = parallel(ROWS)
    conn.execute("INSERT INTO pgqueue.pauses (run_id, kind, step_id, event_name, expires_at)"
                 " SELECT r, 'wait', 'w', 'plans/never', now() + interval '1h' FROM unnest(%s::text[]) AS r",
                 (deep[: ROWS // 2],))
    flush_counters(conn)
    with conn.transaction():
        for run_id in deep[-5:]:
            [(context,)] = conn.execute("SELECT pgqueue.run_context_v1(%s)", (run_id,)).fetchall()
            assert context["force_step_plan"] is False  # only its own call is open
        assert scanned(conn) == {}
        [(pauses_scanned,)] = conn.execute("SELECT seq_tup_read FROM pg_stat_xact_user_tables"
                                           " WHERE schemaname = 'pgqueue' AND relname = 'pauses'").fetchall()
        assert pauses_scanned == 0
        assert fetched(conn, "queue_items") < 50
