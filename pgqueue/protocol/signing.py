"""Signing keys: HMAC request signatures and bearer-token checks, with key rotation (protocol §5).

A signing key is an even-length hex string, optionally prefixed `signkey-<env>-`. Requests to SDKs
carry `X-Inngest-Signature: t=<unix seconds>&s=<hex HMAC-SHA256>`, keyed by the UTF-8 bytes of the
key without its prefix (not the hex-decoded bytes) over `body || str(t)`. SDKs calling our API send
`Authorization: Bearer <key or sha256(hex-decoded key)>`, prefixed or not. Every check here is
constant time and accepts any of the configured keys (current and fallback).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from pgqueue import errors

__all__ = [
    "hashed_key",
    "normalize_key",
    "sign",
    "validate_signing_key",
    "verify",
    "verify_bearer",
]

# Go's `^signkey-\w+-`: its \w is ASCII-only, so ours is too.
_KEY_PREFIX = re.compile(r"^signkey-\w+-", re.ASCII)
_HEX = re.compile(r"[0-9a-fA-F]*", re.ASCII)
_SIGNATURE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)
_GENERATE_HINT = "generate one with `openssl rand -hex 32`"


def normalize_key(key: str) -> str:
    """Strip a leading `signkey-<env>-` prefix."""
    return _KEY_PREFIX.sub("", key, count=1)


def validate_signing_key(key: str, *, setting: str = "signing key") -> str:
    """Return `key` unchanged if it is usable, else raise ConfigError saying what is wrong.

    `setting` names the setting in the message (for example "INNGEST_SIGNING_KEY_FALLBACK").
    The Python SDK hex-decodes the key to build its bearer token, so anything but hex breaks it.
    """
    body = normalize_key(key)
    example = "e.g. signkey-prod-<hex> or plain <hex>"
    if not body:
        problem = "is empty" if not key else "has a signkey-<env>- prefix but no hex after it"
    elif _HEX.fullmatch(body) is None:
        position = next(i for i, char in enumerate(body) if char not in "0123456789abcdefABCDEF")
        char = body[position]
        shown = repr(char) if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"
        problem = f"is not hex: character {position + 1} after the prefix is {shown}"
    elif len(body) % 2:
        problem = f"has an odd number of hex digits ({len(body)})"
    else:
        return key
    raise errors.ConfigError(
        f"{setting} {problem}; it must be an even-length hex string, optionally prefixed "
        f"signkey-<env>- ({example}); {_GENERATE_HINT}"
    )


def sign(body: bytes, key: str, t: int | None = None) -> str:
    """Return the `X-Inngest-Signature` value for `body` at unix time `t` (seconds; now if None)."""
    if t is None:
        t = int(time.time())
    return f"t={t}&s={_mac(body, key, t)}"


def verify(
    header: str | None,
    body: bytes,
    keys: Sequence[str],
    *,
    max_age_s: int = 300,
    now: float | None = None,
) -> bool:
    """Whether `header` is a valid signature of `body` by any of `keys`, made within `max_age_s`.

    Never raises: a missing or malformed header, or one older or newer than `max_age_s` (clock
    skew either way), is simply not valid.
    """
    parsed = _parse_signature(header)
    if parsed is None:
        return False
    t, signature = parsed
    if abs((time.time() if now is None else now) - t) > max_age_s:
        return False
    expected = signature.encode("ascii")
    valid = False
    # Check every key, so timing does not reveal which one matched.
    for key in keys:
        if key:
            valid |= hmac.compare_digest(_mac(body, key, t).encode("ascii"), expected)
    return valid


def hashed_key(key: str) -> str:
    """The SDK bearer form of a key: sha256 hex of its hex-decoded bytes, without prefix.

    Raises ValueError if the key is not hex (validate keys with `validate_signing_key` first).
    """
    return hashlib.sha256(bytes.fromhex(normalize_key(key))).hexdigest()


def verify_bearer(authorization: str | None, keys: Sequence[str]) -> bool:
    """Whether an `Authorization` header carries one of `keys`, raw or hashed, prefixed or not.

    Mirrors the Go server: strip `signkey-<env>-` from both sides, then accept the raw key or its
    hash. Never raises.
    """
    if not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    presented = normalize_key(token).encode("utf-8", "surrogatepass")
    valid = False
    for key in keys:
        raw = normalize_key(key)
        if not raw:
            continue
        valid |= hmac.compare_digest(presented, raw.encode("utf-8", "surrogatepass"))
        try:
            digest = hashed_key(raw)
        except ValueError:
            continue  # a non-hex key has no hashed form; validate_signing_key refuses those
        valid |= hmac.compare_digest(presented, digest.encode("ascii"))
    return valid


def _mac(body: bytes, key: str, t: int) -> str:
    mac = hmac.new(normalize_key(key).encode("utf-8"), body, hashlib.sha256)
    mac.update(str(t).encode("ascii"))
    return mac.hexdigest()


def _parse_signature(header: str | None) -> tuple[int, str] | None:
    """Parse `t=<seconds>&s=<hex>`; None if malformed (missing, repeated or unknown-shaped parts)."""
    if not header:
        return None
    fields: dict[str, str] = {}
    for part in header.strip().split("&"):
        name, sep, value = part.partition("=")
        if not sep or name in fields:
            return None
        fields[name] = value
    t_text, signature = fields.get("t"), fields.get("s")
    if t_text is None or signature is None:
        return None
    if _TIMESTAMP.fullmatch(t_text) is None or _SIGNATURE.fullmatch(signature) is None:
        return None
    return int(t_text), signature
