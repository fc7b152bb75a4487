"""One redaction for every URL and header of a request pgqueue makes that can carry a credential
(an AI provider's key in `?key=`, a fetch's `Authorization`, an app URL's `user:password@`), applied
to whatever is logged, stored or raised about that request.

Two halves, used together:
- `url(...)` shows a URL with its credentials replaced: the password of its user info, and the
  values of query parameters whose names say they hold one (`key`, `api_key`, `token`, `sig`, ...).
- `Secrets` are the credential values of one request (those URL parts, the values of its
  credential headers, an AI call's key) and `scrub` replaces them in any text, whatever put them
  there: a message of httpx quoting the URL, an error body that echoes the request.
Both write `[REDACTED]`, so a message still says where the request went and what failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit, urlunsplit

REDACTED = "[REDACTED]"
# Header and query parameter names that hold credentials: the usual words, anywhere in the name
# (x-api-key, x-goog-api-key, proxy-authorization, access_token, X-Amz-Signature, client_secret...).
_CREDENTIAL_NAME = re.compile(
    r"auth|key|token|secret|passw|pwd|session|cookie|signature|credential|bearer|jwt|api[-_]?key", re.I)
# Query parameters with a short, exact name that is a credential (Gemini's `key`, presigned URLs'
# `sig`, OAuth's `code`).
_CREDENTIAL_PARAMS = frozenset({"key", "sig", "code", "apikey", "pass", "pw"})
# Shorter values are not scrubbed from text: they would rewrite ordinary words of a message.
MIN_SECRET_CHARS = 6
# An Authorization value's scheme is not secret, its credentials are.
_SCHEME = re.compile(r"^(bearer|basic|token|digest|aws4-hmac-sha256)\s+", re.I)


def credential_name(name: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(name)) or name.lower() in _CREDENTIAL_PARAMS


def _query_pairs(query: str) -> list[tuple[str, str, bool]]:
    """(name, raw value, has '=') of each part of a query string, in order, values as written."""
    pairs = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        pairs.append((name, value, bool(eq)))
    return pairs


def url(raw: str) -> str:
    """`raw` with the password of its user info and its credential query values replaced."""
    try:
        parts = urlsplit(raw)
    except ValueError:
        return REDACTED  # not even splittable: show nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if colon else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        query = "&".join(
            f"{name}={REDACTED}" if eq and value and credential_name(unquote_plus(name)) else
            f"{name}={value}" if eq else name
            for name, value, eq in _query_pairs(query))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True, slots=True)
class Secrets:
    """The credential values of one request, to be scrubbed from any text about it."""

    values: tuple[str, ...] = ()

    @classmethod
    def of(cls, request_url: str, request_headers: Mapping[str, str] | None = None,
           extra: Iterable[object] = ()) -> Secrets:
        found: set[str] = set()
        try:
            parts = urlsplit(request_url)
        except ValueError:
            parts = None
        if parts is not None:
            userinfo = parts.netloc.rpartition("@")[0]
            if userinfo:
                found.update(userinfo.split(":", 1))
            for name, value, eq in _query_pairs(parts.query):
                if eq and value and credential_name(unquote_plus(name)):
                    found.add(value)
        for name, value in (request_headers or {}).items():
            if credential_name(name):
                found.add(value)
                found.add(_SCHEME.sub("", value))
        found.update(str(value) for value in extra if value)
        variants = set()
        for value in found:
            for form in (value, unquote_plus(value), quote(value, safe=""), quote_plus(value)):
                if len(form) >= MIN_SECRET_CHARS:
                    variants.add(form)
        # Longest first: a value inside another is replaced as part of the longer one.
        return cls(tuple(sorted(variants, key=len, reverse=True)))

    def scrub(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text
