"""More of the official Python SDK's surface against pgqueue, in dev, production and PgBouncer
stacks: step.send_event (memoised across a retry), step.sleep_until, RetryAfterError, a cron
trigger with a TZ= prefix declared by the SDK, and the client's own `send`."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import inngest
import psycopg
import pytest

from tests.compat.conftest import SIGNING_KEY, App, Server
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat


def _tag() -> str:
    return "".join(random.Random().choice(string.ascii_lowercase) for _ in range(10))


def test_step_send_event_starts_runs_and_is_not_repeated_by_a_retry(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    tag = _tag()
    event_id = server.send("compat/send", {"tag": tag})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert app.count(run["run_id"], "fail-once") == 1  # the run failed once after sending
    [sent_id] = run["output"]["ids"]
    sent = [e for e in server.get("/v1/events?name=compat/three&limit=500")["data"]
            if e["data"].get("echo") == tag]
    assert [e["id"] for e in sent] == [sent_id]  # sent once, with the id the step returned
    [child] = server.wait_runs(sent[0]["internal_id"], timeout=30)
    assert child["status"] == "Completed" and child["output"]["echo"] == tag


def test_sleep_until_wakes_at_the_instant(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    until = datetime.now(UTC) + timedelta(seconds=2)
    event_id = server.send("compat/sleep-until", {"until": until.isoformat()})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    woke = run["output"]["woke"]
    assert until.timestamp() <= woke < until.timestamp() + 5
    assert app.count(run["run_id"], "after") == 1


def test_retry_after_error_sets_the_next_attempt_time(py_stack: tuple[Server, App]) -> None:
    """Backoff is scaled to milliseconds in these tests; the 2 s asked for by RetryAfterError is not."""
    server, app = py_stack
    event_id = server.send("compat/retry-after", {})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed" and run["output"] == "ok", run
    calls = app.ledger()["ledger"][f"{run['run_id']}:call"]
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.9, calls


def test_cron_trigger_with_a_time_zone(py_stack: tuple[Server, App]) -> None:
    """`TZ=Asia/Kolkata 30 9 * * *` from the SDK: the next slot is 09:30 in Kolkata (04:00 UTC)."""
    server, _ = py_stack
    with psycopg.connect(server.database_url, prepare_threshold=None) as conn:
        row = conn.execute(
            "SELECT s.cron, s.next_at FROM pgqueue.cron_schedules s JOIN pgqueue.functions f"
            " ON f.id = s.function_id WHERE f.slug = 'py-compat-cron-tz'").fetchone()
    assert row is not None
    cron, next_at = row
    assert cron == "TZ=Asia/Kolkata 30 9 * * *"
    local = next_at.astimezone(ZoneInfo("Asia/Kolkata"))
    assert (local.hour, local.minute, local.second) == (9, 30, 0)
    assert timedelta(0) < next_at - datetime.now(UTC) <= timedelta(days=1)


def test_the_python_client_send_returns_the_stored_ids(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    production = server.mode == "serve"
    client = inngest.Inngest(
        app_id="py-sender", event_api_base_url=server.url, api_base_url=server.url,
        event_key=server.event_key, is_production=production, signing_key=SIGNING_KEY if production else None,
    )
    tag = _tag()
    ids = client.send_sync([inngest.Event(name="compat/three", data={"echo": tag, "n": n}) for n in range(3)])
    assert len(ids) == 3
    for n, event_id in enumerate(ids):
        event = server.get(f"/v1/events/{event_id}")["data"]
        assert event["name"] == "compat/three" and event["data"] == {"echo": tag, "n": n}
        [run] = wait_until(lambda event_id=event_id: server.runs_for(event_id) or None, timeout=30,
                           message="the run of a sent event")
        assert run["function_slug"] == "py-compat-three-steps"
