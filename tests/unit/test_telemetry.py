"""pgqueue.telemetry without a collector: when the OTEL_* variables turn tracing on, and the trace ids
every process derives from a run or event id (README "Tracing")."""

from __future__ import annotations

import hashlib

import pytest

from pgqueue import telemetry


@pytest.mark.parametrize(("env", "exporters"), [
    ({}, ()),
    ({"OTEL_SERVICE_NAME": "pgqueue"}, ()),  # naming the service alone exports nothing
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ("otlp",)),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, ()),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),  # the SDK's default endpoint, localhost:4318
    ({"OTEL_TRACES_EXPORTER": "console, OTLP,otlp"}, ("console", "otlp")),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ()),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp",)),
])
def test_which_variables_turn_tracing_on(env: dict[str, str], exporters: tuple[str, ...]) -> None:
    assert telemetry.exporters_asked_for(env) == exporters


def test_ids_are_the_documented_hash_of_the_id_and_differ_between_runs_and_events() -> None:
    digest = hashlib.sha256(b"pgqueue.run:01JRUN0000000000000000000A").digest()

    trace_id, span_id = telemetry.derived_ids("run", "01JRUN0000000000000000000A")

    assert trace_id == int.from_bytes(digest[:16]) and span_id == int.from_bytes(digest[16:24])
    assert telemetry.run_trace_id("01JRUN0000000000000000000A") == digest[:16].hex()
    assert telemetry.derived_ids("event", "01JRUN0000000000000000000A")[0] != trace_id
    assert telemetry.derived_ids("run", "01JRUN0000000000000000000B")[0] != trace_id
