"""The expression language: conformance cases, substitution, equality literals, limits and macros."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgqueue import errors, expressions
from pgqueue.expressions import unparsing

DATA = Path(__file__).parent / "data"


def _cases(name: str) -> list[Any]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [
        pytest.param(case, id=f"{name.split('.')[0]}:{number}:{case['expr'][:50]}")
        for number, case in ((n, json.loads(line)) for n, line in enumerate(lines, 1) if line.strip())
    ]


def _variables(case: dict[str, Any]) -> dict[str, Any]:
    return {key: case[key] for key in ("event", "async", "vars") if key in case}


def _same(result: Any, expected: Any) -> bool:
    """== but a bool never passes for a number (True == 1 in Python), also inside lists and maps."""
    if isinstance(expected, list) and isinstance(result, list):
        return len(result) == len(expected) and all(map(_same, result, expected))
    if isinstance(expected, dict) and isinstance(result, dict):
        return result.keys() == expected.keys() and all(_same(result[k], expected[k]) for k in expected)
    return result == expected and isinstance(result, bool) == isinstance(expected, bool)


def _check(case: dict[str, Any]) -> None:
    expected = case["expect"]
    if expected == "invalid":
        with pytest.raises(errors.ExpressionSyntaxError):
            expressions.compile(case["expr"])
        return
    program = expressions.compile(case["expr"])
    if expected == "error":
        with pytest.raises(errors.ExpressionEvalError):
            program.evaluate(_variables(case))
        return
    result = program.evaluate(_variables(case))
    assert _same(result, expected), f"{case['expr']!r} gave {result!r}, expected {expected!r}"


@pytest.mark.parametrize("case", _cases("cel-conformance.jsonl"))
def test_conformance(case: dict[str, Any]) -> None:
    _check(case)


@pytest.mark.parametrize("case", _cases("cel-extra.jsonl"))
def test_extra_cases(case: dict[str, Any]) -> None:
    _check(case)


def test_conformance_copy_is_intact() -> None:
    shared = Path("/work/shared/cel-conformance.jsonl")
    if shared.exists():  # the project's copy must keep every shared case, unweakened
        ours = (DATA / "cel-conformance.jsonl").read_text(encoding="utf-8").splitlines()
        assert set(shared.read_text(encoding="utf-8").splitlines()) <= set(ours)


# --- errors and messages -------------------------------------------------------------------------------


def test_syntax_error_quotes_the_expression_and_says_where() -> None:
    with pytest.raises(errors.ExpressionSyntaxError) as caught:
        expressions.compile("event.data.plan ==")
    message = str(caught.value)
    assert "`event.data.plan ==`" in message
    assert "column 19" in message
    assert "end of input" in message


def test_syntax_error_names_the_unknown_identifier_and_line() -> None:
    with pytest.raises(errors.ExpressionSyntaxError) as caught:
        expressions.compile("event.data.a == 1 &&\n  user.id == 2")
    assert "unknown variable `user`" in str(caught.value)
    assert "line 2, column 3" in str(caught.value)


def test_unknown_function_is_refused_before_anything_runs() -> None:
    with pytest.raises(errors.ExpressionSyntaxError, match="unknown function `__import__"):
        expressions.compile("__import__('os').system('id')")


def test_syntax_errors_are_invalid_input() -> None:
    with pytest.raises(errors.InvalidInput):
        expressions.compile("(")
    assert issubclass(errors.ExpressionSyntaxError, errors.ExpressionError)
    assert issubclass(errors.ExpressionEvalError, errors.ExpressionError)


def test_eval_error_quotes_the_expression_and_the_reason() -> None:
    with pytest.raises(errors.ExpressionEvalError) as caught:
        expressions.evaluate("size(event.data.n) > 1", {"event": {"data": {"n": 5}}})
    assert "`size(event.data.n) > 1`" in str(caught.value)
    assert "size() needs a string, list or map, got int" in str(caught.value)


def test_long_expressions_are_quoted_as_an_excerpt() -> None:
    source = "event.data.a == 1 && " * 40 + "event.data.b =="
    with pytest.raises(errors.ExpressionSyntaxError) as caught:
        expressions.compile(source)
    assert len(str(caught.value)) < 400
    assert "..." in str(caught.value)


def test_non_string_source_is_a_syntax_error() -> None:
    with pytest.raises(errors.ExpressionSyntaxError):
        expressions.compile(42)  # type: ignore[arg-type]


def test_evaluating_with_non_mapping_variables_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="mapping"):
        expressions.evaluate("event.data.a == 1", [])  # type: ignore[arg-type]


# --- API shape -----------------------------------------------------------------------------------------


def test_compile_is_cached_and_programs_are_frozen() -> None:
    program = expressions.compile("event.data.plan == 'pro'")
    assert expressions.compile("event.data.plan == 'pro'") is program
    assert program.source == "event.data.plan == 'pro'"
    with pytest.raises(dataclasses.FrozenInstanceError):
        program.source = "true"  # type: ignore[misc]
    assert hash(program) == hash(expressions.compile("event.data.plan == 'pro'"))


def test_ast_is_frozen_dataclasses() -> None:
    ast = expressions.compile("event.data.plan == 'pro' && event.data.n > -1").ast
    assert ast == expressions.And(
        (
            expressions.Binary(
                "==",
                expressions.Select(expressions.Select(expressions.Ident("event"), "data"), "plan"),
                expressions.Literal("pro"),
            ),
            expressions.Binary(
                ">",
                expressions.Select(expressions.Select(expressions.Ident("event"), "data"), "n"),
                expressions.Literal(-1),
            ),
        )
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        ast.terms = ()  # type: ignore[misc]


def test_truthy_accepts_only_true() -> None:
    assert expressions.truthy(True) is True
    for value in (False, None, 1, "true", [True], {"a": True}):
        assert expressions.truthy(value) is False


def test_evaluate_does_not_mutate_variables() -> None:
    variables = {"event": {"data": {"items": [1, 2]}}}
    before = json.dumps(variables)
    expressions.evaluate("event.data.items.map(x, x * 2) == [2, 4] && now() != null", variables)
    assert json.dumps(variables) == before


def test_missing_top_level_variable_reads_as_null() -> None:
    assert expressions.evaluate("async.data.id == null", {"event": {}}) is True
    assert expressions.evaluate("vars == null", {}) is True


def test_results_are_fresh_containers() -> None:
    program = expressions.compile("[1, 2]")
    first = program.evaluate({})
    first.append(3)
    assert program.evaluate({}) == [1, 2]


# --- references ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.data.a == 1", {"event"}),
        ("async.data.id == event.data.id", {"async", "event"}),
        ("true", set()),
        ("vars.x > 1 || async.name == 'a'", {"vars", "async"}),
        ("[1, 2].exists(x, x == event.data.n)", {"event"}),
        ("async.data.items.all(i, i.ok)", {"async"}),
        ("has(event.data.user)", {"event"}),
    ],
)
def test_references(source: str, expected: set[str]) -> None:
    assert expressions.compile(source).references() == frozenset(expected)


# --- substitute ----------------------------------------------------------------------------------------

MATCH = "async.data.id == event.data.id"

HOSTILE = [
    "'; DROP TABLE x; --",
    "x'; DROP TABLE pgqueue.events; --",
    '" || true || "',
    "' || true || '",
    '") || (true',
    "\\",
    '\\"',
    "\\' || true || \\'",
    '"""',
    "'''",
    "line\nbreak\r\n",
    "tab\tand\x00nul\x7f",
    "\u2028\u2029\u200b\ufeff",
    "h\u00e9llo \u6f22\u5b57 \U0001f642 \u05e9\u05dc\u05d5\u05dd",
    "\ud800 lone surrogate",
    "${event.data.id}",
    "event.data.id",
    "} ] ) // /* */",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_substituted_strings_stay_data(value: str) -> None:
    program = expressions.compile(MATCH).substitute("event", {"data": {"id": value}})
    assert program.references() == frozenset({"async"})
    assert program.evaluate({"async": {"data": {"id": value}}}) is True
    assert program.evaluate({"async": {"data": {"id": value + "x"}}}) is False
    assert program.evaluate({"async": {"data": {"id": "other"}}}) is False
    assert program.evaluate({"async": {"data": {}}}) is False
    assert program.equality_literals("async") == [("data.id", value)]
    assert program.ast == expressions.Binary(
        "==",
        expressions.Select(expressions.Select(expressions.Ident("async"), "data"), "id"),
        expressions.Literal(value),
    )
    reparsed = expressions.compile(program.source)  # the rendered source means exactly the same thing
    assert reparsed.ast == program.ast
    assert reparsed.evaluate({"async": {"data": {"id": value}}}) is True


