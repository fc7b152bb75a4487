"""Settings, read from the environment (PGQUEUE_*, DATABASE_URL) and CLI flags, validated up front.

Every problem is reported with the setting's name and the fix; unknown PGQUEUE_* variables get a
did-you-mean hint, because a typo in a deployment should fail loudly rather than be ignored.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from pgqueue.errors import ConfigError
from pgqueue.protocol import signing

Mode = Literal["dev", "serve"]

_ENV_FIELDS: dict[str, tuple[str, type]] = {
    "DATABASE_URL": ("database_url", str),
    "PGQUEUE_SIGNING_KEY": ("signing_key", str),
    "PGQUEUE_SIGNING_KEY_FALLBACK": ("signing_key_fallback", str),
    "PGQUEUE_EVENT_KEYS": ("event_keys", list),
    "PGQUEUE_HOST": ("host", str),
    "PGQUEUE_PORT": ("port", int),
    "PGQUEUE_POLL_INTERVAL_MS": ("poll_interval_ms", int),
    "PGQUEUE_LEASE_MS": ("lease_ms", int),
    "PGQUEUE_WORKER_CONCURRENCY": ("worker_concurrency", int),
    "PGQUEUE_DEFAULT_CONCURRENCY": ("default_concurrency", int),
    "PGQUEUE_ADAPTIVE_CONCURRENCY": ("adaptive_concurrency", bool),
    "PGQUEUE_ADAPTIVE_MIN": ("adaptive_min", int),
    "PGQUEUE_ADAPTIVE_MAX": ("adaptive_max", int),
    "PGQUEUE_MAX_EVENT_BYTES": ("max_event_bytes", int),
    "PGQUEUE_CALL_TIMEOUT_S": ("call_timeout_s", float),
    "PGQUEUE_CONNECT_TIMEOUT_S": ("connect_timeout_s", float),
    "PGQUEUE_MAX_RESPONSE_BYTES": ("max_response_bytes", int),
    "PGQUEUE_BACKOFF_SCALE": ("backoff_scale", float),
    "PGQUEUE_POOL_SIZE": ("pool_size", int),
    "PGQUEUE_DATA_DIR": ("data_dir", str),
    "PGQUEUE_PUBLIC_URL": ("public_url", str),
    "PGQUEUE_LOG_LEVEL": ("log_level", str),
    "PGQUEUE_SHUTDOWN_GRACE_S": ("shutdown_grace_s", float),
    "PGQUEUE_PG_BIN": ("pg_bin", str),
    "PGQUEUE_ADMIN_PASSWORD": ("admin_password", str),
    "PGQUEUE_API_TOKENS": ("api_tokens", list),
    "PGQUEUE_LOGIN_MAX_FAILURES": ("login_max_failures", int),
    "PGQUEUE_LOGIN_ACCOUNT_MAX_FAILURES": ("login_account_max_failures", int),
    "PGQUEUE_LOGIN_LOCKOUT_S": ("login_lockout_s", float),
    "PGQUEUE_LOGIN_MAX_LOCKOUT_S": ("login_max_lockout_s", float),
    "PGQUEUE_RETENTION_DAYS": ("retention_days", float),
    "PGQUEUE_PARTITION_HOURS": ("partition_hours", float),
    "PGQUEUE_LOG_FORMAT": ("log_format", str),
    "PGQUEUE_POOLER": ("pooler", bool),
    "PGQUEUE_ALLOW_LOOPBACK": ("allow_loopback", bool),
    "PGQUEUE_ALLOW_LINK_LOCAL": ("allow_link_local", bool),
    "PGQUEUE_ALLOWED_APP_NETWORKS": ("allowed_app_networks", list),
    "PGQUEUE_ALLOWED_APP_HOSTS": ("allowed_app_hosts", list),
    "PGQUEUE_FETCH_ALLOWED_NETWORKS": ("fetch_allowed_networks", list),
    "PGQUEUE_FETCH_ALLOWED_HOSTS": ("fetch_allowed_hosts", list),
    "PGQUEUE_REQUIRE_RESPONSE_SIGNATURE": ("require_response_signature", bool),
    "PGQUEUE_KICK_FUNCTION": ("kick_function", str),
    "PGQUEUE_KICK_DEBOUNCE_MS": ("kick_debounce_ms", int),
    "PGQUEUE_TICK_LINGER_S": ("tick_linger_s", float),
    "PGQUEUE_INLINE_START": ("inline_start", bool),
    "PGQUEUE_CHECKPOINTING": ("checkpointing", bool),
    "PGQUEUE_MAX_API_RESPONSE_BYTES": ("max_api_response_bytes", int),
    "PGQUEUE_WAKE_MAX_HOPS": ("wake_max_hops", int),
    "PGQUEUE_ALLOWED_HOSTS": ("allowed_hosts", list),
    "PGQUEUE_ENDPOINT_OUTPUT_ORIGIN": ("endpoint_output_origin", str),
    "PGQUEUE_TRANSFORM_TIME_LIMIT_MS": ("transform_time_limit_ms", int),
    "PGQUEUE_TRANSFORM_MEMORY_MB": ("transform_memory_mb", int),
    "PGQUEUE_REALTIME_MAX_MESSAGE_BYTES": ("realtime_max_message_bytes", int),
    "PGQUEUE_REALTIME_MAX_STREAM_BYTES": ("realtime_max_stream_bytes", int),
    "PGQUEUE_REALTIME_RETENTION_S": ("realtime_retention_s", float),
    "PGQUEUE_REALTIME_TOKEN_TTL_S": ("realtime_token_ttl_s", float),
    "PGQUEUE_REALTIME_BUFFER_MESSAGES": ("realtime_buffer_messages", int),
    "PGQUEUE_REALTIME_BUFFER_BYTES": ("realtime_buffer_bytes", int),
    "PGQUEUE_REALTIME_LISTEN_URL": ("realtime_listen_url", str),
    "PGQUEUE_REALTIME_POLL_MS": ("realtime_poll_ms", int),
    "PGQUEUE_REALTIME_URL": ("realtime_url", str),
}


@dataclass(frozen=True, slots=True)
class Settings:
    mode: Mode = "dev"
    database_url: str | None = field(default=None, repr=False)
    signing_key: str | None = field(default=None, repr=False)
    signing_key_fallback: str | None = field(default=None, repr=False)
    event_keys: tuple[str, ...] = field(default=(), repr=False)
    host: str = "127.0.0.1"
    port: int = 8288
    sdk_urls: tuple[str, ...] = ()
    poll_interval_ms: int = 1000
    lease_ms: int = 30_000
    worker_concurrency: int = 64
    default_concurrency: int = 1000  # per-function bound when a function sets no limit of its own
    # Each worker holds each app near its best number of calls in flight (pgqueue/queue/adaptive.py),
    # between adaptive_min and adaptive_max (default: worker_concurrency). Off (the default until
    # its latency signal is tuned: on the SDK benchmark it held the app at 1-2 calls, bench/README.md):
    # every app may have up to worker_concurrency calls in flight.
    adaptive_concurrency: bool = False
    adaptive_min: int = 1
    adaptive_max: int | None = None
    max_event_bytes: int = 512 * 1024
    max_events_per_request: int = 5000
    call_timeout_s: float = 7200.0
    connect_timeout_s: float = 10.0
    max_response_bytes: int = 16 * 1024 * 1024
    backoff_scale: float = 1.0
    pool_size: int = 10
    data_dir: str | None = None
    public_url: str | None = None
    log_level: str = "info"
    shutdown_grace_s: float = 30.0
    pg_bin: str | None = None
    # Dashboard login (serve mode); without it or API tokens the login accepts the signing key.
    admin_password: str | None = field(default=None, repr=False)
    # Bearer tokens accepted by the REST API (and the dashboard login) besides the signing key.
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    # Login throttling (docs/security.md#sessions-and-login): failures allowed per client address, and for the
    # dashboard account from anywhere (0: no account-wide limit), before a wait of login_lockout_s
    # that doubles with each further failure up to login_max_lockout_s.
    login_max_failures: int = 5
    login_account_max_failures: int = 20
    login_lockout_s: float = 15.0
    login_max_lockout_s: float = 900.0
    # Finished runs and old events are deleted after this many days; 0 keeps everything.
    retention_days: float = 7.0
    # Width of the history's time partitions (events, runs, steps, attempts); retention drops whole
    # partitions. Applies to partitions made from now on. Unset: a third of the retention window in
    # whole days (1..31; 30 days when everything is kept). Hot-path statements lock every partition
    # of a table (PostgreSQL 15): each partition set costs ~3% of the throughput (docs/operations.md).
    partition_hours: float | None = None
    log_format: str = "text"
    # Behind PgBouncer (transaction mode) or RDS Proxy: no server-side prepared statements, no
    # LISTEN (services poll). The Lambda handlers always set it.
    pooler: bool = False
    # Egress policy for calls to apps (pgqueue/executor/egress.py, checked on the resolved IP):
    # loopback and this host's own addresses are allowed in dev mode and refused in production
    # unless allow_loopback; link-local and cloud metadata are refused unless allow_link_local;
    # private and special-purpose ranges are refused in production unless listed here.
    allow_loopback: bool | None = None
    allow_link_local: bool = False
    allowed_app_networks: tuple[str, ...] = ()
    allowed_app_hosts: tuple[str, ...] = ()
    # What step.fetch and step.ai.infer may reach (egress.Policy.for_fetch): their own list, so that
    # allowing apps on this host or in a network does not open them to every function's fetches.
    # Production: public addresses only, plus these; dev: as for apps.
    fetch_allowed_networks: tuple[str, ...] = ()
    fetch_allowed_hosts: tuple[str, ...] = ()
    # Production requires a valid X-Inngest-Signature on every answer of an app (None: production).
    require_response_signature: bool | None = None
    # The rules for calls to apps when they differ from `mode`: `pgqueue worker` and `pgqueue tick`
    # serve a production deployment when they hold a signing key (a dev-mode SDK needs none).
    calls_mode: Mode | None = None
    # Serverless: the executor Lambda (`name:alias`) the API kicks (async invoke) after accepting
    # events, and the executor re-invokes to continue its own work.
    kick_function: str | None = None
    kick_debounce_ms: int = 1000
    # Serverless: a tick keeps going while work comes due within this many seconds (one executor
    # at a time lingers), and an executor whose budget ends first invokes its successor, at most
    # wake_max_hops times in a row; the schedule starts a new chain. 0: stop when nothing is due
    # (timers then wait for the next scheduled tick). The Lambda handlers default it to 60.
    tick_linger_s: float = 0.0
    # POST /e starts the events' runs in its own transaction (pgqueue/runner/inline.py) unless a
    # function they trigger debounces, batches or rate limits. Off by default: measured, it made
    # POST /e ~5 ms slower without shortening event -> first step (bench/README.md).
    inline_start: bool = False
    # Calls carry ctx.fn_id and ctx.qi_id, which let the JS SDK 4.x run a function's steps back to
    # back in one request and store each with POST /v1/checkpoint/{runId}/async (checkpointing).
    # False: one step per request, as with every other SDK.
    checkpointing: bool = True
    wake_max_hops: int = 100
    # The largest HTTP response the API can return, serialized (AWS Lambda: 6 MB including the
    # JSON envelope; the Lambda handlers set it). Larger answers become a 413 with a message, and
    # the executor fails a run whose state the SDK could no longer fetch (StateTooLarge).
    max_api_response_bytes: int | None = None
    # Host names the server answers to besides loopback and its bind address (DNS-rebinding guard):
    # always checked in dev mode, in serve mode only when set. ".example.com" matches subdomains
    # too, "*" any host.
    allowed_hosts: tuple[str, ...] = ()
    # Where durable endpoints' outputs are served (scheme://host[:port], another name for this
    # server): pgqueue's own origin redirects `GET /v1/http/runs/{id}/output` there and that origin
    # serves nothing else, so an app's active content runs away from the dashboard. None: outputs
    # are served on pgqueue's own origin, sandboxed (no script runs). docs/security.md.
    endpoint_output_origin: str | None = None
    # A webhook's transform (pgqueue/events/transforms.py): CPU time and memory for each call.
    transform_time_limit_ms: int = 250
    transform_memory_mb: int = 32
    # Realtime (pgqueue/realtime/): the largest message one publish may carry (as JSON text), and
    # the most a streamed publish or a durable endpoint's stream may send in one request.
    realtime_max_message_bytes: int = 512 * 1024
    realtime_max_stream_bytes: int = 16 * 1024 * 1024
    # Published messages are kept this long (fan-out across processes, a durable endpoint's late
    # subscriber, a retried step's publish recognised, the dashboard), then pruned by the rescuer.
    realtime_retention_s: float = 600.0
    # Subscription tokens (POST /v1/realtime/token) must be used to connect within this long.
    realtime_token_ttl_s: float = 60.0
    # What one subscriber connection may have waiting to be sent: past either bound it is closed
    # (logged), so a slow or stuck subscriber never holds up publishers or other subscribers.
    realtime_buffer_messages: int = 1000
    realtime_buffer_bytes: int = 8 * 1024 * 1024
    # A direct connection for realtime's LISTEN when the pool goes through a transaction pooler
    # (PGQUEUE_POOLER), where LISTEN cannot work; without it realtime polls every realtime_poll_ms.
    realtime_listen_url: str | None = field(default=None, repr=False)
    # 50: a subscriber then waits ~25 ms on average for a message (Inngest's realtime aims at 100);
    # each poll is one index probe per channel this process has subscribers for.
    realtime_poll_ms: int = 50
    # The public URL of a `pgqueue realtime` process: an API that cannot hold subscriber
    # connections (the Lambda) sends SSE subscribers there (307) and names it in its errors.
    realtime_url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def partition_width_hours(self) -> int:
        """PGQUEUE_PARTITION_HOURS, or a third of the retention window in whole days (1..31)."""
        if self.partition_hours is not None:
            return int(self.partition_hours)
        if self.retention_days <= 0:
            return 30 * 24
        return min(31, max(1, math.ceil(self.retention_days / 3))) * 24

    @property
    def signing_keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.signing_key, self.signing_key_fallback) if k)

    @property
    def production_calls(self) -> bool:
        """Whether calls to apps follow production rules (egress policy, signed answers)."""
        return (self.calls_mode or self.mode) == "serve"

    @property
    def loopback_allowed(self) -> bool:
        return (not self.production_calls) if self.allow_loopback is None else self.allow_loopback

    @property
    def response_signature_required(self) -> bool:
        if self.require_response_signature is None:
            return self.production_calls and bool(self.signing_key)
        return self.require_response_signature

    @property
    def production(self) -> bool:
        return self.mode == "serve"

    @property
    def output_origin(self) -> str | None:
        """PGQUEUE_ENDPOINT_OUTPUT_ORIGIN as `scheme://host[:port]`, lower case, no trailing slash."""
        if not self.endpoint_output_origin:
            return None
        return self.endpoint_output_origin.strip().rstrip("/").lower()

    def with_overrides(self, **changes: Any) -> Settings:
        clean = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **clean).validated()

    def validated(self) -> Settings:
        if self.signing_key:
            signing.validate_signing_key(self.signing_key, setting="PGQUEUE_SIGNING_KEY (or --signing-key)")
        if self.signing_key_fallback:
            signing.validate_signing_key(
                self.signing_key_fallback, setting="PGQUEUE_SIGNING_KEY_FALLBACK (or --signing-key-fallback)"
            )
        if self.mode == "serve":
            if not self.signing_key:
                raise ConfigError(
                    "pgqueue serve needs a signing key: set PGQUEUE_SIGNING_KEY or pass --signing-key"
                    " (generate one with `openssl rand -hex 32`)"
                )
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_env_name(name)} must be positive, got {getattr(self, name)}")
        if self.adaptive_min < 1:
            raise ConfigError(f"PGQUEUE_ADAPTIVE_MIN must be at least 1, got {self.adaptive_min}")
        top = self.worker_concurrency
        if self.adaptive_max is not None and not self.adaptive_min <= self.adaptive_max <= top:
            raise ConfigError(
                f"PGQUEUE_ADAPTIVE_MAX must be between PGQUEUE_ADAPTIVE_MIN ({self.adaptive_min}) and"
                f" PGQUEUE_WORKER_CONCURRENCY ({self.worker_concurrency}), got {self.adaptive_max}"
            )
        if self.adaptive_min > self.worker_concurrency:
            raise ConfigError(
                f"PGQUEUE_ADAPTIVE_MIN ({self.adaptive_min}) must not exceed PGQUEUE_WORKER_CONCURRENCY"
                f" ({self.worker_concurrency})"
            )
        if self.lease_ms < 1000:
            raise ConfigError(f"PGQUEUE_LEASE_MS must be at least 1000 (got {self.lease_ms})")
        if self.backoff_scale < 0:
            raise ConfigError(f"PGQUEUE_BACKOFF_SCALE must be >= 0 (got {self.backoff_scale})")
        if self.shutdown_grace_s < 0:
            raise ConfigError(f"PGQUEUE_SHUTDOWN_GRACE_S must be >= 0 (got {self.shutdown_grace_s})")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"PGQUEUE_PORT (or --port) must be between 1 and 65535, got {self.port}")
        if self.retention_days < 0:
            raise ConfigError(
                f"PGQUEUE_RETENTION_DAYS must be >= 0 (0 keeps everything), got {self.retention_days}"
            )
        if self.partition_hours is not None and (
            not 1 <= self.partition_hours <= 744 or self.partition_hours != int(self.partition_hours)
        ):
            raise ConfigError(
                f"PGQUEUE_PARTITION_HOURS must be a whole number of hours from 1 to 744 (31 days),"
                f" got {self.partition_hours}"
            )
        if self.log_format.lower() not in _LOG_FORMATS:
            raise ConfigError(
                f"PGQUEUE_LOG_FORMAT must be one of {', '.join(_LOG_FORMATS)}, got {self.log_format!r}"
            )
        _validate_egress(self)
        if self.require_response_signature and not self.signing_key:
            raise ConfigError(
                "PGQUEUE_REQUIRE_RESPONSE_SIGNATURE needs a signing key to check answers with:"
                " set PGQUEUE_SIGNING_KEY, or leave the setting unset"
            )
        if self.admin_password is not None and len(self.admin_password) < MIN_ADMIN_PASSWORD:
            # Raised from 8: an existing shorter password stops the server here, loudly, rather than
            # being accepted and guessed (see docs/security.md#sessions-and-login).
            raise ConfigError(
                f"PGQUEUE_ADMIN_PASSWORD must be at least {MIN_ADMIN_PASSWORD} characters long, it has"
                f" {len(self.admin_password)} (the minimum used to be 8): set a longer one, e.g. from"
                " `openssl rand -base64 18`"
            )
        if self.login_account_max_failures < 0:
            raise ConfigError(
                "PGQUEUE_LOGIN_ACCOUNT_MAX_FAILURES must be >= 0 (0 turns the account-wide limit off),"
                f" got {self.login_account_max_failures}"
            )
        if self.login_max_lockout_s < self.login_lockout_s:
            raise ConfigError(
                f"PGQUEUE_LOGIN_MAX_LOCKOUT_S ({self.login_max_lockout_s:g}) must be at least"
                f" PGQUEUE_LOGIN_LOCKOUT_S ({self.login_lockout_s:g})"
            )
        if self.login_max_lockout_s > 86_400:
            raise ConfigError(
                f"PGQUEUE_LOGIN_MAX_LOCKOUT_S must be at most 86400 (a day), got {self.login_max_lockout_s:g}"
            )
        if any(len(token) < 16 for token in self.api_tokens):
            raise ConfigError(
                "every PGQUEUE_API_TOKENS entry must be at least 16 characters long"
                " (generate one with `openssl rand -hex 32`)"
            )
        for entry in self.allowed_hosts:
            if not _valid_allowed_host(entry):
                raise ConfigError(
                    "PGQUEUE_ALLOWED_HOSTS takes comma-separated host names like pgqueue.internal,"
                    f" .example.com (subdomains too) or * (any), without scheme, port or path; got {entry!r}"
                )
        if self.endpoint_output_origin is not None:
            _validate_output_origin(self.endpoint_output_origin)
        if self.transform_time_limit_ms > 60_000 or self.transform_memory_mb > 1024:
            raise ConfigError(
                "PGQUEUE_TRANSFORM_TIME_LIMIT_MS is at most 60000 and PGQUEUE_TRANSFORM_MEMORY_MB at most"
                " 1024"
                f" (got {self.transform_time_limit_ms} and {self.transform_memory_mb}): a transform maps one"
                " request to events"
            )
        _validate_realtime(self)
        if self.log_level.lower() not in _LOG_LEVELS:
            raise ConfigError(
                f"PGQUEUE_LOG_LEVEL (or --log-level) must be one of {', '.join(_LOG_LEVELS)},"
                f" got {self.log_level!r}"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var, (name, kind) in _ENV_FIELDS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            if kind is int or kind is float:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{var} must be a number, got {raw!r}") from None
            elif kind is list:
                values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            elif kind is bool:
                flag = raw.strip().lower()
                if flag not in _TRUE + _FALSE:
                    raise ConfigError(f"{var} must be 1/true/yes or 0/false/no, got {raw!r}")
                values[name] = flag in _TRUE
            else:
                values[name] = raw
        for var in sorted(env):
            if var.startswith("PGQUEUE_") and var not in _ENV_FIELDS and var not in _IGNORED_ENV \
                    and not _INJECTED_SECRET.fullmatch(var):
                raise ConfigError(f"unknown setting {var}{_did_you_mean(var)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()


# Variables read elsewhere (tests, the embedded database, the Lambda handlers) that are not Settings fields.
_IGNORED_ENV = frozenset(
    {"PGQUEUE_TEST_DATABASE_URL", "PGQUEUE_TEST_KEEP", "PGQUEUE_SECRET_ARN", "PGQUEUE_SSM_PARAMETER"}
)
# Whole secret values a container runtime injected, merged by the CLI (pgqueue/serverless/aws.py).
_INJECTED_SECRET = re.compile(r"PGQUEUE_SECRET_VALUE_\d{1,3}")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_POSITIVE = (
    "poll_interval_ms",
    "worker_concurrency",
    "default_concurrency",
    "max_event_bytes",
    "pool_size",
    "call_timeout_s",
    "connect_timeout_s",
    "max_response_bytes",
    "kick_debounce_ms",
    "login_max_failures",
    "login_lockout_s",
    "transform_time_limit_ms",
    "transform_memory_mb",
    "realtime_max_message_bytes",
    "realtime_max_stream_bytes",
    "realtime_retention_s",
    "realtime_token_ttl_s",
    "realtime_buffer_messages",
    "realtime_buffer_bytes",
    "realtime_poll_ms",
)
_LOG_FORMATS = ("text", "json")
MIN_ADMIN_PASSWORD = 12
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


_HOST_NAME = re.compile(r"\.?[a-z0-9_]([a-z0-9_-]*)(\.[a-z0-9_]([a-z0-9_-]*))*\.?")


def _valid_allowed_host(entry: str) -> bool:
    if entry == "*":
        return True
    bare = entry.lower().removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(bare)
        return True
    except ValueError:
        return _HOST_NAME.fullmatch(bare) is not None


def _validate_output_origin(value: str) -> None:
    parts = urlsplit(value.strip())
    problem = None
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        problem = "its port is not a number"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "it is not an http(s) URL with a host"
    elif parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        problem = "it has a path, query or user name: an origin is scheme://host[:port] only"
    if problem:
        raise ConfigError(
            f"PGQUEUE_ENDPOINT_OUTPUT_ORIGIN must be an origin such as https://outputs.example.com,"
            f" another name for this server; {problem} (got {value!r})"
        )


def _validate_realtime(settings: Settings) -> None:
    if settings.realtime_max_message_bytes > settings.realtime_buffer_bytes:
        raise ConfigError(
            f"PGQUEUE_REALTIME_BUFFER_BYTES ({settings.realtime_buffer_bytes}) must be at least"
            f" PGQUEUE_REALTIME_MAX_MESSAGE_BYTES ({settings.realtime_max_message_bytes}): a subscriber"
            " must be able to hold one message"
        )
    if settings.realtime_max_message_bytes > 64 * 1024 * 1024:
        raise ConfigError(
            "PGQUEUE_REALTIME_MAX_MESSAGE_BYTES must be at most 67108864 (64 MiB), got"
            f" {settings.realtime_max_message_bytes}"
        )
    if settings.realtime_token_ttl_s > 86_400:
        raise ConfigError(
            "PGQUEUE_REALTIME_TOKEN_TTL_S must be at most 86400 (a day), got"
            f" {settings.realtime_token_ttl_s:g}: subscription tokens are meant to be short-lived"
        )
    if settings.realtime_url is not None:
        parts = urlsplit(settings.realtime_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
                or parts.query:
            raise ConfigError(
                "PGQUEUE_REALTIME_URL must be the origin of a `pgqueue realtime` process, like"
                f" https://realtime.example.com (no path or query), got {settings.realtime_url!r}"
            )


def _validate_egress(settings: Settings) -> None:
    _validate_networks(settings.allowed_app_networks, "PGQUEUE_ALLOWED_APP_NETWORKS")
    _validate_networks(settings.fetch_allowed_networks, "PGQUEUE_FETCH_ALLOWED_NETWORKS")
    for hosts, variable, networks in (
        (settings.allowed_app_hosts, "PGQUEUE_ALLOWED_APP_HOSTS", "PGQUEUE_ALLOWED_APP_NETWORKS"),
        (settings.fetch_allowed_hosts, "PGQUEUE_FETCH_ALLOWED_HOSTS", "PGQUEUE_FETCH_ALLOWED_NETWORKS"),
    ):
        _validate_hosts(hosts, variable, networks)


def _validate_networks(entries: tuple[str, ...], variable: str) -> None:
    for entry in entries:
        try:
            ipaddress.ip_network(entry)
        except ValueError as exc:
            try:
                hint = f" (did you mean {ipaddress.ip_network(entry, strict=False)}?)"
            except ValueError:
                hint = ""
            raise ConfigError(
                f"{variable}: {entry!r} is not a CIDR network: {exc}{hint};"
                " use comma-separated networks, e.g. 10.0.0.0/8,fd00::/8"
            ) from None


def _validate_hosts(entries: tuple[str, ...], variable: str, networks_variable: str) -> None:
    for entry in entries:
        name = entry.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            pass
        else:
            raise ConfigError(
                f"{variable}: {entry!r} is an address, not a host name; list it in"
                f" {networks_variable} as {address}/{address.max_prefixlen}"
            )
        if _HOST_PATTERN.fullmatch(name) is None:
            raise ConfigError(
                f"{variable}: {entry!r} is not a host name; use names such as"
                " app.internal, or *.internal for every name below internal"
            )


# A host name, optionally `*.` followed by a suffix: ASCII labels (IDNs in their xn-- form).
_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_PATTERN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*", re.ASCII)


def _env_name(field_name: str) -> str:
    return next((var for var, (name, _) in _ENV_FIELDS.items() if name == field_name), field_name)


def _did_you_mean(var: str) -> str:
    """Compare the part after PGQUEUE_: the shared prefix alone would make any name look close."""
    candidates = {name.removeprefix("PGQUEUE_"): name for name in _ENV_FIELDS}
    hint = difflib.get_close_matches(var.removeprefix("PGQUEUE_"), list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {candidates[hint[0]]}?" if hint else ""
