"""The rescuer's housekeeping statements: what they delete, and that they find it by index rather
than by reading the whole table every round."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue.db.queries import q


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