def test_substituted_hundred_kilobyte_string_stays_one_literal() -> None:
    value = ("x'\"\\ ; DROP TABLE x; -- \u00e9" * 4000)[:100_000]
    program = expressions.compile(MATCH).substitute("event", {"data": {"id": value}})
    assert program.evaluate({"async": {"data": {"id": value}}}) is True
    assert program.evaluate({"async": {"data": {"id": value[:-1]}}}) is False
    assert program.equality_literals("async") == [("data.id", value)]
    assert len(program.source) > 100_000
    assert program.references() == frozenset({"async"})


def test_substitute_leaves_the_original_program_alone() -> None:
    original = expressions.compile(MATCH)
    substituted = original.substitute("event", {"data": {"id": "w1"}})
    assert substituted.source == 'async.data.id == "w1"'
    assert original.source == MATCH
    assert original.references() == frozenset({"async", "event"})


def test_substitute_missing_values_become_null() -> None:
    program = expressions.compile("async.data.id == event.data.nope && event.data.a.b.c == null")
    substituted = program.substitute("event", {"data": {}})
    assert substituted.source == "async.data.id == null && null == null"
    assert substituted.evaluate({"async": {"data": {}}}) is True
    assert substituted.evaluate({"async": {"data": {"id": 1}}}) is False


