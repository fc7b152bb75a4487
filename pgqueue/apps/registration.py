"""Validate and normalise an SDK's `POST /fn/register` body into the configuration we store.

Both official SDKs are accommodated: JSON keys match case-insensitively (Python sends `appname`),
null and missing fields are the same, durations carry s/m/h/d/w units, and `concurrency` may be a
number, an object or a list. Every problem is reported with the function and field it concerns.

Flow-control settings are checked here, once, rather than warned about at run time: a setting
pgqueue does not understand (an unknown field, the `{fn, step}` concurrency form, a zero limit or
period) is refused with a 400 instead of silently running the function without that limit.
Bounds follow Inngest's where it has them (docs/flow-control.md lists them).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from croniter import croniter

from pgqueue import expressions
from pgqueue.durations import parse_duration
from pgqueue.errors import ExpressionSyntaxError, InvalidInput
from pgqueue.events import ingest
from pgqueue.models import AppSpec, FunctionSpec, Trigger
from pgqueue.runner.cron import split_cron

MAX_TRIGGERS = 10
MAX_CONCURRENCY = 2
MAX_CANCEL = 5
MAX_RETRIES = 20
# App and function ids are unique (btree) keys; event names are indexed with pauses and triggers,
# and a cron string is part of its schedule's key. Bounding them here gives a 400 naming the field
# instead of the index's size error (a btree entry holds about 2,700 bytes).
MAX_ID_LENGTH = 256
MAX_EVENT_NAME_LENGTH = 512
MAX_CRON_LENGTH = 256
MAX_CRON_JITTER_S = 300.0  # Inngest accepts a cron `jitter` of 1s..5m
DEFAULT_RETRIES = 4

# Flow-control bounds. Limits are stored as integers; these keep every derived quantity (GCRA
# emission and tolerance in microseconds, batch sizes) far inside its column's range.
MAX_CONCURRENCY_LIMIT = 100_000
MAX_RATE_LIMIT = 1_000_000  # throttle and rateLimit `limit`
MAX_THROTTLE_BURST = 10_000
MAX_BATCH_SIZE = 10_000
SECOND = 1.0
DAY = 86_400.0


def lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).lower(): lower_keys(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


def _str(obj: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"{where}: `{key}` is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: `{key}` must be a string")
    return value


def _expr(source: Any, where: str) -> str | None:
    if source is None or source == "":
        return None
    if not isinstance(source, str):
        raise InvalidInput(f"{where}: expression must be a string")
    try:
        expressions.compile(source)
    except ExpressionSyntaxError as exc:
        raise InvalidInput(f"{where}: invalid expression {source!r}: {exc.message}") from None
    return source


def _duration(value: Any, where: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{where} is required")
        return None
    try:
        seconds = parse_duration(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.message}") from None
    if not math.isfinite(seconds):
        raise InvalidInput(f"{where}: duration {value!r} is too large")
    if seconds < 0:
        raise InvalidInput(f"{where}: duration must not be negative")
    return str(value) if isinstance(value, str) else f"{value}s"


def _int(value: Any, where: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or int(value) != value
    ):
        raise InvalidInput(f"{where} must be an integer")
    n = int(value)
    if minimum is not None and n < minimum:
        raise InvalidInput(f"{where} must be at least {minimum}")
    if maximum is not None and n > maximum:
        raise InvalidInput(f"{where} must be at most {maximum}")
    return n


def _trigger(raw: Any, where: str) -> Trigger:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object with `event` or `cron`")
    event = _str(raw, "event", where)
    cron = _str(raw, "cron", where)
    if (event is None) == (cron is None):
        raise InvalidInput(f"{where} needs exactly one of `event` or `cron`")
    if event is not None:
        if raw.get("jitter") is not None:
            raise InvalidInput(f"{where}: `jitter` applies to cron triggers only")
        if not event or len(event) > MAX_EVENT_NAME_LENGTH:
            raise InvalidInput(f"{where}: event name must be 1..{MAX_EVENT_NAME_LENGTH} characters")
        if "*" in event and not (event.endswith("/*") or event.endswith(".*") or event == "*"):
            raise InvalidInput(f"{where}: a wildcard may only end the name after '/' or '.', e.g. 'app/*'")
        return Trigger(event=event, expression=_expr(raw.get("expression"), f"{where} expression"))
    assert cron is not None
    if len(cron) > MAX_CRON_LENGTH:
        raise InvalidInput(f"{where}: cron is longer than {MAX_CRON_LENGTH} characters")
    tz, fields = split_cron(cron)
    if len(fields.split()) != 5 or not croniter.is_valid(fields):
        raise InvalidInput(f"{where}: invalid cron {cron!r}: use 5 fields, e.g. '0 9 * * 1-5'")
    if tz:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"{where}: unknown time zone {tz!r} in cron {cron!r}") from None
    jitter = _duration(raw.get("jitter"), f"{where} jitter")
    if jitter is not None and not SECOND <= parse_duration(jitter) <= MAX_CRON_JITTER_S:
        raise InvalidInput(f"{where} jitter: {raw['jitter']!r} must be between 1s and 5m")
    return Trigger(cron=cron, jitter=jitter)


_CONCURRENCY_FIELDS = ("limit", "key", "scope")
_CONCURRENCY_SHAPES = "a number, an object {limit, key?, scope?} or a list of at most 2 such objects"


def _concurrency(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = [{"limit": raw}]
    elif isinstance(raw, dict):
        if "fn" in raw or "step" in raw:
            raise InvalidInput(
                f"{where}: concurrency {{fn, step}} (separate run- and step-level limits) is not supported "
                f"by pgqueue; concurrency must be {_CONCURRENCY_SHAPES}")
        raw = [raw]
    if not isinstance(raw, list):
        raise InvalidInput(f"{where}: concurrency must be {_CONCURRENCY_SHAPES}")
    if len(raw) > MAX_CONCURRENCY:
        raise InvalidInput(f"{where}: at most {MAX_CONCURRENCY} concurrency limits are allowed")
    out = []
    for i, entry in enumerate(raw):
        w = f"{where} concurrency[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{w} must be an object {{limit, key?, scope?}}")
        _known_fields(entry, _CONCURRENCY_FIELDS, w)
        if entry.get("limit") is None:
            raise InvalidInput(f"{w}: `limit` is required")
        limit = _int(entry["limit"], f"{w} limit", minimum=1, maximum=MAX_CONCURRENCY_LIMIT)
        scope = entry.get("scope", "fn")
        if scope not in ("fn", "env", "account"):
            raise InvalidInput(f"{w}: scope must be 'fn', 'env' or 'account', got {scope!r}")
        item: dict[str, Any] = {"limit": limit, "scope": scope}
        key = _expr(entry.get("key"), f"{w} key")
        if key:
            item["key"] = key
        elif scope != "fn":
            raise InvalidInput(f"{w}: a `key` is required for a limit of scope {scope!r} (as in Inngest)")
        out.append(item)
    return out


def _known_fields(obj: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        names = ", ".join(f"`{_CANONICAL.get(n, n)}`" for n in known)
        raise InvalidInput(f"{where}: unknown field {', '.join(repr(u) for u in unknown)}; "
                           f"pgqueue understands {names}")


def _function(raw: Any, index: int, app_url: str) -> FunctionSpec:
    where = f"function #{index}"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object")
    slug = _str(raw, "id", where, required=True)
    if not slug:
        raise InvalidInput(f"{where}: `id` must not be empty")
    if len(slug) > MAX_ID_LENGTH:
        raise InvalidInput(f"{where}: `id` is longer than {MAX_ID_LENGTH} characters")
    where = f"function {slug!r}"
    name = _str(raw, "name", where) or slug
    triggers_raw = raw.get("triggers") or []
    if not isinstance(triggers_raw, list):
        raise InvalidInput(f"{where}: triggers must be a list")
    if len(triggers_raw) > MAX_TRIGGERS:
        raise InvalidInput(f"{where}: at most {MAX_TRIGGERS} triggers are allowed")
    triggers = tuple(_trigger(t, f"{where} trigger #{i}") for i, t in enumerate(triggers_raw))
    seen = set()
    for t in triggers:
        key = ("cron", split_cron(t.cron)) if t.cron else ("event", t.event, t.expression)
        if key in seen:
            raise InvalidInput(f"{where}: duplicate trigger {t.event or t.cron!r}")
        seen.add(key)

    steps = raw.get("steps") or {}
    if not isinstance(steps, dict):
        raise InvalidInput(f"{where}: steps must be an object")
    step = steps.get("step") or (next(iter(steps.values())) if steps else {})
    runtime = step.get("runtime") or {} if isinstance(step, dict) else {}
    url = runtime.get("url") if isinstance(runtime, dict) else None
    if not isinstance(url, str) or not url:
        url = f"{app_url}{'&' if '?' in app_url else '?'}fnId={slug}&stepId=step"
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{where}: runtime url must be http(s), got {url!r}")
    retries_raw = None
    if isinstance(step, dict) and isinstance(step.get("retries"), dict):
        retries_raw = step["retries"].get("attempts")
    if retries_raw is None:
        retries_raw = raw.get("retries")
    retries = DEFAULT_RETRIES if retries_raw is None else _int(retries_raw, f"{where} retries", minimum=0)
    retries = min(retries, MAX_RETRIES)

    config: dict[str, Any] = {"id": slug, "name": name, "retries": retries,
                              "triggers": [_trigger_dict(t) for t in triggers]}
    concurrency = _concurrency(raw.get("concurrency"), where)
    if concurrency:
        config["concurrency"] = concurrency
    for key, fields in _SECTIONS.items():
        section = raw.get(key)
        if section is None:
            continue
        label = _CANONICAL[key]
        if not isinstance(section, dict):
            raise InvalidInput(f"{where}: {label} must be an object")
        config[label] = _section(section, fields, f"{where} {label}")
    if "singleton" in config and config["singleton"].get("mode") not in ("skip", "cancel"):
        raise InvalidInput(f"{where} singleton: mode must be 'skip' or 'cancel'")
    idem = _expr(raw.get("idempotency"), f"{where} idempotency")
    if idem:
        config["idempotency"] = idem
    cancel = raw.get("cancel")
    if cancel:
        if not isinstance(cancel, list) or len(cancel) > MAX_CANCEL:
            raise InvalidInput(f"{where}: cancel must be a list of at most {MAX_CANCEL} entries")
        entries = []
        for i, c in enumerate(cancel):
            w = f"{where} cancel[{i}]"
            if not isinstance(c, dict) or not isinstance(c.get("event"), str):
                raise InvalidInput(f"{w} needs an `event` name")
            if not c["event"] or len(c["event"]) > MAX_EVENT_NAME_LENGTH:
                raise InvalidInput(f"{w}: event name must be 1..{MAX_EVENT_NAME_LENGTH} characters")
            entry: dict[str, Any] = {"event": c["event"]}
            if c.get("if"):
                entry["if"] = _expr(c["if"], f"{w} if")
            timeout = _duration(c.get("timeout"), f"{w} timeout")
            if timeout is not None:
                entry["timeout"] = timeout
            entries.append(entry)
        config["cancel"] = entries
    finish = (config.get("timeouts") or {}).get("finish")
    finish_ms = None if finish is None else round(parse_duration(finish) * 1000)
    return FunctionSpec(slug=slug, name=name, url=url, retries=retries, triggers=triggers, config=config,
                        finish_timeout_ms=finish_ms)


_CANONICAL = {
    "throttle": "throttle",
    "ratelimit": "rateLimit",
    "debounce": "debounce",
    "priority": "priority",
    "batchevents": "batchEvents",
    "timeouts": "timeouts",
    "singleton": "singleton",
    "maxsize": "maxSize",
}


@dataclass(frozen=True, slots=True)
class _Field:
    kind: str  # "int", "duration", "expr" or "str"
    required: bool = False
    minimum: float | None = None  # ints: the value; durations: seconds
    maximum: float | None = None


_SECTIONS: dict[str, dict[str, _Field]] = {
    "throttle": {
        "limit": _Field("int", required=True, minimum=1, maximum=MAX_RATE_LIMIT),
        "period": _Field("duration", required=True, minimum=SECOND, maximum=7 * DAY),
        "burst": _Field("int", minimum=0, maximum=MAX_THROTTLE_BURST),  # 0 = the default, 1
        "key": _Field("expr"),
    },
    "ratelimit": {
        "limit": _Field("int", required=True, minimum=1, maximum=MAX_RATE_LIMIT),
        "period": _Field("duration", required=True, minimum=SECOND, maximum=DAY),
        "key": _Field("expr"),
    },
    "debounce": {
        "period": _Field("duration", required=True, minimum=SECOND, maximum=7 * DAY),
        "key": _Field("expr"),
        "timeout": _Field("duration"),
    },
    "priority": {"run": _Field("expr")},
    "batchevents": {
        "maxsize": _Field("int", required=True, minimum=2, maximum=MAX_BATCH_SIZE),
        "timeout": _Field("duration", required=True, minimum=SECOND),
        "key": _Field("expr"),
        "if": _Field("expr"),
    },
    "timeouts": {"start": _Field("duration"), "finish": _Field("duration")},
    "singleton": {"mode": _Field("str"), "key": _Field("expr")},
}


def _seconds_text(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _section(section: dict[str, Any], fields: dict[str, _Field], where: str) -> dict[str, Any]:
    _known_fields(section, tuple(fields), where)
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        value = section.get(name)
        label = _CANONICAL.get(name, name)
        w = f"{where} {label}"
        if value is None:
            if spec.required:
                raise InvalidInput(f"{w} is required")
            continue
        if spec.kind == "int":
            out[label] = _int(value, w, minimum=None if spec.minimum is None else int(spec.minimum),
                              maximum=None if spec.maximum is None else int(spec.maximum))
        elif spec.kind == "duration":
            parsed = _duration(value, w, required=spec.required)
            if parsed is None:
                continue
            seconds = parse_duration(parsed)
            if spec.minimum is not None and seconds < spec.minimum:
                raise InvalidInput(f"{w}: {value!r} is below the minimum of {_seconds_text(spec.minimum)}")
            if spec.maximum is not None and seconds > spec.maximum:
                raise InvalidInput(f"{w}: {value!r} is above the maximum of {_seconds_text(spec.maximum)}")
            out[label] = parsed
        elif spec.kind == "expr":
            expr = _expr(value, w)
            if expr is not None:
                out[label] = expr
        else:
            if not isinstance(value, str):
                raise InvalidInput(f"{w} must be a string")
            out[label] = value
    return out


def _trigger_dict(t: Trigger) -> dict[str, Any]:
    if t.cron:
        return {"cron": t.cron, "jitter": t.jitter} if t.jitter else {"cron": t.cron}
    out: dict[str, Any] = {"event": t.event}
    if t.expression:
        out["expression"] = t.expression
    return out


def parse_register(body: Any) -> AppSpec:
    if not isinstance(body, dict):
        raise InvalidInput("the registration body must be a JSON object")
    problem = ingest.unstorable(body)
    if problem:
        raise InvalidInput(f"the registration body {problem}")
    raw = lower_keys(body)
    name = _str(raw, "appname", "app", required=True)
    url = _str(raw, "url", "app", required=True)
    assert name is not None and url is not None
    if not name.strip():
        raise InvalidInput("app: `appName` must not be empty")
    if len(name) > MAX_ID_LENGTH:
        raise InvalidInput(f"app: `appName` is longer than {MAX_ID_LENGTH} characters")
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"app url must be http(s), got {url!r}")
    functions_raw = raw.get("functions")
    if not isinstance(functions_raw, list):
        raise InvalidInput("app: `functions` must be a list")
    functions = tuple(_function(f, i, url) for i, f in enumerate(functions_raw))
    seen: set[str] = set()
    for fn in functions:
        if fn.slug in seen:
            raise InvalidInput(f"app: function ids must be unique; {fn.slug!r} appears more than once")
        seen.add(fn.slug)
    sdk = _str(raw, "sdk", "app") or ""
    language, _, version = sdk.partition(":")
    checksum_src = json.dumps(
        {"url": url, "functions": [[f.slug, f.name, f.url, f.config] for f in functions],
         "sdk": sdk, "framework": raw.get("framework"), "version": raw.get("appversion")},
        sort_keys=True,
    )
    return AppSpec(
        name=name,
        url=url,
        sdk_language=language or None,
        sdk_version=version or None,
        framework=_str(raw, "framework", "app"),
        app_version=_str(raw, "appversion", "app"),
        functions=functions,
        checksum=hashlib.sha256(checksum_src.encode()).hexdigest(),
    )
