"""Value semantics: Inngest's loose equality and ordering, arithmetic, truthiness, field and index access,
and the string forms of doubles, timestamps and durations."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from pgqueue.expressions import budget, faults, limits
from pgqueue.expressions.faults import Fault


def check_int(value: int) -> int:
    if limits.INT64_MIN <= value <= limits.INT64_MAX:
        return value
    raise Fault("integer overflow")


def string_arg(function: str, value: Any) -> str:
    if type(value) is str:
        return value
    raise Fault(f"{function}() needs a string argument, got {faults.type_name(value)}")


def format_double(value: float) -> str:
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


def format_timestamp(value: datetime) -> str:
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


def to_string(value: Any) -> str:
    kind = value.__class__
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return format_double(value)
    if kind is datetime:
        return format_timestamp(value)
    if kind is timedelta:
        return _format_duration(value)
    if kind is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise Fault("string(): bytes are not valid UTF-8") from None
    raise Fault(f"string() cannot convert {faults.type_name(value)}")


def unix_seconds(value: datetime) -> int:
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(seconds=1)


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAP_KEYS: Final = frozenset({str, int, bool})
"""Types a map key may have (CEL allows string, int, uint and bool keys)."""

_NUMBER: Final = frozenset({int, float})
_ORDERED: Final = frozenset({int, float, str, bool, bytes, datetime, timedelta})


def eq(a: Any, b: Any) -> bool:
    """Loose equality: numbers compare by value across int and double, other types only with themselves."""
    ta = a.__class__
    tb = b.__class__
    if ta is tb:
        if ta is str:
            if len(a) == len(b):  # strings of different lengths differ at once
                budget.spend_text(len(a))
            return bool(a == b)
        if ta is list or ta is tuple:
            return _list_eq(a, b)
        if ta is dict:
            return _map_eq(a, b)
        return bool(a == b)
    if ta in _NUMBER and tb in _NUMBER:
        return bool(a == b)
    if ta in (list, tuple) and tb in (list, tuple):
        return _list_eq(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return _map_eq(a, b)  # pyright: ignore[reportUnknownArgumentType]
    return False


def _list_eq(a: Sequence[Any], b: Sequence[Any]) -> bool:
    if len(a) != len(b):
        return False
    budget.spend(len(a))
    return all(eq(x, y) for x, y in zip(a, b, strict=True))


def _map_eq(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    budget.spend(len(a))
    for key, value in a.items():
        if key not in b or not eq(value, b[key]):
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
        if a.__class__ is str:
            budget.spend_text(min(len(a), len(b)))
        try:
            return compare(a, b)
        except TypeError:  # e.g. an aware and a naive datetime supplied by a caller
            return False

    return run


COMPARE: Final = {
    "<": _ordering(operator.lt),
    "<=": _ordering(operator.le),
    ">": _ordering(operator.gt),
    ">=": _ordering(operator.ge),
}
FLIPPED: Final = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def truthy_operand(value: Any) -> bool:
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
        return check_int(a + b)
    if ta is str and tb is str:
        budget.check_string(len(a) + len(b))
        return a + b
    if ta in _NUMBER and tb in _NUMBER:
        return _float(a) + _float(b)
    if a is None:
        return b  # a missing operand leaves the other one (Inngest treats unknown + x as x)
    if b is None:
        return a
    if ta in (list, tuple) and tb in (list, tuple):
        budget.check_list(len(a) + len(b))
        return [*a, *b]
    if ta is str and tb in _STRINGABLE:
        text = to_string(b)
        budget.check_string(len(a) + len(text))
        return a + text
    if tb is str and ta in _STRINGABLE:
        text = to_string(a)
        budget.check_string(len(text) + len(b))
        return text + b
    if ta is datetime and tb is timedelta:
        return _time_op(operator.add, a, b)
    if ta is timedelta and (tb is datetime or tb is timedelta):
        return _time_op(operator.add, a, b)
    raise Fault(f"cannot add {faults.type_name(a)} and {faults.type_name(b)}")


_STRINGABLE: Final = frozenset({int, float, bool, datetime, timedelta})


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        raise Fault("integer is too large for a double") from None


def _time_op(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    try:
        return op(a, b)
    except (OverflowError, TypeError) as exc:
        raise Fault(f"time arithmetic failed: {exc}") from None


def _sub(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta is int and tb is int:
        return check_int(a - b)
    if ta in _NUMBER and tb in _NUMBER:
        return _float(a) - _float(b)
    if (ta is datetime and tb in (datetime, timedelta)) or (ta is timedelta and tb is timedelta):
        return _time_op(operator.sub, a, b)
    raise Fault(f"cannot subtract {faults.type_name(b)} from {faults.type_name(a)}")


def _mul(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta is int and tb is int:
        return check_int(a * b)
    if ta in _NUMBER and tb in _NUMBER:
        return _float(a) * _float(b)
    raise Fault(f"cannot multiply {faults.type_name(a)} by {faults.type_name(b)}")


def _div(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta in _NUMBER and tb in _NUMBER:
        if b == 0:
            raise Fault("division by zero")
        if ta is int and tb is int:
            quotient = abs(a) // abs(b)  # CEL (Go) truncates toward zero; Python's // floors
            return check_int(-quotient if (a < 0) != (b < 0) else quotient)
        return _float(a) / _float(b)
    raise Fault(f"cannot divide {faults.type_name(a)} by {faults.type_name(b)}")


def _mod(a: Any, b: Any) -> Any:
    ta = a.__class__
    tb = b.__class__
    if ta in _NUMBER and tb in _NUMBER:
        if b == 0:
            raise Fault("modulus by zero")
        if ta is int and tb is int:
            remainder = abs(a) % abs(b)  # sign follows the dividend, as in Go
            return -remainder if a < 0 else remainder
        return math.fmod(_float(a), _float(b))
    raise Fault(f"cannot take {faults.type_name(a)} modulo {faults.type_name(b)}")


def negate(value: Any) -> Any:
    kind = value.__class__
    if kind is int:
        return check_int(-value)
    if kind is float:
        return -value
    if kind is timedelta:
        return -value
    raise Fault(f"cannot negate {faults.type_name(value)}")


ARITHMETIC: Final = {"+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod}


def membership(value: Any, container: Any) -> bool:
    if container is None:
        return False  # membership in a missing list is false
    kind = container.__class__
    if kind is list or kind is tuple:
        budget.spend(1 + len(container))
        if type(value) is str:
            return value in container
        return any(eq(value, item) for item in container)
    if isinstance(container, Mapping):
        if type(value) is str:
            return value in container
        return any(eq(value, key) for key in container)  # pyright: ignore[reportUnknownVariableType]
    raise Fault(f"`in` needs a list or a map on its right, got {faults.type_name(container)}")


def select(value: Any, name: str) -> Any:
    try:
        return value.get(name)
    except AttributeError:  # null, a string, a list, a number: no such field
        return None


def index(value: Any, key: Any) -> Any:
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


def has(value: Any, name: str) -> bool:
    return isinstance(value, Mapping) and name in value


def iterable(value: Any, macro: str) -> Sequence[Any]:
    kind = value.__class__
    if kind is list or kind is tuple:
        return value  # pyright: ignore[reportUnknownVariableType]
    if value is None:
        return ()  # a missing list has no elements
    if isinstance(value, Mapping):
        return list(value)  # pyright: ignore[reportUnknownArgumentType]
    raise Fault(f"{macro}() needs a list or a map, got {faults.type_name(value)}")
