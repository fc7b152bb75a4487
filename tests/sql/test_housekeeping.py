"""The rescuer's housekeeping statements: what they delete, and that they find it by index rather
than by reading the whole table every round."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue.db.pool import open_pool
from pgqueue.db.queries import q
from pgqueue.queue.rescuer import Rescuer
from pgqueue.store import pauses
from tests.sql.test_flow_control import _function, _runs


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def plan_nodes(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of the statement's plan (EXPLAIN, not run)."""
    row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()  # noqa: S608 - a named query
    assert row is not None
    out, todo = [], [row[0][0]["Plan"]]
    while todo:
        node = todo.pop()
        out.append(node)
        todo += node.get("Plans", [])
    return out


def scans_of(nodes: list[dict[str, Any]], table: str) -> list[tuple[str, str | None]]:
    return [(n["Node Type"], n.get("Index Name")) for n in nodes if n.get("Relation Name") == table]


def test_expired_dedupe_windows_are_found_by_index(conn: psycopg.Connection) -> None:
    # a day of dedupe windows, 19 of them expired
    conn.execute(
        "INSERT INTO pgqueue.event_dedupe (external_id, event_id, expires_at) "
        "SELECT 'x' || g, 'e' || g, now() + make_interval(secs => 4 * g) - interval '1 minute 16 seconds' "
        "FROM generate_series(1, 20000) g")
    conn.execute("ANALYZE pgqueue.event_dedupe")

    scans = scans_of(plan_nodes(conn, q("prune_expired_keys"), {"limit": 1000}), "event_dedupe")
    assert ("Seq Scan", None) not in scans, scans
    assert any(index == "event_dedupe_expires" for _, index in scans), scans

    row = conn.execute(q("prune_expired_keys"), {"limit": 1000}).fetchone()
    assert row is not None and row[0] == 19
    left = conn.execute("SELECT count(*) FROM pgqueue.event_dedupe WHERE expires_at < now()").fetchone()
    assert left == (0,)


# --- pauses: expired cancelOn listeners and unused pause paths ---------------------------------------


def listener(conn: psycopg.Connection, run_id: str, expires_in_s: float | None) -> int:
    row = conn.execute(
        "INSERT INTO pgqueue.pauses (run_id, kind, event_name, expires_at) "
        "VALUES (%s, 'cancel', 'shop/cancel', now() + make_interval(secs => %s)) RETURNING id",
        (run_id, expires_in_s)).fetchone()
    assert row is not None
    return int(row[0])


def wait(conn: psycopg.Connection, run_id: str, event: str, path: str | None) -> None:
    conn.execute(
        "INSERT INTO pgqueue.pauses (run_id, kind, step_id, event_name, match_path, match_value) "
        "VALUES (%s, 'wait', %s, %s, %s, %s)",
        (run_id, f"w-{event}-{path}", event, path, None if path is None else '"v"'))
    conn.execute(q("pause_path_remember"), {"event_name": event, "match_path": path or "*"})


def pause_ids(conn: psycopg.Connection) -> set[int]:
    return {r[0] for r in conn.execute("SELECT id FROM pgqueue.pauses WHERE kind = 'cancel'").fetchall()}


def paths(conn: psycopg.Connection) -> set[tuple[str, str]]:
    rows = conn.execute("SELECT event_name, match_path FROM pgqueue.pause_paths").fetchall()
    return {(r[0], r[1]) for r in rows}


def test_expired_cancel_listeners_go_once_the_runner_has_every_event_they_could_match(
    conn: psycopg.Connection,
) -> None:
    [run] = _runs(conn, _function(conn, "listens"), 1)
    gone = listener(conn, run, -3600)
    live = listener(conn, run, 3600)
    unbounded = listener(conn, run, None)
    recent = listener(conn, run, -120)
    # an event received 5 minutes ago still waits in the runner's inbox: a listener that expired
    # after it was received may still have to cancel its run
    conn.execute("INSERT INTO pgqueue.events (id, name, data, ts, received_at) "
                 "VALUES ('late', 'shop/cancel', '{}', 0, now() - interval '5 minutes')")
    conn.execute("INSERT INTO pgqueue.event_inbox (event_id) VALUES ('late')")

    scans = scans_of(plan_nodes(conn, q("pause_expire_cancel_listeners"), {"limit": 100}), "pauses")
    assert ("Seq Scan", None) not in scans, scans
    assert conn.execute(q("pause_expire_cancel_listeners"), {"limit": 100}).fetchall() == [(gone,)]
    assert pause_ids(conn) == {live, unbounded, recent}

    conn.execute("DELETE FROM pgqueue.event_inbox")  # the runner has seen it
    assert conn.execute(q("pause_expire_cancel_listeners"), {"limit": 100}).fetchall() == [(recent,)]


def test_unused_pause_paths_are_pruned(conn: psycopg.Connection) -> None:
    [run] = _runs(conn, _function(conn, "waits"), 1)
    wait(conn, run, "order/paid", "data.id")
    wait(conn, run, "order/shipped", None)
    for stale in (("order/paid", "data.user"), ("order/paid", "*"), ("order/old", "data.id")):
        conn.execute(q("pause_path_remember"), {"event_name": stale[0], "match_path": stale[1]})
    # kept whatever pauses exist: they say whether finished runs write inngest/function.* events
    conn.execute(q("pause_path_remember"), {"event_name": "inngest/function.failed", "match_path": "*"})

    assert conn.execute(q("pause_paths_prune")).fetchone() == (3,)
    assert paths(conn) == {("order/paid", "data.id"), ("order/shipped", "*"),
                           ("inngest/function.failed", "*")}


