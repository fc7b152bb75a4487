"""Egress policy: which addresses pgqueue may call when it calls an app (runs, server-initiated sync),
and, separately, which ones functions may reach through pgqueue (step.fetch, step.ai.infer).

An app URL is attacker-reachable input (whoever syncs an app chooses it), so every call is checked
on the *resolved* address at connect time, by the transport that makes every connection
(pgqueue.executor.transport): a name that resolves
to a forbidden address, or re-resolves to one later (DNS rebinding), is refused, and the connection
goes to the address that was checked. Sync checks the same policy up front so a forbidden URL is a
400 naming the setting instead of a run failing later. docs/security.md#egress-to-apps has the full table.

- Never: unspecified (0.0.0.0/8, ::), multicast, limited broadcast.
- Link-local (169.254/16, fe80::/10) and cloud metadata addresses: only with PGQUEUE_ALLOW_LINK_LOCAL.
- Loopback and this host's own interface addresses: production refuses them unless
  PGQUEUE_ALLOW_LOOPBACK (an app on the same host); dev allows them.
- Private (RFC 1918, fc00::/7), shared/CGNAT 100.64/10 and every other range of the IANA IPv4 and
  IPv6 special-purpose registries: production refuses them unless PGQUEUE_ALLOWED_APP_NETWORKS
  (CIDRs) or PGQUEUE_ALLOWED_APP_HOSTS (the host name in the URL) allows them; dev allows them.
- IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged by
  the IPv4 address they embed; Teredo (2001::/32) is refused like the rest of 2001::/23.

Fetches (`Policy.for_fetch`) have their own list: an app's URL is chosen by whoever syncs it, a
fetch's by the function's code and whatever its input says, so allowing apps on this host
(PGQUEUE_ALLOW_LOOPBACK) must not let every function reach pgqueue's own API or any other local
service. In production a fetch reaches public addresses, plus PGQUEUE_FETCH_ALLOWED_NETWORKS and
PGQUEUE_FETCH_ALLOWED_HOSTS, and never link-local or metadata addresses; dev mode keeps the dev
policy for both.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import anyio
import httpcore
import httpx

if TYPE_CHECKING:
    from pgqueue.settings import Settings

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# What a range needs to be called: nothing can allow "never"; the others name their setting.
Kind = Literal["never", "link-local", "loopback", "private"]

ALLOW_LOOPBACK = "PGQUEUE_ALLOW_LOOPBACK"
ALLOW_LINK_LOCAL = "PGQUEUE_ALLOW_LINK_LOCAL"
ALLOWED_NETWORKS = "PGQUEUE_ALLOWED_APP_NETWORKS"
ALLOWED_HOSTS = "PGQUEUE_ALLOWED_APP_HOSTS"
FETCH_ALLOWED_NETWORKS = "PGQUEUE_FETCH_ALLOWED_NETWORKS"
FETCH_ALLOWED_HOSTS = "PGQUEUE_FETCH_ALLOWED_HOSTS"


@dataclass(frozen=True, slots=True)
class SpecialRange:
    network: IPNetwork
    name: str
    kind: Kind


def _range(cidr: str, name: str, kind: Kind = "private") -> SpecialRange:
    return SpecialRange(ipaddress.ip_network(cidr), name, kind)


# The IANA IPv4 and IPv6 Special-Purpose Address Registries (2025 snapshot), plus multicast, the
# deprecated site-local block, and the IPv6 blocks IANA has not allocated (outside 2000::/3, see
# `_outside_global_unicast`). "Globally reachable" special blocks (anycast services, AS112, AMT,
# ORCHID) are refused too: none of them is where an app is served. The most specific entry names
# the reason, so 2001::/32 reads "Teredo" rather than "IETF protocol assignments".
SPECIAL_RANGES: tuple[SpecialRange, ...] = (
    _range("0.0.0.0/8", "'this network' (RFC 791)", "never"),
    _range("10.0.0.0/8", "private-use (RFC 1918)"),
    _range("100.64.0.0/10", "shared address space / CGNAT (RFC 6598)"),
    _range("127.0.0.0/8", "loopback (RFC 1122)", "loopback"),
    _range("169.254.0.0/16", "link-local (RFC 3927)", "link-local"),
    _range("172.16.0.0/12", "private-use (RFC 1918)"),
    _range("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    _range("192.0.0.0/29", "IPv4 service continuity prefix (RFC 7335)"),
    _range("192.0.0.8/32", "IPv4 dummy address (RFC 7600)"),
    _range("192.0.0.9/32", "port control protocol anycast (RFC 7723)"),
    _range("192.0.0.10/32", "TURN anycast (RFC 8155)"),
    _range("192.0.0.170/31", "NAT64/DNS64 discovery (RFC 7050)"),
    _range("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
    _range("192.31.196.0/24", "AS112-v4 (RFC 7535)"),
    _range("192.52.193.0/24", "AMT (RFC 7450)"),
    _range("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
    _range("192.168.0.0/16", "private-use (RFC 1918)"),
    _range("192.175.48.0/24", "AS112 direct delegation (RFC 7534)"),
    _range("198.18.0.0/15", "benchmarking (RFC 2544)"),
    _range("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
    _range("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
    _range("224.0.0.0/4", "multicast (RFC 5771)", "never"),
    _range("240.0.0.0/4", "reserved (RFC 1112)"),
    _range("255.255.255.255/32", "limited broadcast (RFC 919)", "never"),
    _range("::/128", "unspecified (RFC 4291)", "never"),
    _range("::1/128", "loopback (RFC 4291)", "loopback"),
    _range("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215)"),
    _range("100::/64", "discard-only (RFC 6666)"),
    _range("100:0:0:1::/64", "dummy IPv6 prefix (RFC 9780)"),
    _range("2001::/23", "IETF protocol assignments (RFC 2928)"),
    _range("2001::/32", "Teredo (RFC 4380)"),
    _range("2001:1::1/128", "port control protocol anycast (RFC 7723)"),
    _range("2001:1::2/128", "TURN anycast (RFC 8155)"),
    _range("2001:1::3/128", "DNS-SD service registration anycast (RFC 9665)"),
    _range("2001:2::/48", "benchmarking (RFC 5180)"),
    _range("2001:3::/32", "AMT (RFC 7450)"),
    _range("2001:4:112::/48", "AS112-v6 (RFC 7535)"),
    _range("2001:20::/28", "ORCHIDv2 (RFC 7343)"),
    _range("2001:30::/28", "drone remote ID (RFC 9374)"),
    _range("2001:db8::/32", "documentation (RFC 3849)"),
    _range("2620:4f:8000::/48", "AS112 direct delegation (RFC 7534)"),
    _range("3fff::/20", "documentation (RFC 9637)"),
    _range("5f00::/16", "segment routing SIDs (RFC 9602)"),
    _range("fc00::/7", "unique local (RFC 4193)"),
    _range("fe80::/10", "link-local (RFC 4291)", "link-local"),
    _range("fec0::/10", "deprecated site-local (RFC 3879)"),
    _range("ff00::/8", "multicast (RFC 4291)", "never"),
)
_BY_SPECIFICITY = sorted(SPECIAL_RANGES, key=lambda r: r.network.prefixlen, reverse=True)

# Instance metadata services: AWS/GCP/Azure/OCI/DigitalOcean (169.254.169.254), AWS over IPv6
# (fd00:ec2::254), Alibaba Cloud (100.100.100.200), Oracle Cloud's legacy endpoint (192.0.0.192).
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the low 32 bits
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an address may not be called, and the setting that would allow it (None: nothing can)."""

    address: str
    reason: str
    setting: str | None

    def message(self, host: str) -> str:
        shown = host if host == self.address else f"{host}: it resolves to {self.address}"
        fix = {
            None: "pgqueue never calls such an address",
            ALLOW_LINK_LOCAL: f"set {ALLOW_LINK_LOCAL}=1 to allow link-local and cloud metadata addresses",
            ALLOW_LOOPBACK: f"set {ALLOW_LOOPBACK}=1 to allow apps on this host, or {ALLOWED_NETWORKS}",
            ALLOWED_NETWORKS: f"allow it with {ALLOWED_NETWORKS} (CIDRs) or {ALLOWED_HOSTS} (host names)",
            FETCH_ALLOWED_NETWORKS: (f"step.fetch and step.ai.infer reach it only if {FETCH_ALLOWED_NETWORKS}"
                                     f" (CIDRs) or {FETCH_ALLOWED_HOSTS} (host names) list it; the settings"
                                     " for apps do not apply to them"),
        }[self.setting]
        return f"refusing to call {shown}, {self.reason}; {fix}"


