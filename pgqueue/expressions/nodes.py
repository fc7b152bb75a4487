"""The syntax tree: one frozen dataclass per construct, and `children()` to walk it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


def children(node: Node) -> tuple[Node, ...]:
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