async def test_a_path_being_remembered_is_never_pruned(database_url: str, conn: psycopg.Connection) -> None:
    [run] = _runs(conn, _function(conn, "racing"), 1)
    conn.execute(q("pause_path_remember"), {"event_name": "order/paid", "match_path": "data.id"})  # unused
    pool = await open_pool(database_url, max_size=2)
    try:
        with psycopg.connect(database_url) as creator:
            # a pause being created right now: its path already existed, so its insert changed nothing
            creator.execute("INSERT INTO pgqueue.pauses (run_id, kind, step_id, event_name, match_path, "
                            "match_value) VALUES (%s, 'wait', 'w', 'order/paid', 'data.id', '1')", (run,))
            creator.execute(q("pause_path_remember"), {"event_name": "order/paid", "match_path": "data.id"})
            async with pool.connection() as c:
                assert await pauses.prune_paths(c) is None  # busy past its lock timeout: next round
            creator.commit()
        async with pool.connection() as c:
            assert await pauses.prune_paths(c) == 0
        assert paths(conn) == {("order/paid", "data.id")}
        conn.execute("DELETE FROM pgqueue.pauses")
        async with pool.connection() as c:
            assert await pauses.prune_paths(c) == 1
    finally:
        await pool.close()


async def test_the_rescuer_round_prunes_expired_listeners_and_unused_paths(
    database_url: str, conn: psycopg.Connection,
) -> None:
    [run] = _runs(conn, _function(conn, "rescued"), 1)
    listener(conn, run, -3600)
    live = listener(conn, run, 3600)
    conn.execute(q("pause_path_remember"), {"event_name": "order/old", "match_path": "data.id"})
    pool = await open_pool(database_url, max_size=2)
    try:
        tick = await Rescuer(pool).run_once()
    finally:
        await pool.close()
    assert tick.pruned == 2
    assert pause_ids(conn) == {live}
    assert paths(conn) == set()


# --- flow control: idle GCRA keys ----------------------------------------------------------------------


def gcra_keys(conn: psycopg.Connection, prefix: str) -> set[str]:
    return {k for (k,) in conn.execute("SELECT key FROM pgqueue.gcra_state WHERE starts_with(key, %s)",
                                       (prefix,)).fetchall()}


async def test_the_rescuer_forgets_throttle_and_rate_limit_keys_that_have_gone_idle(
    database_url: str, conn: psycopg.Connection,
) -> None:
    """A key whose theoretical arrival time has passed admits exactly as a key never seen: its row
    only takes space (one per throttle or rate-limit key value, ever). Rows idle for over a minute
    go; one still holding back arrivals, or only just idle, stays."""
    conn.execute(
        "INSERT INTO pgqueue.gcra_state (key, tat, updated_at) VALUES"
        " ('hk:idle-hour', now() - interval '1 hour', now() - interval '2 hours'),"
        " ('hk:idle-2min', now() - interval '2 minutes', now() - interval '3 minutes'),"
        " ('hk:idle-now', now() - interval '5 seconds', now() - interval '10 seconds'),"
        " ('hk:holding', now() + interval '30 seconds', now())")
    pool = await open_pool(database_url, max_size=2)
    try:
        tick = await Rescuer(pool).run_once()
        assert gcra_keys(conn, "hk:") == {"hk:idle-now", "hk:holding"}
        assert tick.pruned >= 2
        # once a minute (it reads the table): the next round does not look again
        conn.execute("UPDATE pgqueue.gcra_state SET tat = now() - interval '1 hour' WHERE key = 'hk:holding'")
        rescuer = Rescuer(pool)
        await rescuer.run_once()
        assert gcra_keys(conn, "hk:") == {"hk:idle-now"}
        conn.execute("UPDATE pgqueue.gcra_state SET tat = now() - interval '1 hour'"
                     " WHERE key = 'hk:idle-now'")
        await rescuer.run_once()
        assert gcra_keys(conn, "hk:") == {"hk:idle-now"}
    finally:
        await pool.close()


def test_a_forgotten_key_admits_as_the_idle_key_did(conn: psycopg.Connection) -> None:
    """Pruning changes no decision: after an idle minute a key admits its full burst again, with or
    without its row."""
    def admits(key: str) -> list[bool]:
        admit = "SELECT pgqueue.throttle_admit_v2(%s, 2, 1000, 1, now()) = 0"
        return [conn.execute(admit, (key,)).fetchone()[0] for _ in range(4)]

    for key in ("hk:kept", "hk:pruned"):
        conn.execute("INSERT INTO pgqueue.gcra_state (key, tat, updated_at)"
                     " VALUES (%s, now() - interval '2 minutes', now() - interval '3 minutes')", (key,))
    conn.execute(q("gcra_prune_idle"), {"limit": 1000})
    assert "hk:pruned" not in gcra_keys(conn, "hk:") and "hk:kept" not in gcra_keys(conn, "hk:")
    conn.execute("INSERT INTO pgqueue.gcra_state (key, tat, updated_at)"
                 " VALUES ('hk:kept', now() - interval '2 minutes', now() - interval '3 minutes')")
    assert admits("hk:kept") == admits("hk:pruned") == admits("hk:never-seen")
