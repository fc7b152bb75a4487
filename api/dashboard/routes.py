"""The dashboard: server-rendered pages (Jinja2) over the same store functions as the REST API, and
form actions (cancel, replay, pause/resume, sync, send a test event) guarded by a session and a
CSRF token (api/auth.py). Pages refresh themselves by polling (static/dashboard.js).

Every page needs a session: in serve mode a login, in dev mode one is issued on the first visit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from api import auth, deps, schemas, sessions, throttle
from api.dashboard import charts as chart_plots
from api.dashboard import waterfall
from pgqueue import __version__
from pgqueue.admin import actions, webhook_actions
from pgqueue.apps import sync
from pgqueue.errors import InvalidInput, PgQueueError, Unauthorized
from pgqueue.events import ingest, signatures, transforms
from pgqueue.models import DISCOVERY_STEP
from pgqueue.runs import charts, search, trace
from pgqueue.store import apps, event_keys, events, inspect, operations, run_metadata, runs
from pgqueue.store import events as events_store
from pgqueue.store import realtime as realtime_store
from pgqueue.store import webhooks as webhooks_store

log = logging.getLogger("pgqueue.api")
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(hours=24),
          "7d": timedelta(days=7)}
PAGE_SIZE = 50
MOVED_NOTICE = timedelta(days=7)  # how long the apps page says an app was synced from a new URL
REALTIME_MESSAGES = 200  # the newest a run page lists of the run's published realtime messages
FLASH_COOKIE = "pgqueue_flash"


class Forbidden(PgQueueError):
    status = 403


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


# -- template helpers ----------------------------------------------------------------------------


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _short(value: Any, limit: int = 90) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(value: float | int | None) -> str:
    if value is None:
        return "—"
    value = float(value)
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    if value < 3_600_000:
        return f"{value / 60_000:.1f} min"
    return f"{value / 3_600_000:.1f} h"


def _when(value: datetime | None, rel: bool = False) -> Markup:
    """A UTC time; `rel` ones are rewritten as "3 min ago" by dashboard.js (the title keeps the time)."""
    if value is None:
        return Markup("—")
    iso = value.astimezone(UTC).isoformat(timespec="milliseconds")
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if rel:
        return Markup('<time datetime="{}" title="{}" data-relative>{}</time>').format(iso, text, text)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, text, text)


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "—"
    return _ms(((end or datetime.now(UTC)) - start).total_seconds() * 1000)


def _fields(value: Any) -> Any:
    """A dataclass (a span's info) as the dict of its fields, for `pretty`."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


templates.env.filters["pretty"] = _pretty
templates.env.filters["fields"] = _fields
templates.env.filters["short"] = _short
templates.env.filters["ms"] = _ms
templates.env.globals["when"] = _when
templates.env.globals["duration"] = _duration
templates.env.globals["version"] = __version__


def _local_path(value: str | None, default: str) -> str:
    """Redirect targets are paths on this server only (no //host, no scheme)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def _flash(response: Response, kind: str, text: str) -> None:
    response.set_cookie(FLASH_COOKIE, quote(json.dumps({"kind": kind, "text": text[:500]})), max_age=60,
                        path="/", httponly=True, samesite="strict")


def _read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(unquote(raw))
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("text"), str) and data.get("kind") in ("ok", "error"):
        return {"kind": str(data["kind"]), "text": str(data["text"])}
    return None


def _mode(request: Request) -> dict[str, Any]:
    cfg = deps.settings(request)
    loopback = cfg.host in ("127.0.0.1", "localhost", "::1")
    return {"production": cfg.production, "host": cfg.host, "port": cfg.port, "loopback": loopback}


async def _page_session(request: Request) -> auth.Session:
    session = await sessions.current(request)
    if session is not None:
        return session
    if deps.settings(request).production:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return auth.issue("dev")


def render(
    request: Request, template: str, session: auth.Session, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    flash = _read_flash(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "csrf_token": session.csrf(auth.session_key(request)),
            "session": session,
            "mode": _mode(request),
            "flash": flash,
            "path": request.url.path,
            "base_url": str(request.base_url).rstrip("/"),
            **ctx,
        },
        status_code=status_code,
    )
    if session.fresh:
        auth.set_session_cookie(response, request, session)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    response.headers["cache-control"] = "no-store"
    return response


async def _action(request: Request) -> dict[str, str]:
    """A dashboard POST: a valid session and its CSRF token, or nothing happens."""
    session = await sessions.current(request)
    if session is None:
        raise Unauthorized("sign in to the dashboard first (POST /login)")
    form = await auth.read_form(request)
    token = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not auth.check_token(token, session.csrf(auth.session_key(request))):
        raise Forbidden("missing or invalid CSRF token: reload the page and try again")
    return form


def _done(form: dict[str, str], default: str, kind: str, text: str) -> RedirectResponse:
    response = RedirectResponse(_local_path(form.get("next"), default), status_code=303)
    _flash(response, kind, text)
    return response


# -- pages ---------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    session = await _page_session(request)
    async with deps.pool(request).connection() as conn:
        metrics = await inspect.metrics(conn)
        app_rows = await apps.list_apps(conn)
        recent = await runs.list_runs(conn, limit=10)
        failures = await inspect.recent_failures(conn, 5)
        stuck = await inspect.stuck_runs(conn, 10)
        depth = await inspect.queue_depth(conn)
        chart = await charts.runs_chart(conn, _chart_range(request))
    return render(request, "overview.html", session, nav="overview", metrics=metrics, apps=app_rows,
                  runs=recent, failures=failures, stuck=stuck, depth=depth, **_chart_ctx(chart, "/"))


def _chart_range(request: Request) -> str:
    value = request.query_params.get("chart", "1h")
    return value if value in charts.RANGES else "1h"


def _chart_ctx(chart: charts.Chart, base: str) -> dict[str, Any]:
    return {"chart": chart, "plots": chart_plots.plots(chart), "chart_base": base, "chart_ranges": list(charts.RANGES)}


@router.get("/apps", response_class=HTMLResponse)
async def apps_page(request: Request) -> HTMLResponse:
    session = await _page_session(request)
    async with deps.pool(request).connection() as conn:
        app_rows = await apps.list_apps(conn)
        functions = await inspect.functions(conn)
        levels = {row["app_id"]: row for row in await inspect.app_concurrency(conn)}
    by_app: dict[Any, list[dict[str, Any]]] = {}
    for fn in functions:
        by_app.setdefault(fn["app_id"], []).append(fn)
    return render(request, "apps.html", session, nav="apps", apps=app_rows, functions=by_app,
                  flow_control=schemas.flow_control, levels=levels,
                  moved_since=datetime.now(UTC) - MOVED_NOTICE)


@router.get("/functions/{ref}", response_class=HTMLResponse)
async def function_page(ref: str, request: Request) -> HTMLResponse:
    session = await _page_session(request)
    async with deps.pool(request).connection() as conn:
        fn = await inspect.function(conn, ref)
        if fn is None:
            return render(request, "missing.html", session, status_code=404, nav="apps", what="function",
                          ref=ref)
        recent = await runs.list_runs(conn, function=str(fn["id"]), limit=25)
        counts = await inspect.function_run_counts(conn, fn["id"], datetime.now(UTC) - timedelta(hours=24))
        depth = await inspect.queue_depth(conn, fn["id"])
        chart = await charts.runs_chart(conn, _chart_range(request), fn["id"])
    return render(request, "function.html", session, nav="apps", fn=fn, runs=recent, counts=counts,
                  depth=depth, flow=schemas.flow_control(fn["config"]), statuses=STATUSES,
                  **_chart_ctx(chart, f"/functions/{fn['id']}"))


def _time_filter(params: dict[str, str]) -> tuple[datetime | None, datetime | None]:
    after = before = None
    span = RANGES.get(params.get("range", ""))
    if span is not None:
        after = datetime.now(UTC) - span
    for key in ("from", "to"):
        raw = params.get(key, "").strip()
        if not raw:
            continue
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(f"`{key}` must be a date and time like 2025-01-31T14:00") from None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        if key == "from":
            after = value
        else:
            before = value
    return after, before


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request) -> HTMLResponse:
    session = await _page_session(request)
    params = {k: v for k, v in request.query_params.items() if v}
    status = params.get("status", "").lower() or None
    error = None
    if status is not None and status not in STATUSES:
        error, status = f"unknown status {params['status']!r}", None
    try:
        after, before = _time_filter(params)
    except InvalidInput as exc:
        error, after, before = exc.message, None, None
    cursor = params.get("cursor")
    query = params.get("q", "").strip()
    found: search.Search | None = None
    rows: list[dict[str, Any]] = []
    async with deps.pool(request).connection() as conn:
        functions = await inspect.functions(conn, include_archived=True)
        if query and error is None:
            fn_id = next((f["id"] for f in functions if params.get("function") in (f["slug"], str(f["id"]))), None)
            try:
                lo, hi = search.window(after, before, datetime.now(UTC))
                found = await search.search_runs(conn, query, after=lo, before=hi, function_id=fn_id, status=status,
                                                 limit=PAGE_SIZE, cursor=cursor, cancelled=request.is_disconnected)
                rows = found.rows
            except InvalidInput as exc:
                error = exc.message
        elif not query:
            rows = await runs.list_runs(conn, status=status, function=params.get("function"), before_id=cursor,
                                        created_after=after, created_before=before, limit=PAGE_SIZE)
    keep = {k: v for k, v in params.items() if k != "cursor"}
    more = found.cursor if found is not None else (rows[-1]["id"] if len(rows) == PAGE_SIZE else None)
    next_url = f"/runs?{urlencode({**keep, 'cursor': more})}" if more else None
    first_url = f"/runs?{urlencode(keep)}" if cursor else None
    filtered = bool(keep)
    return render(request, "runs.html", session, nav="runs", runs=rows, functions=functions, params=params,
                  statuses=STATUSES, ranges=list(RANGES), next_url=next_url, first_url=first_url,
                  filtered=filtered, error=error, found=found)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(run_id: str, request: Request) -> HTMLResponse:
    session = await _page_session(request)
    async with deps.pool(request).connection() as conn:
        run = await runs.get(conn, run_id)
        if run is None:
            return render(request, "missing.html", session, status_code=404, nav="runs", what="run",
                          ref=run_id)
        rows = await inspect.run_timeline(conn, run_id)
        pending = await inspect.run_pending(conn, run_id) if run["status"] in ("queued", "running") else []
        event_rows = {r["id"]: r for r in await events.get_many(conn, run["event_ids"])}
        fn = await inspect.function(conn, str(run["function_id"]))
        metadata_rows = await run_metadata.list_for_run(conn, run_id)
        published = await realtime_store.run_messages(conn, run_id, limit=REALTIME_MESSAGES)
        found = await trace.load(conn, run_id)
        origin = await inspect.run_origin(conn, run_id) or {}
        handlers = (await inspect.failure_handlers(conn, run_id, run["ended_at"])
                    if run["status"] == "failed" and run["ended_at"] is not None else [])
    trigger_events = [event_rows[i] for i in run["event_ids"] if i in event_rows]
    wf = waterfall.layout(found) if found is not None else None
    links = run_links(run, origin, trigger_events, metadata_rows, handlers, found)
    timeline = build_timeline(rows)
    # Metadata: each step's beside the step; the run's own, and any of a step not in the timeline
    # (a step that is still retrying), in the side card.
    shown = {t.get("step_id") for t in timeline if t["entry"] == "step"}
    step_metadata: dict[str, list[dict[str, Any]]] = {}
    run_level: list[dict[str, Any]] = []
    for m in metadata_rows:
        if m["step_id"] in shown:
            step_metadata.setdefault(m["step_id"], []).append(m)
        else:
            run_level.append(m)
    return render(request, "run.html", session, nav="runs", run=run, fn=fn, events=trigger_events,
                  timeline=timeline, pending=pending, live=run["status"] in ("queued", "running"),
                  step_metadata=step_metadata, run_metadata=run_level, wf=wf, links=links,
                  published=list(reversed(published)), published_more=len(published) == REALTIME_MESSAGES,
                  realtime_retention_s=deps.settings(request).realtime_retention_s,
                  rerun_steps=[t for t in timeline if t["entry"] == "step"])


FINISH_EVENTS = ("inngest/function.failed", "inngest/function.finished", "inngest/function.cancelled")


def run_links(
    run: dict[str, Any], origin: dict[str, Any], trigger_events: list[dict[str, Any]],
    metadata_rows: list[dict[str, Any]], handlers: list[dict[str, Any]], found: trace.Trace | None,
) -> dict[str, Any]:
    """The runs this run is tied to: the run it reruns or replays (and from which step), the run
    whose step.invoke started it, the run whose failure (or end) triggered it, the runs its failure
    started (onFailure handlers) and the runs its own step.invoke calls started."""
    links: dict[str, Any] = {}
    if origin.get("replay_of"):
        rerun = next((m["values"] for m in metadata_rows if m["kind"] == actions.RERUN_KIND), None)
        links["replay_of"] = {"run_id": origin["replay_of"], "rerun": rerun}
    correlation = origin.get("correlation_id") or run.get("correlation_id")
    if correlation and "." in correlation:
        parent, _, step = correlation.partition(".")
        links["parent"] = {"run_id": parent, "step_id": step}
    first = trigger_events[0] if trigger_events else None
    if first is not None and first["name"] in FINISH_EVENTS and isinstance(first["data"], dict) \
            and isinstance(first["data"].get("run_id"), str):
        links["trigger_run"] = {"run_id": first["data"]["run_id"], "event": first["name"],
                                "function_slug": first["data"].get("function_id")}
    if handlers:
        links["failure_handlers"] = handlers
    if found is not None:
        invoked = [{"run_id": s.info.run_id, "function_slug": s.info.function_id, "step": s.name}
                   for s in found.root.walk() if isinstance(s.info, trace.InvokeInfo) and s.info.run_id]
        if invoked:
            links["invoked"] = invoked
    return links


@router.get("/events", response_class=HTMLResponse)
async def events_page(request: Request) -> HTMLResponse:
    session = await _page_session(request)
    name = request.query_params.get("name") or None
    cursor = request.query_params.get("cursor") or None
    query = (request.query_params.get("q") or "").strip()
    found: search.Search | None = None
    error = None
    async with deps.pool(request).connection() as conn:
        if query:
            try:
                span = RANGES.get(request.query_params.get("range", ""), RANGES["24h"])
                now = datetime.now(UTC)
                found = await search.search_events(conn, query, after=now - span, before=now, name=name,
                                                   limit=PAGE_SIZE, cursor=cursor, cancelled=request.is_disconnected)
                rows = found.rows
            except InvalidInput as exc:
                error, rows = exc.message, []
        else:
            rows = await events.list_events(conn, name=name, before_id=cursor, limit=PAGE_SIZE)
        started = await inspect.runs_for_events(conn, [r["id"] for r in rows])
    keep = {k: v for k, v in {"name": name, "q": query, "range": request.query_params.get("range")}.items() if v}
    more = found.cursor if found is not None else (rows[-1]["id"] if len(rows) == PAGE_SIZE else None)
    next_url = f"/events?{urlencode({**keep, 'cursor': more})}" if more else None
    first_url = f"/events?{urlencode(keep)}" if cursor else None
    return render(request, "events.html", session, nav="events", events=rows, started=started,
                  name=name or "", next_url=next_url, first_url=first_url, query=query, found=found, error=error,
                  ranges=list(RANGES), range=request.query_params.get("range", "24h"))


@router.get("/events/{event_id}", response_class=HTMLResponse)
async def event_page(event_id: str, request: Request) -> HTMLResponse:
    session = await _page_session(request)
    async with deps.pool(request).connection() as conn:
        event = await events.get(conn, event_id)
        if event is None:
            return render(request, "missing.html", session, status_code=404, nav="events", what="event",
                          ref=event_id)
        started = (await inspect.runs_for_events(conn, [event_id])).get(event_id, [])
    return render(request, "event.html", session, nav="events", event=event, started=started)


# -- timeline ------------------------------------------------------------------------------------


def build_timeline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn pgqueue.run_timeline rows into display entries: each memoised step with the attempts that
    produced it (its retries included), the app calls that produced no step, and the run's start and end.

    An attempt of a step's own queue item (parallel steps, sleeps) belongs to that step. A discovery
    call (step id "step") belongs to the step(s) stored while it ran; discovery calls that failed just
    before belong to the same step (the SDK ran the step inline and it threw)."""
    steps = [dict(r, attempts=[]) for r in rows if r["entry"] == "step"]
    by_id = {s["step_id"]: s for s in steps}
    item_steps = {r["step_id"] for r in rows if r["entry"] == "attempt" and r["step_id"] != DISCOVERY_STEP}
    claimed: set[int] = set()
    failed_calls: list[dict[str, Any]] = []
    for a in (r for r in rows if r["entry"] == "attempt"):
        if a["step_id"] != DISCOVERY_STEP:
            owner = by_id.get(a["step_id"])
            if owner is not None:
                owner["attempts"].append(a)
                claimed.add(a["seq"])
            continue
        end = a["at"] + timedelta(milliseconds=a["duration_ms"] or 0) + timedelta(milliseconds=5)
        produced = [s for s in steps if a["at"] <= s["at"] <= end and s["step_id"] not in item_steps]
        if produced:
            for s in produced:
                s["attempts"].extend([*failed_calls, a])
            claimed.update(x["seq"] for x in [*failed_calls, a])
            failed_calls = []
        elif a["outcome"] == "retry":
            failed_calls.append(a)
    out: list[dict[str, Any]] = []
    for r in rows:
        if r["entry"] == "step":
            s = by_id[r["step_id"]]
            first = min((x["at"] for x in s["attempts"]), default=None)
            s["duration_ms"] = (s["at"] - first).total_seconds() * 1000 if first else None
            s["tries"] = max(len(s["attempts"]), s["attempt"] or 1)
            s["last_error"] = next((x["error"] for x in reversed(s["attempts"]) if x["error"]), None)
            out.append(s)
        elif r["entry"] == "attempt" and r["seq"] not in claimed:
            out.append(dict(r))
        elif r["entry"] in ("queued", "ended"):
            out.append(dict(r))
    return out


# -- login ---------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    cfg = deps.settings(request)
    nxt = _local_path(request.query_params.get("next"), "/")
    if not cfg.production or await sessions.current(request) is not None:
        return RedirectResponse(nxt, status_code=303)  # type: ignore[return-value]
    return _login_form(request, nxt, None)


def _login_form(request: Request, nxt: str, error: str | None, status_code: int = 200) -> HTMLResponse:
    nonce, new = auth.login_nonce(request)
    response = templates.TemplateResponse(
        request, "login.html",
        {"login_token": auth.login_token(request, nonce), "next": nxt, "error": error, "mode": _mode(request),
         "hint": auth.login_hint(deps.settings(request)), "flash": None, "session": None, "path": "/login",
         "base_url": str(request.base_url).rstrip("/")},
        status_code=status_code,
    )
    if new:
        auth.set_login_cookie(response, request, nonce)
    response.headers["cache-control"] = "no-store"
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    cfg = deps.settings(request)
    form = await auth.read_form(request)
    nxt = _local_path(form.get("next"), "/")
    if not cfg.production:
        return RedirectResponse(nxt, status_code=303)
    nonce = request.cookies.get(auth.LOGIN_COOKIE)
    if not nonce or not auth.check_token(form.get("login_token"), auth.login_token(request, nonce)):
        return _login_form(request, nxt, "Your login form expired; please try again.", status_code=403)
    attempt = await throttle.admit(request)
    if attempt.retry_after_s:
        seconds = attempt.retry_after_s
        wait = f"{seconds} s" if seconds < 120 else f"{-(-seconds // 60)} min"
        response = _login_form(request, nxt, f"Too many failed sign-ins: try again in {wait}.",
                               status_code=429)
        response.headers["retry-after"] = str(attempt.retry_after_s)
        return response
    credential = auth.login_credential(cfg, form.get("secret", ""))
    if credential is None:
        throttle.failed(attempt)
        return _login_form(request, nxt, "That password or token is not accepted.", status_code=401)
    await throttle.succeeded(request, attempt)
    response = RedirectResponse(nxt, status_code=303)
    session = await sessions.open_session(request, credential, attempt.address)
    auth.set_session_cookie(response, request, session)
    response.delete_cookie(auth.LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _action(request)
    session = await sessions.current(request)
    if session is not None:
        await sessions.end(request, session)
    response = RedirectResponse("/login" if deps.settings(request).production else "/", status_code=303)
    auth.clear_session_cookie(response, request)
    return response


@router.post("/logout/everywhere")
async def logout_everywhere(request: Request) -> Response:
    """Sign out everywhere: every dashboard session ends, this one included."""
    await _action(request)
    if deps.settings(request).production:
        await sessions.end_all(request, by=f"the dashboard, from {throttle.client_address(request)}")
    response = RedirectResponse("/login" if deps.settings(request).production else "/", status_code=303)
    auth.clear_session_cookie(response, request)
    return response


# -- actions -------------------------------------------------------------------------------------


@router.post("/ui/runs/{run_id}/cancel")
async def cancel_run(run_id: str, request: Request) -> Response:
    form = await _action(request)
    try:
        async with deps.pool(request).connection() as conn:
            await actions.cancel_run(conn, run_id, reason="cancelled from the dashboard")
    except PgQueueError as exc:
        return _done(form, f"/runs/{run_id}", "error", exc.message)
    return _done(form, f"/runs/{run_id}", "ok", f"Run {run_id} cancelled.")


@router.post("/ui/runs/{run_id}/replay")
async def replay_run(run_id: str, request: Request) -> Response:
    form = await _action(request)
    try:
        async with deps.pool(request).connection() as conn:
            row = await actions.replay_run(conn, run_id)
    except PgQueueError as exc:
        return _done(form, f"/runs/{run_id}", "error", exc.message)
    response = RedirectResponse(f"/runs/{row['id']}", status_code=303)
    _flash(response, "ok", f"Replaying run {run_id} as run {row['id']}.")
    return response


@router.post("/ui/runs/{run_id}/rerun")
async def rerun_run(run_id: str, request: Request) -> Response:
    form = await _action(request)
    step = form.get("from_step", "").strip() or None
    try:
        async with deps.pool(request).connection() as conn:
            row, record = await actions.rerun(conn, run_id, step)
    except PgQueueError as exc:
        return _done(form, f"/runs/{run_id}", "error", exc.message)
    services = request.app.state.services
    if services is not None:
        services.queue_wakeup.set()
    response = RedirectResponse(f"/runs/{row['id']}", status_code=303)
    kept = record["kept_steps"]
    text = (f"Rerunning run {run_id} from step {record['from_step']} as run {row['id']} ({kept} earlier"
            f" step output{'s' if kept != 1 else ''} kept)." if step else
            f"Rerunning run {run_id} from the start as run {row['id']}.")
    _flash(response, "ok", text)
    return response


@router.get("/ui/runs/{run_id}/outputs/{output_id}")
async def span_output(run_id: str, output_id: str, request: Request) -> JSONResponse:
    """One span's output for the waterfall (fetched when a span is opened): GET /v1/runs/.../outputs
    under the dashboard's session."""
    if await sessions.current(request) is None and deps.settings(request).production:
        raise Unauthorized("sign in to the dashboard first")
    async with deps.pool(request).connection() as conn:
        found = await trace.output_of_run(conn, run_id, output_id)
    return JSONResponse({"data": found.data, "error": found.error, "input": found.input},
                        headers={"cache-control": "no-store"})


async def _set_paused(request: Request, ref: str, paused: bool) -> Response:
    form = await _action(request)
    try:
        async with deps.pool(request).connection() as conn:
            row = await actions.set_paused(conn, ref, paused)
    except PgQueueError as exc:
        return _done(form, f"/functions/{ref}", "error", exc.message)
    verb = ("paused: its events are stored but start no runs, and its queued work is held" if paused
            else "resumed: its held work runs again")
    return _done(form, f"/functions/{row['id']}", "ok", f"Function {row['slug']} {verb}.")


@router.post("/ui/functions/{ref}/invoke")
async def invoke_function(ref: str, request: Request) -> Response:
    form = await _action(request)
    try:
        data = json.loads(form.get("data", "").strip() or "{}")
    except ValueError as exc:
        return _done(form, f"/functions/{ref}", "error", f"The data is not valid JSON: {exc}")
    try:
        async with deps.pool(request).connection() as conn:
            event_id, run_id, skipped = await actions.invoke(conn, ref, {"data": data})
    except PgQueueError as exc:
        return _done(form, f"/functions/{ref}", "error", exc.message)
    services = request.app.state.services
    if services is not None:
        services.queue_wakeup.set()
    if run_id is None:
        return _done(form, f"/functions/{ref}", "error", f"Event {event_id} started no run: {skipped}")
    response = RedirectResponse(f"/runs/{run_id}", status_code=303)
    _flash(response, "ok", f"Invoked {ref} as run {run_id} (event {event_id}).")
    return response


# -- bulk actions --------------------------------------------------------------------------------


def _bulk_params(params: dict[str, str]) -> dict[str, Any]:
    """The bulk page's form: a function, a creation range (from/to, or a `range` back from now),
    an `if` expression (cancel) and statuses (replay)."""
    after, before = _time_filter(params)
    before = before or datetime.now(UTC)
    if after is None:
        raise InvalidInput("choose a time range (Last ... or From/To) for the runs to act on")
    fn = params.get("function", "").strip()
    if not fn:
        raise InvalidInput("choose the function whose runs to act on")
    statuses = [s for s in ("completed", "failed", "cancelled") if params.get(f"s_{s}")] or ["failed"]
    return {"function": fn, "after": after, "before": before, "if": params.get("if", "").strip() or None,
            "statuses": statuses}


async def _bulk_page(request: Request, session: auth.Session, params: dict[str, str], **ctx: Any) -> HTMLResponse:
    async with deps.pool(request).connection() as conn:
        functions = await inspect.functions(conn)
        history = await operations.list_cancellations(conn, 50)
    slugs = {str(f["id"]): f["slug"] for f in functions}
    return render(request, "bulk.html", session, nav="runs", functions=functions, params=params,
                  ranges=list(RANGES), history=history, slugs=slugs, **ctx)


@router.get("/bulk", response_class=HTMLResponse)
async def bulk_page(request: Request) -> HTMLResponse:
    """Bulk cancel and replay, each previewed first (how many runs it would touch), and the history
    of bulk cancellations."""
    session = await _page_session(request)
    params = {k: v for k, v in request.query_params.items() if v}
    preview: dict[str, Any] | None = None
    error = None
    action = params.get("preview")
    if action in ("cancel", "replay"):
        try:
            p = _bulk_params(params)
            async with deps.pool(request).connection() as conn:
                fn = await actions.function(conn, p["function"])
                if action == "cancel":
                    n = await actions.bulk_cancel_preview(conn, app_ref=str(fn["app_id"]), function_ref=str(fn["id"]),
                                                          started_after=p["after"], started_before=p["before"],
                                                          if_expr=p["if"])
                else:
                    n = await actions.replay_range_preview(conn, str(fn["id"]), after=p["after"],
                                                           before=p["before"], statuses=p["statuses"])
            preview = {"action": action, "matching": n, **p}
        except PgQueueError as exc:
            error = exc.message
    return await _bulk_page(request, session, params, preview=preview, error=error)


@router.post("/ui/bulk/{action}")
async def bulk_action(action: str, request: Request) -> Response:
    form = await _action(request)
    back = "/bulk?" + urlencode({k: v for k, v in form.items() if k not in ("csrf_token", "preview")})
    try:
        p = _bulk_params(form)
        async with deps.pool(request).connection() as conn:
            fn = await actions.function(conn, p["function"])
            if action == "cancel":
                row = await actions.bulk_cancel(conn, app_ref=str(fn["app_id"]), function_ref=str(fn["id"]),
                                                started_after=p["after"], started_before=p["before"],
                                                if_expr=p["if"])
                text = f"Bulk cancellation {row['id']}: {row['cancelled_count']} run(s) of {fn['slug']} cancelled."
            elif action == "replay":
                created = await actions.replay_range(conn, str(fn["id"]), after=p["after"], before=p["before"],
                                                     statuses=p["statuses"])
                text = f"Replaying {len(created)} run(s) of {fn['slug']}."
            else:
                raise InvalidInput(f"unknown bulk action {action!r}")
    except PgQueueError as exc:
        return _done({"next": back}, back, "error", exc.message)
    services = request.app.state.services
    if services is not None:
        services.queue_wakeup.set()
    return _done({"next": back}, back, "ok", text)


@router.post("/ui/functions/{ref}/pause")
async def pause_function(ref: str, request: Request) -> Response:
    return await _set_paused(request, ref, True)


@router.post("/ui/functions/{ref}/resume")
async def resume_function(ref: str, request: Request) -> Response:
    return await _set_paused(request, ref, False)


@router.post("/ui/apps/sync")
async def sync_app(request: Request) -> Response:
    form = await _action(request)
    url = form.get("url", "").strip()
    if not url.startswith(("http://", "https://")):
        return _done(form, "/apps", "error", "The app URL must start with http:// or https://.")
    services = request.app.state.services
    client = services.client if services is not None else request.app.state.http
    attempt = await sync.sync_app(client, url, deps.settings(request))
    if not attempt.ok:
        async with deps.pool(request).connection() as conn:
            await apps.set_sync_error(conn, url, attempt.error)
        return _done(form, "/apps", "error", f"Sync of {url} failed: {attempt.error}")
    return _done(form, "/apps", "ok", f"Synced the app at {url}.")


@router.post("/ui/events/send")
async def send_event(request: Request) -> Response:
    form = await _action(request)
    cfg = deps.settings(request)
    name = form.get("name", "").strip()
    raw = form.get("data", "").strip() or "{}"
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return _done(form, "/events", "error", f"The event data is not valid JSON: {exc}")
    try:
        parsed = ingest.parse_events(json.dumps({"name": name, "data": data}).encode(), seed_header=None,
                                     max_event_bytes=cfg.max_event_bytes, max_events=1)
        async with deps.pool(request).connection() as conn, conn.transaction():
            queued = await events_store.ingest(conn, parsed)
    except PgQueueError as exc:
        return _done(form, "/events", "error", exc.message)
    services = request.app.state.services
    if queued and services is not None:
        services.wake_runner()
    return _done(form, "/events", "ok", f"Sent {name} as event {parsed[0].id}.")


# -- webhooks and event keys ---------------------------------------------------------------------


def _public_url(request: Request) -> str:
    return (deps.settings(request).public_url or str(request.base_url)).rstrip("/")


async def _webhooks_page(
    request: Request, session: auth.Session, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    async with deps.pool(request).connection() as conn:
        rows = await webhooks_store.list_webhooks(conn)
    return render(request, "webhooks.html", session, status_code=status_code, nav="webhooks", webhooks=rows,
                  default_transform=transforms.DEFAULT_TRANSFORM, **ctx)


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(request: Request) -> HTMLResponse:
    return await _webhooks_page(request, await _page_session(request))


@router.post("/ui/webhooks", response_class=HTMLResponse)
async def create_webhook(request: Request) -> Response:
    form = await _action(request)
    session = await _page_session(request)
    try:
        async with deps.pool(request).connection() as conn:
            row, key = await webhook_actions.create(
                conn, deps.settings(request),
                {"name": form.get("name", ""), "transform": form.get("transform") or None},
            )
    except PgQueueError as exc:
        return _done(form, "/webhooks", "error", exc.message)
    # Rendered, not redirected: the URL is shown once and never goes into a cookie.
    return await _webhooks_page(request, session, status_code=201, created=row,
                                created_url=f"{_public_url(request)}/e/{key}")


async def _webhook_page(request: Request, webhook_id: str, session: auth.Session, **ctx: Any) -> HTMLResponse:
    outcome = request.query_params.get("outcome") or None
    async with deps.pool(request).connection() as conn:
        row = await webhooks_store.get(conn, webhook_id)
        if row is None:
            return render(request, "missing.html", session, status_code=404, nav="webhooks", what="webhook",
                          ref=webhook_id)
        rows = await webhooks_store.list_deliveries(conn, webhook_id, outcome=outcome, limit=PAGE_SIZE)
    return render(request, "webhook.html", session, nav="webhooks", webhook=row, deliveries=rows,
                  outcome=outcome, outcomes=("accepted", "failed", "refused", "redelivered"),
                  schemes=signatures.SCHEMES, **ctx)


@router.get("/webhooks/{webhook_id}", response_class=HTMLResponse)
async def webhook_page(webhook_id: str, request: Request) -> HTMLResponse:
    return await _webhook_page(request, webhook_id, await _page_session(request))


@router.post("/ui/webhooks/{webhook_id}")
async def update_webhook(webhook_id: str, request: Request) -> Response:
    form = await _action(request)
    try:
        async with deps.pool(request).connection() as conn:
            await webhook_actions.update(conn, deps.settings(request), webhook_id,
                                         {"name": form.get("name", ""),
                                          "transform": form.get("transform", "")})
    except PgQueueError as exc:
        return _done(form, f"/webhooks/{webhook_id}", "error", exc.message)
    return _done(form, f"/webhooks/{webhook_id}", "ok",
                 "Webhook saved: the next delivery runs the new transform.")


@router.post("/ui/webhooks/{webhook_id}/verify")
async def verify_webhook(webhook_id: str, request: Request) -> Response:
    form = await _action(request)
    scheme = form.get("scheme", "").strip()
    verify: dict[str, Any] | None = None
    if scheme:
        verify = {"scheme": scheme, "secret": form.get("secret", "")}
        if form.get("header", "").strip() and scheme == "hmac-sha256":
            verify["header"] = form["header"].strip()
    try:
        async with deps.pool(request).connection() as conn:
            await webhook_actions.update(conn, deps.settings(request), webhook_id, {"verify": verify})
    except PgQueueError as exc:
        return _done(form, f"/webhooks/{webhook_id}", "error", exc.message)
    text = f"Deliveries are now checked with {scheme}." if scheme else "Deliveries are no longer checked."
    return _done(form, f"/webhooks/{webhook_id}", "ok", text)


@router.post("/ui/webhooks/{webhook_id}/rotate", response_class=HTMLResponse)
async def rotate_webhook(webhook_id: str, request: Request) -> Response:
    form = await _action(request)
    session = await _page_session(request)
    try:
        async with deps.pool(request).connection() as conn:
            _, key = await webhook_actions.rotate_key(conn, webhook_id)
    except PgQueueError as exc:
        return _done(form, f"/webhooks/{webhook_id}", "error", exc.message)
    return await _webhook_page(request, webhook_id, session, new_url=f"{_public_url(request)}/e/{key}")


@router.post("/ui/webhooks/{webhook_id}/delete")
async def delete_webhook(webhook_id: str, request: Request) -> Response:
    form = await _action(request)
    async with deps.pool(request).connection() as conn:
        deleted = await webhooks_store.delete(conn, webhook_id)
    if not deleted:
        return _done(form, "/webhooks", "error", f"Webhook {webhook_id} not found.")
    return _done(form, "/webhooks", "ok", "Webhook deleted: its URL no longer works.")


@router.post("/ui/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(webhook_id: str, delivery_id: str, request: Request) -> Response:
    form = await _action(request)
    try:
        async with deps.pool(request).connection() as conn:
            delivery = await webhook_actions.redeliver(conn, deps.settings(request), webhook_id, delivery_id)
    except PgQueueError as exc:
        return _done(form, f"/webhooks/{webhook_id}", "error", f"Re-delivery failed: {exc.message}")
    services = request.app.state.services
    if delivery.queued and services is not None:
        services.wake_runner()
    return _done(form, f"/webhooks/{webhook_id}", "ok",
                 f"Re-delivered: {len(delivery.events)} event(s) stored.")


async def _keys_page(
    request: Request, session: auth.Session, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    async with deps.pool(request).connection() as conn:
        rows = await event_keys.list_keys(conn)
    return render(request, "event_keys.html", session, status_code=status_code, nav="keys", keys=rows,
                  env_keys=len(deps.settings(request).event_keys), **ctx)


@router.get("/event-keys", response_class=HTMLResponse)
async def event_keys_page(request: Request) -> HTMLResponse:
    return await _keys_page(request, await _page_session(request))


@router.post("/ui/event-keys", response_class=HTMLResponse)
async def create_event_key(request: Request) -> Response:
    form = await _action(request)
    session = await _page_session(request)
    names = [line.strip() for line in form.get("event_names", "").splitlines() if line.strip()] or None
    try:
        async with deps.pool(request).connection() as conn:
            row, key = await actions.create_event_key(conn, form.get("name", ""), names)
    except PgQueueError as exc:
        return _done(form, "/event-keys", "error", exc.message)
    return await _keys_page(request, session, status_code=201, created=row, created_key=key)


@router.post("/ui/event-keys/{key_id}/revoke")
async def revoke_event_key(key_id: str, request: Request) -> Response:
    form = await _action(request)
    try:
        async with deps.pool(request).connection() as conn:
            row = await actions.revoke_event_key(conn, key_id)
    except PgQueueError as exc:
        return _done(form, "/event-keys", "error", exc.message)
    return _done(form, "/event-keys", "ok", f"Event key {row['name']} revoked: it is refused from now on.")


# -- wiring --------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Mount the dashboard on an app: pages, actions, static files and the login redirect."""

    @app.exception_handler(LoginRequired)
    async def _login_required(_: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?{urlencode({'next': exc.next_path})}", status_code=303)

    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="dashboard-static")

