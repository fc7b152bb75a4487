"""Compilation of a checked syntax tree into Python closures, evaluated against a scope of variables."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from pgqueue.expressions import budget, checker, faults, functions, patterns, values
from pgqueue.expressions.budget import OverBudget
from pgqueue.expressions.faults import Fault
from pgqueue.expressions.functions import Function
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

# Reserved keys in the evaluation scope. A space can never start an identifier, so user data cannot collide.
NOW_KEY: Final = " now"

Scope = Mapping[str, Any]
Evaluator = Callable[[Scope], Any]


def compile_node(node: Node) -> Evaluator:
    match node:
        case Literal(value=value):
            return lambda scope: value
        case Ident(name=name):
            return lambda scope: scope.get(name)
        case Select():
            return _compile_select(node)
        case Index():
            return _compile_index(node)
        case Has(operand=Select(operand=parent, name=name)):
            read = compile_node(parent)
            return lambda scope: values.has(read(scope), name)
        case Unary(op="!", operand=operand):
            return _compile_not(compile_node(operand))
        case Unary(operand=operand):
            read = compile_node(operand)
            return lambda scope: values.negate(read(scope))
        case Binary():
            return _compile_binary(node)
        case And(terms=terms):
            return _compile_and(tuple(compile_node(t) for t in terms))
        case Or(terms=terms):
            return _compile_or(tuple(compile_node(t) for t in terms))
        case Conditional():
            return _compile_conditional(node)
        case ListExpr(items=items):
            return _compile_list(items)
        case MapExpr(entries=entries):
            return _compile_map(entries)
        case Call():
            return _compile_call(functions.GLOBALS[node.function], node.args, None)
        case Method():
            return _compile_call(functions.METHODS[node.function], node.args, node.target)
        case Macro():
            return _compile_macro(node)


def _compile_select(node: Select) -> Evaluator:
    path: list[str] = []
    current: Node = node
    while type(current) is Select:
        path.append(current.name)
        current = current.operand
    path.reverse()
    if type(current) is Ident:
        return _compile_path(current.name, tuple(path))
    read = compile_node(current)

    def walk(scope: Scope) -> Any:
        value = read(scope)
        for name in path:
            value = values.select(value, name)
        return value

    return walk


def _compile_path(root: str, path: tuple[str, ...]) -> Evaluator:
    """`event.data.plan` as one closure: JSON objects have .get, anything else ends the path as null."""
    if len(path) == 1:
        (k0,) = path

        def path1(scope: Scope) -> Any:
            try:
                return scope.get(root).get(k0)  # pyright: ignore[reportOptionalMemberAccess]
            except AttributeError:
                return None

        return path1
    if len(path) == 2:
        k0, k1 = path

        def path2(scope: Scope) -> Any:
            try:
                return scope.get(root).get(k0).get(k1)  # pyright: ignore[reportOptionalMemberAccess]
            except AttributeError:
                return None

        return path2
    if len(path) == 3:
        k0, k1, k2 = path

        def path3(scope: Scope) -> Any:
            try:
                return scope.get(root).get(k0).get(k1).get(k2)  # pyright: ignore[reportOptionalMemberAccess]
            except AttributeError:
                return None

        return path3

    def path_n(scope: Scope) -> Any:
        value = scope.get(root)
        try:
            for name in path:
                value = value.get(name)  # pyright: ignore[reportOptionalMemberAccess]
        except AttributeError:
            return None
        return value

    return path_n


def _compile_index(node: Index) -> Evaluator:
    read = compile_node(node.operand)
    if type(node.index) is Literal and type(node.index.value) is str:
        key = node.index.value
        return lambda scope: values.select(read(scope), key)
    read_key = compile_node(node.index)
    return lambda scope: values.index(read(scope), read_key(scope))


def _compile_not(read: Evaluator) -> Evaluator:
    def negation(scope: Scope) -> bool:
        value = read(scope)
        if value is True:
            return False
        if value is False:
            return True
        return not values.truthy_operand(value)

    return negation


def _compile_binary(node: Binary) -> Evaluator:
    op, left, right = node.op, node.left, node.right
    if op in ("==", "!="):
        if isinstance(right, Literal):
            return _compile_equals_constant(compile_node(left), right.value, op == "!=")
        if isinstance(left, Literal):
            return _compile_equals_constant(compile_node(right), left.value, op == "!=")
        read_left, read_right = compile_node(left), compile_node(right)
        if op == "==":
            return lambda scope: values.eq(read_left(scope), read_right(scope))
        return lambda scope: not values.eq(read_left(scope), read_right(scope))
    if op in values.COMPARE:
        if type(right) is Literal and type(right.value) in (int, float, str):
            return _compile_compare_constant(op, compile_node(left), right.value)
        if type(left) is Literal and type(left.value) in (int, float, str):
            return _compile_compare_constant(values.FLIPPED[op], compile_node(right), left.value)
        compare = values.COMPARE[op]
        read_left, read_right = compile_node(left), compile_node(right)
        return lambda scope: compare(read_left(scope), read_right(scope))
    if op == "in":
        return _compile_in(compile_node(left), right)
    arithmetic = values.ARITHMETIC[op]
    read_left, read_right = compile_node(left), compile_node(right)
    return lambda scope: arithmetic(read_left(scope), read_right(scope))


def _compile_equals_constant(read: Evaluator, constant: Any, negate: bool) -> Evaluator:
    """Fast paths for `x == 'pro'` and friends; each is exactly values.eq against that constant."""
    kind = constant.__class__
    if constant is None or kind is bool:
        if negate:
            return lambda scope: read(scope) is not constant
        return lambda scope: read(scope) is constant
    if kind is str:
        if negate:
            return lambda scope: read(scope) != constant
        return lambda scope: read(scope) == constant
    if kind is int or kind is float:

        def equals_number(scope: Scope) -> bool:
            value = read(scope)
            return value == constant and type(value) is not bool

        if negate:
            return lambda scope: not equals_number(scope)
        return equals_number
    if negate:
        return lambda scope: not values.eq(read(scope), constant)
    return lambda scope: values.eq(read(scope), constant)


def _compile_compare_constant(op: str, read: Evaluator, constant: Any) -> Evaluator:
    compare: Callable[[Any, Any], bool] = {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }[op]
    if type(constant) is str:

        def compare_string(scope: Scope) -> bool:
            value = read(scope)
            return type(value) is str and compare(value, constant)

        return compare_string

    def compare_number(scope: Scope) -> bool:
        value = read(scope)
        kind = value.__class__
        return (kind is int or kind is float) and compare(value, constant)

    return compare_number


def _compile_in(read: Evaluator, container: Node) -> Evaluator:
    constants = _constants(container.items) if isinstance(container, ListExpr) else None
    if constants is not None:
        items = tuple(constants)
        if all(type(v) is str for v in items):
            strings = frozenset(items)

            def in_strings(scope: Scope) -> bool:
                value = read(scope)
                return type(value) is str and value in strings

            return in_strings
        return lambda scope: values.membership(read(scope), items)
    read_container = compile_node(container)
    return lambda scope: values.membership(read(scope), read_container(scope))


def _compile_and(terms: tuple[Evaluator, ...]) -> Evaluator:
    def conjunction(scope: Scope) -> bool:
        failure: Exception | None = None
        for term in terms:
            try:
                value = term(scope)
            except OverBudget:
                raise
            except Exception as exc:  # CEL: an error is absorbed if another term is false
                if failure is None:
                    failure = exc
                continue
            if value is not True and (value is False or not values.truthy_operand(value)):
                return False
        if failure is not None:
            raise failure
        return True

    return conjunction


def _compile_or(terms: tuple[Evaluator, ...]) -> Evaluator:
    def disjunction(scope: Scope) -> bool:
        failure: Exception | None = None
        for term in terms:
            try:
                value = term(scope)
            except OverBudget:
                raise
            except Exception as exc:  # CEL: an error is absorbed if another term is true
                if failure is None:
                    failure = exc
                continue
            if value is True or (value is not False and values.truthy_operand(value)):
                return True
        if failure is not None:
            raise failure
        return False

    return disjunction


def _compile_conditional(node: Conditional) -> Evaluator:
    condition, then, otherwise = (
        compile_node(node.condition),
        compile_node(node.then),
        compile_node(node.otherwise),
    )

    def conditional(scope: Scope) -> Any:
        value = condition(scope)
        if value is True or (value is not False and values.truthy_operand(value)):
            return then(scope)
        return otherwise(scope)

    return conditional


def _constants(items: tuple[Node, ...]) -> list[Any] | None:
    """The values of `items` if every one is a Literal, else None."""
    found: list[Any] = []
    for item in items:
        if not isinstance(item, Literal):
            return None
        found.append(item.value)
    return found


def _compile_list(items: tuple[Node, ...]) -> Evaluator:
    constants = _constants(items)
    if constants is not None:
        fixed = tuple(constants)
        return lambda scope: list(fixed)
    reads = tuple(compile_node(item) for item in items)
    return lambda scope: [read(scope) for read in reads]


def _compile_map(entries: tuple[tuple[Node, Node], ...]) -> Evaluator:
    reads = tuple((compile_node(key), compile_node(value)) for key, value in entries)

    def build(scope: Scope) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for read_key, read_value in reads:
            key = read_key(scope)
            if type(key) not in values.MAP_KEYS:
                raise Fault(f"map keys must be strings, integers or booleans, got {faults.type_name(key)}")
            if key in out:
                raise Fault(f"duplicate map key {key!r}")
            out[key] = read_value(scope)
        return out

    return build


def _compile_call(function: Function, args: tuple[Node, ...], target: Node | None) -> Evaluator:
    impl = function.impl
    if impl is functions.matches or impl is functions.global_matches:
        pattern = args[-1]
        if type(pattern) is Literal and type(pattern.value) is str:
            compiled = patterns.compile_pattern(pattern.value)  # validated by the parser already
            subject = compile_node(target if target is not None else args[0])

            def match_literal(scope: Scope) -> bool:
                value = subject(scope)
                if value is None:
                    return False
                return compiled.search(values.string_arg("matches", value))

            return match_literal
    reads = tuple(compile_node(n) for n in ((target, *args) if target is not None else args))
    if function.needs_now:
        if not reads:
            return lambda scope: impl(scope[NOW_KEY])
        (read_arg,) = reads
        return lambda scope: impl(scope[NOW_KEY], read_arg(scope))
    if len(reads) == 1:
        (read0,) = reads
        return lambda scope: impl(read0(scope))
    if len(reads) == 2:
        read0, read1 = reads
        return lambda scope: impl(read0(scope), read1(scope))
    return lambda scope: impl(*[read(scope) for read in reads])


def _compile_macro(node: Macro) -> Evaluator:
    kind, var = node.kind, node.var
    read_target = compile_node(node.target)
    predicate = compile_node(node.predicate) if node.predicate is not None else None
    test = predicate if predicate is not None else compile_node(Literal(True))
    transform = compile_node(node.transform) if node.transform is not None else compile_node(Ident(var))
    per_item = 1 + checker.cost(node.predicate) + checker.cost(node.transform)

    def loop(scope: Scope) -> tuple[Sequence[Any], dict[str, Any]]:
        items = values.iterable(read_target(scope), kind)
        budget.spend(1 + len(items) * per_item)  # up front: the most the loop can evaluate
        return items, dict(scope)

    def holds(inner: dict[str, Any]) -> bool:
        value = test(inner)
        return value is True or (value is not False and values.truthy_operand(value))

    if kind == "all" or kind == "exists":
        wanted = kind == "exists"  # all() stops at the first false, exists() at the first true

        def quantifier(scope: Scope) -> bool:
            items, inner = loop(scope)
            failure: Exception | None = None
            for item in items:
                inner[var] = item
                try:
                    if holds(inner) is wanted:
                        return wanted
                except OverBudget:
                    raise
                except Exception as exc:  # absorbed like && and ||
                    if failure is None:
                        failure = exc
            if failure is not None:
                raise failure
            return not wanted

        return quantifier
    if kind == "exists_one":

        def exactly_one(scope: Scope) -> bool:
            items, inner = loop(scope)
            count = 0
            for item in items:
                inner[var] = item
                count += holds(inner)
            return count == 1

        return exactly_one
    if kind == "filter":

        def select_items(scope: Scope) -> list[Any]:
            items, inner = loop(scope)
            kept: list[Any] = []
            for item in items:
                inner[var] = item
                if holds(inner):
                    kept.append(item)
            return kept

        return select_items

    def map_items(scope: Scope) -> list[Any]:
        items, inner = loop(scope)
        out: list[Any] = []
        for item in items:
            inner[var] = item
            if predicate is None or holds(inner):
                out.append(transform(inner))
        return out

    return map_items
