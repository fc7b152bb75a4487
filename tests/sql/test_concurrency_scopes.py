"""Concurrency keys as the run starter derives them (flow.shape) and as the claim counts them:
env/account scope shares one limit across functions, fn scope keeps one per function, and every
function is bounded by the default limit as well."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue.runner import flow


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def _function(conn: psycopg.Connection, slug: str) -> uuid.UUID:
    app = conn.execute(
        "INSERT INTO pgqueue.apps (name, url) VALUES ('scopes', 'http://127.0.0.1:9') "
        "ON CONFLICT (name) DO UPDATE SET url = excluded.url RETURNING id").fetchone()
    assert app is not None
    row = conn.execute(
        "INSERT INTO pgqueue.functions (app_id, slug, name, url, config) "
        "VALUES (%s, %s, %s, 'http://127.0.0.1:9', '{}') RETURNING id", (app[0], slug, slug)).fetchone()
    assert row is not None
    return row[0]


def _start(conn: psycopg.Connection, fn: uuid.UUID, config: dict[str, Any], n: int) -> list[str]:
    """n runs of `fn` for one event, each with the keys flow.shape derives from `config`."""
    event = {"name": "x/y", "data": {"user": "ada"}}
    event_id = f"ev-{uuid.uuid4().hex}"
    conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'x/y', %s, 0)",
                 (event_id, json.dumps(event["data"])))
    shape = flow.shape(fn, config, event)
    runs = [{"id": f"{fn.hex[:8]}-{i:04d}", "function_id": str(fn), "event_id": event_id,
             "event_ids": [event_id], "max_attempts": 1, **shape.fields()} for i in range(n)]
    conn.execute("SELECT pgqueue.run_create_v2(%s::jsonb)", (json.dumps(runs),))
    return [r["id"] for r in runs]


def _claim(conn: psycopg.Connection, fn_default_limit: int = 1000) -> list[str]:
    rows = conn.execute("SELECT run_id FROM pgqueue.claim_v1('w', 100, 30000, %s)", (fn_default_limit,))
    return [r[0] for r in rows.fetchall()]


def test_env_scope_shares_one_limit_across_functions(conn: psycopg.Connection) -> None:
    shared = {"concurrency": [{"limit": 2, "scope": "env", "key": "'db'"}]}
    a, b = _function(conn, "scope-a"), _function(conn, "scope-b")
    _start(conn, a, shared, 3)
    _start(conn, b, shared, 3)
    first = _claim(conn)
    assert len(first) == 2  # two in total, not two per function
    assert _claim(conn) == []
    conn.execute("DELETE FROM pgqueue.queue_items WHERE state = 'leased'")  # both finish
    second = _claim(conn)
    assert len(second) == 2 and not set(first) & set(second)


def test_fn_scope_keeps_one_limit_per_function(conn: psycopg.Connection) -> None:
    own = {"concurrency": [{"limit": 2, "key": "event.data.user"}]}
    a, b = _function(conn, "own-a"), _function(conn, "own-b")
    _start(conn, a, own, 3)
    _start(conn, b, own, 3)
    assert len(_claim(conn)) == 4  # two per function for the same key value


def test_every_function_is_bounded_by_the_default_limit(conn: psycopg.Connection) -> None:
    fn = _function(conn, "unlimited")
    _start(conn, fn, {}, 10)
    assert len(_claim(conn, fn_default_limit=3)) == 3
    assert _claim(conn, fn_default_limit=3) == []  # three are still leased