@dataclass(frozen=True, slots=True)
class Policy:
    """Which resolved addresses may be called. `allow_private` is the dev-mode default (every
    special-purpose range but the never/link-local ones); production lists what it allows."""

    allow_loopback: bool
    allow_link_local: bool
    allow_private: bool
    networks: tuple[IPNetwork, ...] = ()
    hosts: tuple[str, ...] = ()
    own_addresses: Callable[[], frozenset[IPAddress]] = field(default=lambda: interface_addresses())
    # Requests made for functions (step.fetch, step.ai.infer): refusals name the fetch settings.
    fetch: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            allow_loopback=settings.loopback_allowed,
            allow_link_local=settings.allow_link_local,
            allow_private=not settings.production_calls,
            networks=tuple(ipaddress.ip_network(n) for n in settings.allowed_app_networks),
            hosts=tuple(normalize_host(h) for h in settings.allowed_app_hosts),
        )

    @classmethod
    def for_fetch(cls, settings: Settings) -> Policy:
        """What functions may reach through pgqueue: in production public addresses and the fetch
        lists only (never link-local or metadata); in dev what dev apps may."""
        if not settings.production_calls:
            return replace(DEV_POLICY, fetch=True)
        return cls(
            allow_loopback=False,
            allow_link_local=False,
            allow_private=False,
            networks=tuple(ipaddress.ip_network(n) for n in settings.fetch_allowed_networks),
            hosts=tuple(normalize_host(h) for h in settings.fetch_allowed_hosts),
            fetch=True,
        )

    def _setting(self, setting: str | None) -> str | None:
        """The setting a refusal names: for fetches their own list, or nothing (link-local)."""
        if not self.fetch or setting is None:
            return setting
        return None if setting == ALLOW_LINK_LOCAL else FETCH_ALLOWED_NETWORKS

    def check(self, address: str | IPAddress, *, host: str | None = None) -> Refusal | None:
        """None if `address` (reached through the URL host `host`) may be called."""
        refused = self._check(address, host=host)
        if refused is None or not self.fetch:
            return refused
        return replace(refused, setting=self._setting(refused.setting))

    def _check(self, address: str | IPAddress, *, host: str | None = None) -> Refusal | None:
        ip = ipaddress.ip_address(address.split("%")[0]) if isinstance(address, str) else address
        shown = str(ip)
        if isinstance(ip, ipaddress.IPv6Address):
            embedded, how = _embedded_ipv4(ip)
            if embedded is not None:
                inner = self._check(embedded, host=host)
                if inner is None:
                    return None
                return Refusal(shown, f"{how} of {embedded}, {inner.reason}", inner.setting)
        special = _special_range(ip)
        kind = special.kind if special else None
        reason = f"an address in the {special.name} range" if special else ""
        if kind == "never":
            return Refusal(shown, reason, None)
        if ip in METADATA and not self.allow_link_local:
            return Refusal(shown, "a cloud metadata address", ALLOW_LINK_LOCAL)
        if kind == "link-local":
            return None if self.allow_link_local else Refusal(shown, reason, ALLOW_LINK_LOCAL)
        if self._listed(ip, host):
            return None
        if kind == "loopback":
            return None if self.allow_loopback else Refusal(shown, reason, ALLOW_LOOPBACK)
        if ip in self.own_addresses():
            return None if self.allow_loopback else Refusal(shown, "an address of this host", ALLOW_LOOPBACK)
        if kind == "private" or (special is None and _outside_global_unicast(ip)):
            if self.allow_private:
                return None
            reason = reason or "an address outside IPv6 global unicast (2000::/3)"
            return Refusal(shown, reason, ALLOWED_NETWORKS)
        return None

    def _listed(self, ip: IPAddress, host: str | None) -> bool:
        if any(ip.version == net.version and ip in net for net in self.networks):
            return True
        return host is not None and host_matches(normalize_host(host), self.hosts)


