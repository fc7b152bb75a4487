"""Dashboard authentication: the login check, session cookies and CSRF tokens; and the API token
check the REST API accepts besides the signing key.

In serve mode a session lives in the database (api/sessions.py): the cookie `pgqueue_session =
s1.<random token>` names a row by the token's SHA-256, so logout and "sign out everywhere" end it at
once on every process. In dev mode (no keys, loopback, no login) a session only anchors CSRF tokens
and needs no row: the cookie is `v1.<payload>.<mac>`, a payload (base64url JSON: subject, session id,
expiry) authenticated with HMAC-SHA256 under a key derived from the signing key, or a random key of
the process. Cookies are HttpOnly, SameSite=Strict, and Secure when the request came over HTTPS.
Every dashboard action (a POST) must carry the session's CSRF token, an HMAC of the session id that
only pages of this origin can read.

What the login accepts in serve mode: PGQUEUE_ADMIN_PASSWORD and any PGQUEUE_API_TOKENS entry;
when neither is configured, the signing key (raw or hashed, current or fallback). Every
comparison is constant time and checks every candidate. The credential that opened a session is
remembered as an HMAC (`Credential.mac`), so a session ends when that credential is no longer
accepted.
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

from pgqueue.protocol import signing
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
    cookie: str | None = None  # serve mode, when fresh: the cookie value (it holds the token)

    def csrf(self, key: bytes) -> str:
        return _mac(key, b"csrf:" + self.sid.encode())


@dataclass(frozen=True, slots=True)
class Credential:
    """What opened a session: its kind ('password', 'api_token', 'signing_key') and an HMAC of the
    secret under a key derived from the signing key (a reader of the sessions table cannot test
    guesses of the password against it without that key)."""

    kind: str
    mac: bytes


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


def _credential_key(cfg: Settings) -> bytes:
    secret = signing.normalize_key(cfg.signing_key or "").encode("utf-8")
    return hmac.new(secret, b"pgqueue login credential v1", hashlib.sha256).digest()


def _credential(key: bytes, kind: str, secret: str) -> Credential:
    message = kind.encode() + b"\0" + secret.encode("utf-8", "surrogatepass")
    return Credential(kind, hmac.new(key, message, hashlib.sha256).digest())


def login_credentials(cfg: Settings) -> list[Credential]:
    """Every credential the login accepts now: admin password and API tokens; the signing keys (as
    their raw form, whichever form was typed) only when neither is configured."""
    key = _credential_key(cfg)
    found = [_credential(key, "password", cfg.admin_password)] if cfg.admin_password else []
    found += [_credential(key, "api_token", token) for token in cfg.api_tokens]
    if not found:
        found = [_credential(key, "signing_key", signing.normalize_key(k)) for k in cfg.signing_keys]
    return found


def login_credential(cfg: Settings, secret: str) -> Credential | None:
    """The dashboard login: the credential `secret` is (admin password, API token, or the signing key
    when neither is set), or None. Every candidate is compared, in constant time."""
    secret = secret.strip()
    if not secret:
        return None
    presented = _digest(secret)
    kind, matched = "", ""
    if cfg.admin_password and hmac.compare_digest(presented, _digest(cfg.admin_password)):
        kind, matched = "password", cfg.admin_password
    for token in cfg.api_tokens:
        if hmac.compare_digest(presented, _digest(token)) and not kind:
            kind, matched = "api_token", token
    if not cfg.admin_password and not cfg.api_tokens:
        for key in cfg.signing_keys:
            if signing.verify_bearer(f"Bearer {secret}", (key,)) and not kind:
                kind, matched = "signing_key", signing.normalize_key(key)
    return _credential(_credential_key(cfg), kind, matched) if kind else None


def still_accepted(cfg: Settings, mac: bytes) -> bool:
    """Whether a session's credential (its HMAC) is one the login accepts now (constant time)."""
    ok = False
    for credential in login_credentials(cfg):
        ok |= hmac.compare_digest(mac, credential.mac)
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
    """A dev-mode session (a signed cookie, no row); serve-mode sessions come from sessions.open."""
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


def _secure(request: Request) -> bool:
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip().lower() == "https"


def set_session_cookie(response: Response, request: Request, session: Session) -> None:
    value = session.cookie or encode(session, session_key(request))
    response.set_cookie(
        SESSION_COOKIE, value, max_age=SESSION_TTL_S, path="/",
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
