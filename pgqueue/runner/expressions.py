"""Safe evaluator for the CEL subset Inngest functions use in `expression`, `if`, `key` and `priority.run`.

Source text goes through a hand-written tokenizer and a Pratt parser into an AST of frozen dataclasses,
is checked (known variables, functions and arities, length and depth limits) and then compiled into Python
closures once per distinct expression; nothing is ever handed to eval(). Semantics follow Inngest where it
departs from stock CEL: a missing field reads as null, comparisons are loosely typed, and `+` mixes strings
and numbers.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final, cast

from pgqueue import errors

__all__ = [
    "MAX_DEPTH",
    "MAX_PATTERN_CHARS",
    "MAX_SOURCE_BYTES",
    "MAX_STEPS",
    "VARIABLES",
    "And",
    "Binary",
    "Call",
    "Conditional",
    "Has",
    "Ident",
    "Index",
    "ListExpr",
    "Literal",
    "Macro",
    "MapExpr",
    "Method",
    "Node",
    "Or",
    "Program",
    "Select",
    "Unary",
    "compile",
    "evaluate",
    "truthy",
]

VARIABLES: Final = ("event", "async", "vars")
"""Top-level variables an expression may read; anything else is refused when the app syncs."""

MAX_SOURCE_BYTES: Final = 16 * 1024
"""Longer expressions are refused: parsing cost and error messages stay bounded."""

MAX_DEPTH: Final = 100
"""Deepest nesting of the syntax tree; keeps every recursive pass far from Python's recursion limit."""

MAX_STEPS: Final = 100_000
"""Macro iterations (all, exists, map, ...) one evaluation may perform, nested macros included."""

MAX_PATTERN_CHARS: Final = 1000
"""Longest regular expression `matches()` accepts."""

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT64_MAX: Final = (1 << 64) - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Reserved keys in the evaluation scope. A space can never start an identifier, so user data cannot collide.
_NOW: Final = " now"
_BUDGET: Final = " budget"

Scope = Mapping[str, Any]
Evaluator = Callable[[Scope], Any]


# ------------------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: None, bool, int, float or str (never a container: see ListExpr and MapExpr)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Ident:
    """A top-level variable (`event`) or a macro-bound one (`x` in `items.all(x, x > 0)`)."""

    name: str


@dataclass(frozen=True, slots=True)
class Select:
    """`operand.name`; reads null when the operand is missing or not a map."""

    operand: Node
    name: str


@dataclass(frozen=True, slots=True)
class Index:
    """`operand[index]` on a list or map; reads null when there is no such element."""

    operand: Node
    index: Node


@dataclass(frozen=True, slots=True)
class Call:
    """A global function call, `size(x)`."""

    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Method:
    """A receiver-style call, `x.startsWith('a')`."""

    target: Node
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Has:
    """The `has(a.b)` macro: is field `b` present on map `a`."""

    operand: Select


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "!" or "-"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # == != < <= > >= in + - * / %
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class And:
    """`a && b && ...`, flattened so long conjunctions neither nest deeply nor recurse."""

    terms: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Conditional:
    condition: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class MapExpr:
    entries: tuple[tuple[Node, Node], ...]


@dataclass(frozen=True, slots=True)
class Macro:
    """A comprehension: `target.kind(var, predicate)`; `map` has a transform and optionally a filter."""

    kind: str  # all, exists, exists_one, filter, map
    target: Node
    var: str
    predicate: Node | None
    transform: Node | None


Node = (
    Literal
    | Ident
    | Select
    | Index
    | Call
    | Method
    | Has
    | Unary
    | Binary
    | And
    | Or
    | Conditional
    | ListExpr
    | MapExpr
    | Macro
)


def _children(node: Node) -> tuple[Node, ...]:
    match node:
        case Literal() | Ident():
            return ()
        case Select(operand=operand) | Has(operand=operand) | Unary(operand=operand):
            return (operand,)
        case Index():
            return (node.operand, node.index)
        case Call():
            return node.args
        case Method():
            return (node.target, *node.args)
        case Binary():
            return (node.left, node.right)
        case And() | Or():
            return node.terms
        case Conditional():
            return (node.condition, node.then, node.otherwise)
        case ListExpr():
            return node.items
        case MapExpr():
            return tuple(part for entry in node.entries for part in entry)
        case Macro():
            return tuple(n for n in (node.target, node.predicate, node.transform) if n is not None)


