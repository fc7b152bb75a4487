"""`matches()` has RE2 semantics (Go's regexp, which Inngest's evaluator uses) and runs in linear time."""

from __future__ import annotations

from typing import Any

import pytest

from pgqueue import errors, expressions


def _matches(subject: Any, pattern: Any) -> Any:
    """Evaluate `event.data.s.matches(event.data.p)`: both from data, so nothing is checked at compile."""
    return expressions.evaluate(
        "event.data.s.matches(event.data.p)", {"event": {"data": {"s": subject, "p": pattern}}}
    )


@pytest.mark.parametrize(
    ("subject", "pattern", "expected"),
    [
        # an unanchored search, like Go's regexp.MatchString
        ("xabcx", "b", True),
        ("xabcx", "^b", False),
        ("xabcx", "b$", False),
        ("abc", "^abc$", True),
        ("", "", True),
        ("line1\nline2", "^line2$", False),  # ^ and $ are text anchors unless (?m)
        ("line1\nline2", "(?m)^line2$", True),
        ("a\nb", "a.b", False),  # . does not match a newline unless (?s)
        ("a\nb", "(?s)a.b", True),
        ("abc", "\\Aabc\\z", True),
        # classes
        ("abc123", "^[a-z]+\\d+$", True),
        ("x_y", "^\\w+$", True),
        ("tab\there", "\\s", True),
        ("a-b", "[[:punct:]]", True),
        ("unbound", "\\bbound", False),
        ("word boundary", "\\bboundary\\b", True),
        # Unicode: . is a code point, \pL a letter; \w and \d are ASCII as in Go
        ("é", "^.$", True),
        ("日本語", "^\\p{Han}+$", True),
        ("é", "\\pL", True),
        ("é", "\\w", False),
        ("\u0663", "\\d", False),  # ARABIC-INDIC DIGIT THREE
        # case-insensitive flag, with Unicode simple folding
        ("Bob@Acme.com", "(?i)^bob@acme\\.com$", True),
        ("ÉCOLE", "(?i)école", True),
        ("BOB", "bob", False),
        # repetition and alternation that backtracking engines take exponential time on
        ("aaaa", "(a+)+b", False),
        ("aaab", "(a+)+b", True),
        ("aaaa", "(a|a)*b", False),
        ("x{", "x{", True),  # a brace that is not a repetition is a literal, in RE2 and in Go
        ("a.b", "\\Q.\\E", True),
    ],
)
def test_re2_semantics(subject: str, pattern: str, expected: bool) -> None:
    assert _matches(subject, pattern) is expected


def test_a_missing_subject_does_not_match_and_a_null_pattern_is_an_error() -> None:
    assert _matches(None, "a") is False
    with pytest.raises(errors.ExpressionEvalError, match="matches"):
        _matches("a", None)


def test_lone_surrogates_read_as_replacement_characters() -> None:
    # JSON may carry "\ud800"; Go decodes it to U+FFFD, and so do we before handing the text to RE2
    assert _matches("a\ud800b", "^a\ufffdb$") is True
    assert _matches("a\ud800b", "^a.b$") is True


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(a)\\1", "backreferences"),
        ("(?=a)", "lookaround"),
        ("(?<!a)b", "lookaround"),
        ("[", "missing ]"),
        ("a**", "bad repetition"),
        ("a{1001}", "repetition size"),
        ("\\Z", "invalid escape"),
        ("\\C", "not supported"),
    ],
)
def test_refused_patterns_name_the_pattern(pattern: str, message: str) -> None:
    with pytest.raises(errors.ExpressionEvalError, match=message) as raised:
        _matches("aaaa", pattern)
    assert f"invalid pattern {pattern!r}" in str(raised.value)


def test_a_refused_literal_pattern_is_a_syntax_error_at_sync() -> None:
    with pytest.raises(errors.ExpressionSyntaxError, match=r"invalid pattern '\(a\)\\\\1'.*backreferences"):
        expressions.compile("event.data.s.matches('(a)\\\\1')")


@pytest.mark.parametrize("size", [24, 30, 100_000])
def test_exponential_for_backtracking_is_linear_here(size: int) -> None:
    # Python's re takes seconds on 24 characters (doubling with each one); RE2 does not backtrack.
    program = expressions.compile('event.data.s.matches("(a|a)*b")')
    assert program.evaluate({"event": {"data": {"s": "a" * size}}}) is False
    assert program.evaluate({"event": {"data": {"s": "a" * size + "b"}}}) is True


def test_quadratic_for_backtracking_is_linear_here() -> None:
    # `.*X$` against a long string without X is quadratic for a backtracking search (seconds at 120 KB)
    program = expressions.compile('event.data.s.matches(".*@example\\\\.com$")')
    big = "x" * 120_000
    assert program.evaluate({"event": {"data": {"s": big}}}) is False
    assert program.evaluate({"event": {"data": {"s": big + "@example.com"}}}) is True
    assert program.evaluate({"event": {"data": {"s": big + "@example.com\n"}}}) is False
    assert program.evaluate({"event": {"data": {"s": "é" * 60_000 + "@example.com"}}}) is True


def test_compiled_patterns_are_cached_but_bounded() -> None:
    from pgqueue.expressions import patterns

    for n in range(patterns.CACHE_SIZE + 10):
        assert _matches(f"k{n}", f"^k{n}$") is True
    info = patterns.compile_pattern.cache_info()
    assert info.maxsize == patterns.CACHE_SIZE
    assert info.currsize <= patterns.CACHE_SIZE
