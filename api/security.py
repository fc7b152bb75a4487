"""HTTP protections around every request, as ASGI middleware: the cross-site guard of the key-less dev
server, and the security headers and cookie flags of every response.

`CrossSiteGuard`. `pgqueue dev` has no keys, so anything that can make a request to it can drive it.
A web page can, from the user's browser, with requests the browser sends without asking the server
first (a form post, a `no-cors` fetch with a text/plain body), and after DNS rebinding (a name of the
attacker's that resolves to 127.0.0.1) it can even read the answers. In dev mode the guard refuses:
- a `Host` that is not loopback (localhost, 127.0.0.1, [::1]), the bind address or one of
  `PGQUEUE_ALLOWED_HOSTS` (421; stops rebinding, whose requests carry the attacker's name);
- an `Origin` that is present and not this server's own origin (403; browsers send it on every
  cross-origin request and on every POST, the SDKs and curl never do);
- a body on a state-changing API call (/e/, /fn/, /invoke/, /v0/, /v1/) that is not declared
  `application/json` (415; the content types a page can send without a CORS preflight are
  exactly the form and text ones).
The dashboard's own form posts (/login, /logout, /ui/...) carry a session and a CSRF token instead.
In serve mode every call needs a key or a session, so only the Host check applies, and only when
`PGQUEUE_ALLOWED_HOSTS` is set.

Realtime: the subscribers' routes (`GET /v1/realtime/sse`, the WebSocket `/v1/realtime/connect`)
take a subscription token and nothing else, and exist to be opened by an app's pages, so any Origin
may open them (the Host check still applies, to WebSockets too). The SDKs publish streams as
`text/stream` (`/v1/realtime/publish`) and `application/octet-stream` (`/v1/realtime/publish/tee`):
accepted there besides JSON, since neither is a type a page may send without a CORS preflight,
which this server never grants.

`SecurityHeaders` adds a Content-Security-Policy fitted to the dashboard (its script and styles are
files of this origin; its templates use inline `style=` attributes, hence 'unsafe-inline' for styles
only), framing and referrer policies and nosniff to every response that does not set its own; and
marks every cookie `Secure` when the request came over HTTPS. "Came over HTTPS" is the ASGI scheme:
uvicorn takes X-Forwarded-Proto from the proxies in FORWARDED_ALLOW_IPS only (default 127.0.0.1),
and on Lambda Mangum takes it from API Gateway.

A durable endpoint's output (`GET /v1/http/runs/{id}/output`) is the app's own response (status,
headers, body), served to whoever holds the run's token. On pgqueue's origin it must never act as
the dashboard's script: whatever the run stored and whatever the route sets, its security headers
are replaced by pgqueue's with `Content-Security-Policy: sandbox` (an opaque origin, no script, no
forms), its cookies (`Set-Cookie`, `Clear-Site-Data`, `Service-Worker-Allowed`) are dropped, and a
browser loading it as a script, worker or stylesheet (`Sec-Fetch-Dest`) is refused. With
PGQUEUE_ENDPOINT_OUTPUT_ORIGIN (another name for this server), outputs are served there instead:
pgqueue's origin redirects to it, that origin serves outputs and nothing else (no dashboard, no
API, no session cookie), and an output's own headers apply there, cookies still dropped.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from pgqueue.events import deliveries
from pgqueue.settings import Settings

log = logging.getLogger("pgqueue.api")

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})  # a bind address, never a name to be reached by
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIXES = ("/e/", "/fn/", "/invoke/", "/v0/", "/v1/")
# Token-authenticated subscriber routes, open to any Origin (see the module docstring).
SUBSCRIBER_PATHS = frozenset({"/v1/realtime/sse", "/v1/realtime/connect"})
# Body types accepted besides JSON on these paths: the SDKs' streams (none is CORS-safelisted).
STREAM_BODY_TYPES = {
    "/v1/realtime/publish": "text/stream",
    "/v1/realtime/publish/tee": "application/octet-stream",
}
DEFAULT_PORTS = {"http": 80, "https": 443}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    # Not no-referrer: under it Chromium sends `Origin: null` on the dashboard's own form posts,
    # which the dev server's Origin check would refuse. same-origin sends no Referer elsewhere.
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

# -- durable endpoint outputs ------------------------------------------------------------------------

OUTPUT_PATH = re.compile(r"/v1/(?:http/runs|checkpoint)/[^/]+/output")
# Served on pgqueue's origin: a sandboxed document (opaque origin: no script, forms, plugins or
# popups, and no access to the dashboard's cookies or storage), inline styles and data: images only.
OUTPUT_CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
OUTPUT_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", OUTPUT_CONTENT_SECURITY_POLICY.encode()),
    *((name, value) for name, value in SECURITY_HEADERS if name != b"content-security-policy"),
)
# Never passed on from an output, on any origin: state it would leave in the browser for the origin
# that serves it (cookies, a wiped session, a service worker's scope).
OUTPUT_NEVER_PASSED = frozenset({
    b"set-cookie", b"set-cookie2", b"clear-site-data", b"service-worker-allowed",
})
# Replaced by pgqueue's own on its origin: every header that loosens or sets a browser policy.
OUTPUT_REPLACED = OUTPUT_NEVER_PASSED | {name for name, _ in SECURITY_HEADERS} | {
    b"content-security-policy-report-only", b"cross-origin-embedder-policy", b"permissions-policy",
    b"feature-policy", b"document-policy", b"origin-agent-cluster", b"x-xss-protection",
    b"x-permitted-cross-domain-policies", b"x-dns-prefetch-control", b"report-to", b"reporting-endpoints",
    b"nel", b"strict-transport-security", b"link", b"refresh", b"speculation-rules", b"supports-loading-mode",
}
# What a browser says it loads a response as (Sec-Fetch-Dest) when it would run or apply it in the
# page that asked: an output is a document or data for a client, never a page's subresource.
SCRIPT_DESTINATIONS = frozenset({
    "script", "worker", "sharedworker", "serviceworker", "audioworklet", "paintworklet",
    "sharedstorageworklet", "style", "xslt", "json",
})

OutputKind = Literal["own", "separate"]


def _split_host(value: str) -> tuple[str, int | None] | None:
    """`name[:port]` or `[v6][:port]` → (lower-case name without brackets or trailing dot, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        name, _, port_text = value.partition(":")
    if port_text and not port_text.isdigit():
        return None
    return name.removesuffix("."), int(port_text) if port_text else None


def host_allowed(name: str, settings: Settings) -> bool:
    """Whether this server answers to a Host name (lower case, without port and brackets)."""
    if name in LOOPBACK_NAMES or _loopback_address(name):
        return True
    output = settings.output_origin
    if output is not None and name == (urlsplit(output).hostname or "").removesuffix("."):
        return True
    bind = settings.host.strip("[]").lower()
    if bind not in WILDCARD_ADDRESSES and name == bind:
        return True
    for entry in settings.allowed_hosts:
        entry = entry.lower().strip("[]").removesuffix(".")
        if entry == "*" or name == entry:
            return True
        if entry.startswith(".") and (name.endswith(entry) or name == entry[1:]):
            return True
    return False


def _loopback_address(name: str) -> bool:
    try:  # 127.0.0.2 and the like are loopback too
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether an Origin header names this request's own origin (scheme, host and port)."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query:
        return False
    own = _split_host(host)
    if own is None:
        return False
    try:
        origin_port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return False
    own_port = own[1] or DEFAULT_PORTS.get(scheme, 80)
    return (parts.scheme, parts.hostname.removesuffix("."), origin_port) == (scheme, own[0], own_port)


def on_output_origin(scope: Scope, settings: Settings) -> bool:
    """Whether the request came to PGQUEUE_ENDPOINT_OUTPUT_ORIGIN (its Host is the origin's name
    and port), rather than to pgqueue's own origin."""
    output = settings.output_origin
    if output is None:
        return False
    host = Headers(scope=scope).get("host")
    split = _split_host(host) if host else None
    if split is None:
        return False
    parts = urlsplit(output)
    default_port = DEFAULT_PORTS[parts.scheme]
    name = (parts.hostname or "").removesuffix(".")
    return split[0] == name and (split[1] or default_port) == (parts.port or default_port)


def output_kind(scope: Scope, settings: Settings) -> OutputKind | None:
    """A durable endpoint's output served on pgqueue's own origin or on the output origin; None for
    every other request."""
    if not OUTPUT_PATH.fullmatch(scope["path"]):
        return None
    return "separate" if on_output_origin(scope, settings) else "own"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


WEBHOOK_PATH = f"/e/{deliveries.KEY_PREFIX}"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str  # for the caller, naming the fix
    cause: str  # for the log: the header that was refused


def refusal(scope: Scope, settings: Settings) -> Refusal | None:
    """Why this request is refused before it reaches a route, or None."""
    headers = Headers(scope=scope)
    host = headers.get("host")
    path: str = scope["path"]
    if on_output_origin(scope, settings) and not (OUTPUT_PATH.fullmatch(path) or path == "/health"):
        return Refusal(404, (
            f"not found: this origin ({settings.output_origin}, PGQUEUE_ENDPOINT_OUTPUT_ORIGIN) serves"
            " durable endpoints' output only; the dashboard and the API are on pgqueue's own origin"
        ), f"Host {host!r} (the endpoint output origin)")
    destination = headers.get("sec-fetch-dest", "").strip().lower()
    if destination in SCRIPT_DESTINATIONS and output_kind(scope, settings) == "own":
        return Refusal(403, (
            f"a durable endpoint's output cannot be loaded as a {destination} (Sec-Fetch-Dest): it is"
            " the app's response, served for a client or a browser tab; set PGQUEUE_ENDPOINT_OUTPUT_ORIGIN"
            " to serve outputs that pages use as active content from an origin of their own"
        ), f"Sec-Fetch-Dest {destination!r}")
    check_host = not settings.production or bool(settings.allowed_hosts)
    if check_host and host is not None:
        split = _split_host(host)
        if split is None or not host_allowed(split[0], settings):
            return Refusal(421, (
                f"Host {host!r} is not allowed: this server answers only to localhost, 127.0.0.1, [::1],"
                " its bind address and the names in PGQUEUE_ALLOWED_HOSTS (a guard against DNS"
                " rebinding); to reach it by this name, add the name to PGQUEUE_ALLOWED_HOSTS"
                " (comma-separated; '.example.com' for subdomains, '*' for any)"
            ), f"Host {host!r}")
    if settings.production or scope["type"] == "websocket":
        return None
    path: str = scope["path"]
    origin = headers.get("origin")
    token_only = scope["method"] in SAFE_METHODS and path in SUBSCRIBER_PATHS
    cross_origin = origin is not None and not same_origin(origin, scope.get("scheme", "http"), host or "")
    if cross_origin and not token_only:
        return Refusal(403, (
            f"cross-origin request refused: Origin {origin!r} is not this server. The dev server has no"
            " keys, so only pages it serves itself, the SDKs and other non-browser clients may call it"
        ), f"Origin {origin!r}")
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    # A webhook's URL (/e/whk_...) takes what providers send (form bodies, XML); a page in the
    # browser cannot know its key, which is the credential.
    webhook = path.startswith(WEBHOOK_PATH)
    if scope["method"] not in SAFE_METHODS and path.startswith(API_PREFIXES) and has_body and not webhook:
        content_type = headers.get("content-type", "")
        streamed = content_type.split(";", 1)[0].strip().lower() == STREAM_BODY_TYPES.get(path)
        if not _is_json(content_type) and not streamed:
            return Refusal(415, (
                f"the request body must be JSON, sent with Content-Type: application/json"
                f" (got {content_type or 'no Content-Type'!r}); with curl use -H 'Content-Type:"
                " application/json' or --json"
            ), f"Content-Type {content_type!r}")
    return None


class CrossSiteGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = refusal(scope, self.settings)
            if refused is not None:
                log.warning("refused %s %s with %d: %s", scope["method"], scope["path"], refused.status,
                            refused.cause)
                await errors.error_response(refused.status, refused.message)(scope, receive, send)
                return
        elif scope["type"] == "websocket":
            refused = refusal(scope, self.settings)
            if refused is not None:
                log.warning("refused WebSocket %s with %d: %s", scope["path"], refused.status, refused.cause)
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008, "reason": refused.message[:120]})
                return
        await self.app(scope, receive, send)


def _secure_cookie(value: bytes) -> bytes:
    attributes = [part.strip().lower() for part in value.split(b";")[1:]]
    return value if b"secure" in attributes else value + b"; Secure"


def output_headers(headers: list[tuple[bytes, bytes]], kind: OutputKind) -> list[tuple[bytes, bytes]]:
    """The headers an endpoint output leaves with: on pgqueue's origin its own security headers and
    cookies give way to the sandbox's; on the output origin only its cookies are dropped."""
    if kind == "own":
        kept = [(name, value) for name, value in headers if name.lower() not in OUTPUT_REPLACED]
        return kept + list(OUTPUT_SECURITY_HEADERS)
    kept = [(name, value) for name, value in headers if name.lower() not in OUTPUT_NEVER_PASSED]
    if not any(name.lower() == b"x-content-type-options" for name, _ in kept):
        kept.append((b"x-content-type-options", b"nosniff"))
    return kept


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings or Settings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        output = output_kind(scope, self.settings)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                if output is not None:
                    headers = output_headers(headers, output)
                else:
                    present = {name.lower() for name, _ in headers}
                    headers += [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                if https:
                    headers = [(name, _secure_cookie(value) if name.lower() == b"set-cookie" else value)
                               for name, value in headers]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