def _depth(root: Node) -> int:
    """Depth of the tree, computed without recursion so a hostile tree cannot exhaust the stack."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                break
        stack.extend((child, level + 1) for child in _children(node))
    return deepest


# ------------------------------------------------------------------------------------------------------
# Errors


class _Fault(Exception):
    """A runtime error inside evaluation; Program.evaluate turns it into ExpressionEvalError."""


def _shown(source: str, pos: int | None = None) -> str:
    text = source.replace("\r", " ").replace("\n", " ")
    if len(text) <= 160:
        return f"`{text}`"
    start = max(0, min((pos or 0) - 60, len(text) - 120))
    end = min(len(text), start + 120)
    return f"`{'...' if start else ''}{text[start:end]}{'...' if end < len(text) else ''}`"


def _where(source: str, pos: int) -> str:
    line = source.count("\n", 0, pos) + 1
    column = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return f"column {column}" if line == 1 else f"line {line}, column {column}"


def _syntax_error(source: str, pos: int | None, reason: str) -> errors.ExpressionSyntaxError:
    where = "" if pos is None else f" at {_where(source, pos)}"
    return errors.ExpressionSyntaxError(f"invalid expression {_shown(source, pos)}: {reason}{where}")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    kind = value.__class__
    if kind is bool:
        return "bool"
    if kind is int:
        return "int"
    if kind is float:
        return "double"
    if kind is str:
        return "string"
    if kind is bytes:
        return "bytes"
    if kind is list or kind is tuple:
        return "list"
    if isinstance(value, Mapping):
        return "map"
    if kind is datetime:
        return "timestamp"
    if kind is timedelta:
        return "duration"
    return kind.__name__


# ------------------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident, reserved, int, uint, double, string, literal, eof, or the punctuation itself
    value: Any
    pos: int


_SPACE: Final = frozenset(" \t\n\r\f")
_DIGITS: Final = frozenset("0123456789")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_IDENT_START: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_PART: Final = _IDENT_START | _DIGITS
_PUNCT2: Final = frozenset({"==", "!=", "<=", ">=", "&&", "||"})
_PUNCT1: Final = frozenset("()[]{}.,:?!-+*/%<>")
_CONSTANTS: Final[dict[str, Any]] = {"true": True, "false": False, "null": None}
_RESERVED: Final = frozenset(
    {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
     "package", "namespace", "return", "var", "void", "while"}
)  # fmt: skip
_SIMPLE_ESCAPES: Final = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?",
}  # fmt: skip


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    n = len(source)
    i = 0
    while i < n:
        c = source[i]
        if c in _SPACE:
            i += 1
        elif c == "/" and source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in _IDENT_START:
            j = i + 1
            while j < n and source[j] in _IDENT_PART:
                j += 1
            word = source[i:j]
            if j < n and source[j] in "'\"" and word.lower() in ("r", "b", "rb", "br"):
                if "b" in word.lower():
                    raise _syntax_error(source, i, "bytes literals are not supported")
                value, j = _scan_string(source, j, raw=True)
                tokens.append(_Token("string", value, i))
            elif word in _CONSTANTS:
                tokens.append(_Token("literal", _CONSTANTS[word], i))
            elif word == "in":
                tokens.append(_Token("in", None, i))
            else:
                tokens.append(_Token("reserved" if word in _RESERVED else "ident", word, i))
            i = j
        elif c in _DIGITS or (c == "." and i + 1 < n and source[i + 1] in _DIGITS):
            token, i = _scan_number(source, i)
            tokens.append(token)
        elif c == "'" or c == '"':
            value, j = _scan_string(source, i, raw=False)
            tokens.append(_Token("string", value, i))
            i = j
        elif source[i : i + 2] in _PUNCT2:
            tokens.append(_Token(source[i : i + 2], None, i))
            i += 2
        elif c in _PUNCT1:
            tokens.append(_Token(c, None, i))
            i += 1
        elif c == "=":
            raise _syntax_error(source, i, "unexpected `=`; compare with `==`")
        else:
            raise _syntax_error(source, i, f"unexpected character {c!r}")
    tokens.append(_Token("eof", None, n))
    return tokens


def _scan_number(source: str, start: int) -> tuple[_Token, int]:
    n = len(source)
    if source.startswith(("0x", "0X"), start):
        j = start + 2
        while j < n and source[j] in _HEX:
            j += 1
        if j == start + 2:
            raise _syntax_error(source, start, "a hexadecimal literal needs digits after 0x")
        if j - start > 20:
            raise _syntax_error(source, start, "integer literal is out of range")
        value = int(source[start + 2 : j], 16)
    else:
        j = start
        while j < n and source[j] in _DIGITS:
            j += 1
        is_double = False
        if j + 1 < n and source[j] == "." and source[j + 1] in _DIGITS:
            is_double = True
            j += 1
            while j < n and source[j] in _DIGITS:
                j += 1
        if j < n and source[j] in "eE":
            k = j + 1
            if k < n and source[k] in "+-":
                k += 1
            if k < n and source[k] in _DIGITS:
                is_double = True
                j = k
                while j < n and source[j] in _DIGITS:
                    j += 1
        text = source[start:j]
        if is_double:
            number = float(text)
            if math.isinf(number):
                raise _syntax_error(source, start, "number is too large for a double")
            return _Token("double", number, start), j
        if len(text.lstrip("0")) > 20:
            raise _syntax_error(source, start, "integer literal is out of range")
        value = int(text)
    if j < n and source[j] in "uU":
        if value > _UINT64_MAX:
            raise _syntax_error(source, start, "unsigned integer literal is out of range")
        return _Token("uint", value, start), j + 1
    return _Token("int", value, start), j


def _scan_string(source: str, start: int, *, raw: bool) -> tuple[str, int]:
    n = len(source)
    quote = source[start]
    triple = source.startswith(quote * 3, start)
    i = start + (3 if triple else 1)
    out: list[str] = []
    while True:
        if i >= n:
            raise _syntax_error(source, start, "unterminated string literal")
        c = source[i]
        if c == quote and (not triple or source.startswith(quote * 3, i)):
            return "".join(out), i + (3 if triple else 1)
        if c in "\r\n" and not triple:
            raise _syntax_error(source, i, "line break inside a string; use a triple-quoted string")
        if c != "\\" or raw:
            out.append(c)
            i += 1
            continue
        escape = source[i + 1] if i + 1 < n else ""
        if escape in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[escape])
            i += 2
            continue
        width = {"x": 2, "X": 2, "u": 4, "U": 8}.get(escape)
        if width is not None:
            digits = source[i + 2 : i + 2 + width]
            if len(digits) != width or any(d not in _HEX for d in digits):
                raise _syntax_error(source, i, f"\\{escape} needs {width} hexadecimal digits")
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise _syntax_error(source, i, "escape is beyond the last Unicode code point")
            out.append(chr(code))
            i += 2 + width
            continue
        digits = source[i + 1 : i + 4]
        if len(digits) == 3 and digits[0] in "0123" and all(d in "01234567" for d in digits):
            out.append(chr(int(digits, 8)))
            i += 4
            continue
        raise _syntax_error(source, i, f"invalid escape sequence \\{escape}")


def _describe(token: _Token) -> str:
    if token.kind == "eof":
        return "end of input"
    if token.kind in ("ident", "reserved"):
        return f"`{token.value}`"
    if token.kind in ("int", "uint", "double"):
        return "a number"
    if token.kind == "string":
        return "a string"
    if token.kind == "literal":
        return f"`{_literal_text(token.value)}`"
    return f"`{token.kind}`"


# ------------------------------------------------------------------------------------------------------
# Functions


@dataclass(frozen=True, slots=True)
class _Function:
    arity: tuple[int, ...]
    impl: Callable[..., Any]
    needs_now: bool = False


def _check_int(value: int) -> int:
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    raise _Fault("integer overflow")


def _size(value: Any) -> int:
    kind = value.__class__
    if kind is str or kind is list or kind is tuple or kind is dict or kind is bytes:
        return len(value)
    if value is None:
        return 0  # a missing list or string has no elements (as in Inngest)
    if isinstance(value, Mapping):
        return len(cast("Mapping[Any, Any]", value))
    raise _Fault(f"size() needs a string, list or map, got {_type_name(value)}")


def _string_arg(function: str, value: Any) -> str:
    if type(value) is str:
        return value
    raise _Fault(f"{function}() needs a string argument, got {_type_name(value)}")


def _starts_with(target: Any, prefix: Any) -> bool:
    if target is None:
        return False
    return _string_arg("startsWith", target).startswith(_string_arg("startsWith", prefix))


def _ends_with(target: Any, suffix: Any) -> bool:
    if target is None:
        return False
    return _string_arg("endsWith", target).endswith(_string_arg("endsWith", suffix))


def _contains(target: Any, part: Any) -> bool:
    if target is None:
        return False
    return _string_arg("contains", part) in _string_arg("contains", target)


def _pattern_problem(pattern: str) -> str | None:
    """Why a pattern is refused, or None. Python's backtracking `re` is not RE2: this rejects what RE2
    would reject anyway (backreferences, lookaround) and nested quantifiers such as `(a+)+`, the usual
    cause of catastrophic backtracking. Alternation inside a repeated group is not detected."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"the pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_CHARS}"
    groups: list[bool] = []  # per open group: does its body contain a quantifier
    quantified_group = False  # the previous atom was a group containing a quantifier
    in_class = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if not in_class and pattern[i + 1 : i + 2] in tuple("123456789"):
                return "backreferences are not supported"
            i += 2
            quantified_group = False
        elif in_class:
            in_class = c != "]"
            i += 1
        elif c == "[":
            in_class = True
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":
                i += 1
            quantified_group = False
        elif c == "(":
            if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!", "(?P=", "(?("), i):
                return "lookaround, backreference and conditional groups are not supported"
            groups.append(False)
            quantified_group = False
            i += 1
        elif c == ")":
            inner = groups.pop() if groups else False
            if inner and groups:
                groups[-1] = True
            quantified_group = inner
            i += 1
        elif c in "*+?" or (c == "{" and _brace_quantifier_end(pattern, i) > 0):
            if quantified_group and c != "?":
                return "nested quantifiers such as (a+)+ are not supported (they can take exponential time)"
            if groups:
                groups[-1] = True
            i = _brace_quantifier_end(pattern, i) if c == "{" else i + 1
            if pattern[i : i + 1] in ("?", "+"):
                i += 1
            quantified_group = False
        else:
            quantified_group = False
            i += 1
    return None


def _brace_quantifier_end(pattern: str, start: int) -> int:
    """End of a `{n}`, `{n,}` or `{n,m}` quantifier starting at `start`, or 0 if it is a literal brace."""
    close = pattern.find("}", start)
    if close < 0:
        return 0
    body = pattern[start + 1 : close]
    low, comma, high = body.partition(",")
    if low.isdigit() and low.isascii() and (not high or (high.isdigit() and high.isascii())):
        return close + 1
    if comma and not low and high.isdigit() and high.isascii():
        return close + 1
    return 0


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    problem = _pattern_problem(pattern)
    if problem is not None:
        raise _Fault(f"matches(): {problem}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise _Fault(f"matches(): invalid pattern: {exc}") from None


def _matches(target: Any, pattern: Any) -> bool:
    regex = _regex(_string_arg("matches", pattern))
    if target is None:
        return False
    return regex.search(_string_arg("matches", target)) is not None


def _lowercase(value: Any) -> Any:
    return None if value is None else _string_arg("lowercase", value).lower()


def _uppercase(value: Any) -> Any:
    return None if value is None else _string_arg("uppercase", value).upper()


def _json_parse(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(_string_arg("json_parse", value))
    except json.JSONDecodeError as exc:
        raise _Fault(f"json_parse(): invalid JSON: {exc.msg} at character {exc.pos}") from None
    except (ValueError, RecursionError) as exc:
        raise _Fault(f"json_parse(): {exc}") from None


def _format_double(value: float) -> str:
    """Format like Go's strconv.FormatFloat(v, 'g', -1, 64), which is what cel-go's string(double) does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len((whole + fraction).lstrip("0")))
    digits = digits.rstrip("0") or "0"
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{body}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _format_timestamp(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo is not None else value
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _format_duration(value: timedelta) -> str:
    micros = value // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    seconds, rest = divmod(abs(micros), 1_000_000)
    fraction = "." + f"{rest:06d}".rstrip("0") if rest else ""
    return f"{sign}{seconds}{fraction}s"


def _to_string(value: Any) -> str:
    kind = value.__class__
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return _format_double(value)
    if kind is datetime:
        return _format_timestamp(value)
    if kind is timedelta:
        return _format_duration(value)
    if kind is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fault("string(): bytes are not valid UTF-8") from None
    raise _Fault(f"string() cannot convert {_type_name(value)}")


def _parse_int_text(function: str, text: str) -> int:
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or len(body) > 20 or not (body.isascii() and body.isdigit()):
        raise _Fault(f"{function}(): {text[:40]!r} is not an integer")
    return int(text)


def _to_int(value: Any) -> int:
    kind = value.__class__
    if kind is int:
        return _check_int(value)
    if kind is float:
        if not math.isfinite(value):
            raise _Fault(f"int(): {_format_double(value)} has no integer value")
        return _check_int(int(value))
    if kind is str:
        return _check_int(_parse_int_text("int", value))
    if kind is datetime:
        return _unix_seconds(value)
    raise _Fault(f"int() cannot convert {_type_name(value)}")


def _to_uint(value: Any) -> int:
    kind = value.__class__
    if kind is float:
        if not math.isfinite(value):
            raise _Fault(f"uint(): {_format_double(value)} has no integer value")
        value = int(value)
    elif kind is str:
        value = _parse_int_text("uint", value)
    elif kind is not int:
        raise _Fault(f"uint() cannot convert {_type_name(value)}")
    if 0 <= value <= _UINT64_MAX:
        return value
    raise _Fault("uint(): value is out of range")


def _to_double(value: Any) -> float:
    kind = value.__class__
    if kind is float:
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            raise _Fault("double(): integer is too large") from None
    if kind is str:
        # Python's float() also accepts surrounding blanks and digit underscores; CEL (Go) does not.
        if value and not any(c.isspace() or c == "_" for c in value):
            try:
                return float(value)
            except ValueError:
                pass
        raise _Fault(f"double(): {value[:40]!r} is not a number")
    raise _Fault(f"double() cannot convert {_type_name(value)}")


def _unix_seconds(value: datetime) -> int:
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(seconds=1)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# Go layouts Inngest's date() tries after RFC 3339 (RFC 1123/822/850 are covered by parsedate_to_datetime).
_DATE_LAYOUTS: Final = ("%a %b %d %H:%M:%S %Y", "%a %b %d %H:%M:%S %Z %Y", "%a %b %d %H:%M:%S %z %Y")


def _parse_date(text: str) -> datetime:
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        pass
    try:
        return _aware(parsedate_to_datetime(text))
    except (TypeError, ValueError, IndexError):
        pass
    for layout in _DATE_LAYOUTS:
        try:
            return _aware(datetime.strptime(text, layout))
        except ValueError:
            continue
    raise _Fault(f"date(): cannot read {text[:60]!r} as a date")


def _date_from_number(number: int) -> datetime:
    # Inngest's dateutil.ParseInt: seconds, milliseconds or nanoseconds since the epoch, chosen by magnitude.
    if number < 946_684_800:
        raise _Fault("date(): integers before 2000-01-01 (946684800) are not read as dates")
    try:
        if number < 9_999_999_999:
            return _EPOCH + timedelta(seconds=number)
        if number < 9_999_999_999_999:
            return _EPOCH + timedelta(milliseconds=number)
        return _EPOCH + timedelta(microseconds=number // 1000)
    except OverflowError:
        raise _Fault("date(): timestamp is out of range") from None


def _date(value: Any) -> datetime | None:
    kind = value.__class__
    if kind is str:
        return _parse_date(value)
    if kind is int:
        return _date_from_number(value)
    if kind is float:
        if not math.isfinite(value):
            raise _Fault("date(): not a finite number")
        return _date_from_number(int(value))
    if kind is datetime:
        return _aware(value)
    if value is None:
        return None
    raise _Fault(f"date() needs a string or a number, got {_type_name(value)}")


def _timestamp(value: Any) -> datetime:
    kind = value.__class__
    if kind is str:
        try:
            return _aware(datetime.fromisoformat(value))
        except ValueError:
            raise _Fault(f"timestamp(): {value[:60]!r} is not an RFC 3339 timestamp") from None
    if kind is int:
        try:
            return _EPOCH + timedelta(seconds=value)
        except OverflowError:
            raise _Fault("timestamp(): out of range") from None
    if kind is datetime:
        return _aware(value)
    raise _Fault(f"timestamp() cannot convert {_type_name(value)}")


_DURATION_UNITS: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
    "d": 86_400 * 1_000_000_000,
    "w": 7 * 86_400 * 1_000_000_000,
}


def _parse_duration(text: str) -> timedelta:
    """Go's time.ParseDuration plus `d` and `w` units, as Inngest's str2duration reads now_plus('1d')."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return timedelta(0)
    total = 0
    i, n = 0, len(body)
    if n == 0 or n > 100:
        raise _Fault(f"invalid duration {text[:40]!r}")
    while i < n:
        j = i
        while j < n and body[j] in _DIGITS:
            j += 1
        whole = body[i:j]
        fraction = ""
        if j < n and body[j] == ".":
            k = j + 1
            while k < n and body[k] in _DIGITS:
                k += 1
            fraction = body[j + 1 : k]
            j = k
        k = j
        while k < n and body[k] not in _DIGITS and body[k] != ".":
            k += 1
        scale = _DURATION_UNITS.get(body[j:k])
        if (not whole and not fraction) or scale is None:
            raise _Fault(f"invalid duration {text[:40]!r} (use units like 30s, 15m, 2h, 1d)")
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        i = k
    if total > _INT64_MAX:
        raise _Fault(f"duration {text[:40]!r} is out of range")
    nanos = -total if text.startswith("-") else total
    return timedelta(microseconds=nanos // 1000)


def _duration(value: Any) -> timedelta:
    if type(value) is timedelta:
        return value
    if type(value) is str:
        return _parse_duration(value)
    raise _Fault(f"duration() needs a string like '90s', got {_type_name(value)}")


def _shift(now: datetime, amount: Any, sign: int) -> datetime:
    if type(amount) is str:
        delta = _parse_duration(amount)
    elif type(amount) is timedelta:
        delta = amount
    else:
        raise _Fault(f"now_plus()/now_minus() need a duration string like '1h', got {_type_name(amount)}")
    try:
        return now + delta * sign
    except OverflowError:
        raise _Fault("time is out of range") from None


def _now(now: datetime) -> datetime:
    return now


def _now_plus(now: datetime, amount: Any) -> datetime:
    return _shift(now, amount, 1)


def _now_minus(now: datetime, amount: Any) -> datetime:
    return _shift(now, amount, -1)


def _identity(value: Any) -> Any:
    return value


def _global_matches(target: Any, pattern: Any) -> bool:
    return _matches(target, pattern)


_GLOBALS: Final = {
    "size": _Function((1,), _size),
    "lowercase": _Function((1,), _lowercase),
    "uppercase": _Function((1,), _uppercase),
    "json_parse": _Function((1,), _json_parse),
    "string": _Function((1,), _to_string),
    "int": _Function((1,), _to_int),
    "uint": _Function((1,), _to_uint),
    "double": _Function((1,), _to_double),
    "dyn": _Function((1,), _identity),
    "date": _Function((1,), _date),
    "timestamp": _Function((1,), _timestamp),
    "duration": _Function((1,), _duration),
    "matches": _Function((2,), _global_matches),
    "now": _Function((0,), _now, needs_now=True),
    "now_plus": _Function((1,), _now_plus, needs_now=True),
    "now_minus": _Function((1,), _now_minus, needs_now=True),
}

_METHODS: Final = {
    "size": _Function((0,), _size),
    "startsWith": _Function((1,), _starts_with),
    "endsWith": _Function((1,), _ends_with),
    "contains": _Function((1,), _contains),
    "matches": _Function((1,), _matches),
}

_MACROS: Final = frozenset({"all", "exists", "exists_one", "filter", "map"})


# ------------------------------------------------------------------------------------------------------
# Parser

_BINDING: Final = {
    "?": 1,
    "||": 2,
    "&&": 3,
    "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4,
    "+": 5, "-": 5,
    "*": 6, "/": 6, "%": 6,
}  # fmt: skip


class _Parser:
    """Pratt parser for CEL's grammar; also resolves names, so unknown variables and functions are syntax
    errors with a position. Recursion is bounded by MAX_DEPTH."""

    def __init__(self, source: str, tokens: list[_Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.scope: list[str] = []

    def parse(self) -> Node:
        node = self._expr(0)
        token = self.tokens[self.pos]
        if token.kind != "eof":
            raise self._error(
                token, f"expected an operator or the end of the expression, found {_describe(token)}"
            )
        return node

    def _error(self, token: _Token, reason: str) -> errors.ExpressionSyntaxError:
        return _syntax_error(self.source, token.pos, reason)

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._error(self.tokens[self.pos], f"expression nests more than {MAX_DEPTH} levels deep")

    def _expect(self, kind: str) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != kind:
            raise self._error(token, f"expected `{kind}`, found {_describe(token)}")
        self.pos += 1
        return token

    def _expr(self, min_binding: int) -> Node:
        self._enter()
        left = self._unary()
        while True:
            kind = self.tokens[self.pos].kind
            binding = _BINDING.get(kind)
            if binding is None or binding <= min_binding:
                break
            self.pos += 1
            if kind == "?":
                then = self._expr(1)
                self._expect(":")
                left = Conditional(left, then, self._expr(0))
            elif kind == "&&":
                right = self._expr(binding)
                left = And(_terms(left, And) + _terms(right, And))
            elif kind == "||":
                right = self._expr(binding)
                left = Or(_terms(left, Or) + _terms(right, Or))
            else:
                left = Binary(kind, left, self._expr(binding))
        self.depth -= 1
        return left

    def _unary(self) -> Node:
        token = self.tokens[self.pos]
        if token.kind == "!":
            self.pos += 1
            self._enter()
            operand = self._unary()
            self.depth -= 1
            return Unary("!", operand)
        if token.kind == "-":
            self.pos += 1
            following = self.tokens[self.pos]
            if following.kind == "int" and following.value == _INT64_MAX + 1:
                self.pos += 1  # -9223372036854775808 is in range although its magnitude is not
                return self._postfix(Literal(-following.value))
            self._enter()
            operand = self._unary()
            self.depth -= 1
            if type(operand) is Literal and type(operand.value) in (int, float):
                if operand.value == _INT64_MIN:
                    raise self._error(token, "integer literal is out of range")
                return Literal(-operand.value)  # fold, so "-1" is a literal everywhere (equality_literals)
            return Unary("-", operand)
        return self._postfix(self._primary())

    def _primary(self) -> Node:
        token = self.tokens[self.pos]
        kind = token.kind
        self.pos += 1
        if kind in ("string", "double", "uint", "literal"):
            return Literal(token.value)
        if kind == "int":
            if token.value > _INT64_MAX:
                raise self._error(token, "integer literal is out of range")
            return Literal(token.value)
        if kind == "ident":
            if self.tokens[self.pos].kind == "(":
                self.pos += 1
                return self._call(token)
            name = token.value
            if name not in VARIABLES and name not in self.scope:
                raise self._error(
                    token, f"unknown variable `{name}` (expressions can use {', '.join(VARIABLES)})"
                )
            return Ident(name)
        if kind == "(":
            node = self._expr(0)
            self._expect(")")
            return node
        if kind == "[":
            return ListExpr(tuple(self._sequence("]")))
        if kind == "{":
            return MapExpr(tuple(self._entries()))
        if kind == "reserved":
            raise self._error(token, f"`{token.value}` is a reserved word")
        self.pos -= 1
        raise self._error(token, f"expected a value, found {_describe(token)}")

    def _postfix(self, node: Node) -> Node:
        while True:
            token = self.tokens[self.pos]
            if token.kind == ".":
                self.pos += 1
                name = self.tokens[self.pos]
                if name.kind == "reserved":
                    raise self._error(
                        name, f"`{name.value}` is a reserved word; write ['{name.value}'] instead"
                    )
                if name.kind != "ident":
                    raise self._error(name, f"expected a field name after `.`, found {_describe(name)}")
                self.pos += 1
                if self.tokens[self.pos].kind == "(":
                    self.pos += 1
                    node = self._method(node, name)
                else:
                    node = Select(node, name.value)
            elif token.kind == "[":
                self.pos += 1
                index = self._expr(0)
                self._expect("]")
                node = Index(node, index)
            else:
                return node

    def _sequence(self, close: str) -> list[Node]:
        items: list[Node] = []
        while self.tokens[self.pos].kind != close:
            items.append(self._expr(0))
            if self.tokens[self.pos].kind != ",":
                break
            self.pos += 1
        self._expect(close)
        return items

    def _entries(self) -> list[tuple[Node, Node]]:
        entries: list[tuple[Node, Node]] = []
        while self.tokens[self.pos].kind != "}":
            key = self._expr(0)
            self._expect(":")
            entries.append((key, self._expr(0)))
            if self.tokens[self.pos].kind != ",":
                break
            self.pos += 1
        self._expect("}")
        return entries

    def _call(self, token: _Token) -> Node:
        name = token.value
        if name == "has":
            args = self._sequence(")")
            if len(args) != 1 or type(args[0]) is not Select:
                raise self._error(token, "has() takes one field selection, like has(event.data.user)")
            return Has(args[0])
        function = _GLOBALS.get(name)
        if function is None:
            raise self._error(token, f"unknown function `{name}()`")
        args = self._sequence(")")
        self._check_call(token, name, function, args, pattern_at=1)
        return Call(name, tuple(args))

    def _method(self, target: Node, token: _Token) -> Node:
        name = token.value
        if name in _MACROS:
            return self._macro(target, token)
        function = _METHODS.get(name)
        if function is None:
            raise self._error(token, f"unknown method `.{name}()`")
        args = self._sequence(")")
        self._check_call(token, name, function, args, pattern_at=0)
        return Method(target, name, tuple(args))

    def _check_call(
        self, token: _Token, name: str, function: _Function, args: list[Node], *, pattern_at: int
    ) -> None:
        if len(args) not in function.arity:
            wanted = " or ".join(str(a) for a in function.arity)
            raise self._error(token, f"{name}() takes {wanted} argument(s), got {len(args)}")
        if name == "matches":
            pattern = args[pattern_at]
            if type(pattern) is Literal and type(pattern.value) is str:
                try:
                    _regex(pattern.value)
                except _Fault as exc:
                    raise self._error(token, str(exc)) from None

    def _macro(self, target: Node, token: _Token) -> Node:
        kind = token.value
        var = self.tokens[self.pos]
        if var.kind != "ident" or self.tokens[self.pos + 1].kind != ",":
            raise self._error(var, f"{kind}() takes a variable name and an expression, like {kind}(x, x > 0)")
        if var.value in VARIABLES:
            raise self._error(var, f"`{var.value}` cannot be the variable of {kind}(); pick another name")
        self.pos += 2
        self.scope.append(var.value)
        args = self._sequence(")")
        self.scope.pop()
        if kind == "map" and len(args) in (1, 2):
            predicate = args[0] if len(args) == 2 else None
            return Macro(kind, target, var.value, predicate, args[-1])
        if kind != "map" and len(args) == 1:
            return Macro(kind, target, var.value, args[0], None)
        raise self._error(token, f"{kind}() takes {'2 or 3' if kind == 'map' else '2'} arguments")


def _terms(node: Node, kind: type[And] | type[Or]) -> tuple[Node, ...]:
    if isinstance(node, kind):
        return node.terms
    return (node,)


# ------------------------------------------------------------------------------------------------------
# Value semantics


_NUMBER: Final = frozenset({int, float})
_ORDERED: Final = frozenset({int, float, str, bool, bytes, datetime, timedelta})


def _eq(a: Any, b: Any) -> bool:
    """Loose equality: numbers compare by value across int and double, other types only with themselves."""
    ta = a.__class__
    tb = b.__class__
    if ta is tb:
        if ta is list or ta is tuple:
            return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            return _map_eq(a, b)
        return bool(a == b)
    if ta in _NUMBER and tb in _NUMBER:
        return bool(a == b)
    if ta in (list, tuple) and tb in (list, tuple):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return _map_eq(a, b)  # pyright: ignore[reportUnknownArgumentType]
    return False


def _map_eq(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    for key, value in a.items():
        if key not in b or not _eq(value, b[key]):
            return False
    return True


def _comparable(a: Any, b: Any) -> bool:
    ta = a.__class__
    tb = b.__class__
    if ta is tb:
        return ta in _ORDERED
    return ta in _NUMBER and tb in _NUMBER


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def run(a: Any, b: Any) -> bool:
        if not _comparable(a, b):
            return False  # incompatible types are simply not ordered (Inngest's loose comparisons)
        try:
            return compare(a, b)
        except TypeError:  # e.g. an aware and a naive datetime supplied by a caller
            return False

    return run


_COMPARE: Final = {
    "<": _ordering(operator.lt),
    "<=": _ordering(operator.le),
    ">": _ordering(operator.gt),
    ">=": _ordering(operator.ge),
}
_FLIPPED: Final = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _truthy_operand(value: Any) -> bool:
    """How &&, ||, !, ?: and macro predicates read a value (Inngest's JS-like coercion)."""
    if value is None:
        return False
    kind = value.__class__
    if kind is bool:
        return value
    if kind is str:
        return value != ""
    if kind is int or kind is float:
        return value != 0
    return True


def _add(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta is int and tb is int:
        return _check_int(a + b)
    if ta is str and tb is str:
        return a + b
    if ta in _NUMBER and tb in _NUMBER:
        return _float(a) + _float(b)
    if a is None:
        return b  # a missing operand leaves the other one (Inngest treats unknown + x as x)
    if b is None:
        return a
    if ta in (list, tuple) and tb in (list, tuple):
        return [*a, *b]
    if ta is str and tb in _STRINGABLE:
        return a + _to_string(b)
    if tb is str and ta in _STRINGABLE:
        return _to_string(a) + b
    if ta is datetime and tb is timedelta:
        return _time_op(operator.add, a, b)
    if ta is timedelta and (tb is datetime or tb is timedelta):
        return _time_op(operator.add, a, b)
    raise _Fault(f"cannot add {_type_name(a)} and {_type_name(b)}")


_STRINGABLE: Final = frozenset({int, float, bool, datetime, timedelta})


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        raise _Fault("integer is too large for a double") from None


def _time_op(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    try:
        return op(a, b)
    except (OverflowError, TypeError) as exc:
        raise _Fault(f"time arithmetic failed: {exc}") from None


def _sub(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta is int and tb is int:
        return _check_int(a - b)
    if ta in _NUMBER and tb in _NUMBER:
        return _float(a) - _float(b)
    if (ta is datetime and tb in (datetime, timedelta)) or (ta is timedelta and tb is timedelta):
        return _time_op(operator.sub, a, b)
    raise _Fault(f"cannot subtract {_type_name(b)} from {_type_name(a)}")


def _mul(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta is int and tb is int:
        return _check_int(a * b)
    if ta in _NUMBER and tb in _NUMBER:
        return _float(a) * _float(b)
    raise _Fault(f"cannot multiply {_type_name(a)} by {_type_name(b)}")


def _div(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta in _NUMBER and tb in _NUMBER:
        if b == 0:
            raise _Fault("division by zero")
        if ta is int and tb is int:
            quotient = abs(a) // abs(b)  # CEL (Go) truncates toward zero; Python's // floors
            return _check_int(-quotient if (a < 0) != (b < 0) else quotient)
        return _float(a) / _float(b)
    raise _Fault(f"cannot divide {_type_name(a)} by {_type_name(b)}")


def _mod(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta in _NUMBER and tb in _NUMBER:
        if b == 0:
            raise _Fault("modulus by zero")
        if ta is int and tb is int:
            remainder = abs(a) % abs(b)  # sign follows the dividend, as in Go
            return -remainder if a < 0 else remainder
        return math.fmod(_float(a), _float(b))
    raise _Fault(f"cannot take {_type_name(a)} modulo {_type_name(b)}")


def _negate(value: Any) -> Any:
    kind = value.__class__
    if kind is int:
        return _check_int(-value)
    if kind is float:
        return -value
    if kind is timedelta:
        return -value
    raise _Fault(f"cannot negate {_type_name(value)}")


_ARITHMETIC: Final = {"+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod}


def _in(value: Any, container: Any) -> bool:
    if container is None:
        return False  # membership in a missing list is false
    kind = container.__class__
    if kind is list or kind is tuple:
        if type(value) is str:
            return value in container
        return any(_eq(value, item) for item in container)
    if isinstance(container, Mapping):
        if type(value) is str:
            return value in container
        return any(_eq(value, key) for key in container)  # pyright: ignore[reportUnknownVariableType]
    raise _Fault(f"`in` needs a list or a map on its right, got {_type_name(container)}")


def _select(value: Any, name: str) -> Any:
    try:
        return value.get(name)
    except AttributeError:  # null, a string, a list, a number: no such field
        return None


def _index(value: Any, key: Any) -> Any:
    if value is None:
        return None
    kind = value.__class__
    if kind is list or kind is tuple:
        key_kind = key.__class__
        if key_kind is float and key.is_integer():
            key = int(key)
        elif key_kind is not int:
            return None
        return value[key] if 0 <= key < len(value) else None
    if isinstance(value, Mapping):
        try:
            return cast("Mapping[Any, Any]", value).get(key)
        except TypeError:  # unhashable key
            return None
    return None


def _has(value: Any, name: str) -> bool:
    return isinstance(value, Mapping) and name in value


def _iterable(value: Any, macro: str) -> Sequence[Any]:
    kind = value.__class__
    if kind is list or kind is tuple:
        return value  # pyright: ignore[reportUnknownVariableType]
    if value is None:
        return ()  # a missing list has no elements
    if isinstance(value, Mapping):
        return list(value)  # pyright: ignore[reportUnknownArgumentType]
    raise _Fault(f"{macro}() needs a list or a map, got {_type_name(value)}")


def _spend(scope: Scope, steps: int) -> None:
    budget = scope[_BUDGET]
    budget[0] -= steps
    if budget[0] < 0:
        raise _Fault(f"expression takes more than {MAX_STEPS} macro steps")


# ------------------------------------------------------------------------------------------------------
# Compilation to closures


def _compile(node: Node) -> Evaluator:
    match node:
        case Literal(value=value):
            return lambda scope: value
        case Ident(name=name):
            return lambda scope: scope.get(name)
        case Select():
            return _compile_select(node)
        case Index():
            return _compile_index(node)
        case Has(operand=Select(operand=parent, name=name)):
            read = _compile(parent)
            return lambda scope: _has(read(scope), name)
        case Unary(op="!", operand=operand):
            return _compile_not(_compile(operand))
        case Unary(operand=operand):
            read = _compile(operand)
            return lambda scope: _negate(read(scope))
        case Binary():
            return _compile_binary(node)
        case And(terms=terms):
            return _compile_and(tuple(_compile(t) for t in terms))
        case Or(terms=terms):
            return _compile_or(tuple(_compile(t) for t in terms))
        case Conditional():
            return _compile_conditional(node)
        case ListExpr(items=items):
            return _compile_list(items)
        case MapExpr(entries=entries):
            return _compile_map(entries)
        case Call():
            return _compile_call(_GLOBALS[node.function], node.args, None)
        case Method():
            return _compile_call(_METHODS[node.function], node.args, node.target)
        case Macro():
            return _compile_macro(node)


def _compile_select(node: Select) -> Evaluator:
    path: list[str] = []
    current: Node = node
    while type(current) is Select:
        path.append(current.name)
        current = current.operand
    path.reverse()
    if type(current) is Ident:
        return _compile_path(current.name, tuple(path))
    read = _compile(current)

    def walk(scope: Scope) -> Any:
        value = read(scope)
        for name in path:
            value = _select(value, name)
        return value

    return walk


def _compile_path(root: str, path: tuple[str, ...]) -> Evaluator:
    """`event.data.plan` as one closure: JSON objects have .get, anything else ends the path as null."""
    if len(path) == 1:
        (k0,) = path

        def path1(scope: Scope) -> Any:
            try:
                return scope.get(root).get(k0)  # pyright: ignore[reportOptionalMemberAccess]
            except AttributeError:
                return None

        return path1
    if len(path) == 2:
        k0, k1 = path

        def path2(scope: Scope) -> Any:
            try:
                return scope.get(root).get(k0).get(k1)  # pyright: ignore[reportOptionalMemberAccess]
            except AttributeError:
                return None

        return path2
    if len(path) == 3:
        k0, k1, k2 = path

        def path3(scope: Scope) -> Any:
            try:
                return scope.get(root).get(k0).get(k1).get(k2)  # pyright: ignore[reportOptionalMemberAccess]
            except AttributeError:
                return None

        return path3

    def path_n(scope: Scope) -> Any:
        value = scope.get(root)
        try:
            for name in path:
                value = value.get(name)  # pyright: ignore[reportOptionalMemberAccess]
        except AttributeError:
            return None
        return value

    return path_n


def _compile_index(node: Index) -> Evaluator:
    read = _compile(node.operand)
    if type(node.index) is Literal and type(node.index.value) is str:
        key = node.index.value
        return lambda scope: _select(read(scope), key)
    read_key = _compile(node.index)
    return lambda scope: _index(read(scope), read_key(scope))


def _compile_not(read: Evaluator) -> Evaluator:
    def negation(scope: Scope) -> bool:
        value = read(scope)
        if value is True:
            return False
        if value is False:
            return True
        return not _truthy_operand(value)

    return negation


def _compile_binary(node: Binary) -> Evaluator:
    op, left, right = node.op, node.left, node.right
    if op in ("==", "!="):
        if isinstance(right, Literal):
            return _compile_equals_constant(_compile(left), right.value, op == "!=")
        if isinstance(left, Literal):
            return _compile_equals_constant(_compile(right), left.value, op == "!=")
        read_left, read_right = _compile(left), _compile(right)
        if op == "==":
            return lambda scope: _eq(read_left(scope), read_right(scope))
        return lambda scope: not _eq(read_left(scope), read_right(scope))
    if op in _COMPARE:
        if type(right) is Literal and type(right.value) in (int, float, str):
            return _compile_compare_constant(op, _compile(left), right.value)
        if type(left) is Literal and type(left.value) in (int, float, str):
            return _compile_compare_constant(_FLIPPED[op], _compile(right), left.value)
        compare = _COMPARE[op]
        read_left, read_right = _compile(left), _compile(right)
        return lambda scope: compare(read_left(scope), read_right(scope))
    if op == "in":
        return _compile_in(_compile(left), right)
    arithmetic = _ARITHMETIC[op]
    read_left, read_right = _compile(left), _compile(right)
    return lambda scope: arithmetic(read_left(scope), read_right(scope))


def _compile_equals_constant(read: Evaluator, constant: Any, negate: bool) -> Evaluator:
    """Fast paths for `x == 'pro'` and friends; each is exactly _eq against that constant."""
    kind = constant.__class__
    if constant is None or kind is bool:
        if negate:
            return lambda scope: read(scope) is not constant
        return lambda scope: read(scope) is constant
    if kind is str:
        if negate:
            return lambda scope: read(scope) != constant
        return lambda scope: read(scope) == constant
    if kind is int or kind is float:

        def equals_number(scope: Scope) -> bool:
            value = read(scope)
            return value == constant and type(value) is not bool

        if negate:
            return lambda scope: not equals_number(scope)
        return equals_number
    if negate:
        return lambda scope: not _eq(read(scope), constant)
    return lambda scope: _eq(read(scope), constant)


def _compile_compare_constant(op: str, read: Evaluator, constant: Any) -> Evaluator:
    compare: Callable[[Any, Any], bool] = {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }[op]
    if type(constant) is str:

        def compare_string(scope: Scope) -> bool:
            value = read(scope)
            return type(value) is str and compare(value, constant)

        return compare_string

    def compare_number(scope: Scope) -> bool:
        value = read(scope)
        kind = value.__class__
        return (kind is int or kind is float) and compare(value, constant)

    return compare_number


def _compile_in(read: Evaluator, container: Node) -> Evaluator:
    constants = _constants(container.items) if isinstance(container, ListExpr) else None
    if constants is not None:
        values = tuple(constants)
        if all(type(v) is str for v in values):
            strings = frozenset(values)

            def in_strings(scope: Scope) -> bool:
                value = read(scope)
                return type(value) is str and value in strings

            return in_strings
        return lambda scope: _in(read(scope), values)
    read_container = _compile(container)
    return lambda scope: _in(read(scope), read_container(scope))


def _compile_and(terms: tuple[Evaluator, ...]) -> Evaluator:
    def conjunction(scope: Scope) -> bool:
        failure: Exception | None = None
        for term in terms:
            try:
                value = term(scope)
            except Exception as exc:  # CEL: an error is absorbed if another term is false
                if failure is None:
                    failure = exc
                continue
            if value is not True and (value is False or not _truthy_operand(value)):
                return False
        if failure is not None:
            raise failure
        return True

    return conjunction


def _compile_or(terms: tuple[Evaluator, ...]) -> Evaluator:
    def disjunction(scope: Scope) -> bool:
        failure: Exception | None = None
        for term in terms:
            try:
                value = term(scope)
            except Exception as exc:  # CEL: an error is absorbed if another term is true
                if failure is None:
                    failure = exc
                continue
            if value is True or (value is not False and _truthy_operand(value)):
                return True
        if failure is not None:
            raise failure
        return False

    return disjunction


def _compile_conditional(node: Conditional) -> Evaluator:
    condition, then, otherwise = _compile(node.condition), _compile(node.then), _compile(node.otherwise)

    def conditional(scope: Scope) -> Any:
        value = condition(scope)
        if value is True or (value is not False and _truthy_operand(value)):
            return then(scope)
        return otherwise(scope)

    return conditional


def _constants(items: tuple[Node, ...]) -> list[Any] | None:
    """The values of `items` if every one is a Literal, else None."""
    values: list[Any] = []
    for item in items:
        if not isinstance(item, Literal):
            return None
        values.append(item.value)
    return values


def _compile_list(items: tuple[Node, ...]) -> Evaluator:
    constants = _constants(items)
    if constants is not None:
        values = tuple(constants)
        return lambda scope: list(values)
    reads = tuple(_compile(item) for item in items)
    return lambda scope: [read(scope) for read in reads]


_MAP_KEYS: Final = frozenset({str, int, bool})


def _compile_map(entries: tuple[tuple[Node, Node], ...]) -> Evaluator:
    reads = tuple((_compile(key), _compile(value)) for key, value in entries)

    def build(scope: Scope) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for read_key, read_value in reads:
            key = read_key(scope)
            if type(key) not in _MAP_KEYS:
                raise _Fault(f"map keys must be strings, integers or booleans, got {_type_name(key)}")
            if key in out:
                raise _Fault(f"duplicate map key {key!r}")
            out[key] = read_value(scope)
        return out

    return build


def _compile_call(function: _Function, args: tuple[Node, ...], target: Node | None) -> Evaluator:
    impl = function.impl
    if impl is _matches or impl is _global_matches:
        pattern = args[-1]
        if type(pattern) is Literal and type(pattern.value) is str:
            regex = _regex(pattern.value)  # validated by the parser already
            subject = _compile(target if target is not None else args[0])

            def match_literal(scope: Scope) -> bool:
                value = subject(scope)
                if value is None:
                    return False
                return regex.search(_string_arg("matches", value)) is not None

            return match_literal
    reads = tuple(_compile(n) for n in ((target, *args) if target is not None else args))
    if function.needs_now:
        if not reads:
            return lambda scope: impl(scope[_NOW])
        (read_arg,) = reads
        return lambda scope: impl(scope[_NOW], read_arg(scope))
    if len(reads) == 1:
        (read0,) = reads
        return lambda scope: impl(read0(scope))
    if len(reads) == 2:
        read0, read1 = reads
        return lambda scope: impl(read0(scope), read1(scope))
    return lambda scope: impl(*[read(scope) for read in reads])


def _compile_macro(node: Macro) -> Evaluator:
    kind, var = node.kind, node.var
    read_target = _compile(node.target)
    predicate = _compile(node.predicate) if node.predicate is not None else None
    test = predicate if predicate is not None else _compile(Literal(True))
    transform = _compile(node.transform) if node.transform is not None else _compile(Ident(var))

    def loop(scope: Scope) -> tuple[Sequence[Any], dict[str, Any]]:
        items = _iterable(read_target(scope), kind)
        _spend(scope, len(items) + 1)
        return items, dict(scope)

    def holds(inner: dict[str, Any]) -> bool:
        value = test(inner)
        return value is True or (value is not False and _truthy_operand(value))

    if kind == "all" or kind == "exists":
        wanted = kind == "exists"  # all() stops at the first false, exists() at the first true

        def quantifier(scope: Scope) -> bool:
            items, inner = loop(scope)
            failure: Exception | None = None
            for item in items:
                inner[var] = item
                try:
                    if holds(inner) is wanted:
                        return wanted
                except Exception as exc:  # absorbed like && and ||
                    if failure is None:
                        failure = exc
            if failure is not None:
                raise failure
            return not wanted

        return quantifier
    if kind == "exists_one":

        def exactly_one(scope: Scope) -> bool:
            items, inner = loop(scope)
            count = 0
            for item in items:
                inner[var] = item
                count += holds(inner)
            return count == 1

        return exactly_one
    if kind == "filter":

        def select_items(scope: Scope) -> list[Any]:
            items, inner = loop(scope)
            kept: list[Any] = []
            for item in items:
                inner[var] = item
                if holds(inner):
                    kept.append(item)
            return kept

        return select_items

    def map_items(scope: Scope) -> list[Any]:
        items, inner = loop(scope)
        out: list[Any] = []
        for item in items:
            inner[var] = item
            if predicate is None or holds(inner):
                out.append(transform(inner))
        return out

    return map_items


# ------------------------------------------------------------------------------------------------------
# Unparsing (canonical source of a syntax tree, used for substituted programs)

_OPERATOR_BINDING: Final = {op: b for op, b in _BINDING.items() if op != "?"}


def _binding(node: Node) -> int:
    if isinstance(node, Conditional):
        return 1
    if isinstance(node, Or):
        return 2
    if isinstance(node, And):
        return 3
    if isinstance(node, Binary):
        return _OPERATOR_BINDING[node.op]
    if isinstance(node, Unary):
        return 7
    if isinstance(node, Literal) and _renders_negative(node.value):
        return 7  # rendered with a leading minus
    return 8


def _renders_negative(value: Any) -> bool:
    if type(value) is int:
        return value < 0
    return type(value) is float and not math.isnan(value) and math.copysign(1.0, value) < 0


def _wrapped(node: Node, minimum: int) -> str:
    text = _unparse(node)
    return f"({text})" if _binding(node) < minimum else text


def _unparse(node: Node) -> str:
    match node:
        case Literal(value=value):
            return _literal_text(value)
        case Ident(name=name):
            return name
        case Select(operand=operand, name=name):
            return f"{_wrapped(operand, 8)}.{name}"
        case Index(operand=operand, index=index):
            return f"{_wrapped(operand, 8)}[{_unparse(index)}]"
        case Call(function=function, args=args):
            return f"{function}({', '.join(_unparse(a) for a in args)})"
        case Method(target=target, function=function, args=args):
            return f"{_wrapped(target, 8)}.{function}({', '.join(_unparse(a) for a in args)})"
        case Has(operand=operand):
            return f"has({_unparse(operand)})"
        case Unary(op=op, operand=operand):
            return f"{op}{_wrapped(operand, 7)}"
        case Binary(op=op, left=left, right=right):
            binding = _OPERATOR_BINDING[op]
            return f"{_wrapped(left, binding)} {op} {_wrapped(right, binding + 1)}"
        case And(terms=terms):
            return " && ".join(_wrapped(t, 4) for t in terms)
        case Or(terms=terms):
            return " || ".join(_wrapped(t, 3) for t in terms)
        case Conditional(condition=condition, then=then, otherwise=otherwise):
            return f"{_wrapped(condition, 2)} ? {_wrapped(then, 2)} : {_unparse(otherwise)}"
        case ListExpr(items=items):
            return f"[{', '.join(_unparse(i) for i in items)}]"
        case MapExpr(entries=entries):
            return "{" + ", ".join(f"{_unparse(k)}: {_unparse(v)}" for k, v in entries) + "}"
        case Macro(kind=kind, target=target, var=var, predicate=predicate, transform=transform):
            args = [var, *(_unparse(n) for n in (predicate, transform) if n is not None)]
            return f"{_wrapped(target, 8)}.{kind}({', '.join(args)})"


_STRING_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _literal_text(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = value.__class__
    if kind is int:
        return str(value)
    if kind is float:
        if math.isnan(value):
            return 'double("NaN")'
        if math.isinf(value):
            return 'double("Infinity")' if value > 0 else 'double("-Infinity")'
        return repr(value)
    if kind is str:
        if value.isprintable() and '"' not in value and "\\" not in value:
            return f'"{value}"'
        out = ['"']
        for ch in value:
            escaped = _STRING_ESCAPES.get(ch)
            if escaped is not None:
                out.append(escaped)
            elif ch.isprintable():
                out.append(ch)
            elif ord(ch) <= 0xFFFF:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(f"\\U{ord(ch):08x}")
        out.append('"')
        return "".join(out)
    raise TypeError(f"no literal form for {kind.__name__}")


# ------------------------------------------------------------------------------------------------------
# Tree rewriting: substitution of one variable by its value


def _rooted_path(node: Node, name: str) -> list[Node] | None:
    """The Select / constant-Index chain from Ident(name) up to `node` (outermost last), or None."""
    chain: list[Node] = []
    current = node
    while isinstance(current, Select) or (isinstance(current, Index) and isinstance(current.index, Literal)):
        chain.append(current)
        current = current.operand
    if isinstance(current, Ident) and current.name == name:
        chain.reverse()
        return chain
    return None


def _resolve(value: Any, chain: list[Node]) -> Any:
    for step in chain:
        if isinstance(step, Select):
            value = _select(value, step.name)
        elif isinstance(step, Index) and isinstance(step.index, Literal):
            value = _index(value, step.index.value)
    return value


def _value_node(value: Any, depth: int = 0) -> Node:
    """A JSON value as literal syntax: scalars become Literal, containers ListExpr / MapExpr of literals."""
    if depth > MAX_DEPTH:
        raise errors.ExpressionEvalError(f"cannot bind a value nested more than {MAX_DEPTH} levels deep")
    if value is None or type(value) in (bool, int, str):
        return Literal(value)
    if isinstance(value, bool):
        return Literal(bool(value))
    if isinstance(value, float):
        return Literal(float(value))
    if isinstance(value, int):
        return Literal(int(value))
    if isinstance(value, str):
        return Literal(str(value))
    if isinstance(value, list | tuple):
        items = cast("list[Any] | tuple[Any, ...]", value)
        return ListExpr(tuple(_value_node(item, depth + 1) for item in items))
    if isinstance(value, Mapping):
        entries: list[tuple[Node, Node]] = []
        for key, item in cast("Mapping[Any, Any]", value).items():
            if type(key) not in _MAP_KEYS:
                raise errors.ExpressionEvalError(f"cannot bind a map with a {_type_name(key)} key")
            entries.append((Literal(key), _value_node(item, depth + 1)))
        return MapExpr(tuple(entries))
    if isinstance(value, datetime):
        return Call("timestamp", (Literal(_format_timestamp(_aware(value))),))
    raise errors.ExpressionEvalError(f"cannot bind a value of type {type(value).__name__} into an expression")


def _substitute(node: Node, name: str, value: Mapping[str, Any]) -> Node:
    chain = _rooted_path(node, name)
    if chain is not None:
        return _value_node(_resolve(value, chain))
    match node:
        case Has(operand=Select(operand=parent, name=field_name)) if (
            parent_chain := _rooted_path(parent, name)
        ) is not None:
            return Literal(_has(_resolve(value, parent_chain), field_name))
        case Literal() | Ident():
            return node
        case Select(operand=operand, name=field_name):
            return Select(_substitute(operand, name, value), field_name)
        case Index(operand=operand, index=index):
            return Index(_substitute(operand, name, value), _substitute(index, name, value))
        case Call(function=function, args=args):
            return Call(function, tuple(_substitute(a, name, value) for a in args))
        case Method(target=target, function=function, args=args):
            return Method(
                _substitute(target, name, value), function, tuple(_substitute(a, name, value) for a in args)
            )
        case Has(operand=operand):
            selection = _substitute(operand, name, value)
            assert isinstance(selection, Select)  # a Select not rooted at `name` stays a Select
            return Has(selection)
        case Unary(op=op, operand=operand):
            return Unary(op, _substitute(operand, name, value))
        case Binary(op=op, left=left, right=right):
            return Binary(op, _substitute(left, name, value), _substitute(right, name, value))
        case And(terms=terms):
            return And(tuple(_substitute(t, name, value) for t in terms))
        case Or(terms=terms):
            return Or(tuple(_substitute(t, name, value) for t in terms))
        case Conditional(condition=condition, then=then, otherwise=otherwise):
            return Conditional(
                _substitute(condition, name, value),
                _substitute(then, name, value),
                _substitute(otherwise, name, value),
            )
        case ListExpr(items=items):
            return ListExpr(tuple(_substitute(i, name, value) for i in items))
        case MapExpr(entries=entries):
            return MapExpr(
                tuple((_substitute(k, name, value), _substitute(v, name, value)) for k, v in entries)
            )
        case Macro(kind=kind, target=target, var=var, predicate=predicate, transform=transform):
            return Macro(
                kind,
                _substitute(target, name, value),
                var,
                None if predicate is None else _substitute(predicate, name, value),
                None if transform is None else _substitute(transform, name, value),
            )


def _dotted_path(node: Node, name: str) -> str | None:
    parts: list[str] = []
    current = node
    while True:
        if type(current) is Select:
            parts.append(current.name)
            current = current.operand
        elif (
            type(current) is Index
            and type(current.index) is Literal
            and type(current.index.value) is str
            and current.index.value
            and "." not in current.index.value
        ):
            parts.append(current.index.value)
            current = current.operand
        else:
            break
    if parts and type(current) is Ident and current.name == name:
        return ".".join(reversed(parts))
    return None


@dataclass(frozen=True, slots=True)
class _Usage:
    references: frozenset[str]
    needs_now: bool
    needs_budget: bool


def _analyse(root: Node) -> _Usage:
    references: set[str] = set()
    needs_now = False
    needs_budget = False

    def visit(node: Node, bound: frozenset[str]) -> None:
        nonlocal needs_now, needs_budget
        if type(node) is Ident:
            if node.name not in bound:
                references.add(node.name)
            return
        if type(node) is Call and _GLOBALS[node.function].needs_now:
            needs_now = True
        if type(node) is Macro:
            needs_budget = True
            visit(node.target, bound)
            inner = bound | {node.var}
            for part in (node.predicate, node.transform):
                if part is not None:
                    visit(part, inner)
            return
        for child in _children(node):
            visit(child, bound)

    visit(root, frozenset())
    return _Usage(frozenset(references), needs_now, needs_budget)


# ------------------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True, slots=True)
class Program:
    """A checked, compiled expression. Build one with compile(); evaluate it as often as needed."""

    source: str
    ast: Node
    _run: Evaluator = field(repr=False, compare=False)
    _usage: _Usage = field(repr=False, compare=False)

    def evaluate(self, variables: Mapping[str, Any], *, now: datetime | None = None) -> Any:
        """Evaluate against `variables` ({"event": ..., "async": ..., "vars": ...}).

        `now` pins now()/now_plus()/now_minus() (tests, a Clock); naive datetimes are read as UTC.
        Raises ExpressionEvalError when the expression cannot be evaluated against this input."""
        _require_mapping(variables)
        usage = self._usage
        try:
            if usage.needs_now or usage.needs_budget:
                scope = dict(variables)
                if usage.needs_now:
                    scope[_NOW] = _aware(now) if now is not None else datetime.now(UTC)
                if usage.needs_budget:
                    scope[_BUDGET] = [MAX_STEPS]
                return self._run(scope)
            return self._run(variables)
        except _Fault as exc:
            raise errors.ExpressionEvalError(f"cannot evaluate {_shown(self.source)}: {exc}") from None
        except RecursionError:
            raise errors.ExpressionEvalError(
                f"cannot evaluate {_shown(self.source)}: input is nested too deeply"
            ) from None
        except Exception as exc:
            raise errors.ExpressionEvalError(
                f"cannot evaluate {_shown(self.source)}: {type(exc).__name__}: {exc}"
            ) from exc

    def references(self) -> frozenset[str]:
        """Top-level variables the expression reads, e.g. frozenset({"event", "async"})."""
        return self._usage.references

    def substitute(self, name: str, value: Mapping[str, Any]) -> Program:
        """A new program in which every path rooted at `name` (`event.data.id`) is replaced by the literal
        value it has in `value` (missing: null), and `has()` on such paths by true/false. Values become
        literal syntax-tree nodes, so no value can change the expression's structure; `source` of the result
        is the canonical rendering of the new tree (it re-parses to the same tree unless a value exceeds
        the length or depth limits). Raises ExpressionEvalError for values that have no literal form."""
        if name not in self._usage.references:
            return self
        try:
            ast = _substitute(self.ast, name, value)
            return _program(_unparse(ast), ast)
        except RecursionError:  # depth is bounded; only reachable from an already nearly full stack
            raise errors.ExpressionEvalError(f"cannot bind `{name}` into {_shown(self.source)}") from None

    def equality_literals(self, name: str) -> list[tuple[str, Any]]:
        """(path, literal) pairs of `name.<path> == <literal>` terms of a top-level conjunction, in order.

        `async.data.id == 'u_1' && async.data.n > 2` gives [("data.id", "u_1")]. A term listed here must
        hold for the expression to be true, so the pairs can index candidates; equality is loose (1 == 1.0)
        and null also matches a missing field."""
        terms = self.ast.terms if type(self.ast) is And else (self.ast,)
        found: list[tuple[str, Any]] = []
        for term in terms:
            if type(term) is not Binary or term.op != "==":
                continue
            for side, other in ((term.left, term.right), (term.right, term.left)):
                path = _dotted_path(side, name)
                if path is not None and type(other) is Literal:
                    found.append((path, other.value))
                    break
        return found


def _require_mapping(variables: object) -> None:
    if type(variables) is not dict and not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a mapping, got {type(variables).__name__}")


def _program(source: str, ast: Node) -> Program:
    return Program(source, ast, _compile(ast), _analyse(ast))


@functools.lru_cache(maxsize=4096)
def compile(source: str) -> Program:  # shadows the builtin on purpose: the name callers code against
    """Parse and check `source`; raises ExpressionSyntaxError naming the problem and where it is."""
    if not isinstance(source, str):  # pyright: ignore[reportUnnecessaryIsInstance] - callers pass config data
        raise errors.ExpressionSyntaxError(f"an expression must be a string, got {type(source).__name__}")
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        raise _syntax_error(source, None, f"expression is {size} bytes long; the limit is {MAX_SOURCE_BYTES}")
    if not source.strip():
        raise _syntax_error(source, None, "expression is empty")
    try:
        ast = _Parser(source, _tokenize(source)).parse()
        if _depth(ast) > MAX_DEPTH:
            raise _syntax_error(source, None, f"expression nests more than {MAX_DEPTH} levels deep")
        return _program(source, ast)
    except RecursionError:  # only reachable when the caller's own stack is already nearly full
        raise _syntax_error(source, None, "expression nests too deeply") from None


def evaluate(source: str, variables: Mapping[str, Any], *, now: datetime | None = None) -> Any:
    """compile(source).evaluate(variables)."""
    return compile(source).evaluate(variables, now=now)


def truthy(value: Any) -> bool:
    """Whether an expression result counts as true: only the boolean true does (CEL)."""
    return value is True
