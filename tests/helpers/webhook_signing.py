"""Sign webhook deliveries the way GitHub, Stripe and Standard Webhooks (Svix) senders do, for tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def github(secret: str, body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def stripe(secret: str, body: bytes, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={mac},v0=ignored"}


def standard(secret: str, body: bytes, msg_id: str = "msg_1", t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = base64.b64encode(hmac.new(key, f"{msg_id}.{t}.".encode() + body, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(t), "webhook-signature": f"v1,bm90LWl0 v1,{mac}"}


GITHUB_PUSH = {
    "ref": "refs/heads/main",
    "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": "0000000000000000000000000000000000000000",
    "repository": {"id": 1296269, "full_name": "octocat/Hello-World", "private": False},
    "pusher": {"name": "octocat", "email": "octocat@github.com"},
    "commits": [
        {
            "id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "message": "Fix all the bugs",
            "author": {"name": "Monalisa Octocat", "email": "support@github.com"},
        }
    ],
}

STRIPE_EVENT = {
    "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
    "object": "event",
    "api_version": "2022-11-15",
    "created": 1686089970,
    "type": "charge.succeeded",
    "livemode": False,
    "data": {
        "object": {
            "id": "ch_3NG8Du2eZvKYlo2C0iBpzDMM",
            "object": "charge",
            "amount": 2000,
            "currency": "usd",
            "customer": "cus_9s6XKzkNRiz8i3",
            "paid": True,
        }
    },
}

GITHUB_TRANSFORM = """
function transform(evt, headers = {}, queryParams = {}, raw = "") {
  return {
    name: "github/" + (headers["X-Github-Event"] || "unknown"),
    id: headers["X-Github-Delivery"],
    data: { repo: evt.repository.full_name, pusher: evt.pusher.name, commits: evt.commits.length },
  };
}
"""

STRIPE_TRANSFORM = """
function transform(evt, headers = {}, queryParams = {}, raw = "") {
  return { name: `stripe/${evt.type}`, id: evt.id, data: evt.data.object };
}
"""
