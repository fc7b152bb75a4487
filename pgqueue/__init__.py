"""pgqueue: durable functions on PostgreSQL alone, wire-compatible with the Inngest SDKs.

Public surface: settings, migrations, the one-shot tick (serverless), the error classes, and
`send_event` / `send_events` / `send_signal` / `publish` (and their `_async` forms): events,
signals and realtime messages sent from the caller's own transaction (pgqueue/store/outbox.py).
The HTTP application lives in `api.app.create_app(settings)`; the CLI is `pgqueue`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pgqueue import errors  # noqa: E402
from pgqueue.db.migrate import migrate  # noqa: E402
from pgqueue.settings import Settings  # noqa: E402
from pgqueue.store.outbox import (  # noqa: E402
    publish,
    publish_async,
    send_event,
    send_event_async,
    send_events,
    send_events_async,
    send_signal,
    send_signal_async,
)

__all__ = ["Settings", "__version__", "errors", "migrate", "publish", "publish_async", "run_tick",
           "send_event", "send_event_async", "send_events", "send_events_async", "send_signal",
           "send_signal_async"]


def __getattr__(name: str) -> object:
    # run_tick pulls in the whole engine; import it only when asked for.
    if name == "run_tick":
        from pgqueue.serverless.tick import run_tick

        return run_tick
    raise AttributeError(f"module 'pgqueue' has no attribute {name!r}")
