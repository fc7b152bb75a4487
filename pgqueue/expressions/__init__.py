"""Safe evaluator for the CEL subset Inngest functions use in `expression`, `if`, `key` and `priority.run`.

Source text goes through a hand-written tokenizer (lexer) and a Pratt parser (parser) into a tree of frozen
dataclasses (nodes), is checked (checker: known variables, functions and arities, length and depth limits)
and then compiled into Python closures (compiler) once per distinct expression; nothing is ever handed to
eval(). Semantics follow Inngest where it departs from stock CEL: a missing field reads as null,
comparisons are loosely typed (values), and `+` mixes strings and numbers.

This package imports nothing from pgqueue but `pgqueue.errors`.
"""

from __future__ import annotations

from pgqueue.expressions.limits import (
    MAX_COST,
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    MAX_PATTERN_CHARS,
    MAX_SOURCE_BYTES,
    MAX_STRING_CHARS,
    SEARCH_VARIABLES,
    VARIABLES,
)
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
from pgqueue.expressions.program import Program, compile, evaluate, truthy

__all__ = [
    "MAX_COST",
    "MAX_DEPTH",
    "MAX_LIST_ITEMS",
    "MAX_PATTERN_CHARS",
    "MAX_SOURCE_BYTES",
    "MAX_STRING_CHARS",
    "SEARCH_VARIABLES",
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
