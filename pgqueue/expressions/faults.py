"""Error values of the package: the internal evaluation Fault and the formatting of syntax errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pgqueue import errors


class Fault(Exception):
    """A runtime error inside evaluation; Program.evaluate turns it into ExpressionEvalError."""


def shown(source: str, pos: int | None = None) -> str:
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


def syntax_error(source: str, pos: int | None, reason: str) -> errors.ExpressionSyntaxError:
    where = "" if pos is None else f" at {_where(source, pos)}"
    return errors.ExpressionSyntaxError(f"invalid expression {shown(source, pos)}: {reason}{where}")


def type_name(value: Any) -> str:
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
