"""RFC 8785 (JCS) canonical JSON: the exact bytes pgqueue signs and sends to SDKs.

The SDKs re-canonicalise every request body before checking its signature (protocol §5), so the
bytes we sign must be the canonical form: object keys sorted by UTF-16 code units, no whitespace,
minimal string escaping, and numbers written as ECMAScript's Number::toString writes them.

Numbers are IEEE doubles in JCS. A Python int whose magnitude is at most 2**53 is written as is;
a larger int is first converted to the nearest double, exactly as the Go server does when it
decodes a payload into float64, so precision is lost: 2**53 + 1 is written as 9007199254740992
and 2**60 as 1152921504606847000. Store such values as strings if they matter.

Errors: NaN, infinities, ints beyond the double range, strings with a lone UTF-16 surrogate (no
UTF-8 form; PostgreSQL's jsonb never produces them) and nesting deeper than the recursion limit
(including cycles) raise ValueError; non-str object keys and non-JSON types raise TypeError.

Speed: `json.dumps(sort_keys=True)` cannot be trusted here (it sorts by code point, spells floats
as Python does and stringifies int keys after sorting them numerically), and proving its output
canonical costs more than encoding directly. So this is a direct encoder that keeps the common
leaves (str, small int, None, bool) inline and uses the C string escaper; it runs at about 1.7x
the time of json.dumps and 4x faster than the `jcs` package.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["canonical_bytes", "format_float", "format_int"]

# Integers with at most this magnitude are exact doubles, so JCS prints their decimal digits.
_MAX_EXACT_INT = 2**53

# json's C escaper (ensure_ascii=False) escapes exactly what RFC 8785 §3.2.2.2 requires: '"', '\',
# \b \f \n \r \t in short form and the other controls as lowercase \u00xx; all else is literal.
_escape: Callable[[str], str] = json.encoder.encode_basestring

# Sorting keys by code point (Python's str order) equals sorting by UTF-16 code unit unless one key
# holds a character in U+E000..U+FFFF where another holds a character above U+FFFF (encoded as a
# surrogate pair, which sorts below U+E000). Output containing both kinds anywhere is re-encoded
# with the UTF-16 sort key; that is rare, so the common path sorts plain strings.
_HIGH_BMP = re.compile("[\ue000-\uffff]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")

_SortKey = Callable[[str], Any] | None
_Emit = Callable[[str], None]


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of a JSON value.

    `value` is built from dict (str keys), list, tuple, str, int, float, bool and None; subclasses
    of these (IntEnum, OrderedDict, ...) are encoded as their base type.
    """
    text = _encode(value, None)
    if not text.isascii() and _HIGH_BMP.search(text) and _ASTRAL.search(text):
        text = _encode(value, _utf16_sort_key)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"string contains a lone UTF-16 surrogate {text[err.start]!r}, which has no UTF-8 form"
        ) from None


def _encode(value: Any, sort_key: _SortKey) -> str:
    parts: list[str] = []
    try:
        _encode_into(value, parts.append, sort_key)
    except RecursionError:
        raise ValueError("JSON value is nested too deeply or contains a cycle") from None
    return "".join(parts)


def _encode_into(value: Any, emit: _Emit, sort_key: _SortKey) -> None:
    kind = type(value)  # pyright: ignore[reportUnknownVariableType]
    if kind is str:
        emit(_escape(value))
    elif kind is dict:
        _encode_dict(value, emit, sort_key)
    elif kind is list or kind is tuple:
        _encode_list(value, emit, sort_key)
    elif value is None:
        emit("null")
    elif value is True:
        emit("true")
    elif value is False:
        emit("false")
    elif kind is int:
        emit(format_int(value))
    elif kind is float:
        emit(format_float(value))
    # Subclasses: the exact-type checks above keep the common case fast.
    elif isinstance(value, str):
        emit(_escape(value))
    elif isinstance(value, int):
        emit(format_int(int(value)))
    elif isinstance(value, float):
        emit(format_float(float(value)))
    elif isinstance(value, dict):
        _encode_dict(dict(value), emit, sort_key)  # pyright: ignore[reportUnknownArgumentType]
    elif isinstance(value, list | tuple):
        _encode_list(value, emit, sort_key)  # pyright: ignore[reportUnknownArgumentType]
    else:
        raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")


