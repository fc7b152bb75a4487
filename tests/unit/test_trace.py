"""The trace builder (pgqueue/runs/trace.py) on rows shaped as sql/queries/history.sql returns them:
the cases real SDK runs reach only by timing (a retry pending, a call in flight, work held in the
queue, several steps in one call, a call dropped by a cancel). Real runs of the official SDKs are
traced end to end in tests/compat/test_graphql.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgqueue.errors import InvalidInput
from pgqueue.runs import trace

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RUN = "01M99DR6PC6CMQ52SWQTRG8R3P"


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def run(status: str = "running", *, started: int | None = 10, ended: int | None = None,
        now: int = 10_000) -> dict[str, Any]:
    return {"id": RUN, "function_id": "f", "function_slug": "app-fn", "app_id": "a", "status": status,
            "created_at": at(0), "started_at": at(started) if started is not None else None,
            "ended_at": at(ended) if ended is not None else None, "now": at(now)}


def attempt(n: int, item: int, step: str, start: int, end: int, *, outcome: str = "ok",
            code: int | None = 206, retry: int = 0, error: bool = False) -> dict[str, Any]:
    return {"id": n, "item_id": item, "step_id": step, "attempt": retry, "outcome": outcome,
            "status_code": code, "has_error": error, "started_at": at(start), "ended_at": at(end)}


def step(step_id: str, name: str, stored: int, *, op: str = "StepRun", shape: str = "data",
         **extra: Any) -> dict[str, Any]:
    return {"step_id": step_id, "name": name, "op": op, "seq": stored, "attempt": 0, "created_at": at(stored),
            "shape": shape, "error_name": None, "event_id": None, "event_name": None, **extra}


def item(item_id: int, step_id: str, *, kind: str = "call", state: str = "available", retry: int = 0,
         created: int = 0, run_at: int = 0, leased: int | None = None,
         name: str | None = None) -> dict[str, Any]:
    return {"source": "item", "item_id": item_id, "kind": kind, "step_id": step_id, "step_name": name,
            "state": state, "attempt": retry, "created_at": at(created), "run_at": at(run_at),
            "leased_at": at(leased) if leased is not None else None, "has_error": False, "event_name": None,
            "expression": None, "expires_at": None, "signal": None}


def pause(step_id: str, kind: str, *, name: str, created: int, expires: int | None, event: str | None = None,
          expression: str | None = None, signal: str | None = None) -> dict[str, Any]:
    return {"source": "pause", "item_id": 99, "kind": kind, "step_id": step_id, "step_name": name,
            "state": "waiting", "attempt": None, "created_at": at(created), "run_at": None, "leased_at": None,
            "has_error": False, "event_name": event, "expression": expression,
            "expires_at": at(expires) if expires is not None else None, "signal": signal}


def names(span: trace.Span) -> list[tuple[str, str]]:
    return [(c.name, c.status.value) for c in span.children]


def test_output_ids_round_trip_and_refuse_anything_else() -> None:
    for kwargs in ({}, {"step": "a:1/é"}, {"attempt": 7}, {"item": 3}):
        value = trace.output_id(RUN, **kwargs)
        assert "=" not in value and "/" not in value and "+" not in value
        ref = trace.decode_output_id(value)
        assert ref["r"] == RUN and len(ref) == 1 + len(kwargs)
    for garbage in ("", "x", "e30", "eyJyIjoxfQ", "eyJyIjoiYSIsImEiOiIxIn0", "a" * 5000, "!!!!"):
        with pytest.raises(InvalidInput, match="invalid output id"):
            trace.decode_output_id(garbage)


def test_a_retry_pending_and_a_planned_call_in_flight() -> None:
    """Two parallel steps: one failed once and waits for its retry, the other is being called."""
    got = trace.build(
        run(),
        [attempt(1, 1, "step", 10, 20), attempt(2, 2, "s-left", 25, 30, outcome="retry", error=True)],
        [],
        [item(2, "s-left", retry=1, created=20, run_at=60, name="left"),
         item(3, "s-right", state="leased", created=20, leased=26, name="right")],
    ).root

    assert names(got) == [("Queued", "COMPLETED"), ("Discovery step", "COMPLETED"), ("left", "QUEUED"),
                          ("right", "RUNNING")]
    left = got.children[2]
    assert [(a.name, a.status.value) for a in left.children] == [
        ("Attempt 0", "FAILED"), ("Attempt 1", "QUEUED")]
    assert left.children[0].output_id == trace.output_id(RUN, attempt=2)
    assert left.children[1].queued_at == at(30) and left.children[1].started_at is None
    assert left.queued_at == at(20)  # planned by the discovery call that ended at 20
    right = got.children[3]
    assert (right.started_at, right.ended_at) == (at(26), None)
    assert [(a.name, a.status.value, a.started_at) for a in right.children] == [
        ("Attempt 0", "RUNNING", at(26))]


def test_work_still_queued_behind_flow_control_then_its_first_call_in_flight() -> None:
    got = trace.build(run("queued", started=None), [], [], [item(1, "step", created=0)]).root
    assert names(got) == [("Queued", "QUEUED")]
    assert got.children[0].ended_at is None and got.status == trace.SpanStatus.QUEUED

    calling = trace.build(run(started=40), [], [], [item(1, "step", state="leased", leased=40)]).root
    assert names(calling) == [("Queued", "COMPLETED"), ("Discovery step", "RUNNING")]
    assert calling.children[0].ended_at == calling.children[1].started_at == at(40)


def test_pending_sleep_wait_invoke_and_signal() -> None:
    got = trace.build(
        run(),
        [attempt(1, 1, "step", 10, 20)],
        [],
        [item(2, "s-nap", kind="sleep", created=19, run_at=5000, name="nap"),
         pause("s-wait", "wait", name="approval", created=19, expires=30_000, event="app/ok",
               expression="async.data.id == 'x'"),
         item(4, "s-wait", kind="timeout", created=19, run_at=30_000, name="approval"),
         pause("s-call", "invoke", name="call", created=19, expires=None),
         pause("s-sig", "signal", name="sig", created=19, expires=9000, signal="go")],
    )
    spans = {s.name: s for s in got.root.children}
    assert spans["nap"].status == trace.SpanStatus.WAITING and spans["nap"].info == trace.SleepInfo(at(5000))
    assert spans["approval"].info == trace.WaitInfo("app/ok", "async.data.id == 'x'", at(30_000), None, None)
    assert (spans["call"].status, spans["call"].step_op) == (trace.SpanStatus.RUNNING, trace.StepOp.INVOKE)
    assert spans["sig"].info == trace.SignalInfo("go", at(9000), None)
    assert all(s.started_at == at(19) and s.ended_at is None for s in (spans["nap"], spans["approval"]))


def test_resolved_waits_keep_what_their_steps_hold() -> None:
    got = trace.build(
        run("completed", ended=900),
        [attempt(1, 1, "step", 10, 20), attempt(2, 5, "step", 500, 510),
         attempt(3, 6, "step", 600, 700, code=200)],
        [step("s-wait", "approval", 400, op="WaitForEvent", shape="value", event_id=RUN, event_name="app/ok"),
         step("s-call", "call", 450, op="InvokeFunction", shape="error",
              error_name=trace.INVOKE_TIMEOUT)],
        [],
        {"s-call": {"id": "child", "event_id": "ev", "function_slug": "app-child"}},
    ).root
    spans = {s.name: s for s in got.children}
    assert spans["approval"].info == trace.WaitInfo("app/ok", None, None, RUN, False)
    assert (spans["approval"].started_at, spans["approval"].ended_at) == (at(20), at(400))
    assert spans["call"].status == trace.SpanStatus.FAILED
    assert spans["call"].info == trace.InvokeInfo("app-child", "ev", "child", None, True)
    assert spans["call"].output_id == trace.output_id(RUN, step="s-call")
    assert spans["Finalization"].output_id == got.output_id == trace.output_id(RUN)


def test_several_steps_stored_in_one_call_then_the_result() -> None:
    """A JS 4.x call that checkpointed two steps and returned the function's result."""
    got = trace.build(
        run("completed", ended=95),
        [attempt(1, 1, "step", 10, 100)],
        [step("s-a", "a", 40), step("s-b", "b", 70)],
        [],
    ).root
    assert names(got) == [("Queued", "COMPLETED"), ("a", "COMPLETED"), ("b", "COMPLETED"),
                          ("Finalization", "COMPLETED")]
    a, b, final = got.children[1:]
    assert (a.started_at, a.ended_at, b.started_at, b.ended_at) == (at(10), at(40), at(40), at(70))
    assert (final.started_at, final.ended_at) == (at(70), at(100))


