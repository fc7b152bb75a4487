"""Login throttling: failed dashboard logins are counted per client address and for the dashboard
account as a whole, in PostgreSQL (pgqueue.login_admit_v1), so every server process and every Lambda
container enforces the same counts.

- Per address: after PGQUEUE_LOGIN_MAX_FAILURES failures from one address, that address waits
  PGQUEUE_LOGIN_LOCKOUT_S, doubling with each further failure up to PGQUEUE_LOGIN_MAX_LOCKOUT_S.
  An IPv6 client counts by its /64, which one subscriber usually holds whole.
- Per account: the login has no user name, so every failure counts against the one dashboard
  account; after PGQUEUE_LOGIN_ACCOUNT_MAX_FAILURES from anywhere, every address waits the same way.
  That bounds a guesser with many addresses, at a price: such a guesser can keep the real admin
  waiting too (the REST API, with a bearer token, is not throttled by this).

An attempt is counted before its password is checked, in one statement that holds the key rows'
locks, so parallel attempts cannot all be checked before the first failure is recorded; a successful
login gives the attempt back. While a key waits the password is not checked at all (a right password
gets the same 429 as a wrong one), and nothing is recorded.

The address is the socket peer the ASGI server reports. pgqueue itself trusts no forwarded header;
uvicorn (`pgqueue serve`) replaces the peer with X-Forwarded-For only for connections from the
addresses in its FORWARDED_ALLOW_IPS (default 127.0.0.1 and ::1, i.e. a proxy on the same host). On
Lambda, Mangum reports the source address API Gateway or the Function URL saw, and for an ALB the
X-Forwarded-For list, of which only the entry the ALB appended counts (client_address).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass

from fastapi import Request

from api import deps
from pgqueue.settings import Settings
from pgqueue.store import sessions as store

log = logging.getLogger("pgqueue.api")

ACCOUNT_KEY = "account:dashboard"
# A count starts afresh only after a day without failures (or twice the longest wait): a patient
# guesser cannot earn a fresh allowance every hour.
FORGET_MIN_S = 86_400


@dataclass(frozen=True, slots=True)
class Attempt:
    address: str
    address_key: str
    retry_after_s: int  # > 0: refused unchecked; the client may try again after this many seconds
    keys: tuple[store.KeyAttempt, ...]


def client_address(request: Request) -> str:
    """The client's address as text: the socket peer, IPv4-mapped IPv6 shown as IPv4.

    Behind an AWS ALB, Mangum reports the whole X-Forwarded-For list as the peer; only its last
    entry, the address the load balancer itself saw and appended, is taken (anything before it is
    whatever the client chose to send)."""
    host = (request.client.host if request.client else "").rpartition(",")[2].strip()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address:{address}"
    if isinstance(ip, ipaddress.IPv6Address):
        return f"address:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"address:{ip}"


def _limits(cfg: Settings, key: str) -> dict[str, int]:
    limits = {key: cfg.login_max_failures}
    if cfg.login_account_max_failures > 0:
        limits[ACCOUNT_KEY] = cfg.login_account_max_failures
    return limits


async def admit(request: Request) -> Attempt:
    """Count this login attempt, or refuse it (retry_after_s > 0) while its address or the account waits."""
    cfg = deps.settings(request)
    address = client_address(request)
    key = address_key(address)
    async with deps.pool(request).connection() as conn:
        keys = await store.login_admit(
            conn, _limits(cfg, key), lockout_ms=round(cfg.login_lockout_s * 1000),
            max_lockout_ms=round(cfg.login_max_lockout_s * 1000),
            forget_ms=round(max(FORGET_MIN_S, 2 * cfg.login_max_lockout_s) * 1000),
        )
    wait_ms = max((k.wait_ms for k in keys), default=0)
    attempt = Attempt(address, key, math.ceil(wait_ms / 1000), tuple(keys))
    if attempt.retry_after_s:
        log.debug("dashboard login from %s refused unchecked: retry after %d s", address,
                  attempt.retry_after_s)
    return attempt


def failed(attempt: Attempt) -> None:
    """Log a wrong password, and the waits it starts (never the password itself)."""
    log.warning("dashboard login refused from %s", attempt.address)
    for key in attempt.keys:
        if key.lock_ms <= 0:
            continue
        who = f"from {attempt.address}" if key.key == attempt.address_key else "to the dashboard"
        log.warning("sign-ins %s paused for %d s after %d failures", who, math.ceil(key.lock_ms / 1000),
                    key.failures)


async def succeeded(request: Request, attempt: Attempt) -> None:
    """A right password: the address starts afresh; the account gets its counted attempt back and
    stops waiting, but keeps one failure short of its limit (a guesser gains one try per real login,
    not a whole new allowance)."""
    cfg = deps.settings(request)
    account = ACCOUNT_KEY if any(k.key == ACCOUNT_KEY for k in attempt.keys) else None
    async with deps.pool(request).connection() as conn:
        await store.login_forget(conn, address_key=attempt.address_key, account_key=account,
                                 account_limit=cfg.login_account_max_failures)
