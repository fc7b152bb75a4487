"""Subscription tokens: what lets a browser or a server read one channel's topics, and nothing else.

`POST /v1/realtime/token` (signing-key authenticated, as the SDKs' `getSubscriptionToken` call it)
mints a JWT (HS256, RFC 7519) scoped to one channel and a set of topics, valid for
PGQUEUE_REALTIME_TOKEN_TTL_S; the subscriber presents it to `/v1/realtime/connect` or
`/v1/realtime/sse`. It is checked when the connection opens, as Inngest does: a subscription that is
open outlives its token.

The MAC key is derived from the signing key (HMAC-SHA256 of a fixed label under the key without
its prefix), so a token never reveals the signing key and every process of a deployment checks the
tokens any of them minted. Tokens minted with the fallback key are accepted during a rotation. Dev
mode without keys derives it from a constant: anyone who can reach a dev server may mint tokens
anyway, and the scope still holds (a token for channel A reads nothing of B).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pgqueue.errors import InvalidInput, Unauthorized
from pgqueue.protocol import signing

ISSUER = "pgqueue"
AUDIENCE = "pgqueue-realtime"
# The topic a durable endpoint's stream is published to (POST /v1/realtime/publish/tee), as in Inngest.
STREAM_TOPIC = "$stream"
# How long the token a durable endpoint gets for its client's redirect (POST /v1/checkpoint's
# realtime_token) stays usable: the client opens it when the endpoint first streams, which may be
# well after the run started.
ENDPOINT_TOKEN_TTL_S = 15 * 60
MAX_TOPICS = 100
MAX_NAME_BYTES = 1024
MAX_TOKEN_CHARS = 16_384
# Clock skew tolerated between the processes that mint and check (iat in the future).
SKEW_S = 60
_LABEL = b"pgqueue realtime subscription token v1"
_DEV_KEY = "pgqueue-dev-realtime-tokens"
_HEADER = {"alg": "HS256", "typ": "JWT"}


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows: reading `topics` of `channel`, until `expires_at` (unix seconds)."""

    channel: str
    topics: frozenset[str]
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _keys(signing_keys: Sequence[str]) -> list[bytes]:
    sources = [signing.normalize_key(k) for k in signing_keys] or [_DEV_KEY]
    return [hmac.new(k.encode("utf-8"), _LABEL, hashlib.sha256).digest() for k in sources]


def check_name(value: object, what: str) -> str:
    """A channel or topic name: a non-empty string of at most MAX_NAME_BYTES bytes."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidInput(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    return value


def mint(channel: str, topics: Iterable[str], *, signing_keys: Sequence[str], ttl_s: float,
         now: float | None = None) -> str:
    """A token for `topics` of `channel`, signed with the first (current) signing key."""
    check_name(channel, "channel")
    names = sorted({check_name(t, "topic") for t in topics})
    if not names:
        raise InvalidInput("a token needs at least one topic")
    if len(names) > MAX_TOPICS:
        raise InvalidInput(f"a token may name at most {MAX_TOPICS} topics, got {len(names)}")
    issued = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": issued, "exp": issued + max(1, int(ttl_s)),
              "channel": channel, "topics": names}
    signed = ".".join(_b64(json.dumps(part, separators=(",", ":")).encode()) for part in (_HEADER, claims))
    mac = hmac.new(_keys(signing_keys)[0], signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{_b64(mac)}"


def _json_part(text: str) -> Any:
    try:
        return json.loads(_unb64(text))
    except (ValueError, binascii.Error, RecursionError):
        return None


def verify(token: str | None, *, signing_keys: Sequence[str], now: float | None = None) -> Grant:
    """The grant of a valid token; Unauthorized saying why not (missing, malformed, forged, expired).
    The MAC is compared in constant time against every configured key."""
    if not token:
        raise Unauthorized("a subscription token is required: ?token=<jwt from POST /v1/realtime/token>")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("the subscription token is malformed (too long)")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise Unauthorized("the subscription token is malformed (not a JWT)")
    header, claims = _json_part(parts[0]), _json_part(parts[1])
    try:
        given = _unb64(parts[2])
    except (ValueError, binascii.Error):
        given = b""
    signed = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    ok = False
    for key in _keys(signing_keys):
        ok |= hmac.compare_digest(given, hmac.new(key, signed, hashlib.sha256).digest())
    if not ok or not isinstance(header, dict) or header.get("alg") != "HS256":
        raise Unauthorized("the subscription token is not valid here (forged, or signed with another key)")
    if not isinstance(claims, dict) or claims.get("iss") != ISSUER or claims.get("aud") != AUDIENCE:
        raise Unauthorized("the subscription token is not a pgqueue realtime token")
    at = time.time() if now is None else now
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int) or isinstance(exp, bool) or isinstance(iat, bool):
        raise Unauthorized("the subscription token has no valid expiry")
    if exp <= at:
        raise Unauthorized(f"the subscription token expired {int(at - exp)} s ago: fetch a new one")
    if iat > at + SKEW_S:
        raise Unauthorized("the subscription token was issued in the future: check the clocks")
    channel, topics = claims.get("channel"), claims.get("topics")
    if not isinstance(channel, str) or not channel or not isinstance(topics, list) or not topics \
            or not all(isinstance(t, str) and t for t in topics):
        raise Unauthorized("the subscription token names no channel and topics")
    return Grant(channel, frozenset(topics), exp)


def parse_request(body: Any) -> tuple[str, list[str]]:
    """The body of `POST /v1/realtime/token`, as both SDKs send it: a list of topics
    `[{"channel": "c", "name": "t", "kind": "run"}, ...]`, all of one channel. (channel, topics)."""
    shape = '[{"channel": "user:42", "name": "progress", "kind": "run"}, ...]'
    if not isinstance(body, list) or not body:
        raise InvalidInput(f"the body must be a non-empty list of topics like {shape}")
    if len(body) > MAX_TOPICS:
        raise InvalidInput(f"a token may name at most {MAX_TOPICS} topics, got {len(body)}")
    channels: set[str] = set()
    names: list[str] = []
    for i, entry in enumerate(body):
        if not isinstance(entry, dict):
            raise InvalidInput(f"topic {i} must be an object like {shape}")
        kind = entry.get("kind", "run")
        if kind != "run":
            raise InvalidInput(f"topic {i}: only kind \"run\" topics are served, got {kind!r}")
        channels.add(check_name(entry.get("channel"), f"topic {i}: channel"))
        names.append(check_name(entry.get("name"), f"topic {i}: name"))
    if len(channels) != 1:
        raise InvalidInput(f"a token covers one channel; the topics name {len(channels)}: {sorted(channels)}")
    return channels.pop(), names
