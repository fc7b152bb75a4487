"""The evaluation budget: every evaluation gets limits.MAX_COST units and the expensive steps spend them,
so an expression evaluated against an untrusted event cannot burn unbounded CPU or memory on the event loop.

The current budget lives in a context variable set by Program.evaluate, so built-in functions deep in an
evaluation can charge it without threading it through every call; an evaluation never awaits, so the
variable is never shared between two evaluations.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Final

from pgqueue.expressions import limits
from pgqueue.expressions.faults import Fault


class OverBudget(Fault):
    """The evaluation ran out of budget. Never absorbed by &&, || or a macro: it ends the evaluation."""


class Budget:
    __slots__ = ("left",)

    def __init__(self, units: int) -> None:
        self.left = units


_UNLIMITED: Final = Budget(1 << 62)  # outside Program.evaluate (unit tests of single functions)
_current: ContextVar[Budget] = ContextVar("pgqueue_expression_budget", default=_UNLIMITED)


def start() -> Token[Budget]:
    """A fresh budget for one evaluation; pass the token to finish()."""
    return _current.set(Budget(limits.MAX_COST))


def finish(token: Token[Budget]) -> None:
    _current.reset(token)


def spend(units: int) -> None:
    """Charge `units`; raises OverBudget when the evaluation has used up its budget."""
    budget = _current.get()
    budget.left -= units
    if budget.left < 0:
        raise OverBudget(f"expression exceeded its evaluation budget ({limits.MAX_COST} units)")


def spend_text(length: int) -> None:
    """Charge for copying, comparing or scanning `length` characters (one unit per 64)."""
    if length >= 64:
        spend(length >> 6)


def check_string(length: int) -> None:
    """Refuse to build a string longer than limits.MAX_STRING_CHARS, else charge for copying it."""
    if length > limits.MAX_STRING_CHARS:
        raise OverBudget(
            f"expression would build a string of {length} characters; the limit is {limits.MAX_STRING_CHARS}"
        )
    spend_text(length)


def check_list(length: int) -> None:
    """Refuse to build a list longer than limits.MAX_LIST_ITEMS, else charge for copying it."""
    if length > limits.MAX_LIST_ITEMS:
        raise OverBudget(
            f"expression would build a list of {length} items; the limit is {limits.MAX_LIST_ITEMS}"
        )
    spend(1 + (length >> 3))
