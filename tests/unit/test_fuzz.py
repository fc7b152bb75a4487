"""Property tests: any event payload either normalises or is refused with InvalidInput (never
another exception); any expression text either compiles or is refused with ExpressionSyntaxError,
and compiled programs only ever raise ExpressionEvalError."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgqueue import expressions
from pgqueue.errors import ExpressionEvalError, ExpressionSyntaxError, InvalidInput
from pgqueue.events import ingest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
events = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"name": st.one_of(st.text(max_size=20), st.just("inngest/x"), st.integers())},
        optional={"data": json_values, "ts": json_values, "id": json_values, "user": json_values, "v": json_values},
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(events, st.lists(events, max_size=4)))
def test_event_payloads_normalise_or_are_refused(payload: object) -> None:
    body = json.dumps(payload).encode()
    try:
        parsed = ingest.parse_events(body, seed_header=None, max_event_bytes=64 * 1024, max_events=10)
    except InvalidInput:
        return
    for event in parsed:
        assert isinstance(event.name, str) and event.name and not event.name.startswith("inngest/")
        assert isinstance(event.data, dict) and isinstance(event.ts, int)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_event_parser(body: bytes) -> None:
    try:
        ingest.parse_events(body, seed_header=None, max_event_bytes=64 * 1024, max_events=10)
    except InvalidInput:
        pass


ATOMS = ["event", "async", "data", ".", "(", ")", "[", "]", "==", "!=", "<", ">=", "&&", "||", "!", "?", ":",
         "'x'", '"y"', "1", "2.5", "null", "true", "size", "has", ",", "in", "+", "-", "*", "/", "%", "exists",
         "x", "e", " ", "'", '"', "\\", "matches", "lowercase", "{", "}"]


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(ATOMS), max_size=25).map("".join), st.text(max_size=60)),
       json_values)
def test_expressions_compile_or_refuse_and_evaluate_or_raise_eval_errors(source: str, data: object) -> None:
    try:
        program = expressions.compile(source)
    except ExpressionSyntaxError:
        return
    try:
        program.evaluate({"event": {"name": "a/b", "data": data}, "async": {"name": "c/d", "data": data}})
    except ExpressionEvalError:
        pass
