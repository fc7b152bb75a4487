"""Tree rewriting: replace the paths rooted at one variable by the literal values they have."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from pgqueue import errors
from pgqueue.expressions import faults, limits, values
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
            value = values.select(value, step.name)
        elif isinstance(step, Index) and isinstance(step.index, Literal):
            value = values.index(value, step.index.value)
    return value


def _value_node(value: Any, depth: int = 0) -> Node:
    """A JSON value as literal syntax: scalars become Literal, containers ListExpr / MapExpr of literals."""
    if depth > limits.MAX_DEPTH:
        raise errors.ExpressionEvalError(
            f"cannot bind a value nested more than {limits.MAX_DEPTH} levels deep"
        )
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
            if type(key) not in values.MAP_KEYS:
                raise errors.ExpressionEvalError(f"cannot bind a map with a {faults.type_name(key)} key")
            entries.append((Literal(key), _value_node(item, depth + 1)))
        return MapExpr(tuple(entries))
    if isinstance(value, datetime):
        return Call("timestamp", (Literal(values.format_timestamp(values.aware(value))),))
    raise errors.ExpressionEvalError(f"cannot bind a value of type {type(value).__name__} into an expression")


def substitute(node: Node, name: str, value: Mapping[str, Any]) -> Node:
    chain = _rooted_path(node, name)
    if chain is not None:
        return _value_node(_resolve(value, chain))
    match node:
        case Has(operand=Select(operand=parent, name=field_name)) if (
            parent_chain := _rooted_path(parent, name)
        ) is not None:
            return Literal(values.has(_resolve(value, parent_chain), field_name))
        case Literal() | Ident():
            return node
        case Select(operand=operand, name=field_name):
            return Select(substitute(operand, name, value), field_name)
        case Index(operand=operand, index=index):
            return Index(substitute(operand, name, value), substitute(index, name, value))
        case Call(function=function, args=args):
            return Call(function, tuple(substitute(a, name, value) for a in args))
        case Method(target=target, function=function, args=args):
            return Method(
                substitute(target, name, value), function, tuple(substitute(a, name, value) for a in args)
            )
        case Has(operand=operand):
            selection = substitute(operand, name, value)
            assert isinstance(selection, Select)  # a Select not rooted at `name` stays a Select
            return Has(selection)
        case Unary(op=op, operand=operand):
            return Unary(op, substitute(operand, name, value))
        case Binary(op=op, left=left, right=right):
            return Binary(op, substitute(left, name, value), substitute(right, name, value))
        case And(terms=terms):
            return And(tuple(substitute(t, name, value) for t in terms))
        case Or(terms=terms):
            return Or(tuple(substitute(t, name, value) for t in terms))
        case Conditional(condition=condition, then=then, otherwise=otherwise):
            return Conditional(
                substitute(condition, name, value),
                substitute(then, name, value),
                substitute(otherwise, name, value),
            )
        case ListExpr(items=items):
            return ListExpr(tuple(substitute(i, name, value) for i in items))
        case MapExpr(entries=entries):
            return MapExpr(
                tuple((substitute(k, name, value), substitute(v, name, value)) for k, v in entries)
            )
        case Macro(kind=kind, target=target, var=var, predicate=predicate, transform=transform):
            return Macro(
                kind,
                substitute(target, name, value),
                var,
                None if predicate is None else substitute(predicate, name, value),
                None if transform is None else substitute(transform, name, value),
            )


def dotted_path(node: Node, name: str) -> str | None:
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
