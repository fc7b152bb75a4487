"""Limits on what one GraphQL request may ask for, checked on the parsed query before anything runs, so
no single request can walk the database: its depth (nested selections) and its cost (an estimate of
the rows it reads: one per field, times the page size of each list around it, plus a fixed charge for
fields that read much, like a run's trace).

Introspection fields (`__schema`, `__type`) read nothing from the database and cost nothing; their
depth counts like any other (the standard introspection query nests `ofType` nine levels deep).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    value_from_ast_untyped,
)

MAX_DEPTH = 16
MAX_COST = 20_000
MAX_TOKENS = 10_000  # of the query text: the introspection query has under 400
MAX_RUNS_PAGE = 400  # Inngest's largest `runs(first:)` page

# How many items a list field is assumed to return, when no argument says.
LIST_SIZES = {
    "apps": 20,
    "functions": 100,
    "events": 50,
    "functionRuns": 20,
    "childrenSpans": 20,
    "triggerIDs": 1,
    "IDs": 1,
    "payloads": 1,
    "triggers": 1,
}
# Fields that read far more than one row, charged once per time they are resolved.
FIELD_CHARGES = {
    "trace": 50,
    "runTrace": 50,
    "totalCount": 100,
    "functionRuns": 5,
    "runTraceSpanOutputByID": 5,
}


@dataclass(frozen=True, slots=True)
class Measure:
    depth: int
    cost: int


def _size(field: FieldNode, variables: Mapping[str, Any]) -> int:
    name = field.name.value
    if name == "runs":
        first = 100
        for arg in field.arguments:
            if arg.name.value == "first":
                raw = (variables.get(arg.value.name.value) if isinstance(arg.value, VariableNode)
                       else value_from_ast_untyped(arg.value, variables))
                if isinstance(raw, int):
                    first = raw
        return max(1, min(first, 10 * MAX_RUNS_PAGE))
    return LIST_SIZES.get(name, 1)


def measure(
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None = None,
) -> Measure:
    variables = variables or {}

    def walk(selection_set: SelectionSetNode | None, depth: int, seen: frozenset[str]) -> tuple[int, int]:
        if selection_set is None:
            return depth, 0
        deepest, cost = depth, 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name.startswith("__"):
                    d, _ = walk(selection.selection_set, depth + 1, seen)
                    deepest = max(deepest, d)
                    continue
                d, inner = walk(selection.selection_set, depth + 1, seen)
                deepest = max(deepest, d)
                cost += 1 + FIELD_CHARGES.get(name, 0) + _size(selection, variables) * inner
            elif isinstance(selection, InlineFragmentNode):
                d, inner = walk(selection.selection_set, depth, seen)
                deepest, cost = max(deepest, d), cost + inner
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None or name in seen:  # validation reports unknown and cyclic spreads
                    continue
                d, inner = walk(fragment.selection_set, depth, seen | {name})
                deepest, cost = max(deepest, d), cost + inner
        return deepest, cost

    depth, cost = walk(operation.selection_set, 0, frozenset())
    return Measure(depth, cost)


def check(
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None = None,
) -> list[GraphQLError]:
    """Errors for a query too deep or too costly (none: it may run)."""
    found = measure(operation, fragments, variables)
    errors = []
    if found.depth > MAX_DEPTH:
        errors.append(GraphQLError(
            f"the query is {found.depth} levels deep; the limit is {MAX_DEPTH}",
            extensions={"code": "QUERY_TOO_DEEP", "depth": found.depth, "limit": MAX_DEPTH}))
    if found.cost > MAX_COST:
        errors.append(GraphQLError(
            f"the query's estimated cost is {found.cost}; the limit is {MAX_COST}: ask for fewer runs"
            " (`first`), fewer nested lists or fewer traces in one request",
            extensions={"code": "QUERY_TOO_COSTLY", "cost": found.cost, "limit": MAX_COST}))
    return errors
