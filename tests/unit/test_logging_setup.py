"""Structured logs: ids bound around a block reach every record, in text and in JSON lines."""

from __future__ import annotations

import json
import logging

from pgqueue import logging_setup


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("pgqueue.executor", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    logging_setup.ContextFilter().filter(record)
    return record


def test_bound_ids_reach_json_records_and_nest() -> None:
    fmt = logging_setup.JsonFormatter()
    with logging_setup.bind(run_id="01RUN", function_id="fn-1"):
        with logging_setup.bind(event_id="01EVT"):
            inner = json.loads(fmt.format(_record("calling the app")))
        outer = json.loads(fmt.format(_record("done")))
    after = json.loads(fmt.format(_record("idle")))

    assert inner == {**inner, "run_id": "01RUN", "function_id": "fn-1", "event_id": "01EVT",
                     "message": "calling the app", "level": "info", "logger": "pgqueue.executor"}
    assert "event_id" not in outer and outer["run_id"] == "01RUN"
    assert "run_id" not in after and set(after) == {"ts", "level", "logger", "message"}


def test_text_lines_end_with_the_ids_and_explicit_extra_wins() -> None:
    fmt = logging_setup.TextFormatter()
    with logging_setup.bind(run_id="01RUN", function_id="fn-1"):
        line = fmt.format(_record("step failed", run_id="01OTHER"))
    assert line.endswith("pgqueue.executor: step failed run=01OTHER fn=fn-1")


def test_tracebacks_go_into_one_json_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("pgqueue", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = json.loads(logging_setup.JsonFormatter().format(record))
    assert out["level"] == "error" and "ValueError: boom" in out["exc"]
