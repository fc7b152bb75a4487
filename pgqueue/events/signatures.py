"""Check a webhook delivery's signature before its transform runs (beyond Inngest, which leaves it
to the function). Four schemes, each an HMAC-SHA256 over the raw body, compared in constant time:

- `hmac-sha256`: the hex (optionally `sha256=`-prefixed) or base64 digest in a configurable header
  (default `X-Signature`).
- `github`: `X-Hub-Signature-256: sha256=<hex>`.
- `stripe`: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=...]` over `<t>.<body>`, with `t`
  within the tolerance (default 300 s) of now.
- `standard-webhooks` (Svix): `webhook-id`, `webhook-timestamp`, `webhook-signature` (or their
  `svix-` twins), `v1,<base64>` entries over `<id>.<timestamp>.<body>`, with the secret given as
  `whsec_<base64>`; the timestamp within the tolerance (default 300 s).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgqueue.errors import InvalidInput, Unauthorized

SCHEMES = ("hmac-sha256", "github", "stripe", "standard-webhooks")
DEFAULT_HEADER = "X-Signature"
DEFAULT_TOLERANCE_S = 300
MAX_TOLERANCE_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Verification:
    scheme: str
    header: str | None = None  # hmac-sha256 only
    tolerance_s: int = DEFAULT_TOLERANCE_S  # stripe and standard-webhooks

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scheme": self.scheme}
        if self.scheme == "hmac-sha256":
            out["header"] = self.header or DEFAULT_HEADER
        if self.scheme in ("stripe", "standard-webhooks"):
            out["tolerance_s"] = self.tolerance_s
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Verification:
        scheme = raw.get("scheme")
        if scheme not in SCHEMES:
            raise InvalidInput(f"`verify.scheme` must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        header = raw.get("header")
        if header is not None and (
            not isinstance(header, str) or not header.strip() or scheme != "hmac-sha256"
        ):
            raise InvalidInput("`verify.header` is a header name, and only for the hmac-sha256 scheme")
        tolerance = raw.get("tolerance_s", DEFAULT_TOLERANCE_S)
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, int)
            or not 1 <= tolerance <= MAX_TOLERANCE_S
        ):
            raise InvalidInput(
                f"`verify.tolerance_s` must be a whole number of seconds from 1 to {MAX_TOLERANCE_S}"
            )
        return cls(scheme, header.strip() if isinstance(header, str) else None, tolerance)


def check_secret(verification: Verification, secret: Any) -> bytes:
    """The HMAC key for `secret` as the scheme reads it; refuses one it cannot use."""
    if not isinstance(secret, str) or not secret:
        raise InvalidInput("`verify.secret` is required: the secret the provider signs deliveries with")
    if len(secret) > 1024:
        raise InvalidInput("`verify.secret` is longer than 1024 characters")
    if verification.scheme == "standard-webhooks":
        encoded = secret.removeprefix("whsec_")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("a Standard Webhooks secret is `whsec_` followed by base64") from None
    return secret.encode()


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _any_equal(expected: bytes, candidates: list[bytes]) -> bool:
    ok = False
    for candidate in candidates:  # every candidate compared, in constant time each
        ok |= hmac.compare_digest(expected, candidate)
    return ok


def _hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        return None


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _timely(ts_text: str, tolerance_s: int, now: float, what: str) -> None:
    try:
        ts = int(ts_text.strip())
    except ValueError:
        raise Unauthorized(f"the {what} timestamp is not a number of seconds") from None
    if abs(now - ts) > tolerance_s:
        raise Unauthorized(
            f"the {what} timestamp is {abs(now - ts):.0f} s away from now; the tolerance is {tolerance_s} s"
            " (a replayed delivery, or clocks apart)"
        )


def verify(
    verification: Verification,
    key: bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
) -> None:
    """Raise Unauthorized (401) naming what is wrong, or return when the signature holds.
    `headers` are looked up case-insensitively (pass lower-cased names)."""
    now = time.time() if now is None else now
    scheme = verification.scheme
    if scheme == "github":
        value = headers.get("x-hub-signature-256")
        if not value:
            raise Unauthorized("missing X-Hub-Signature-256 header (GitHub signature)")
        digest = _hex(value.strip().removeprefix("sha256=")) if value.strip().startswith("sha256=") else None
        if digest is None or not hmac.compare_digest(_hmac(key, body), digest):
            raise Unauthorized("X-Hub-Signature-256 does not match the body: check the webhook's secret")
        return
    if scheme == "hmac-sha256":
        name = verification.header or DEFAULT_HEADER
        value = headers.get(name.lower())
        if not value:
            raise Unauthorized(f"missing {name} header (HMAC-SHA256 signature)")
        text = value.strip()
        for prefix in ("sha256=", "sha256:"):
            text = text.removeprefix(prefix)
        candidates = [c for c in (_hex(text), _b64(text)) if c is not None]
        if not _any_equal(_hmac(key, body), candidates):
            raise Unauthorized(f"{name} does not match the body: check the webhook's secret")
        return
    if scheme == "stripe":
        value = headers.get("stripe-signature")
        if not value:
            raise Unauthorized("missing Stripe-Signature header")
        parts = [p.split("=", 1) for p in value.split(",") if "=" in p]
        stamps = [v for k, v in parts if k.strip() == "t"]
        signatures = [d for k, v in parts if k.strip() == "v1" and (d := _hex(v)) is not None]
        if not stamps or not signatures:
            raise Unauthorized("Stripe-Signature has no t= timestamp or no v1= signature")
        expected = _hmac(key, stamps[0].strip().encode() + b"." + body)
        if not _any_equal(expected, signatures):
            raise Unauthorized("Stripe-Signature does not match the body: check the webhook's secret")
        _timely(stamps[0], verification.tolerance_s, now, "Stripe-Signature")
        return
    if scheme == "standard-webhooks":
        prefix = "webhook-" if headers.get("webhook-signature") else "svix-"
        msg_id, stamp, value = (headers.get(prefix + n) for n in ("id", "timestamp", "signature"))
        if not (msg_id and stamp and value):
            raise Unauthorized(
                "missing webhook-id, webhook-timestamp or webhook-signature header (Standard Webhooks;"
                " svix-id, svix-timestamp, svix-signature also accepted)"
            )
        expected = _hmac(key, f"{msg_id}.{stamp}.".encode() + body)
        signatures = [
            d for entry in value.split() if entry.startswith("v1,") and (d := _b64(entry[3:])) is not None
        ]
        if not _any_equal(expected, signatures):
            raise Unauthorized(f"{prefix}signature does not match the body: check the webhook's secret")
        _timely(stamp, verification.tolerance_s, now, f"{prefix}timestamp")
        return
    raise InvalidInput(f"unknown signature scheme {scheme!r}")
