"""The claim's own cost: rows it locks and writes, whatever the number of functions with work."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.sql.test_flow_control import _function, _runs

# Rows whose visible version this transaction wrote (xmin: leased, parked, delayed) or only
# locked (xmax): what one claim touched, read inside its own transaction.
TOUCHED = """
SELECT count(*) FROM pgqueue.queue_items
WHERE xmin = pg_current_xact_id()::xid OR xmax = pg_current_xact_id()::xid
"""
WAL_LSN = "SELECT pg_current_wal_insert_lsn()"
WAL_SINCE = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)::bigint"


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def claim_cost(conn: psycopg.Connection, function: str, limit: int) -> tuple[int, int, int]:
    """(items claimed, rows touched, WAL bytes written) by one claim, rolled back afterwards."""
    with conn.transaction():
        start = conn.execute(WAL_LSN).fetchone()
        assert start is not None
        statement = sql.SQL("SELECT * FROM pgqueue.{}('w', %s, 30000)").format(sql.Identifier(function))
        claimed = conn.execute(statement, (limit,)).fetchall()
        touched = conn.execute(TOUCHED).fetchone()
        wal = conn.execute(WAL_SINCE, (start[0],)).fetchone()
        assert touched is not None and wal is not None
        result = (len(claimed), int(touched[0]), int(wal[0]))
        raise psycopg.Rollback()
    return result


@pytest.mark.parametrize("function", ["claim_v1", "claim_v3", "claim_v4"])
def test_a_claim_locks_only_the_items_it_takes(conn: psycopg.Connection, function: str) -> None:
    # 60 functions with 20 due items each: a claim of 10 takes the oldest item of 10 functions.
    for i in range(60):
        _runs(conn, _function(conn, f"wide-{i}"), 20)
    conn.execute("ANALYZE pgqueue.queue_items")
    claimed, touched, wal = claim_cost(conn, function, 10)

    assert claimed == 10
    assert touched == 10  # not 10 per function (600), of which 590 were let go again
    # Each leased row is one heap update record (< 1 kB with its index entries); locking the
    # other 590 rows would add ~35 kB of lock records.
    assert wal < 20_000, wal


def test_with_more_functions_than_a_claim_takes_claims_go_round(conn: psycopg.Connection) -> None:
    fns = [_function(conn, f"many-{i}") for i in range(30)]
    heads = {fn: _runs(conn, fn, 3)[0] for fn in fns}
    served: list[str] = []
    for _ in range(3):
        rows = conn.execute("SELECT function_id, run_id FROM pgqueue.claim_v1('w', 10, 30000)").fetchall()
        assert len(rows) == 10
        assert len({fn for fn, _ in rows}) == 10  # one item of ten functions, not ten of one
        assert all(run == heads[fn] for fn, run in rows)  # each the function's oldest
        served += [run for _, run in rows]
    assert sorted(served) == sorted(heads.values())  # three claims: every function once


def test_the_default_bound_caps_a_functions_leased_items(conn: psycopg.Connection) -> None:
    def claim(n: int, bound: int) -> list[str]:
        rows = conn.execute("SELECT function_id FROM pgqueue.claim_v4('w', %s, 30000, %s)", (n, bound))
        return [str(r[0]) for r in rows.fetchall()]

    busy, other = _function(conn, "bounded"), _function(conn, "unbounded")
    _runs(conn, busy, 20)
    # 8 of 12 leased: few enough in all that the claim need not count them
    assert claim(8, 12) == [str(busy)] * 8
    _runs(conn, other, 2)
    # now counted: 4 more of the busy function reach its bound; the other function is not held back
    assert sorted(claim(10, 12)) == sorted([str(busy)] * 4 + [str(other)] * 2)
    assert claim(10, 12) == []


def test_concurrent_claims_each_take_a_batch(database_url: str, conn: psycopg.Connection) -> None:
    fn = _function(conn, "contended")
    _runs(conn, fn, 40)
    # three claims in flight at once: each reads the same oldest items, and the later ones skip
    # the rows the earlier ones hold and read on
    claimers = [psycopg.connect(database_url) for _ in range(3)]
    try:
        batches = [{r[0] for r in c.execute("SELECT id FROM pgqueue.claim_v4('w', 10, 30000)").fetchall()}
                   for c in claimers]
        assert [len(b) for b in batches] == [10, 10, 10]
        assert len(set().union(*batches)) == 30
    finally:
        for c in claimers:
            c.close()


def _app_function(conn: psycopg.Connection, app: str, slug: str) -> tuple[str, str]:
    app_id = conn.execute(
        "INSERT INTO pgqueue.apps (name, url) VALUES (%s, 'http://127.0.0.1:9') RETURNING id",
        (app,)).fetchone()
    assert app_id is not None
    fn = conn.execute("INSERT INTO pgqueue.functions (app_id, slug, name, url, config) "
                      "VALUES (%s, %s, %s, 'http://127.0.0.1:9', '{}') RETURNING id",
                      (app_id[0], slug, slug)).fetchone()
    assert fn is not None
    return str(app_id[0]), fn[0]


def _claim_v5(
    conn: psycopg.Connection, n: int, caps: dict[str, int] | None, default: int | None = None
) -> list[str]:
    rows = conn.execute("SELECT app_id FROM pgqueue.claim_v5('w', %s, 30000, 1000, %s::jsonb, %s)",
                        (n, None if caps is None else json.dumps(caps), default)).fetchall()
    return [str(r[0]) for r in rows]


def test_app_caps_bound_each_apps_calls_and_leave_the_rest_to_other_apps(conn: psycopg.Connection) -> None:
    busy, fn_busy = _app_function(conn, "busy-app", "busy")
    calm, fn_calm = _app_function(conn, "calm-app", "calm")
    _runs(conn, fn_busy, 30)
    _runs(conn, fn_calm, 5)
    # the busy app may take 2 more calls: the batch is filled from the other app, never past 2
    assert sorted(_claim_v5(conn, 10, {busy: 2})) == sorted([busy] * 2 + [calm] * 5)
    # at its cap (0): none of its items is leased, parked or delayed
    assert _claim_v5(conn, 10, {busy: 0}) == []
    due = conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE function_id = %s"
                       " AND state = 'available' AND NOT blocked AND run_at <= now()", (fn_busy,)).fetchone()
    assert due == (28,)
    # an app not listed takes the default cap; no caps at all claim as claim_v4 does
    assert _claim_v5(conn, 10, {}, 3) == [busy] * 3
    assert _claim_v5(conn, 10, None) == [busy] * 10


def test_app_caps_count_calls_only(conn: psycopg.Connection) -> None:
    app, fn = _app_function(conn, "timers-app", "timers")
    runs = _runs(conn, fn, 4)
    # two of the runs wait on a due sleep: timers never call the app, so no cap holds them
    conn.execute("UPDATE pgqueue.queue_items SET kind = 'sleep' WHERE run_id = ANY (%s)", (runs[:2],))
    rows = conn.execute("SELECT kind FROM pgqueue.claim_v5('w', 10, 30000, 1000, %s::jsonb, NULL)",
                        (json.dumps({app: 1}),)).fetchall()
    assert sorted(r[0] for r in rows) == ["call", "sleep", "sleep"]