DEV_POLICY = Policy(allow_loopback=True, allow_link_local=False, allow_private=True)


def _special_range(ip: IPAddress) -> SpecialRange | None:
    return next((r for r in _BY_SPECIFICITY if r.network.version == ip.version and ip in r.network), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "an IPv4-mapped form"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "a NAT64 (64:ff9b::/96) form"
    if ip.sixtofour is not None:
        return ip.sixtofour, "a 6to4 (2002::/16) form"
    return None, ""


def _outside_global_unicast(ip: IPAddress) -> bool:
    return isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST


def normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """`app.internal` matches itself; `*.internal` matches any name below `internal` (not itself)."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


# -- this host's own addresses ---------------------------------------------------------------------

_OWN_TTL_S = 10.0
_own_lock = threading.Lock()
_own_cache: tuple[float, frozenset[IPAddress]] | None = None


def interface_addresses() -> frozenset[IPAddress]:
    """Every address of this host's interfaces (getifaddrs), re-read at most every 10 s so that
    an interface coming up later (a container network, a VPN) is covered too."""
    global _own_cache
    with _own_lock:
        now = time.monotonic()
        if _own_cache is None or now - _own_cache[0] > _OWN_TTL_S:
            _own_cache = (now, _read_interface_addresses())
        return _own_cache[1]


class _IfAddrs(ctypes.Structure):
    pass


_IfAddrs._fields_ = [  # struct ifaddrs, <ifaddrs.h>
    ("ifa_next", ctypes.POINTER(_IfAddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.c_void_p),
    ("ifa_netmask", ctypes.c_void_p),
    ("ifa_ifu", ctypes.c_void_p),
    ("ifa_data", ctypes.c_void_p),
]
# BSD sockaddrs start with a length byte, then a one-byte family; Linux's family is a native u16.
_BSD_SOCKADDR = sys.platform == "darwin" or "bsd" in sys.platform


def _read_interface_addresses() -> frozenset[IPAddress]:
    found: set[IPAddress] = set()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        head = ctypes.POINTER(_IfAddrs)()
        if libc.getifaddrs(ctypes.byref(head)) != 0:
            raise OSError(ctypes.get_errno(), "getifaddrs failed")
        try:
            node = head
            while node:
                if address := _sockaddr_ip(node.contents.ifa_addr):
                    found.add(address)
                node = node.contents.ifa_next
        finally:
            libc.freeifaddrs(head)
    except (OSError, AttributeError) as exc:
        # No getifaddrs: fall back to what the host name resolves to (covers the usual one address).
        log.warning("cannot list this host's interface addresses (%s); using its host name's", exc)
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None)
        except OSError:
            infos = []
        found.update(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    return frozenset(found)


def _sockaddr_ip(pointer: int | None) -> IPAddress | None:
    if not pointer:
        return None
    head = ctypes.string_at(pointer, 2)
    family = head[1] if _BSD_SOCKADDR else int.from_bytes(head, sys.byteorder)
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(ctypes.string_at(pointer, 8)[4:8])
    if family == socket.AF_INET6:
        return ipaddress.IPv6Address(ctypes.string_at(pointer, 24)[8:24])
    return None


# -- resolving and connecting ----------------------------------------------------------------------


class ForbiddenAddress(httpcore.ConnectError):
    """The app URL resolves to an address the egress policy refuses."""


async def resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses `host` resolves to, as connect errors of the app when it does not resolve
    (bounded by the connect timeout: httpcore maps only its own backend's exceptions)."""
    try:
        with anyio.fail_after(timeout):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout} s") from None
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"{host} did not resolve: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise httpcore.ConnectError(f"{host} did not resolve")
    return addresses


def first_refusal(policy: Policy, host: str, addresses: Iterable[str]) -> Refusal | None:
    """A name is refused if any of its addresses is: the resolver's order decides which one a
    client would use, and an attacker controlling the name controls that order."""
    return next((r for a in addresses if (r := policy.check(a, host=host)) is not None), None)


async def check_url(url: str, policy: Policy, *, timeout_s: float) -> str | None:
    """At sync: the message refusing `url`, or None. A URL httpx cannot parse, or a name that
    does not resolve from here, is left to the call (which fails it as AppUnreachable)."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError):
        return None
    if not host:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = await resolve(host, port, timeout_s)
    except (httpcore.ConnectError, httpcore.ConnectTimeout):
        return None
    refusal = first_refusal(policy, host, addresses)
    return refusal.message(host) if refusal else None


def refusal_of(exc: BaseException) -> str | None:
    """The policy's message if `exc` (an httpx error) is a ForbiddenAddress refusal."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ForbiddenAddress):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return None