def test_substitute_typed_values() -> None:
    program = expressions.compile(
        "async.data.n == event.data.n && async.data.f == event.data.f && async.data.b == event.data.b"
        " && async.data.neg == event.data.neg && async.data.big == event.data.big"
    )
    event = {"data": {"n": 3, "f": 2.5, "b": True, "neg": -7, "big": 2**70}}
    substituted = program.substitute("event", event)
    assert substituted.equality_literals("async") == [
        ("data.n", 3),
        ("data.f", 2.5),
        ("data.b", True),
        ("data.neg", -7),
        ("data.big", 2**70),
    ]
    assert substituted.evaluate({"async": {"data": {"n": 3.0, "f": 2.5, "b": True, "neg": -7, "big": 2**70}}})
    assert not substituted.evaluate({"async": {"data": {"n": "3", "f": 2.5, "b": True, "neg": -7}}})


def test_substitute_special_floats() -> None:
    program = expressions.compile("event.data.x").substitute("event", {"data": {"x": math.inf}})
    assert program.evaluate({}) == math.inf
    assert expressions.compile(program.source).evaluate({}) == math.inf
    nan = expressions.compile("event.data.x").substitute("event", {"data": {"x": math.nan}})
    assert math.isnan(expressions.compile(nan.source).evaluate({}))


def test_substitute_whole_objects_and_lists() -> None:
    user = {"id": "u1", "tags": ["a", "b"], "meta": {"n": 1, "deep": [{"x": None}]}}
    program = expressions.compile("async.data.user == event.data.user").substitute(
        "event", {"data": {"user": user}}
    )
    assert program.references() == frozenset({"async"})
    assert program.evaluate({"async": {"data": {"user": user}}}) is True
    assert program.evaluate({"async": {"data": {"user": {**user, "id": "u2"}}}}) is False
    assert expressions.compile(program.source).ast == program.ast
    assert program.equality_literals("async") == []  # only scalar literals index pauses


def test_substitute_whole_variable() -> None:
    event = {"name": "a/b", "data": {"k": 1}}
    program = expressions.compile("event").substitute("event", event)
    assert program.references() == frozenset()
    assert program.evaluate({}) == event


