"""Built-in functions and methods (`size`, `matches`, `json_parse`, `date`, `now_plus`, ...) and
their arities."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final, cast

from pgqueue.expressions import budget, faults, lexer, limits, patterns, values
from pgqueue.expressions.faults import Fault


@dataclass(frozen=True, slots=True)
class Function:
    arity: tuple[int, ...]
    impl: Callable[..., Any]
    needs_now: bool = False


def _size(value: Any) -> int:
    kind = value.__class__
    if kind is str or kind is list or kind is tuple or kind is dict or kind is bytes:
        return len(value)
    if value is None:
        return 0  # a missing list or string has no elements (as in Inngest)
    if isinstance(value, Mapping):
        return len(cast("Mapping[Any, Any]", value))
    raise Fault(f"size() needs a string, list or map, got {faults.type_name(value)}")


def _starts_with(target: Any, prefix: Any) -> bool:
    if target is None:
        return False
    return values.string_arg("startsWith", target).startswith(values.string_arg("startsWith", prefix))


def _ends_with(target: Any, suffix: Any) -> bool:
    if target is None:
        return False
    return values.string_arg("endsWith", target).endswith(values.string_arg("endsWith", suffix))


def _contains(target: Any, part: Any) -> bool:
    if target is None:
        return False
    text = values.string_arg("contains", target)
    budget.spend_text(len(text))
    return values.string_arg("contains", part) in text


def matches(target: Any, pattern: Any) -> bool:
    compiled = patterns.compile_pattern(values.string_arg("matches", pattern))
    if target is None:
        return False
    return compiled.search(values.string_arg("matches", target))


def _lowercase(value: Any) -> Any:
    if value is None:
        return None
    text = values.string_arg("lowercase", value)
    budget.spend_text(len(text))
    return text.lower()


def _uppercase(value: Any) -> Any:
    if value is None:
        return None
    text = values.string_arg("uppercase", value)
    budget.spend_text(len(text))
    return text.upper()


def _json_parse(value: Any) -> Any:
    if value is None:
        return None
    try:
        text = values.string_arg("json_parse", value)
        if len(text) > limits.MAX_STRING_CHARS:
            limit = limits.MAX_STRING_CHARS
            raise budget.OverBudget(f"json_parse(): the text has {len(text)} characters, over {limit}")
        budget.spend(1 + (len(text) >> 3))  # the parsed value has at most about one element per character
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Fault(f"json_parse(): invalid JSON: {exc.msg} at character {exc.pos}") from None
    except (ValueError, RecursionError) as exc:
        raise Fault(f"json_parse(): {exc}") from None


def _parse_int_text(function: str, text: str) -> int:
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or len(body) > 20 or not (body.isascii() and body.isdigit()):
        raise Fault(f"{function}(): {text[:40]!r} is not an integer")
    return int(text)


def _to_int(value: Any) -> int:
    kind = value.__class__
    if kind is int:
        return values.check_int(value)
    if kind is float:
        if not math.isfinite(value):
            raise Fault(f"int(): {values.format_double(value)} has no integer value")
        return values.check_int(int(value))
    if kind is str:
        return values.check_int(_parse_int_text("int", value))
    if kind is datetime:
        return values.unix_seconds(value)
    raise Fault(f"int() cannot convert {faults.type_name(value)}")


def _to_uint(value: Any) -> int:
    kind = value.__class__
    if kind is float:
        if not math.isfinite(value):
            raise Fault(f"uint(): {values.format_double(value)} has no integer value")
        value = int(value)
    elif kind is str:
        value = _parse_int_text("uint", value)
    elif kind is not int:
        raise Fault(f"uint() cannot convert {faults.type_name(value)}")
    if 0 <= value <= limits.UINT64_MAX:
        return value
    raise Fault("uint(): value is out of range")


def _to_double(value: Any) -> float:
    kind = value.__class__
    if kind is float:
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            raise Fault("double(): integer is too large") from None
    if kind is str:
        # Python's float() also accepts surrounding blanks and digit underscores; CEL (Go) does not.
        if value and value.strip() == value and "_" not in value:  # (blanks inside fail float() too)
            try:
                return float(value)
            except ValueError:
                pass
        raise Fault(f"double(): {value[:40]!r} is not a number")
    raise Fault(f"double() cannot convert {faults.type_name(value)}")


# Go layouts Inngest's date() tries after RFC 3339 (RFC 1123/822/850 are covered by parsedate_to_datetime).
_DATE_LAYOUTS: Final = ("%a %b %d %H:%M:%S %Y", "%a %b %d %H:%M:%S %Z %Y", "%a %b %d %H:%M:%S %z %Y")


def _parse_date(text: str) -> datetime:
    try:
        return values.aware(datetime.fromisoformat(text))
    except ValueError:
        pass
    try:
        return values.aware(parsedate_to_datetime(text))
    except (TypeError, ValueError, IndexError):
        pass
    for layout in _DATE_LAYOUTS:
        try:
            return values.aware(datetime.strptime(text, layout))
        except ValueError:
            continue
    raise Fault(f"date(): cannot read {text[:60]!r} as a date")


def _date_from_number(number: int) -> datetime:
    # Inngest's dateutil.ParseInt: seconds, milliseconds or nanoseconds since the epoch, chosen by magnitude.
    if number < 946_684_800:
        raise Fault("date(): integers before 2000-01-01 (946684800) are not read as dates")
    try:
        if number < 9_999_999_999:
            return values.EPOCH + timedelta(seconds=number)
        if number < 9_999_999_999_999:
            return values.EPOCH + timedelta(milliseconds=number)
        return values.EPOCH + timedelta(microseconds=number // 1000)
    except OverflowError:
        raise Fault("date(): timestamp is out of range") from None


def _date(value: Any) -> datetime | None:
    kind = value.__class__
    if kind is str:
        return _parse_date(value)
    if kind is int:
        return _date_from_number(value)
    if kind is float:
        if not math.isfinite(value):
            raise Fault("date(): not a finite number")
        return _date_from_number(int(value))
    if kind is datetime:
        return values.aware(value)
    if value is None:
        return None
    raise Fault(f"date() needs a string or a number, got {faults.type_name(value)}")


def _timestamp(value: Any) -> datetime:
    kind = value.__class__
    if kind is str:
        try:
            return values.aware(datetime.fromisoformat(value))
        except ValueError:
            raise Fault(f"timestamp(): {value[:60]!r} is not an RFC 3339 timestamp") from None
    if kind is int:
        try:
            return values.EPOCH + timedelta(seconds=value)
        except OverflowError:
            raise Fault("timestamp(): out of range") from None
    if kind is datetime:
        return values.aware(value)
    raise Fault(f"timestamp() cannot convert {faults.type_name(value)}")


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
        raise Fault(f"invalid duration {text[:40]!r}")
    while i < n:
        j = i
        while j < n and body[j] in lexer.DIGITS:
            j += 1
        whole = body[i:j]
        fraction = ""
        if j < n and body[j] == ".":
            k = j + 1
            while k < n and body[k] in lexer.DIGITS:
                k += 1
            fraction = body[j + 1 : k]
            j = k
        k = j
        while k < n and body[k] not in lexer.DIGITS and body[k] != ".":
            k += 1
        scale = _DURATION_UNITS.get(body[j:k])
        if (not whole and not fraction) or scale is None:
            raise Fault(f"invalid duration {text[:40]!r} (use units like 30s, 15m, 2h, 1d)")
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        i = k
    if total > limits.INT64_MAX:
        raise Fault(f"duration {text[:40]!r} is out of range")
    nanos = -total if text.startswith("-") else total
    return timedelta(microseconds=nanos // 1000)


def _duration(value: Any) -> timedelta:
    if type(value) is timedelta:
        return value
    if type(value) is str:
        return _parse_duration(value)
    raise Fault(f"duration() needs a string like '90s', got {faults.type_name(value)}")


def _shift(now: datetime, amount: Any, sign: int) -> datetime:
    if type(amount) is str:
        delta = _parse_duration(amount)
    elif type(amount) is timedelta:
        delta = amount
    else:
        raise Fault(
            f"now_plus()/now_minus() need a duration string like '1h', got {faults.type_name(amount)}"
        )
    try:
        return now + delta * sign
    except OverflowError:
        raise Fault("time is out of range") from None


def _now(now: datetime) -> datetime:
    return now


def _now_plus(now: datetime, amount: Any) -> datetime:
    return _shift(now, amount, 1)


def _now_minus(now: datetime, amount: Any) -> datetime:
    return _shift(now, amount, -1)


def _identity(value: Any) -> Any:
    return value


def global_matches(target: Any, pattern: Any) -> bool:
    return matches(target, pattern)


GLOBALS: Final = {
    "size": Function((1,), _size),
    "lowercase": Function((1,), _lowercase),
    "uppercase": Function((1,), _uppercase),
    "json_parse": Function((1,), _json_parse),
    "string": Function((1,), values.to_string),
    "int": Function((1,), _to_int),
    "uint": Function((1,), _to_uint),
    "double": Function((1,), _to_double),
    "dyn": Function((1,), _identity),
    "date": Function((1,), _date),
    "timestamp": Function((1,), _timestamp),
    "duration": Function((1,), _duration),
    "matches": Function((2,), global_matches),
    "now": Function((0,), _now, needs_now=True),
    "now_plus": Function((1,), _now_plus, needs_now=True),
    "now_minus": Function((1,), _now_minus, needs_now=True),
}

METHODS: Final = {
    "size": Function((0,), _size),
    "startsWith": Function((1,), _starts_with),
    "endsWith": Function((1,), _ends_with),
    "contains": Function((1,), _contains),
    "matches": Function((1,), matches),
}

MACROS: Final = frozenset({"all", "exists", "exists_one", "filter", "map"})
