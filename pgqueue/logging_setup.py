"""Process logging: text or JSON lines (PGQUEUE_LOG_FORMAT), each carrying the run and function
it is about.

`bind(run_id=..., function_id=...)` puts ids in a context variable for the code inside it (the
worker binds each queue item's run and function around its execution, see services.py); a
logging filter copies them onto every record, and a call may also pass them with
`extra={"run_id": ...}`. Text lines end in ` run=<id> fn=<id>`; JSON lines have the fields
`ts, level, logger, message, run_id, function_id` (plus `exc` for tracebacks).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("run_id", "function_id", "app", "event_id")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "pgqueue_log_context", default=None
)


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Attach ids (run_id, function_id, ...) to every log record emitted inside the block."""
    current = dict(_context.get() or {})
    current.update({k: str(v) for k, v in fields.items() if v is not None})
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, str]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (an explicit `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = []
        if getattr(record, "run_id", None):
            ids.append(f"run={record.run_id}")
        if getattr(record, "function_id", None):
            ids.append(f"fn={record.function_id}")
        if not ids:
            return line
        head, sep, tail = line.partition("\n")  # keep ids on the message line, before a traceback
        return f"{head} {' '.join(ids)}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (CloudWatch, Loki, Datadog)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value:
                out[key] = str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt.lower() == "json" else TextFormatter()


def configure(level: str = "info", fmt: str = "text") -> None:
    """Set up the root logger once per process (the CLI calls this before anything logs)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    name = level.upper()
    root.setLevel(logging.DEBUG if name == "TRACE" else getattr(logging, name, logging.INFO))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