def test_substitute_has_becomes_a_boolean() -> None:
    program = expressions.compile("has(event.data.x) && !has(event.data.y.z) && async.data.ok")
    substituted = program.substitute("event", {"data": {"x": None}})
    assert substituted.source == "true && !false && async.data.ok"
    assert substituted.evaluate({"async": {"data": {"ok": True}}}) is True


def test_substitute_constant_indexes_and_dynamic_ones() -> None:
    event = {"data": {"items": ["a", "b"], "m": {"user-id": "u1"}, "k": "user-id"}}
    program = expressions.compile(
        "async.data.first == event.data.items[0] && async.data.u == event.data.m['user-id']"
        " && async.data.v == event.data.m[event.data.k]"
    )
    substituted = program.substitute("event", event)
    assert substituted.references() == frozenset({"async"})
    assert substituted.equality_literals("async") == [("data.first", "a"), ("data.u", "u1")]
    assert substituted.evaluate({"async": {"data": {"first": "a", "u": "u1", "v": "u1"}}}) is True


def test_substitute_inside_macros_and_calls() -> None:
    program = expressions.compile(
        "async.data.items.exists(i, i.id == event.data.id) && lowercase(async.name) == lowercase(event.name)"
    )
    substituted = program.substitute("event", {"name": "A/B", "data": {"id": 7}})
    assert substituted.references() == frozenset({"async"})
    assert substituted.evaluate({"async": {"name": "a/b", "data": {"items": [{"id": 6}, {"id": 7.0}]}}})
    assert expressions.compile(substituted.source).ast == substituted.ast


def test_substitute_unreferenced_name_returns_the_same_program() -> None:
    program = expressions.compile("async.data.id == 'x'")
    assert program.substitute("event", {"data": {}}) is program


def test_substitute_refuses_values_without_a_literal_form() -> None:
    program = expressions.compile(MATCH)
    with pytest.raises(errors.ExpressionEvalError):
        program.substitute("event", {"data": {"id": object()}})
    deep: Any = "leaf"
    for _ in range(expressions.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(errors.ExpressionEvalError, match="nested"):
        program.substitute("event", {"data": {"id": deep}})


def test_substitute_datetime_value() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    program = expressions.compile("async.data.at == event.data.at").substitute(
        "event", {"data": {"at": moment}}
    )
    assert program.source == 'async.data.at == timestamp("2024-01-02T03:04:05.6Z")'
    assert program.evaluate({"async": {"data": {"at": moment}}}) is True


def test_substitute_result_cannot_gain_structure_from_quotes() -> None:
    # A naive "splice the value into the text" approach would make this expression always true.
    program = expressions.compile("async.data.id == event.data.id && async.data.ok == true")
    substituted = program.substitute("event", {"data": {"id": "x' || true || '"}})
    assert substituted.evaluate({"async": {"data": {"id": "y", "ok": True}}}) is False
    assert type(substituted.ast) is expressions.And
    assert len(substituted.ast.terms) == 2


# --- equality_literals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("async.data.id == 'u_1' && async.data.n > 2", [("data.id", "u_1")]),
        ("'u_1' == async.data.id", [("data.id", "u_1")]),
        (
            "async.data.a == 1 && async.data.b == true && async.name == 'x' && async.data.c == null"
            " && async.data.d == -2.5",
            [("data.a", 1), ("data.b", True), ("name", "x"), ("data.c", None), ("data.d", -2.5)],
        ),
        (
            "(async.data.a == 1 && async.data.b == 2) && async.data.c == 3",
            [("data.a", 1), ("data.b", 2), ("data.c", 3)],
        ),
        ("async.data.a == 1 || async.data.b == 2", []),
        ("async.data.a == 1 && (async.data.b == 2 || async.data.c == 3)", [("data.a", 1)]),
        ("event.data.a == 1", []),
        ("async.data.a == event.data.b", []),
        ("async.data.a != 1", []),
        ("async.data['user-id'] == 'x'", [("data.user-id", "x")]),
        ("async.data['a.b'] == 'x'", []),
        ("async.data.items[0] == 'x'", []),
        ("async == 1", []),
        ("async.data.a == [1]", []),
        ("!(async.data.a == 1)", []),
        ("async.data.a == 1", [("data.a", 1)]),
    ],
)
def test_equality_literals(source: str, expected: list[tuple[str, Any]]) -> None:
    assert expressions.compile(source).equality_literals("async") == expected