def test_a_call_dropped_by_a_cancel_and_a_run_cancelled_before_it_started() -> None:
    got = trace.build(
        run("cancelled", ended=50),
        [attempt(1, 1, "step", 10, 60, outcome="discarded", code=None)],
        [],
        [],
    ).root
    assert names(got) == [("Queued", "COMPLETED"), ("Discovery step", "CANCELLED")]
    assert got.status == trace.SpanStatus.CANCELLED and got.output_id == trace.output_id(RUN)

    never = trace.build(run("cancelled", started=None, ended=50), [], [], []).root
    assert names(never) == [("Queued", "CANCELLED")] and never.children[0].ended_at == at(50)


def test_a_function_error_retried_then_failed() -> None:
    got = trace.build(
        run("failed", ended=300),
        [attempt(1, 1, "step", 10, 20, outcome="retry", code=500, error=True),
         attempt(2, 1, "step", 200, 290, outcome="failed", code=500, retry=1, error=True)],
        [],
        [],
    ).root
    [_, final] = got.children
    assert (final.name, final.status, final.attempt) == ("Finalization", trace.SpanStatus.FAILED, 1)
    assert [a.status.value for a in final.children] == ["FAILED", "FAILED"]
    assert final.children[1].queued_at == at(20)  # waited out its backoff from the first call's end
    assert [a.output_id for a in final.children] == [trace.output_id(RUN, attempt=1),
                                                      trace.output_id(RUN, attempt=2)]
