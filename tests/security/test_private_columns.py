"""Issue 22, case 2: a login that is only a member of the read-only role (sql/grants/readonly.sql)
reads no payload: no event data, step output, run output or error message, from any view it is
granted. Against a real `pgqueue serve`: a durable endpoint's run stores a step output holding an
API key and fails with an error quoting it (pgqueue calls the endpoint, which answers a
non-retriable error), another completes with it as its output. A reader login then reads every
column of every relation it may select: each is in the list below (a new view or column fails
this test until it is classified here), and the key is in none. The payload role
(sql/grants/payload.sql) is the one that reads them."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from tests.compat.conftest import Server
from tests.helpers.procs import wait_until
from tests.security.conftest import Stub, json_answer, run_status, start_endpoint_run

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk_live_" + uuid.uuid4().hex

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client")

# Every column the read-only role may read, by relation. None of them holds payload: ids, names,
# counts, times, states, error *names*. Flow-control keys are the values of the functions' key
# expressions (usually ids), readable by design: they are what the flow-control views show.
READER_COLUMNS: dict[str, list[str]] = {
    "active_leases": ["item_id", "run_id", "function_id", "function_slug", "kind", "step_id", "step_name",
                      "attempt", "max_attempts", "leased_by", "leased_at", "lease_expires_at", "expires_in_s",
                      "expired"],
    "app_concurrency": ["app_id", "app_name", "workers", "concurrency_limit", "in_flight", "min_worker_limit",
                        "max_worker_limit", "updated_at"],
    "calls": ["run_id", "seq", "item_id", "step_id", "attempt", "outcome", "status_code", "error_name",
              "started_at", "ended_at"],
    "concurrency_usage": ["function_slug", "concurrency_key", "limit", "in_use", "queued", "parked",
                          "advisory_lock_key"],
    "flow_queue": ["function_slug", "due", "scheduled", "parked", "leased", "oldest_due_at"],
    "pending_batches": ["function_slug", "key", "run_id", "size", "events", "first_at", "starts_at"],
    "pending_debounces": ["function_slug", "key", "run_id", "latest_event_id", "first_at", "starts_at"],
    "queue_depth": ["function_id", "function_slug", "app_name", "status", "items", "runs", "oldest_run_at",
                    "oldest_age_s"],
    "recent_failures": ["run_id", "function_id", "function_slug", "app_name", "event_id", "error_name",
                        "failed_attempts", "created_at", "ended_at"],
    "run_timeline": ["run_id", "at", "seq", "entry", "step_id", "step_name", "op", "attempt", "outcome",
                     "status_code", "duration_ms", "status", "error_name"],
    "stuck_runs": ["run_id", "function_id", "function_slug", "status", "reason", "since", "age_s", "detail"],
    "throttle_state": ["kind", "function_slug", "key", "theoretical_arrival_at", "busy_for", "updated_at"],
}

GRANTED_COLUMNS = """
SELECT c.relname AS relation, a.attname AS column
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = 'pgqueue'::regnamespace
  AND (has_table_privilege(current_user, c.oid, 'SELECT')
       OR has_column_privilege(current_user, c.oid, a.attnum, 'SELECT'))
ORDER BY c.relname, a.attnum
"""
# SECURITY DEFINER functions act with their owner's rights: any the role may call reads for it.
DEFINER_FUNCTIONS = """
SELECT p.proname FROM pg_proc p
WHERE p.pronamespace = 'pgqueue'::regnamespace AND p.prosecdef
  AND has_function_privilege(current_user, p.oid, 'EXECUTE')
