"""Dashboard authentication: the login check, signed session cookies and CSRF tokens; and the API
token check the REST API accepts besides the signing key.

A session is a cookie `pgqueue_session = v1.<payload>.<mac>`: the payload (base64url JSON: subject,
session id, expiry) is authenticated with HMAC-SHA256 under a key derived from the signing key,
so no session table is needed, and rotating the signing key signs everyone out. The cookie is
HttpOnly, SameSite=Strict, and Secure when the request came over HTTPS. Every dashboard action
(a POST) must carry the session's CSRF token, an HMAC of the session id that only pages of this
origin can read. In dev mode (no keys, loopback) a session is issued on first visit, so actions
still carry CSRF tokens; serve mode requires a login first.

What the login accepts in serve mode: PGQUEUE_ADMIN_PASSWORD and any PGQUEUE_API_TOKENS entry;
when neither is configured, the signing key (raw or hashed, current or fallback). Every
comparison is constant time and checks every candidate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response

from pgqueue.executor import signing
from pgqueue.settings import Settings

SESSION_COOKIE = "pgqueue_session"
LOGIN_COOKIE = "pgqueue_login"
SESSION_TTL_S = 12 * 3600
LOGIN_TTL_S = 30 * 60
MAX_FORM_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Session:
    subject: str  # "admin" after a login, "dev" for the open dev-mode session
    sid: str
    expires_at: int
    fresh: bool = False  # issued by this request: the response must set the cookie

    def csrf(self, key: bytes) -> str:
        return _mac(key, b"csrf:" + self.sid.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, message: bytes) -> str:
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def _digest(value: str) -> bytes:
    # Compare fixed-length digests so neither the length nor the content of a secret leaks.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def session_key(request: Request) -> bytes:
    """HMAC key for sessions and CSRF tokens: derived from the signing key when there is one, else a
    random key of this process (dev mode without keys: sessions end with the process)."""
    cfg: Settings = request.app.state.settings
    if cfg.signing_key:
        secret = signing.normalize_key(cfg.signing_key).encode("utf-8")
        return hmac.new(secret, b"pgqueue dashboard session v1", hashlib.sha256).digest()
    key: bytes | None = getattr(request.app.state, "session_secret", None)
    if key is None:
        key = secrets.token_bytes(32)
        request.app.state.session_secret = key
    return key


# -- credentials ------------------------------------------------------------------------------


def verify_api_token(authorization: str | None, tokens: tuple[str, ...]) -> bool:
    """Whether an `Authorization: Bearer <token>` header carries one of the configured API tokens."""
    if not authorization or not tokens:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    presented = _digest(token)
    ok = False
    for candidate in tokens:
        ok |= hmac.compare_digest(presented, _digest(candidate))
    return ok


def login_accepts(cfg: Settings, secret: str) -> bool:
    """The dashboard login: admin password or API token; the signing key only when neither is set."""
    secret = secret.strip()
    if not secret:
        return False
    presented = _digest(secret)
    ok = False
    if cfg.admin_password:
        ok |= hmac.compare_digest(presented, _digest(cfg.admin_password))
    for token in cfg.api_tokens:
        ok |= hmac.compare_digest(presented, _digest(token))
    if not cfg.admin_password and not cfg.api_tokens:
        ok |= signing.verify_bearer(f"Bearer {secret}", cfg.signing_keys)
    return ok


def login_hint(cfg: Settings) -> str:
    if cfg.admin_password and cfg.api_tokens:
        return "the admin password (PGQUEUE_ADMIN_PASSWORD) or an API token (PGQUEUE_API_TOKENS)"
    if cfg.admin_password:
        return "the admin password (PGQUEUE_ADMIN_PASSWORD)"
    if cfg.api_tokens:
        return "an API token (PGQUEUE_API_TOKENS)"
    return "the signing key (PGQUEUE_SIGNING_KEY), raw or hashed"


# -- sessions ---------------------------------------------------------------------------------


def issue(subject: str) -> Session:
    return Session(subject, secrets.token_urlsafe(18), int(time.time()) + SESSION_TTL_S, fresh=True)


def encode(session: Session, key: bytes) -> str:
    payload = _b64(json.dumps({"sub": session.subject, "sid": session.sid, "exp": session.expires_at},
                              separators=(",", ":")).encode())
    return f"v1.{payload}.{_mac(key, payload.encode('ascii'))}"


def decode(cookie: str | None, key: bytes, *, now: float | None = None) -> Session | None:
    """The session in a cookie value; None when absent, tampered with, malformed or expired."""
    if not cookie or len(cookie) > 4096:
        return None
    version, _, rest = cookie.partition(".")
    payload, _, mac = rest.partition(".")
    if version != "v1" or not payload or not mac:
        return None
    try:
        expected = _mac(key, payload.encode("ascii"))
    except UnicodeEncodeError:
        return None
    if not hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii", "replace")):
        return None
    try:
        data = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(data, dict):
        return None
    sub, sid, exp = data.get("sub"), data.get("sid"), data.get("exp")
    if not isinstance(sub, str) or not isinstance(sid, str) or not isinstance(exp, int):
        return None
    if exp < (time.time() if now is None else now):
        return None
    return Session(sub, sid, exp)


def current(request: Request) -> Session | None:
    session = decode(request.cookies.get(SESSION_COOKIE), session_key(request))
    cfg: Settings = request.app.state.settings
    if session is not None and cfg.production and session.subject != "admin":
        return None  # a dev-mode session never opens a serve-mode dashboard
    return session


def _secure(request: Request) -> bool:
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip().lower() == "https"


def set_session_cookie(response: Response, request: Request, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE, encode(session, session_key(request)), max_age=SESSION_TTL_S, path="/",
        httponly=True, samesite="strict", secure=_secure(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
    )


# -- the login form's own CSRF token (before any session exists) ------------------------------


def login_nonce(request: Request) -> tuple[str, bool]:
    """The browser's login nonce (from its cookie) and whether it is new and must be set."""
    nonce = request.cookies.get(LOGIN_COOKIE)
    if nonce and 16 <= len(nonce) <= 64:
        return nonce, False
    return secrets.token_urlsafe(18), True


def login_token(request: Request, nonce: str) -> str:
    return _mac(session_key(request), b"login:" + nonce.encode())


def set_login_cookie(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_TTL_S, path="/", httponly=True, samesite="strict",
                        secure=_secure(request))


def check_token(presented: str | None, expected: str) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("ascii"))


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (first value of each field), size-limited."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if v}
