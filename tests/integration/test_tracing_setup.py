"""Tracing switched on and off inside one process: without the otel extra nothing breaks and nothing of
OpenTelemetry's SDK is loaded; with it, a failing hook never reaches the engine, and a call that
raises is reported by its exception's type alone (the real exporter, to a real OTLP receiver)."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from pgqueue import ids, telemetry
from pgqueue.models import Event, QueueItem
from tests.helpers.otlp import Receiver, otlp_receiver
from tests.helpers.procs import ROOT

ITEM = QueueItem(id=7, run_id=ids.new_ulid(), function_id=uuid4(), kind="call", step_id="step",
                 step_name=None, attempt=2, max_attempts=5, lease_token=uuid4(),
                 run_at=datetime.now(UTC) - timedelta(seconds=1))

HOOKS = """
import dataclasses, sys
from datetime import UTC, datetime
from uuid import uuid4
from pgqueue import telemetry
from pgqueue.models import Event, QueueItem
import api.app, pgqueue.services.process  # the API and the executor, with their hooks
from pgqueue.protocol.outcome import RunDone
item = QueueItem(1, "01JRUN0000000000000000000A", uuid4(), "call", "step", None, 0, 1, uuid4(),
                 datetime.now(UTC))
headers = {}
with telemetry.call(item):
    telemetry.sending(headers, {"slug": "f", "url": "http://127.0.0.1/", "event_ids": []})
    telemetry.called(RunDone("x", None))
telemetry.ingested({}, [], 0)
telemetry.events_handled([({"id": "e", "name": "a/b"}, ["r"])])
telemetry.flush()
print("on" if telemetry.enabled() else "off", headers, "pgqueue.telemetry.otel" in sys.modules)
"""


def run_hooks(env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", prelude + HOOKS], cwd=ROOT,
                          env={**clean, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_off_by_default_every_hook_is_a_no_op_and_the_sdk_is_never_imported() -> None:
    result = run_hooks({})

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["off", "{}", "False"]


def test_without_the_otel_extra_it_runs_and_says_how_to_get_traces() -> None:
    # As if `pip install pgqueue` without [otel]: importing the SDK fails.
    result = run_hooks({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
                       prelude="import sys\nsys.modules['opentelemetry.sdk'] = None\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["off", "{}", "False"]
    assert "pip install 'pgqueue[otel]'" in result.stderr


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with otlp_receiver() as rx:
        for name in [n for n in os.environ if n.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        assert telemetry.configure()
        try:
            yield rx
        finally:
            telemetry.shutdown()


def test_a_failing_hook_is_logged_once_and_the_engine_goes_on(receiver: Receiver,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    broken = dataclasses.replace(ITEM, run_at=None)
    ran = []

    with caplog.at_level(logging.DEBUG, logger="pgqueue.telemetry"):
        for _ in range(2):
            with telemetry.call(broken):  # the span cannot start: run_at is missing
                ran.append(True)
            telemetry.events_handled([({"name": "shop/order"}, ["r1"])])  # an event row without its id

    assert ran == [True, True]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["tracing: the call hook failed; no span for it",
                        "tracing: the events_handled hook failed; no span for it"]


def test_a_call_that_raises_ends_its_span_with_the_exception_type_only(receiver: Receiver) -> None:
    with pytest.raises(ValueError, match="row 42 holds secret-data"), telemetry.call(ITEM):
        raise ValueError("row 42 holds secret-data")
    telemetry.flush()

    [span] = receiver.wait_for(lambda spans: len(spans) == 1, timeout=10)
    assert (span.name, span.kind) == ("call", "CLIENT")
    assert (span.status_code, span.status_message) == (2, "ValueError")
    assert span.attributes["error.type"] == "ValueError" and "secret-data" not in span.text
    assert span.trace_id == telemetry.run_trace_id(ITEM.run_id)
    assert span.parent_span_id == f"{telemetry.derived_ids('run', ITEM.run_id)[1]:016x}"
    assert span.attributes["pgqueue.attempt"] == 2 and span.attributes["pgqueue.queue.wait_ms"] >= 1000
    assert span.resource["service.name"] == "pgqueue"  # OTEL_SERVICE_NAME unset


def test_large_batches_and_the_engines_own_events_stay_cheap(receiver: Receiver) -> None:
    batch = [Event(id=ids.new_ulid(), name="shop/order", data={"n": n}, ts=0) for n in range(150)]
    received = datetime.now(UTC)

    telemetry.ingested({}, batch, time.time_ns())
    telemetry.events_handled([
        ({"id": ids.new_ulid(), "name": "inngest/function.finished", "received_at": received}, []),
        ({"id": batch[0].id, "name": "shop/order", "received_at": received},
         ["01JRUN1", "01JRUN1", "01JRUN2"]),  # a run listed twice is linked once
    ])
    telemetry.flush()

    spans = receiver.wait_for(lambda got: len(got) == 101, timeout=10)
    ingests = [s for s in spans if s.name == "ingest shop/order"]
    [event] = [s for s in spans if s.name.startswith("event ")]
    assert len(ingests) == 100 and {s.attributes["pgqueue.events.ingest.events"] for s in ingests} == {150}
    assert [s.attributes["pgqueue.event.id"] for s in ingests] == [e.id for e in batch[:100]]
    assert event.name == "event shop/order" and event.attributes["pgqueue.run.ids"] == ["01JRUN1", "01JRUN2"]
    assert event.links == [(telemetry.run_trace_id(r), f"{telemetry.derived_ids('run', r)[1]:016x}")
                           for r in ("01JRUN1", "01JRUN2")]
