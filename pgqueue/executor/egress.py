"""Egress guard: which addresses the executor may call.

The check runs on the resolved IP at connect time (inside httpcore's network backend), so a DNS
name that resolves to a forbidden address — or re-resolves to one later — is refused too.
Always refused unless allowed: link-local addresses (169.254.0.0/16, fe80::/10), which include the
cloud metadata endpoints (169.254.169.254, fd00:ec2::254), and unspecified/multicast addresses.
Loopback is refused in production mode unless PGQUEUE_ALLOW_LOOPBACK is set (apps on the same host).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpx

METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))


class ForbiddenAddress(httpcore.ConnectError):
    """The app URL resolves to an address the executor is not allowed to call."""


def forbidden_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool,
                     allow_link_local: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA and not allow_link_local:
        return "a cloud metadata address"
    if ip.is_link_local and not allow_link_local:
        return "a link-local address"
    if ip.is_loopback and not allow_loopback:
        return "a loopback address"
    if ip.is_unspecified or ip.is_multicast:
        return "an unspecified or multicast address"
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, *, allow_loopback: bool, allow_link_local: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self.allow_loopback = allow_loopback
        self.allow_link_local = allow_link_local

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # Resolver errors are connect errors of the app, bounded by the connect timeout (httpcore
        # maps only its own backend's exceptions, not those of a backend it is given).
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
        for address in addresses:
            reason = forbidden_reason(ipaddress.ip_address(address.split("%")[0]),
                                      allow_loopback=self.allow_loopback, allow_link_local=self.allow_link_local)
            if reason:
                raise ForbiddenAddress(
                    f"refusing to call {host}: it resolves to {address}, {reason}"
                    " (set PGQUEUE_ALLOW_LOOPBACK / PGQUEUE_ALLOW_LINK_LOCAL to allow it)"
                )
        # Connect to the address that was checked, not to a second resolution of the name.
        return await self._inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed for app URLs")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(*, allow_loopback: bool, allow_link_local: bool) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=None, max_keepalive_connections=100))
    transport._pool._network_backend = GuardedBackend(  # noqa: SLF001 - httpx exposes no hook for it
        allow_loopback=allow_loopback, allow_link_local=allow_link_local
    )
    return transport
