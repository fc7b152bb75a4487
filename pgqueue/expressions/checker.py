"""Static checks and facts about a parsed tree: call arities and literal patterns, nesting depth, and which
variables, clock and budget an evaluation needs."""

from __future__ import annotations

from dataclasses import dataclass

from pgqueue.expressions import functions, limits, nodes
from pgqueue.expressions.nodes import Call, Ident, Macro, Node


def depth(root: Node) -> int:
    """Depth of the tree, computed without recursion so a hostile tree cannot exhaust the stack."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > limits.MAX_DEPTH:
                break
        stack.extend((child, level + 1) for child in nodes.children(node))
    return deepest


@dataclass(frozen=True, slots=True)
class Usage:
    references: frozenset[str]
    needs_now: bool
    needs_budget: bool


def analyse(root: Node) -> Usage:
    references: set[str] = set()
    needs_now = False
    needs_budget = False

    def visit(node: Node, bound: frozenset[str]) -> None:
        nonlocal needs_now, needs_budget
        if type(node) is Ident:
            if node.name not in bound:
                references.add(node.name)
            return
        if type(node) is Call and functions.GLOBALS[node.function].needs_now:
            needs_now = True
        if type(node) is Macro:
            needs_budget = True
            visit(node.target, bound)
            inner = bound | {node.var}
            for part in (node.predicate, node.transform):
                if part is not None:
                    visit(part, inner)
            return
        for child in nodes.children(node):
            visit(child, bound)

    visit(root, frozenset())
    return Usage(frozenset(references), needs_now, needs_budget)
