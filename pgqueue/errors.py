"""Exception hierarchy for pgqueue.

Every error a user can cause maps to one of these classes; the API turns them into
`{"error": "<message>", "status": <code>}` bodies, the CLI into one-line messages naming the fix.
"""

from __future__ import annotations


class PgQueueError(Exception):
    """Base class of every pgqueue error. `status` is the HTTP status the API answers with."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PgQueueError):
    """The caller sent something malformed: bad JSON, a bad field, a bad expression."""

    status = 400


class PayloadTooLarge(InvalidInput):
    status = 413


class Unauthorized(PgQueueError):
    status = 401


class Forbidden(PgQueueError):
    """Authenticated, but not allowed this (an event key limited to other event names)."""

    status = 403


class NotFound(PgQueueError):
    status = 404


class Conflict(PgQueueError):
    status = 409


class SchemaNotReady(PgQueueError):
    """The database schema is missing or older than this code: run `pgqueue migrate`."""

    status = 503


class ConfigError(PgQueueError):
    """Settings are wrong; the message names the setting and the fix."""

    status = 500


class ExpressionError(InvalidInput):
    """An expression failed to parse (at sync) or to evaluate (at run time)."""


class ExpressionSyntaxError(ExpressionError):
    """The expression is not valid: refused when the app syncs."""


class ExpressionEvalError(ExpressionError):
    """The expression is valid but could not be evaluated against this input."""


def brief(exc: BaseException, *, limit: int = 500) -> str:
    """`<ExceptionName>: <first line of its message>`, at most `limit` characters: what an unexpected
    failure is recorded as on a run or an event. No traceback and no further lines (a database
    error's DETAIL may quote row values)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