def test_equality_literals_after_substitution_of_the_sdk_match() -> None:
    program = expressions.compile("event.data.userId == async.data.userId").substitute(
        "event", {"data": {"userId": "u_123"}}
    )
    assert program.equality_literals("async") == [("data.userId", "u_123")]
    assert program.references() == frozenset({"async"})


# --- limits --------------------------------------------------------------------------------------------


def test_length_limit() -> None:
    fits = "'" + "a" * (expressions.MAX_SOURCE_BYTES - 2) + "'"
    assert len(expressions.evaluate(fits, {})) == expressions.MAX_SOURCE_BYTES - 2
    with pytest.raises(errors.ExpressionSyntaxError, match="bytes long"):
        expressions.compile("'" + "a" * expressions.MAX_SOURCE_BYTES + "'")
    with pytest.raises(errors.ExpressionSyntaxError, match="bytes long"):
        expressions.compile(
            "'" + "\u00e9" * (expressions.MAX_SOURCE_BYTES // 2) + "'"
        )  # bytes, not characters


HOSTILE_NESTING = {
    "parentheses": "(" * 5000 + "1" + ")" * 5000,
    "negations": "!" * 8000 + "true",
    "minus signs": "-" * 8000 + "1",
    "additions": "1" + " + 1" * 3000,
    "lists": "[" * 5000 + "]" * 5000,
    "selections": "event" + ".a" * 5000,
    "indexes": "event" + "[0]" * 3000,
    "calls": "size(" * 2000 + "1" + ")" * 2000,
    "conditionals": "true ? 1 : " * 1000 + "2",
    "macros": "[1]" + ".map(x, x)" * 1000,
    "maps": "{'a': " * 2000 + "1" + "}" * 2000,
}


@pytest.mark.parametrize("source", HOSTILE_NESTING.values(), ids=HOSTILE_NESTING.keys())
def test_hostile_nesting_is_a_syntax_error_not_a_crash(source: str) -> None:
    with pytest.raises(errors.ExpressionSyntaxError, match="nests"):
        expressions.compile(source)


def test_nesting_just_inside_the_limit_works_end_to_end() -> None:
    depth = expressions.MAX_DEPTH - 2
    source = "(" * depth + "event.data.n" + ")" * depth + " + 1"
    program = expressions.compile(source)
    assert program.evaluate({"event": {"data": {"n": 1}}}) == 2
    chain = "1" + " + 1" * (expressions.MAX_DEPTH - 2)
    assert expressions.evaluate(chain, {}) == expressions.MAX_DEPTH - 1
    substituted = expressions.compile("async.data.n == " + chain).substitute("event", {})
    assert substituted is not None


def test_long_flat_conjunction_is_fine() -> None:
    source = " && ".join(f"event.data.a{i} == {i}" for i in range(600))
    assert len(source) < expressions.MAX_SOURCE_BYTES
    program = expressions.compile(source)
    assert type(program.ast) is expressions.And
    assert len(program.ast.terms) == 600
    data = {f"a{i}": i for i in range(600)}
    assert program.evaluate({"event": {"data": data}}) is True
    assert program.evaluate({"event": {"data": {**data, "a599": 0}}}) is False
    assert len(program.equality_literals("event")) == 600


def test_macro_step_budget() -> None:
    items = list(range(1000))
    program = expressions.compile("event.data.items.exists(a, event.data.items.exists(b, a + b < 0))")
    with pytest.raises(errors.ExpressionEvalError, match="evaluation budget"):
        program.evaluate({"event": {"data": {"items": items}}})
    small = {"event": {"data": {"items": items[:100]}}}
    assert program.evaluate(small) is False


def test_deep_input_data_is_an_eval_error_not_a_crash() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(errors.ExpressionEvalError):
        expressions.evaluate("event.data.a == event.data.b", {"event": {"data": {"a": deep, "b": deep}}})


def test_json_parse_of_deep_input_is_an_eval_error() -> None:
    raw = "[" * 100_000 + "]" * 100_000
    with pytest.raises(errors.ExpressionEvalError):
        expressions.evaluate("json_parse(event.data.raw)", {"event": {"data": {"raw": raw}}})


def test_pattern_length_limit() -> None:
    long_pattern = "a" * (expressions.MAX_PATTERN_CHARS + 1)
    with pytest.raises(errors.ExpressionSyntaxError, match="limit"):
        expressions.compile(f"'a'.matches('{long_pattern}')")
    with pytest.raises(errors.ExpressionEvalError, match="limit"):
        expressions.evaluate("'a'.matches(event.data.p)", {"event": {"data": {"p": long_pattern}}})
    ok = "a" * expressions.MAX_PATTERN_CHARS
    assert expressions.evaluate(f"'{ok}'.matches('{ok}')", {}) is True


@pytest.mark.parametrize("pattern", ["(a)\\\\1", "(?=a)", "(?!a)", "(?<!a)b", "(?P=x)", "\\\\C"])
def test_patterns_outside_go_re2_are_refused(pattern: str) -> None:
    with pytest.raises(errors.ExpressionSyntaxError):
        expressions.compile(f"'aaaa'.matches('{pattern}')")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("^[a-z]+@[a-z]+\\\\.com$", True),
        ("(ab)+", False),
        ("(\\\\d{3})-(\\\\d{4})?", False),
        ("[(]+", False),
        ("a{2}", False),
        ("(?i)BOB", True),
        ("x{", False),
    ],
)
def test_ordinary_patterns_work(pattern: str, expected: bool) -> None:
    assert expressions.evaluate(f"'bob@acme.com'.matches('{pattern}')", {}) is expected