ORDER BY 1
"""


def _grant(database_url: str, script: str, variable: str, role: str) -> None:
    for _ in range(2):  # idempotent
        done = subprocess.run(
            ["psql", database_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"{variable}={role}",
             "-f", str(REPO / "sql" / "grants" / script)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr


@pytest.fixture
def logins(serve_factory: Callable[..., Server]) -> Iterator[tuple[Server, str, str]]:
    """A serve, and conninfos of a login in the read-only role and one in the payload role."""
    server = serve_factory({"PGQUEUE_REQUIRE_RESPONSE_SIGNATURE": "false"})
    suffix = uuid.uuid4().hex[:8]
    reader, payload = f"pgqueue_reader_{suffix}", f"pgqueue_payload_{suffix}"
    reader_login, payload_login = f"grafana_{suffix}", f"alice_{suffix}"
    _grant(server.database_url, "readonly.sql", "reader", reader)
    _grant(server.database_url, "payload.sql", "payload_reader", payload)
    with psycopg.connect(server.database_url, autocommit=True) as admin:
        for login, role in ((reader_login, reader), (payload_login, payload)):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw' IN ROLE {}").format(
                sql.Identifier(login), sql.Identifier(role)))
    try:
        yield (server, psycopg.conninfo.make_conninfo(server.database_url, user=reader_login, password="pw"),
               psycopg.conninfo.make_conninfo(server.database_url, user=payload_login, password="pw"))
    finally:
        with psycopg.connect(server.database_url, autocommit=True) as admin:
            for role in (reader_login, payload_login, reader, payload):
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _runs_holding_the_secret(server: Server, endpoint: Stub) -> list[str]:
    # One run fails: pgqueue calls the endpoint for its planned step, and the endpoint answers a
    # non-retriable error that quotes the key. Its first step's output holds the key too.
    failing = start_endpoint_run(server, endpoint.url, [
        {"op": "StepRun", "id": "read-key", "name": "read-key", "data": {"api_key": SECRET}},
        {"op": "StepPlanned", "id": "charge", "name": "charge"},
    ])
    # The other completes with the key in its output.
    completed = start_endpoint_run(server, endpoint.url, [
        {"op": "StepRun", "id": "read-key", "name": "read-key", "data": {"api_key": SECRET}},
        {"op": "RunComplete", "id": "complete", "data": {"status": 200, "headers": {}, "body": SECRET}},
    ])
    failed = wait_until(lambda: run_status(server, failing["run_id"]), timeout=30,
                        message="the failing endpoint run to end")
    assert failed["status"] == "Failed" and SECRET in json.dumps(failed["error"]), failed
    done = run_status(server, completed["run_id"])
    assert done is not None and done["status"] == "Completed", done
    return [failing["run_id"], completed["run_id"]]


def _everything(conninfo: str, run_ids: list[str]) -> tuple[dict[str, list[str]], str]:
    """Every column the login may read, by relation, and all their values as one JSON text."""
    with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
        columns: dict[str, list[str]] = {}
        for row in conn.execute(GRANTED_COLUMNS).fetchall():
            columns.setdefault(row["relation"], []).append(row["column"])
        values = []
        for relation, names in columns.items():
            query = sql.SQL("SELECT {} FROM pgqueue.{}").format(
                sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(relation))
            if "run_id" in names:  # run_timeline must be read per run
                query = sql.SQL("{} WHERE run_id = ANY(%s)").format(query)
                values += conn.execute(query, (run_ids,)).fetchall()
            else:
                values += conn.execute(query).fetchall()
        return columns, json.dumps(values, default=str)


def test_the_reader_reads_no_payload_from_any_view(
    logins: tuple[Server, str, str], stub_factory: Callable[..., Stub]
) -> None:
    server, reader, payload = logins
    error = {"name": "Error", "message": f"charge failed with key {SECRET}"}
    endpoint = stub_factory(lambda method, path, headers, body: json_answer(
        500, error, {"X-Inngest-No-Retry": "true"}))
    run_ids = _runs_holding_the_secret(server, endpoint)

    columns, values = _everything(reader, run_ids)
    assert SECRET not in values
    assert columns == READER_COLUMNS
    assert run_ids[0] in values and run_ids[1] in values  # the reader does see the runs
    with psycopg.connect(reader, autocommit=True) as conn:
        assert [r[0] for r in conn.execute(DEFINER_FUNCTIONS).fetchall()] == ["metrics"]
        for relation in ("run_timeline_payload", "recent_failures_payload", "steps", "runs", "events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SELECT * FROM pgqueue.{} LIMIT 1").format(sql.Identifier(relation)))

    # The payload role is the one that reads outputs and errors, and only through its views.
    payload_columns, payload_values = _everything(payload, run_ids)
    assert sorted(payload_columns) == ["calls_payload", "recent_failures_payload", "run_timeline_payload"]
    assert SECRET in payload_values