def _encode_dict(obj: dict[str, Any], emit: _Emit, sort_key: _SortKey) -> None:
    if not obj:
        emit("{}")
        return
    escape, exact = _escape, _MAX_EXACT_INT
    try:
        keys = sorted(obj) if sort_key is None else sorted(obj, key=sort_key)
    except TypeError:
        raise _key_type_error(obj) from None
    sep = "{"
    for key in keys:
        try:
            escaped_key = escape(key)
        except TypeError:
            raise _key_type_error(obj) from None
        child = obj[key]
        kind = type(child)  # pyright: ignore[reportUnknownVariableType]
        # Leaves inline: most of a payload is strings, small ints, null and booleans.
        if kind is str:
            emit(sep + escaped_key + ":" + escape(child))
        elif kind is int and -exact <= child <= exact:
            emit(sep + escaped_key + ":" + int.__repr__(child))
        elif child is None:
            emit(sep + escaped_key + ":null")
        elif child is True:
            emit(sep + escaped_key + ":true")
        elif child is False:
            emit(sep + escaped_key + ":false")
        else:
            emit(sep + escaped_key + ":")
            _encode_into(child, emit, sort_key)
        sep = ","
    emit("}")


def _key_type_error(obj: dict[Any, Any]) -> TypeError:
    bad = next((key for key in obj if not isinstance(key, str)), None)
    return TypeError(f"canonical JSON object keys must be str, not {type(bad).__name__}: {bad!r}")


def _encode_list(items: list[Any] | tuple[Any, ...], emit: _Emit, sort_key: _SortKey) -> None:
    if not items:
        emit("[]")
        return
    escape, exact = _escape, _MAX_EXACT_INT
    sep = "["
    for child in items:
        kind = type(child)  # pyright: ignore[reportUnknownVariableType]
        if kind is str:
            emit(sep + escape(child))
        elif kind is int and -exact <= child <= exact:
            emit(sep + int.__repr__(child))
        else:
            emit(sep)
            _encode_into(child, emit, sort_key)
        sep = ","
    emit("]")


def _utf16_sort_key(key: str) -> bytes:
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError:
        raise ValueError(f"object key {key!r} contains a lone UTF-16 surrogate") from None


def format_int(value: int) -> str:
    """ECMAScript spelling of an int after the Go server's conversion to a double."""
    if -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
        return int.__repr__(value)
    try:
        as_double = float(value)
    except OverflowError:
        raise ValueError(f"integer of {value.bit_length()} bits is beyond the JSON number range") from None
    return format_float(as_double)


def format_float(value: float) -> str:
    """ECMAScript Number::toString of a double (RFC 8785 §3.2.2.3)."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a valid JSON number")
    if value == 0.0:
        return "0"  # also for -0.0
    # Both repr and ECMAScript write the shortest digits that round-trip (ties to the closest).
    text = float.__repr__(value)
    if "e" not in text:
        # repr writes decimal exponents -4..15 plainly, as ECMAScript does (it switches at -7 and
        # 21); they differ only in repr's ".0" on integral values.
        return text[:-2] if text.endswith(".0") else text
    mantissa, _, exponent = text.partition("e")
    sign = ""
    if mantissa[0] == "-":
        sign, mantissa = "-", mantissa[1:]
    digits = mantissa.replace(".", "")
    k = len(digits)
    n = int(exponent) + 1  # value == 0.<digits> * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exp = n - 1
    exp_text = f"e+{exp}" if exp >= 0 else f"e{exp}"
    if k == 1:
        return sign + digits + exp_text
    return sign + digits[0] + "." + digits[1:] + exp_text
