"""Pratt parser: tokens to a syntax tree. It resolves names as it goes, so an unknown variable or
function fails with its position."""

from __future__ import annotations

from typing import Final

from pgqueue import errors
from pgqueue.expressions import faults, functions, lexer, limits, patterns
from pgqueue.expressions.faults import Fault
from pgqueue.expressions.functions import Function
from pgqueue.expressions.lexer import Token
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

BINDING: Final = {
    "?": 1,
    "||": 2,
    "&&": 3,
    "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4,
    "+": 5, "-": 5,
    "*": 6, "/": 6, "%": 6,
}  # fmt: skip


class Parser:
    """Pratt parser for CEL's grammar; also resolves names, so unknown variables and functions are syntax
    errors with a position. Recursion is bounded by limits.MAX_DEPTH."""

    def __init__(self, source: str, tokens: list[Token], variables: tuple[str, ...] = limits.VARIABLES) -> None:
        self.source = source
        self.tokens = tokens
        self.variables = variables
        self.pos = 0
        self.depth = 0
        self.scope: list[str] = []

    def parse(self) -> Node:
        node = self._expr(0)
        token = self.tokens[self.pos]
        if token.kind != "eof":
            raise self._error(
                token, f"expected an operator or the end of the expression, found {lexer.describe(token)}"
            )
        return node

    def _error(self, token: Token, reason: str) -> errors.ExpressionSyntaxError:
        return faults.syntax_error(self.source, token.pos, reason)

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > limits.MAX_DEPTH:
            raise self._error(
                self.tokens[self.pos], f"expression nests more than {limits.MAX_DEPTH} levels deep"
            )

    def _expect(self, kind: str) -> Token:
        token = self.tokens[self.pos]
        if token.kind != kind:
            raise self._error(token, f"expected `{kind}`, found {lexer.describe(token)}")
        self.pos += 1
        return token

    def _expr(self, min_binding: int) -> Node:
        self._enter()
        left = self._unary()
        while True:
            kind = self.tokens[self.pos].kind
            binding = BINDING.get(kind)
            if binding is None or binding <= min_binding:
                break
            self.pos += 1
            if kind == "?":
                then = self._expr(1)
                self._expect(":")
                left = Conditional(left, then, self._expr(0))
            elif kind == "&&":
                right = self._expr(binding)
                left = And(_terms(left, And) + _terms(right, And))
            elif kind == "||":
                right = self._expr(binding)
                left = Or(_terms(left, Or) + _terms(right, Or))
            else:
                left = Binary(kind, left, self._expr(binding))
        self.depth -= 1
        return left

    def _unary(self) -> Node:
        token = self.tokens[self.pos]
        if token.kind == "!":
            self.pos += 1
            self._enter()
            operand = self._unary()
            self.depth -= 1
            return Unary("!", operand)
        if token.kind == "-":
            self.pos += 1
            following = self.tokens[self.pos]
            if following.kind == "int" and following.value == limits.INT64_MAX + 1:
                self.pos += 1  # -9223372036854775808 is in range although its magnitude is not
                return self._postfix(Literal(-following.value))
            self._enter()
            operand = self._unary()
            self.depth -= 1
            if type(operand) is Literal and type(operand.value) in (int, float):
                if operand.value == limits.INT64_MIN:
                    raise self._error(token, "integer literal is out of range")
                return Literal(-operand.value)  # fold, so "-1" is a literal everywhere (equality_literals)
            return Unary("-", operand)
        return self._postfix(self._primary())

    def _primary(self) -> Node:
        token = self.tokens[self.pos]
        kind = token.kind
        self.pos += 1
        if kind in ("string", "double", "uint", "literal"):
            return Literal(token.value)
        if kind == "int":
            if token.value > limits.INT64_MAX:
                raise self._error(token, "integer literal is out of range")
            return Literal(token.value)
        if kind == "ident":
            if self.tokens[self.pos].kind == "(":
                self.pos += 1
                return self._call(token)
            name = token.value
            if name not in self.variables and name not in self.scope:
                raise self._error(
                    token, f"unknown variable `{name}` (expressions can use {', '.join(self.variables)})"
                )
            return Ident(name)
        if kind == "(":
            node = self._expr(0)
            self._expect(")")
            return node
        if kind == "[":
            return ListExpr(tuple(self._sequence("]")))
        if kind == "{":
            return MapExpr(tuple(self._entries()))
        if kind == "reserved":
            raise self._error(token, f"`{token.value}` is a reserved word")
        self.pos -= 1
        raise self._error(token, f"expected a value, found {lexer.describe(token)}")

    def _postfix(self, node: Node) -> Node:
        while True:
            token = self.tokens[self.pos]
            if token.kind == ".":
                self.pos += 1
                name = self.tokens[self.pos]
                if name.kind == "reserved":
                    raise self._error(
                        name, f"`{name.value}` is a reserved word; write ['{name.value}'] instead"
                    )
                if name.kind != "ident":
                    raise self._error(name, f"expected a field name after `.`, found {lexer.describe(name)}")
                self.pos += 1
                if self.tokens[self.pos].kind == "(":
                    self.pos += 1
                    node = self._method(node, name)
                else:
                    node = Select(node, name.value)
            elif token.kind == "[":
                self.pos += 1
                index = self._expr(0)
                self._expect("]")
                node = Index(node, index)
            else:
                return node

    def _sequence(self, close: str) -> list[Node]:
        items: list[Node] = []
        while self.tokens[self.pos].kind != close:
            items.append(self._expr(0))
            if self.tokens[self.pos].kind != ",":
                break
            self.pos += 1
        self._expect(close)
        return items

    def _entries(self) -> list[tuple[Node, Node]]:
        entries: list[tuple[Node, Node]] = []
        while self.tokens[self.pos].kind != "}":
            key = self._expr(0)
            self._expect(":")
            entries.append((key, self._expr(0)))
            if self.tokens[self.pos].kind != ",":
                break
            self.pos += 1
        self._expect("}")
        return entries

    def _call(self, token: Token) -> Node:
        name = token.value
        if name == "has":
            args = self._sequence(")")
            if len(args) != 1 or type(args[0]) is not Select:
                raise self._error(token, "has() takes one field selection, like has(event.data.user)")
            return Has(args[0])
        function = functions.GLOBALS.get(name)
        if function is None:
            raise self._error(token, f"unknown function `{name}()`")
        args = self._sequence(")")
        self._check_call(token, name, function, args, pattern_at=1)
        return Call(name, tuple(args))

    def _method(self, target: Node, token: Token) -> Node:
        name = token.value
        if name in functions.MACROS:
            return self._macro(target, token)
        function = functions.METHODS.get(name)
        if function is None:
            raise self._error(token, f"unknown method `.{name}()`")
        args = self._sequence(")")
        self._check_call(token, name, function, args, pattern_at=0)
        return Method(target, name, tuple(args))

    def _check_call(
        self, token: Token, name: str, function: Function, args: list[Node], *, pattern_at: int
    ) -> None:
        if len(args) not in function.arity:
            wanted = " or ".join(str(a) for a in function.arity)
            raise self._error(token, f"{name}() takes {wanted} argument(s), got {len(args)}")
        if name == "matches":
            pattern = args[pattern_at]
            if type(pattern) is Literal and type(pattern.value) is str:
                try:
                    patterns.compile_pattern(pattern.value)
                except Fault as exc:
                    raise self._error(token, str(exc)) from None

    def _macro(self, target: Node, token: Token) -> Node:
        kind = token.value
        var = self.tokens[self.pos]
        if var.kind != "ident" or self.tokens[self.pos + 1].kind != ",":
            raise self._error(var, f"{kind}() takes a variable name and an expression, like {kind}(x, x > 0)")
        if var.value in limits.VARIABLES or var.value in self.variables:
            raise self._error(var, f"`{var.value}` cannot be the variable of {kind}(); pick another name")
        self.pos += 2
        self.scope.append(var.value)
        args = self._sequence(")")
        self.scope.pop()
        if kind == "map" and len(args) in (1, 2):
            predicate = args[0] if len(args) == 2 else None
            return Macro(kind, target, var.value, predicate, args[-1])
        if kind != "map" and len(args) == 1:
            return Macro(kind, target, var.value, args[0], None)
        raise self._error(token, f"{kind}() takes {'2 or 3' if kind == 'map' else '2'} arguments")


def _terms(node: Node, kind: type[And] | type[Or]) -> tuple[Node, ...]:
    if isinstance(node, kind):
        return node.terms
    return (node,)
