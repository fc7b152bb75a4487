"""Webhook signature secrets at rest: AES-256-GCM under a key derived from the signing key.

A verification secret must be read back to compute an HMAC, so it cannot be hashed like the
webhook's own key; it is stored encrypted instead (`pgqueue.webhooks.secret_enc`), as
`v1.<key id>.<base64 of nonce + ciphertext>`. The key is HMAC-SHA256(signing key, label), so it
lives wherever PGQUEUE_SIGNING_KEY lives and nothing new needs managing; the key id (8 hex
characters of the derived key's hash) picks the current or the fallback signing key on the way
back, so a rotation keeps old secrets readable while the old key is the fallback. Without a
signing key there is no key: such a server refuses to store a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pgqueue.errors import InvalidInput
from pgqueue.protocol import signing

_LABEL = b"pgqueue webhook secrets v1"
_AAD = b"pgqueue.webhooks.secret_enc"


class SecretUnreadable(Exception):
    """The stored secret was encrypted under a signing key this server does not hold."""


def _derive(signing_key: str) -> tuple[str, bytes]:
    key = hmac.new(signing.normalize_key(signing_key).encode(), _LABEL, hashlib.sha256).digest()
    return hashlib.sha256(key).hexdigest()[:8], key


def seal(secret: str, signing_keys: Sequence[str]) -> str:
    if not signing_keys:
        raise InvalidInput(
            "signature verification needs a signing key (PGQUEUE_SIGNING_KEY or --signing-key): a webhook's"
            " secret is stored encrypted under a key derived from it"
        )
    kid, key = _derive(signing_keys[0])
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, secret.encode(), _AAD)
    return f"v1.{kid}.{base64.b64encode(nonce + sealed).decode()}"


def open_sealed(stored: str, signing_keys: Sequence[str]) -> str:
    try:
        version, kid, blob = stored.split(".", 2)
        raw = base64.b64decode(blob, validate=True)
    except (ValueError, binascii.Error):
        raise SecretUnreadable("the stored secret is not in the v1 format") from None
    if version != "v1":
        raise SecretUnreadable(f"unknown secret format {version!r}")
    for signing_key in signing_keys:
        key_id, key = _derive(signing_key)
        if hmac.compare_digest(key_id, kid):
            try:
                return AESGCM(key).decrypt(raw[:12], raw[12:], _AAD).decode()
            except InvalidTag:
                break
    raise SecretUnreadable(
        "the webhook's secret was stored under another signing key: set it again (or keep the old key"
        " as PGQUEUE_SIGNING_KEY_FALLBACK while rotating)"
    )
