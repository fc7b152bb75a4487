"""The evaluation budget: an expression over an untrusted event cannot burn unbounded CPU or memory."""

from __future__ import annotations

from typing import Any

import pytest

from pgqueue import errors, expressions

BUDGET = "evaluation budget"


def _run(source: str, **data: Any) -> Any:
    return expressions.evaluate(source, {"event": {"data": data}})


def test_the_limits_are_public_and_generous_for_events() -> None:
    assert expressions.MAX_COST >= 1_000_000
    assert expressions.MAX_STRING_CHARS >= 2 * 512 * 1024  # two of the largest events concatenated
    assert expressions.MAX_LIST_ITEMS >= 256 * 1024


def test_nested_macros_over_a_big_list_run_out_of_budget() -> None:
    items = list(range(2000))
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run("event.data.l.map(a, event.data.l.filter(b, a < b)).size() > 0", l=items)
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run("event.data.l.all(a, event.data.l.exists(b, a == b))", l=items)
    # the same expressions are fine on lists of a realistic size
    assert _run("event.data.l.map(a, event.data.l.filter(b, a < b)).size() > 0", l=items[:100]) is True
    assert _run("event.data.l.all(a, event.data.l.exists(b, a == b))", l=items[:100]) is True


def test_a_single_macro_over_the_largest_list_an_event_can_hold_fits() -> None:
    items = list(range(100_000))
    assert _run("event.data.l.exists(x, x == 99999)", l=items) is True
    assert _run("event.data.l.all(x, x >= 0)", l=items) is True


def test_the_body_of_a_macro_is_charged_per_element() -> None:
    # a body of many nodes costs more per element than `x > 0`
    items = list(range(60_000))
    heavy = " && ".join(["x >= 0"] * 10)
    assert _run("event.data.l.all(x, x >= 0)", l=items) is True
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run(f"event.data.l.all(x, {heavy})", l=items)


def test_repeated_string_concatenation_is_capped() -> None:
    s = "x" * 300_000
    assert len(_run("event.data.s + event.data.s", s=s)) == 600_000
    with pytest.raises(errors.ExpressionEvalError, match=r"string of \d+ characters"):
        _run("event.data.s + event.data.s + event.data.s + event.data.s", s=s)
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run("event.data.l.map(x, event.data.s + event.data.s).size() > 0", l=list(range(1000)), s=s)


def test_list_concatenation_is_capped() -> None:
    items = list(range(100_000))
    assert len(_run("event.data.l + event.data.l", l=items)) == 200_000
    with pytest.raises(errors.ExpressionEvalError, match=r"list of \d+ items"):
        _run("event.data.l + event.data.l + event.data.l", l=items)


def test_comparing_long_strings_is_charged() -> None:
    a, b = "y" * 200_000, "y" * 200_000
    assert _run("event.data.a == event.data.b", a=a, b=b) is True
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run("event.data.l.all(x, event.data.a == event.data.b)", l=list(range(50_000)), a=a, b=b)


def test_json_parse_is_charged_and_capped() -> None:
    text = "[" + ",".join(["1"] * 100_000) + "]"
    assert _run("size(json_parse(event.data.j)) == 100000", j=text) is True
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run("event.data.l.all(x, size(json_parse(event.data.j)) > 0)", l=list(range(100)), j=text)
    with pytest.raises(errors.ExpressionEvalError, match="json_parse"):
        _run("json_parse(event.data.j + event.data.j + ' ')", j=" " * 600_000)


def test_regex_search_is_charged_by_subject_and_pattern_size() -> None:
    s = "ab" * 60_000
    assert _run('event.data.s.matches("b$")', s=s) is True
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run("event.data.s.matches(event.data.p)", s=s, p="((a|b)*a(a|b){12}){30}c")


def test_running_out_is_not_absorbed_by_or_and_or_macros() -> None:
    # CEL absorbs an error in one term of || when another is true; running out of budget is not absorbed
    items = list(range(2000))
    heavy = "event.data.l.exists(a, event.data.l.exists(b, a + b < 0))"
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run(f"{heavy} || true", l=items)
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run(f"[1, 2].exists(i, {heavy})", l=items)
    # while an ordinary error still is
    assert _run("size(event.data.n) > 0 || true", n=1) is True


def test_every_evaluation_gets_a_fresh_budget() -> None:
    program = expressions.compile("event.data.l.all(x, x >= 0)")
    variables = {"event": {"data": {"l": list(range(100_000))}}}
    for _ in range(20):
        assert program.evaluate(variables) is True


def test_a_failed_evaluation_leaves_no_budget_behind() -> None:
    with pytest.raises(errors.ExpressionEvalError, match=BUDGET):
        _run("event.data.l.all(a, event.data.l.all(b, true))", l=list(range(5000)))
    assert _run("event.data.l.all(x, x >= 0)", l=list(range(100_000))) is True
