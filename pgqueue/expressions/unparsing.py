"""Canonical source text of a syntax tree (used for substituted programs)."""

from __future__ import annotations

import math
from typing import Any, Final

from pgqueue.expressions import parser
from pgqueue.expressions.nodes import (
    And,
    Binary,
    Call,
    Conditional,
    Has,
    Ident,
    Index,
    ListExpr,
    Literal,
    Macro,
    MapExpr,
    Method,
    Node,
    Or,
    Select,
    Unary,
)

_OPERATOR_BINDING: Final = {op: b for op, b in parser.BINDING.items() if op != "?"}


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
    text = unparse(node)
    return f"({text})" if _binding(node) < minimum else text


def unparse(node: Node) -> str:
    match node:
        case Literal(value=value):
            return literal_text(value)
        case Ident(name=name):
            return name
        case Select(operand=operand, name=name):
            return f"{_wrapped(operand, 8)}.{name}"
        case Index(operand=operand, index=index):
            return f"{_wrapped(operand, 8)}[{unparse(index)}]"
        case Call(function=function, args=args):
            return f"{function}({', '.join(unparse(a) for a in args)})"
        case Method(target=target, function=function, args=args):
            return f"{_wrapped(target, 8)}.{function}({', '.join(unparse(a) for a in args)})"
        case Has(operand=operand):
            return f"has({unparse(operand)})"
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
            return f"{_wrapped(condition, 2)} ? {_wrapped(then, 2)} : {unparse(otherwise)}"
        case ListExpr(items=items):
            return f"[{', '.join(unparse(i) for i in items)}]"
        case MapExpr(entries=entries):
            return "{" + ", ".join(f"{unparse(k)}: {unparse(v)}" for k, v in entries) + "}"
        case Macro(kind=kind, target=target, var=var, predicate=predicate, transform=transform):
            args = [var, *(unparse(n) for n in (predicate, transform) if n is not None)]
            return f"{_wrapped(target, 8)}.{kind}({', '.join(args)})"


_STRING_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def literal_text(value: Any) -> str:
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
