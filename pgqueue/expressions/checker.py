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


def cost(root: Node | None) -> int:
    """Nodes evaluated (at most) each time `root` is: the budget's static share. The bodies of macros are
    left out; a macro charges them per element when it runs."""
    if root is None:
        return 0
    count = 0
    stack = [root]
    while stack:
        node = stack.pop()
        count += 1
        if type(node) is Macro:
            stack.append(node.target)
        else:
            stack.extend(nodes.children(node))
    return count


@dataclass(frozen=True, slots=True)
class Usage:
    references: frozenset[str]
    needs_now: bool
    cost: int


def analyse(root: Node) -> Usage:
    references: set[str] = set()
    needs_now = False

    def visit(node: Node, bound: frozenset[str]) -> None:
        nonlocal needs_now
        if type(node) is Ident:
            if node.name not in bound:
                references.add(node.name)
            return
        if type(node) is Call and functions.GLOBALS[node.function].needs_now:
            needs_now = True
        if type(node) is Macro:
            visit(node.target, bound)
            inner = bound | {node.var}
            for part in (node.predicate, node.transform):
                if part is not None:
                    visit(part, inner)
            return
        for child in nodes.children(node):
            visit(child, bound)

    visit(root, frozenset())
    return Usage(frozenset(references), needs_now, cost(root))