# --- short-circuit and error absorption ----------------------------------------------------------------

BOOM = "size(event.data.n) > 0"  # an evaluation error: size() of a number


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (f"false && {BOOM}", False),
        (f"{BOOM} && false", False),
        (f"{BOOM} && event.data.n == 2", False),
        (f"true || {BOOM}", True),
        (f"{BOOM} || true", True),
        (f"{BOOM} || event.data.n == 1", True),
        (f"true && {BOOM}", "error"),
        (f"{BOOM} && true", "error"),
        (f"false || {BOOM}", "error"),
        (f"{BOOM} || false", "error"),
        (f"{BOOM} && {BOOM}", "error"),
        (f"!({BOOM} && false)", True),
        (f"false ? {BOOM} : 1", 1),
        (f"true ? 1 : {BOOM}", 1),
        (f"{BOOM} ? 1 : 2", "error"),
    ],
)
def test_error_absorption(source: str, expected: Any) -> None:
    variables = {"event": {"data": {"n": 1}}}
    if expected == "error":
        with pytest.raises(errors.ExpressionEvalError):
            expressions.evaluate(source, variables)
    else:
        assert _same(expressions.evaluate(source, variables), expected)


def test_short_circuit_skips_the_rest() -> None:
    # the step budget would be exhausted if the right-hand side ran
    big = {"event": {"data": {"items": list(range(500))}}}
    heavy = "event.data.items.all(a, event.data.items.all(b, true))"
    assert expressions.evaluate(f"false && {heavy}", big) is False
    assert expressions.evaluate(f"true || {heavy}", big) is True


# --- macros --------------------------------------------------------------------------------------------


def test_macro_variables_are_scoped() -> None:
    assert expressions.evaluate("[1, 2].exists(x, x == 2) && [3].all(x, x == 3)", {}) is True
    assert expressions.evaluate("[[1], [2]].map(x, x.map(x, x + 1))", {}) == [[2], [3]]
    with pytest.raises(errors.ExpressionSyntaxError, match="unknown variable `x`"):
        expressions.compile("[1].exists(x, true) || x")
    with pytest.raises(errors.ExpressionSyntaxError, match="unknown variable `x`"):
        expressions.compile("x.exists(x, true)")


