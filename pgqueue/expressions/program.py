"""The public entry points: compile() source into a Program, evaluate it, read its facts and
substitute values into it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgqueue import errors
from pgqueue.expressions import (
    budget,
    checker,
    compiler,
    faults,
    lexer,
    limits,
    substitution,
    unparsing,
    values,
)
from pgqueue.expressions.checker import Usage
from pgqueue.expressions.compiler import Evaluator
from pgqueue.expressions.faults import Fault
from pgqueue.expressions.nodes import And, Binary, Literal, Node
from pgqueue.expressions.parser import Parser


@dataclass(frozen=True, slots=True)
class Program:
    """A checked, compiled expression. Build one with compile(); evaluate it as often as needed."""

    source: str
    ast: Node
    _run: Evaluator = field(repr=False, compare=False)
    _usage: Usage = field(repr=False, compare=False)

    def evaluate(self, variables: Mapping[str, Any], *, now: datetime | None = None) -> Any:
        """Evaluate against `variables` ({"event": ..., "async": ..., "vars": ...}).

        `now` pins now()/now_plus()/now_minus() (tests, a Clock); naive datetimes are read as UTC.
        Raises ExpressionEvalError when the expression cannot be evaluated against this input."""
        _require_mapping(variables)
        usage = self._usage
        token = budget.start()
        try:
            budget.spend(usage.cost)
            if usage.needs_now:
                scope = dict(variables)
                scope[compiler.NOW_KEY] = values.aware(now) if now is not None else datetime.now(UTC)
                return self._run(scope)
            return self._run(variables)
        except Fault as exc:
            raise errors.ExpressionEvalError(f"cannot evaluate {faults.shown(self.source)}: {exc}") from None
        except RecursionError:
            raise errors.ExpressionEvalError(
                f"cannot evaluate {faults.shown(self.source)}: input is nested too deeply"
            ) from None
        except Exception as exc:
            raise errors.ExpressionEvalError(
                f"cannot evaluate {faults.shown(self.source)}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            budget.finish(token)

    def references(self) -> frozenset[str]:
        """Top-level variables the expression reads, e.g. frozenset({"event", "async"})."""
        return self._usage.references

    def substitute(self, name: str, value: Mapping[str, Any]) -> Program:
        """A new program in which every path rooted at `name` (`event.data.id`) is replaced by the literal
        value it has in `value` (missing: null), and `has()` on such paths by true/false. Values become
        literal syntax-tree nodes, so no value can change the expression's structure; `source` of the result
        is the canonical rendering of the new tree (it re-parses to the same tree unless a value exceeds
        the length or depth limits). Raises ExpressionEvalError for values that have no literal form."""
        if name not in self._usage.references:
            return self
        try:
            ast = substitution.substitute(self.ast, name, value)
            return _program(unparsing.unparse(ast), ast)
        except RecursionError:  # depth is bounded; only reachable from an already nearly full stack
            raise errors.ExpressionEvalError(
                f"cannot bind `{name}` into {faults.shown(self.source)}"
            ) from None

    def equality_literals(self, name: str) -> list[tuple[str, Any]]:
        """(path, literal) pairs of `name.<path> == <literal>` terms of a top-level conjunction, in order.

        `async.data.id == 'u_1' && async.data.n > 2` gives [("data.id", "u_1")]. A term listed here must
        hold for the expression to be true, so the pairs can index candidates; equality is loose (1 == 1.0)
        and null also matches a missing field."""
        terms = self.ast.terms if type(self.ast) is And else (self.ast,)
        found: list[tuple[str, Any]] = []
        for term in terms:
            if type(term) is not Binary or term.op != "==":
                continue
            for side, other in ((term.left, term.right), (term.right, term.left)):
                path = substitution.dotted_path(side, name)
                if path is not None and type(other) is Literal:
                    found.append((path, other.value))
                    break
        return found


def _require_mapping(variables: object) -> None:
    if type(variables) is not dict and not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a mapping, got {type(variables).__name__}")


def _program(source: str, ast: Node) -> Program:
    return Program(source, ast, compiler.compile_node(ast), checker.analyse(ast))


@functools.lru_cache(maxsize=4096)
def compile(  # shadows the builtin on purpose: the name callers code against
    source: str, variables: tuple[str, ...] = limits.VARIABLES
) -> Program:
    """Parse and check `source`; raises ExpressionSyntaxError naming the problem and where it is.
    `variables`: the top-level names it may read (functions' expressions: event, async, vars;
    a run search: event and output)."""
    if not isinstance(source, str):  # pyright: ignore[reportUnnecessaryIsInstance] - callers pass config data
        raise errors.ExpressionSyntaxError(f"an expression must be a string, got {type(source).__name__}")
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > limits.MAX_SOURCE_BYTES:
        raise faults.syntax_error(
            source, None, f"expression is {size} bytes long; the limit is {limits.MAX_SOURCE_BYTES}"
        )
    if not source.strip():
        raise faults.syntax_error(source, None, "expression is empty")
    try:
        ast = Parser(source, lexer.tokenize(source), variables).parse()
        if checker.depth(ast) > limits.MAX_DEPTH:
            raise faults.syntax_error(
                source, None, f"expression nests more than {limits.MAX_DEPTH} levels deep"
            )
        return _program(source, ast)
    except RecursionError:  # only reachable when the caller's own stack is already nearly full
        raise faults.syntax_error(source, None, "expression nests too deeply") from None


def evaluate(source: str, variables: Mapping[str, Any], *, now: datetime | None = None) -> Any:
    """compile(source).evaluate(variables)."""
    return compile(source).evaluate(variables, now=now)


def truthy(value: Any) -> bool:
    """Whether an expression result counts as true: only the boolean true does (CEL)."""
    return value is True
