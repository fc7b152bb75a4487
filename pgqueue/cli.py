"""Command line: `pgqueue dev | serve | worker | realtime | migrate | tick`. Thin: it resolves settings
and calls public functions; every failure is one line naming the fix, never a stack trace."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import psycopg
import uvicorn

from pgqueue import __version__, telemetry
from pgqueue.errors import PgQueueError
from pgqueue.settings import Settings

if TYPE_CHECKING:
    from pgqueue.db.embedded import EmbeddedPostgres

log = logging.getLogger("pgqueue")


class _Terminated(Exception):
    """SIGTERM arrived before the server installed its own handler (embedded start-up, migrations)."""


class _StartupSignals:
    """SIGTERM before uvicorn (or the worker loop) takes the signal over: unwind through main's `finally`,
    so an embedded cluster started here is stopped rather than left running. While the cluster is being
    started, SIGTERM and SIGINT are held until start() returns the handle needed to stop it again."""

    def __init__(self) -> None:
        self._holding = False
        self._held: list[int] = []
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._handle)}

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._holding:
            self._held.append(signum)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise _Terminated

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        main_thread = threading.current_thread() is threading.main_thread()
        interrupt = signal.signal(signal.SIGINT, self._handle) if main_thread else None
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            if main_thread:
                signal.signal(signal.SIGINT, interrupt)
        if signal.SIGINT in self._held:
            raise KeyboardInterrupt
        if self._held:
            raise _Terminated


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL)")
    p.add_argument("--log-level", default=None, help="debug, info, warning, error")


def _server(p: argparse.ArgumentParser, default_host: str) -> None:
    p.add_argument("--host", default=None, help=f"address to listen on (default {default_host})")
    p.add_argument("--port", "-p", type=int, default=None, help="port (default 8288)")
    p.add_argument("-u", "--sdk-url", action="append", default=[], metavar="URL",
                   help="app serve URL to sync at start-up (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgqueue", description="Durable functions on PostgreSQL alone")
    parser.add_argument("--version", action="version", version=f"pgqueue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run everything in one process, key-less, for development")
    _common(dev)
    _server(dev, "127.0.0.1")
    dev.add_argument("--data-dir", help="embedded database folder (default ./.pgqueue/pgdata)")
    dev.add_argument(
        "--no-workers", action="store_true", help="serve the API only (drive work with `pgqueue tick`)"
    )

    serve = sub.add_parser("serve", help="run everything in one process in production mode")
    _common(serve)
    _server(serve, "0.0.0.0")
    serve.add_argument("--signing-key", help="hex signing key (default $PGQUEUE_SIGNING_KEY)")
    serve.add_argument("--signing-key-fallback", help="previous signing key, accepted during rotation")
    serve.add_argument("--event-key", action="append", default=[], help="accepted event key (repeatable)")
    serve.add_argument("--migrate", action="store_true", help="apply migrations before starting")
    serve.add_argument(
        "--no-workers", action="store_true", help="serve the API only (run `pgqueue worker` elsewhere)"
    )

    worker = sub.add_parser("worker", help="run only the runner and executor (scale out)")
    _common(worker)
    worker.add_argument("--signing-key", help="hex signing key (default $PGQUEUE_SIGNING_KEY)")
    worker.add_argument("--migrate", action="store_true", help="apply migrations before starting")

    rt = sub.add_parser(
        "realtime",
        help="serve only realtime (publish, tokens, WebSocket and SSE subscribers), e.g. beside a"
             " serverless API",
    )
    _common(rt)
    rt.add_argument("--host", default=None,
                    help="address to listen on (default 0.0.0.0 with a signing key, else 127.0.0.1)")
    rt.add_argument("--port", "-p", type=int, default=None, help="port (default 8288)")
    rt.add_argument("--signing-key",
                    help="hex signing key (default $PGQUEUE_SIGNING_KEY); without one: dev mode")
    rt.add_argument("--signing-key-fallback", help="previous signing key, accepted during rotation")
    rt.add_argument("--event-key", action="append", default=[], help="accepted event key (repeatable)")
    rt.add_argument("--migrate", action="store_true", help="apply migrations before starting")

    mig = sub.add_parser("migrate", help="create or upgrade the pgqueue schema (safe to run twice)")
    _common(mig)

    tick = sub.add_parser(
        "tick", help="do all due background work once (cron, rescue, queue) within a time budget, then exit"
    )
    _common(tick)
    tick.add_argument("--signing-key", help="hex signing key (default $PGQUEUE_SIGNING_KEY)")
    tick.add_argument("--budget", type=float, default=60.0, metavar="SECONDS",
                      help="stop claiming work after this long (default 60)")
    tick.add_argument("--linger", type=float, default=None, metavar="SECONDS",
                      help="keep going while work comes due within this long "
                           "(default $PGQUEUE_TICK_LINGER_S or 0: stop when idle)")
    tick.add_argument("--metrics", metavar="NAME",
                      help="print a CloudWatch EMF line with dimension FunctionName=NAME")
    keys = sub.add_parser("event-keys", help="create, list or revoke event keys kept in the database")
    _common(keys)
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; it is printed once (only its hash is stored)")
    create.add_argument("name", help="what the key is for, e.g. 'checkout service'")
    create.add_argument("--event", action="append", dest="events", metavar="NAME", default=None,
                        help="limit the key to this event name (repeatable; 'shop/*' for a prefix)")
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--active", action="store_true", help="leave revoked keys out")
    revoke = actions.add_parser("revoke", help="revoke a key: refused from the next request on")
    revoke.add_argument("id", help="the key's id (from `list`)")
    return parser


async def _event_keys(settings: Settings, args: argparse.Namespace) -> int:
    from psycopg.rows import dict_row

    from pgqueue.admin import actions
    from pgqueue.store import event_keys

    assert settings.database_url
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True, row_factory=dict_row, prepare_threshold=None
    ) as conn:
        if args.action == "create":
            row, key = await actions.create_event_key(conn, args.name, args.events)
            print(json.dumps({"id": row["id"], "name": row["name"], "event_names": row["event_names"],
                              "key": key}))
            print("pgqueue: this is the only time the key is shown; store it now", file=sys.stderr)
        elif args.action == "list":
            for row in await event_keys.list_keys(conn, include_revoked=not args.active):
                revoked = row["revoked_at"].isoformat() if row["revoked_at"] else None
                print(json.dumps({"id": row["id"], "name": row["name"], "key_prefix": row["key_prefix"],
                                  "event_names": row["event_names"],
                                  "created_at": row["created_at"].isoformat(), "revoked_at": revoked}))
        else:
            row = await actions.revoke_event_key(conn, args.id)
            print(json.dumps({"id": row["id"], "name": row["name"],
                              "revoked_at": row["revoked_at"].isoformat()}))
    return 0


def _setup_logging(level: str, fmt: str = "text") -> None:
    from pgqueue import logging_setup

    logging_setup.configure(level, fmt)


def _resolve_database(
    settings: Settings, args: argparse.Namespace
) -> tuple[Settings, EmbeddedPostgres | None]:
    if settings.database_url:
        return settings, None
    if args.command != "dev":
        raise PgQueueError(
            "no database configured: set DATABASE_URL (or pass --database-url);"
            " only `pgqueue dev` starts an embedded database by itself"
        )
    from pgqueue.db import embedded

    data_dir = Path(args.data_dir or settings.data_dir or embedded.default_data_dir())
    pg = embedded.start(data_dir)
    log.info("embedded PostgreSQL at %s (data in %s)", pg.url, pg.data_dir)
    return settings.with_overrides(database_url=pg.url), pg


def _stop_embedded(pg: EmbeddedPostgres | None) -> None:
    """Stop the cluster this process started (a cluster another `pgqueue dev` started is left running)."""
    if pg is None or not pg.owned:
        return
    log.info("stopping embedded PostgreSQL (data in %s)", pg.data_dir)
    try:
        pg.stop("fast")
    except PgQueueError as exc:
        print(f"pgqueue: {_one_line(exc.message)}", file=sys.stderr)


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _database_error(exc: psycopg.Error) -> str:
    detail = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return (
            f"cannot reach the database ({detail}): check DATABASE_URL (or --database-url)"
            " and that PostgreSQL is running"
        )
    return f"database error ({type(exc).__name__}: {detail})"


def _run_server(settings: Settings, *, run_services: bool, realtime_only: bool = False) -> None:
    from api.app import create_app

    app = create_app(settings, run_services=run_services, surface="realtime" if realtime_only else "all")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
        access_log=False,
        # Realtime fans one message out to many WebSocket subscribers: compressing it again for
        # each of them (permessage-deflate, on by default) costs more CPU than the fan-out itself.
        ws_per_message_deflate=False,
        # JSON logs: uvicorn's loggers propagate to the root handler instead of printing text
        **({"log_config": None} if settings.log_format == "json" else {}),
    )
    what = "realtime" if realtime_only else f"{settings.mode} mode"
    log.info("pgqueue %s (%s) on http://%s:%d", __version__, what, settings.host, settings.port)
    GracefulServer(config).run()


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown, so the process would die by the
    signal; a graceful shutdown is a success, so the process exits 0 instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


async def _run_worker(settings: Settings) -> None:
    from pgqueue.db.pool import open_pool
    from pgqueue.services.process import Services

    assert settings.database_url
    pool = await open_pool(settings.database_url, max_size=settings.pool_size, pooler=settings.pooler)
    services = Services(settings, pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await services.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping: no new claims; waiting for in-flight calls")
        await services.stop()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pg: EmbeddedPostgres | None = None
    signals = _StartupSignals()
    signals.install()
    try:
        from pgqueue.serverless import aws

        # secrets a container runtime injected (PGQUEUE_SECRET_VALUE_<n>), under the direct variables
        environ = aws.injected_secret_environment(os.environ)
        production = args.command == "serve" or (
            args.command == "realtime" and bool(args.signing_key or environ.get("PGQUEUE_SIGNING_KEY"))
        )
        settings = Settings.from_env(
            environ,
            mode="serve" if production else "dev",
            database_url=args.database_url,
            log_level=args.log_level,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            sdk_urls=tuple(getattr(args, "sdk_url", []) or ()) or None,
            signing_key=getattr(args, "signing_key", None),
            signing_key_fallback=getattr(args, "signing_key_fallback", None),
            event_keys=tuple(getattr(args, "event_key", []) or ()) or None,
        )
        # serve listens on all interfaces unless told otherwise (flag or PGQUEUE_HOST); dev on loopback
        if production and args.host is None and not environ.get("PGQUEUE_HOST"):
            settings = settings.with_overrides(host="0.0.0.0")
        # A worker or tick holding a signing key calls the apps of a production deployment (the
        # key exists for cloud-mode SDKs): production egress policy and signed answers.
        if args.command in ("worker", "tick") and settings.signing_key:
            settings = settings.with_overrides(calls_mode="serve")
        _setup_logging(settings.log_level, settings.log_format)
        telemetry.configure()  # traces on or off from the OTEL_* variables, said once at start-up
        with signals.held():
            settings, pg = _resolve_database(settings, args)
        from pgqueue.db import migrate

        assert settings.database_url
        if args.command == "migrate":
            result = migrate.migrate(settings.database_url)
            print(f"pgqueue schema at version {result.version} (applied: {list(result.applied) or 'none'})")
            return 0
        if args.command == "dev" or getattr(args, "migrate", False):
            migrate.migrate(settings.database_url)
        else:
            migrate.check_schema(settings.database_url)
        if args.command == "event-keys":
            return asyncio.run(_event_keys(settings, args))
        if args.command == "tick":
            from pgqueue.serverless import tick

            result = asyncio.run(tick.run_tick(settings, budget_s=args.budget, linger_s=args.linger,
                                               metrics_name=args.metrics))
            print(json.dumps(result.to_dict()))
            return 0
        if args.command == "worker":
            asyncio.run(_run_worker(settings))
        elif args.command == "realtime":
            _run_server(settings, run_services=False, realtime_only=True)
        else:
            _run_server(settings, run_services=not getattr(args, "no_workers", False))
        return 0
    except PgQueueError as exc:
        print(f"pgqueue: {_one_line(exc.message)}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"pgqueue: {_database_error(exc)}", file=sys.stderr)
        return 2
    except _Terminated:
        log.info("stopped by SIGTERM during start-up")
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"pgqueue: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(_Terminated, KeyboardInterrupt):
            _stop_embedded(pg)
        signals.restore()
        with contextlib.suppress(Exception):
            logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