def test_macro_over_events_data() -> None:
    variables = {
        "event": {"data": {"lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 0}, {"sku": "c", "qty": 5}]}}
    }
    assert expressions.evaluate("event.data.lines.filter(l, l.qty > 0).map(l, l.sku)", variables) == [
        "a",
        "c",
    ]
    assert expressions.evaluate("event.data.lines.exists_one(l, l.qty == 0)", variables) is True
    assert expressions.evaluate("event.data.lines.all(l, has(l.sku))", variables) is True
    assert expressions.evaluate("size(event.data.lines.filter(l, l.qty > 1)) == 2", variables) is True


# --- time ----------------------------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_now_can_be_pinned() -> None:
    assert expressions.evaluate("now()", {}, now=NOW) == NOW
    assert expressions.evaluate("now_plus('90m')", {}, now=NOW) == NOW + timedelta(minutes=90)
    assert expressions.evaluate("now_minus('1d')", {}, now=NOW) == NOW - timedelta(days=1)
    assert expressions.evaluate("now_plus('1.5h')", {}, now=NOW) == NOW + timedelta(minutes=90)
    assert expressions.evaluate("now_plus('-2s')", {}, now=NOW) == NOW - timedelta(seconds=2)
    naive = datetime(2024, 5, 1, 12, 0)
    assert expressions.evaluate("now()", {}, now=naive) == NOW


def test_now_defaults_to_the_wall_clock() -> None:
    before = datetime.now(UTC)
    value = expressions.evaluate("now()", {})
    assert before <= value <= datetime.now(UTC)


def test_dates_compare_with_now() -> None:
    variables = {"event": {"data": {"expires": "2024-05-01T13:00:00Z", "created": 1714560000}}}
    assert expressions.evaluate("date(event.data.expires) > now()", variables, now=NOW) is True
    assert expressions.evaluate("date(event.data.expires) < now_plus('30m')", variables, now=NOW) is False
    assert expressions.evaluate("date(event.data.created) <= now()", variables, now=NOW) is True
    assert expressions.evaluate("date('2024-05-01T12:00:00')", {}) == NOW  # no offset: UTC


# --- unparse round trip --------------------------------------------------------------------------------


def _valid_sources() -> list[str]:
    sources: list[str] = []
    for name in ("cel-conformance.jsonl", "cel-extra.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            case = json.loads(line)
            if case["expect"] != "invalid":
                sources.append(case["expr"])
    return sources


@pytest.mark.parametrize("source", _valid_sources())
def test_canonical_source_round_trips(source: str) -> None:
    program = expressions.compile(source)
    rendered = unparsing.unparse(program.ast)
    assert expressions.compile(rendered).ast == program.ast, rendered


@pytest.mark.parametrize(
    "source",
    [
        "(1 + 2) * 3",
        "1 - (2 - 3)",
        "1 - 2 - 3",
        "-(event.data.n + 1)",
        "!(event.data.a || event.data.b) && event.data.c",
        "(event.data.a ? 1 : 2) ? 3 : 4",
        "event.data.a ? 1 : event.data.b ? 2 : 3",
        "(event.data.a == 1) == true",
        "event.data.a in [1, 2] == false",
        "(-1).size()",
        "1 - -1",
        "--1",
        "-(-(event.data.n))",
        "{'a': [1, {'b': 2}]}['a'][1].b",
        "(event.data.a || event.data.b) && (event.data.c || event.data.d)",
        "event.data.a || event.data.b && event.data.c",
        "(true ? [1] : [2]).map(x, x)",
    ],
)
def test_canonical_source_keeps_precedence(source: str) -> None:
    program = expressions.compile(source)
    rendered = unparsing.unparse(program.ast)
    assert expressions.compile(rendered).ast == program.ast, rendered
    variables = {"event": {"data": {"a": True, "b": False, "c": True, "d": False, "n": 3}}}
    try:
        expected = expressions.evaluate(source, variables)
    except errors.ExpressionEvalError:
        with pytest.raises(errors.ExpressionEvalError):
            expressions.evaluate(rendered, variables)
    else:
        assert _same(expressions.evaluate(rendered, variables), expected)
