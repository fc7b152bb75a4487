"""ULIDs for events and runs, including the deterministic event ids SDKs ask for, and the bounded
form every user-supplied key is stored in (`compact_key`).

A ULID is 48 bits of unix milliseconds and 80 bits of entropy, written as 26 Crockford base32
characters, so ids sort by creation time. SDKs send `x-inngest-event-id-seed: <millis>,<base64 of
10 bytes>` with each event request; deriving ids from it exactly as the Go server does
(pkg/event/id.go) gives a retried request the same ids as the first attempt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

__all__ = ["EventIdSeed", "compact_key", "new_ulid", "parse_event_id_seed", "seeded_ulids", "ulid_time_ms"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# ULID text is base32 of the 128-bit value preceded by two zero bits; base64's base32 codec does
# the bit work on bytes, so pad to 17 bytes (2 + 128 + 6 bits) and translate the alphabet.
_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD)
_DECODE = {char: value for value, char in enumerate(_CROCKFORD)} | {
    char.lower(): value for value, char in enumerate(_CROCKFORD)
}
MAX_TIME_MS = 2**48 - 1
_ENTROPY_BITS = 80
_ENTROPY_BYTES = 10
_INT64_MAX = 2**63 - 1
_GO_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)  # what Go's strconv.ParseInt(s, 10, 64) accepts
MAX_KEY_LENGTH = 200


def compact_key(key: str) -> str:
    """A user-supplied key (flow-control key value, event `id`) in the form it is stored and indexed in.

    Up to MAX_KEY_LENGTH characters a key is kept as given (readable in the views); a longer one
    becomes 'sha256:' + the hex digest of its UTF-8 bytes, so no key can exceed a btree entry's
    size limit (about 2,700 bytes). Migration 0008 converts old rows with the same formula in SQL:
    'sha256:' || encode(sha256(convert_to(key, 'UTF8')), 'hex').
    """
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class EventIdSeed:
    """A parsed `x-inngest-event-id-seed` header: the sender's clock and 10 random bytes."""

    millis: int
    entropy: bytes


class _MonotonicState:
    """Last id issued by `new_ulid`, so ids made in the same millisecond still increase."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = -1
        self.last_entropy = 0


_state = _MonotonicState()


def new_ulid(ms: int | None = None) -> str:
    """A new ULID at `ms` (now if None).

    Without `ms`, ids from this process are strictly increasing: within one millisecond (or if
    the clock steps back) the previous entropy is incremented by a random amount, as oklog/ulid's
    monotonic reader does. With an explicit `ms` the entropy is fresh random bytes.
    """
    if ms is not None:
        return encode_ulid(ms, secrets.randbits(_ENTROPY_BITS))
    now = time.time_ns() // 1_000_000
    with _state.lock:
        if now <= _state.last_ms:
            entropy = _state.last_entropy + 1 + secrets.randbits(32)
            if entropy >> _ENTROPY_BITS:  # overflow: borrow the next millisecond
                now, entropy = _state.last_ms + 1, secrets.randbits(_ENTROPY_BITS - 1)
            else:
                now = _state.last_ms
        else:
            entropy = secrets.randbits(_ENTROPY_BITS - 1)  # leaves room to increment
        _state.last_ms, _state.last_entropy = now, entropy
    return encode_ulid(now, entropy)


def encode_ulid(ms: int, entropy: int) -> str:
    """The 26-character ULID for a millisecond timestamp and an 80-bit entropy value."""
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"ULID time must be within 0..{MAX_TIME_MS} ms, got {ms}")
    if not 0 <= entropy < 1 << _ENTROPY_BITS:
        raise ValueError("ULID entropy must fit in 80 bits")
    value = (ms << _ENTROPY_BITS) | entropy
    padded = (value << 6).to_bytes(17, "big")
    return base64.b32encode(padded)[:26].decode("ascii").translate(_FROM_RFC4648)


def ulid_time_ms(ulid: str) -> int:
    """The millisecond timestamp of a ULID; ValueError if it is not one."""
    if len(ulid) != 26:
        raise ValueError(f"a ULID has 26 characters, got {len(ulid)}: {ulid!r}")
    ms = 0
    for char in ulid[:10]:
        digit = _DECODE.get(char)
        if digit is None:
            raise ValueError(f"{char!r} is not a Crockford base32 digit in ULID {ulid!r}")
        ms = (ms << 5) | digit
    if ms > MAX_TIME_MS:
        raise ValueError(f"ULID {ulid!r} is out of range (first character above 7)")
    if any(char not in _DECODE for char in ulid[10:]):
        raise ValueError(f"ULID {ulid!r} contains a character outside Crockford base32")
    return ms


def parse_event_id_seed(header: str | None) -> EventIdSeed | None:
    """Parse `x-inngest-event-id-seed`; None when absent or malformed (never raises).

    Accepts what the Go server accepts: `<millis>,<standard base64 of exactly 10 bytes>` with
    millis a positive int64, and additionally requires millis to fit a ULID (Go then falls back
    to a random id, as callers should on None).
    """
    if not header:
        return None
    parts = header.strip().split(",")
    if len(parts) != 2:
        return None
    millis_text, entropy_text = parts
    if _GO_INT.fullmatch(millis_text) is None or len(millis_text) > 20:
        return None
    millis = int(millis_text)
    if not 0 < millis <= min(MAX_TIME_MS, _INT64_MAX):
        return None
    try:
        entropy = base64.b64decode(entropy_text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(entropy) != _ENTROPY_BYTES:
        return None
    return EventIdSeed(millis=millis, entropy=entropy)


def seeded_ulids(seed: EventIdSeed, count: int, *, first_index: int = 1) -> list[str]:
    """The ids the Go server derives from `seed` for `count` events, in request order.

    Event i (counted from `first_index`) gets the seed's entropy with its last 4 bytes, read as a
    big-endian uint32, increased by i modulo 2**32. The Go event API (`POST /e/{key}`) counts
    from 1; its `/invoke/{slug}` endpoint uses index 0 for its single event.
    """
    head = int.from_bytes(seed.entropy[:6], "big") << 32
    counter = int.from_bytes(seed.entropy[6:], "big")
    return [
        encode_ulid(seed.millis, head | ((counter + index) & 0xFFFFFFFF))
        for index in range(first_index, first_index + count)
    ]
