"""The egress policy: which resolved addresses pgqueue may call, checked at sync and at connect time.

The table tests walk every entry of the IANA IPv4 and IPv6 Special-Purpose Address Registries
(listed here independently of pgqueue's own table) in production and dev. The connect-time tests use
real HTTP through the executor's client with a scripted resolver (the resolver is not what is tested:
it lets a name point anywhere without sending a packet to a private address). The last test runs real
`pgqueue serve` processes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import anyio
import httpx
import pytest

from pgqueue.errors import ConfigError
from pgqueue.executor import egress, invoke
from pgqueue.protocol.outcome import CallError, Response
from pgqueue.settings import Settings
from tests.compat.conftest import FAST_ENV, SIGNING_KEY, start_server
from tests.helpers.procs import pgqueue_argv, start_process

LOOPBACK, LINK_LOCAL = "PGQUEUE_ALLOW_LOOPBACK", "PGQUEUE_ALLOW_LINK_LOCAL"
NETWORKS, HOSTS = "PGQUEUE_ALLOWED_APP_NETWORKS", "PGQUEUE_ALLOWED_APP_HOSTS"

# IANA IPv4 Special-Purpose Address Registry, every entry (plus multicast, from its own registry),
# and what it is to pgqueue: "never" (nothing allows it), "link-local" (PGQUEUE_ALLOW_LINK_LOCAL),
# "loopback" (PGQUEUE_ALLOW_LOOPBACK) or "private" (refused in production unless listed).
IANA_IPV4 = [
    ("0.0.0.0/8", "never"),  # "this network"
    ("0.0.0.0/32", "never"),  # "this host on this network"
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "private"),  # shared address space (CGNAT)
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "private"),  # IETF protocol assignments
    ("192.0.0.0/29", "private"),  # IPv4 service continuity prefix
    ("192.0.0.8/32", "private"),  # IPv4 dummy address
    ("192.0.0.9/32", "private"),  # PCP anycast
    ("192.0.0.10/32", "private"),  # TURN anycast
    ("192.0.0.170/32", "private"),  # NAT64/DNS64 discovery
    ("192.0.0.171/32", "private"),  # NAT64/DNS64 discovery
    ("192.0.2.0/24", "private"),  # documentation (TEST-NET-1)
    ("192.31.196.0/24", "private"),  # AS112-v4
    ("192.52.193.0/24", "private"),  # AMT
    ("192.88.99.0/24", "private"),  # deprecated 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "private"),  # direct delegation AS112 service
    ("198.18.0.0/15", "private"),  # benchmarking
    ("198.51.100.0/24", "private"),  # documentation (TEST-NET-2)
    ("203.0.113.0/24", "private"),  # documentation (TEST-NET-3)
    ("240.0.0.0/4", "private"),  # reserved
    ("255.255.255.255/32", "never"),  # limited broadcast
    ("224.0.0.0/4", "never"),  # multicast
]
# IANA IPv6 Special-Purpose Address Registry, every entry but the three with an embedded IPv4
# address (::ffff:0:0/96, 64:ff9b::/96, 2002::/16: see test_embedded_ipv4_is_judged), plus multicast,
# the deprecated site-local block and a block IANA has not allocated.
IANA_IPV6 = [
    ("::1/128", "loopback"),
    ("::/128", "never"),
    ("64:ff9b:1::/48", "private"),  # local-use IPv4/IPv6 translation
    ("100::/64", "private"),  # discard-only
    ("100:0:0:1::/64", "private"),  # dummy IPv6 prefix
    ("2001::/23", "private"),  # IETF protocol assignments
    ("2001::/32", "private"),  # Teredo
    ("2001:1::1/128", "private"),  # PCP anycast
    ("2001:1::2/128", "private"),  # TURN anycast
    ("2001:1::3/128", "private"),  # DNS-SD SRP anycast
    ("2001:2::/48", "private"),  # benchmarking
    ("2001:3::/32", "private"),  # AMT
    ("2001:4:112::/48", "private"),  # AS112-v6
    ("2001:10::/28", "private"),  # deprecated ORCHID
    ("2001:20::/28", "private"),  # ORCHIDv2
    ("2001:30::/28", "private"),  # drone remote ID
    ("2001:db8::/32", "private"),  # documentation
    ("2620:4f:8000::/48", "private"),  # direct delegation AS112 service
    ("3fff::/20", "private"),  # documentation
    ("5f00::/16", "private"),  # segment routing SIDs
    ("fc00::/7", "private"),  # unique local
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),  # deprecated site-local
    ("ff00::/8", "never"),  # multicast
    ("4000::/3", "private"),  # not allocated (outside global unicast 2000::/3)
]
METADATA = ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]
NO_OWN: frozenset[egress.IPAddress] = frozenset()


def policy(
    mode: str = "serve", *, own: frozenset[egress.IPAddress] = NO_OWN, **overrides: Any
) -> egress.Policy:
    """The policy `pgqueue <mode>` builds from its settings, with this host's addresses pinned."""
    keys = {"signing_key": SIGNING_KEY, "event_keys": ("k",)} if mode == "serve" else {}
    settings = Settings(mode=mode, **keys, **overrides).validated()  # type: ignore[arg-type]
    return dataclasses.replace(egress.Policy.from_settings(settings), own_addresses=lambda: own)


def samples(cidr: str) -> list[str]:
    """First, middle and last address of a range."""
    net = ipaddress.ip_network(cidr)
    first = int(net.network_address)
    return sorted({str(net.network_address), str(ipaddress.ip_address(first + net.num_addresses // 2)),
                   str(net.broadcast_address)})


def registry_kind(address: str) -> str:
    """The kind of the most specific registry entry holding `address` (255.255.255.255, the last
    address of 240.0.0.0/4, is the limited broadcast)."""
    ip = ipaddress.ip_address(address)
    holding = [(ipaddress.ip_network(c), k) for c, k in IANA_IPV4 + IANA_IPV6
               if ipaddress.ip_network(c).version == ip.version and ip in ipaddress.ip_network(c)]
    return max(holding, key=lambda entry: entry[0].prefixlen)[1]


RANGE_CASES = [(cidr, registry_kind(address), address) for cidr, _ in IANA_IPV4 + IANA_IPV6
               for address in samples(cidr)]
RANGE_IDS = [f"{cidr}-{address}" for cidr, _, address in RANGE_CASES]
ALL_NETWORKS = {"allowed_app_networks": ("0.0.0.0/0", "::/0")}
SETTING_OF = {"never": None, "link-local": LINK_LOCAL, "loopback": LOOPBACK, "private": NETWORKS}


@pytest.mark.parametrize(("cidr", "kind", "address"), RANGE_CASES, ids=RANGE_IDS)
def test_special_purpose_ranges(cidr: str, kind: str, address: str) -> None:
    metadata = ipaddress.ip_address(address) in {ipaddress.ip_address(m) for m in METADATA}
    prod = policy().check(address, host="app.example")
    assert prod is not None, f"{address} ({cidr}) must be refused in production"
    assert prod.setting == (LINK_LOCAL if metadata else SETTING_OF[kind])
    assert f"refusing to call app.example: it resolves to {address}" in prod.message("app.example")

    dev = policy("dev").check(address)
    assert (dev is None) == (kind in ("loopback", "private")), (address, dev)

    # What allows it: the range's own setting, never an allow-list for never/link-local.
    lifted = {
        "never": policy(allow_loopback=True, allow_link_local=True, allowed_app_hosts=("app.example",),
                        **ALL_NETWORKS),
        "link-local": policy(allow_link_local=True),
        "loopback": policy(allow_loopback=True),
        "private": policy(allowed_app_networks=(cidr,)),
    }[kind]
    assert (lifted.check(address, host="app.example") is None) == (kind != "never")
    if kind in ("never", "link-local"):
        assert policy(allowed_app_hosts=("app.example",), **ALL_NETWORKS).check(address, host="app.example")
    if kind == "private" and not metadata:
        assert policy(allowed_app_hosts=("app.example",)).check(address, host="app.example") is None
        assert policy(allowed_app_hosts=("app.example",)).check(address, host="other.example") is not None


@pytest.mark.parametrize(
    ("address", "refused_by"),
    [
        ("::ffff:10.0.0.1", NETWORKS),
        ("::ffff:127.0.0.1", LOOPBACK),
        ("::ffff:169.254.169.254", LINK_LOCAL),
        ("::ffff:0.0.0.0", None),
        ("::ffff:8.8.8.8", "allowed"),
        ("64:ff9b::10.1.2.3", NETWORKS),  # NAT64 well-known prefix
        ("64:ff9b::127.0.0.1", LOOPBACK),
        ("64:ff9b::100.100.100.200", LINK_LOCAL),  # Alibaba Cloud metadata
        ("64:ff9b::224.0.0.1", None),
        ("64:ff9b::8.8.8.8", "allowed"),  # what DNS64 gives for a public app
        ("2002:0a00:0001::1", NETWORKS),  # 6to4 of 10.0.0.1
        ("2002:7f00:0001::", LOOPBACK),
        ("2002:a9fe:a9fe::1", LINK_LOCAL),
        ("2002:0808:0808::1", "allowed"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", NETWORKS),  # Teredo: refused whatever it embeds
    ],
)
def test_embedded_ipv4_is_judged(address: str, refused_by: str | None) -> None:
    refusal = policy().check(address, host="h")
    if refused_by == "allowed":
        assert refusal is None
    else:
        assert refusal is not None and refusal.setting == refused_by, refusal


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert policy().check(address) is None
    assert policy("dev").check(address) is None


@pytest.mark.parametrize("address", METADATA)
def test_cloud_metadata_needs_allow_link_local_in_every_mode(address: str) -> None:
    for refusing in (policy(), policy("dev"), policy(allowed_app_hosts=("h",), **ALL_NETWORKS)):
        refusal = refusing.check(address, host="h")
        assert refusal is not None and refusal.reason == "a cloud metadata address", refusal
        assert f"{LINK_LOCAL}=1" in refusal.message("h")
    assert policy("dev", allow_link_local=True).check(address) is None
    assert policy(allow_link_local=True, **ALL_NETWORKS).check(address) is None


def test_allowed_hosts_match_names_and_subdomains_only() -> None:
    allowing = policy(allowed_app_hosts=("App.Internal.", "*.svc.cluster.local"))
    for host in ("app.internal", "APP.internal.", "orders.svc.cluster.local", "a.b.svc.cluster.local"):
        assert allowing.check("10.0.0.7", host=host) is None, host
    for host in ("other.internal", "svc.cluster.local", "evilsvc.cluster.local", "app.internal.evil"):
        assert allowing.check("10.0.0.7", host=host) is not None, host


def test_loopback_and_this_hosts_addresses_follow_allow_loopback() -> None:
    own = frozenset({ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.9.9.9")})
    for address in ("127.0.0.1", "::1", "93.184.216.34", "10.9.9.9"):
        refusal = policy(own=own).check(address)
        assert refusal is not None and refusal.setting == LOOPBACK, (address, refusal)
        assert policy(own=own, allow_loopback=True).check(address) is None
        assert policy("dev", own=own).check(address) is None
        assert policy("dev", own=own, allow_loopback=False).check(address) is not None
    assert policy(own=own).check("93.184.216.34").reason == "an address of this host"  # type: ignore[union-attr]
    # An allowed network covers the host's own addresses in it; ALLOW_LOOPBACK opens no private range.
    assert policy(own=own, allowed_app_networks=("10.0.0.0/8",)).check("10.9.9.9") is None
    assert policy(own=own, allow_loopback=True).check("10.1.1.1") is not None


def fetch_policy(
    mode: str = "serve", *, own: frozenset[egress.IPAddress] = NO_OWN, **overrides: Any
) -> egress.Policy:
    """The policy of step.fetch / step.ai.infer that `pgqueue <mode>` builds from its settings."""
    keys = {"signing_key": SIGNING_KEY, "event_keys": ("k",)} if mode == "serve" else {}
    settings = Settings(mode=mode, **keys, **overrides).validated()  # type: ignore[arg-type]
    return dataclasses.replace(egress.Policy.for_fetch(settings), own_addresses=lambda: own)


def test_fetches_have_an_allow_list_of_their_own() -> None:
    own = frozenset({ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.9.9.9")})
    # Everything opened for apps opens nothing for fetches.
    apps_opened = {"allow_loopback": True, "allow_link_local": True, "allowed_app_hosts": ("h",),
                   **ALL_NETWORKS}
    closed = fetch_policy(own=own, **apps_opened)
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.9.9.9", "93.184.216.34", "192.168.1.1",
                    "fd00::1"):
        refusal = closed.check(address, host="h")
        assert refusal is not None and refusal.setting == "PGQUEUE_FETCH_ALLOWED_NETWORKS", (address, refusal)
        assert "the settings for apps do not apply" in refusal.message("h")
    for address in ("169.254.169.254", "fe80::1", "fd00:ec2::254", "0.0.0.0"):
        refusal = closed.check(address, host="h")
        assert refusal is not None and refusal.setting is None, (address, refusal)
    public = [address for address in PUBLIC if ipaddress.ip_address(address) not in own]
    assert public and all(closed.check(address) is None for address in public)
    # The fetch lists open what they name, never link-local or metadata addresses.
    listed = fetch_policy(own=own, fetch_allowed_networks=("127.0.0.0/8", "10.0.0.0/8"),
                          fetch_allowed_hosts=("svc.internal",))
    assert listed.check("127.0.0.1") is None and listed.check("10.9.9.9") is None
    assert listed.check("192.168.1.1", host="svc.internal") is None
    assert listed.check("192.168.1.1", host="other.internal") is not None and listed.check("::1") is not None
    everything = fetch_policy(own=own, fetch_allowed_networks=("0.0.0.0/0", "::/0"), allow_link_local=True)
    assert everything.check("169.254.169.254") is not None and everything.check("fe80::1") is not None
    # Dev mode fetches as dev apps are called.
    assert fetch_policy("dev", own=own).check("127.0.0.1") is None
    assert fetch_policy("dev", own=own).check("169.254.169.254") is not None


def test_this_hosts_addresses_come_from_its_interfaces() -> None:
    own = egress.interface_addresses()
    assert ipaddress.ip_address("127.0.0.1") in own
    # The default policy reads them: in production every one of them is refused.
    prod = dataclasses.replace(policy(), own_addresses=egress.interface_addresses)
    assert all(prod.check(address) is not None for address in own)
    assert policy().check(next(iter(PUBLIC))) is None


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"allowed_app_networks": ("10.0.0.1/8",)}, (NETWORKS, "did you mean 10.0.0.0/8?")),
        ({"allowed_app_networks": ("intranet",)}, (NETWORKS, "'intranet'", "10.0.0.0/8")),
        ({"allowed_app_hosts": ("10.0.0.1",)}, (HOSTS, "an address", f"{NETWORKS} as 10.0.0.1/32")),
        ({"allowed_app_hosts": ("app internal",)}, (HOSTS, "not a host name")),
        ({"fetch_allowed_networks": ("10.0.0.1/8",)}, ("PGQUEUE_FETCH_ALLOWED_NETWORKS", "did you mean")),
        ({"fetch_allowed_hosts": ("10.0.0.1",)}, ("PGQUEUE_FETCH_ALLOWED_HOSTS",
                                                  "PGQUEUE_FETCH_ALLOWED_NETWORKS as 10.0.0.1/32")),
    ],
)
def test_bad_egress_settings_fail_fast_naming_the_fix(
    overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(**overrides).validated()
    for fragment in fragments:
        assert fragment in info.value.message


def test_settings_are_read_from_the_environment() -> None:
    env = {NETWORKS: "10.0.0.0/8, fd00::/8", HOSTS: "app.internal",
           "PGQUEUE_SIGNING_KEY": SIGNING_KEY, "PGQUEUE_EVENT_KEYS": "k"}
    settings = Settings.from_env(env, mode="serve")
    assert settings.allowed_app_networks == ("10.0.0.0/8", "fd00::/8")
    assert settings.allowed_app_hosts == ("app.internal",)
    assert settings.production_calls and not settings.loopback_allowed
    assert Settings.from_env({}, mode="dev").loopback_allowed
    # A worker holding a signing key calls production apps (pgqueue worker/tick set calls_mode).
    worker = Settings.from_env({"PGQUEUE_SIGNING_KEY": SIGNING_KEY}, mode="dev", calls_mode="serve")
    assert worker.production_calls and not worker.loopback_allowed


# -- connect time: the executor's own HTTP client, real HTTP, a scripted resolver -------------------


class CountingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        CountingHandler.requests.append(self.headers.get("host", ""))
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'"reached"'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST


@pytest.fixture
def local_app() -> Iterator[int]:
    CountingHandler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


Answers = dict[str, list[list[str]]]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Answers:
    """A name put here resolves to its successive answers (the last one from then on); others
    resolve as usual."""
    answers: Answers = {}
    real = anyio.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in answers:
            return await real(host, port, **kwargs)
        addresses = answers[name].pop(0) if len(answers[name]) > 1 else answers[name][0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    return answers


async def call(url: str, chosen: egress.Policy) -> Response | CallError:
    async with invoke.new_client(connect_timeout_s=5, call_timeout_s=5, policy=chosen) as client:
        request = invoke.CallRequest(url, b"{}", {"content-type": "application/json"}, use_api=False)
        return await invoke.send(client, request, max_response_bytes=1024, deadline_s=10)


async def test_a_name_that_rebinds_to_loopback_after_sync_is_refused_at_connect(
    local_app: int, resolver: Answers
) -> None:
    url = f"http://rebind.test:{local_app}/api/inngest"
    resolver["rebind.test"] = [["93.184.216.34"], ["127.0.0.1"]]
    assert await egress.check_url(url, policy(), timeout_s=5) is None  # sync saw a public address
    result = await call(url, policy())
    assert isinstance(result, CallError) and result.error["name"] == "ForbiddenAddress"
    assert not result.retriable
    assert "rebind.test: it resolves to 127.0.0.1, an address in the loopback" in result.error["message"]
    assert LOOPBACK in result.error["message"]
    assert CountingHandler.requests == []


async def test_a_name_with_any_forbidden_address_is_refused(local_app: int, resolver: Answers) -> None:
    resolver["mixed.test"] = [["127.0.0.1", "10.0.0.1"]]
    allowing_loopback = policy(allow_loopback=True)
    result = await call(f"http://mixed.test:{local_app}/", allowing_loopback)
    assert isinstance(result, CallError) and result.error["name"] == "ForbiddenAddress"
    assert "10.0.0.1, an address in the private-use (RFC 1918) range" in result.error["message"]
    assert CountingHandler.requests == []


async def test_an_allowed_host_is_called_at_the_address_that_was_checked(
    local_app: int, resolver: Answers
) -> None:
    resolver["app.internal.test"] = [["127.0.0.1"]]
    url = f"http://app.internal.test:{local_app}/api/inngest"
    refused = await call(url, policy())
    assert isinstance(refused, CallError) and refused.error["name"] == "ForbiddenAddress"
    allowed = await call(url, policy(allowed_app_hosts=("*.internal.test",)))
    assert isinstance(allowed, Response) and allowed.status == 200 and allowed.body == b'"reached"'
    assert CountingHandler.requests == [f"app.internal.test:{local_app}"]


async def test_literal_and_numeric_forms_of_local_addresses_are_refused(local_app: int) -> None:
    """The resolver turns these into 127.0.0.1, ::ffff:127.0.0.1 or 0.0.0.0 (which reaches this host)."""
    hosts = ("127.0.0.1", "[::ffff:127.0.0.1]", "2130706433", "127.1", "0x7f.1", "localhost", "[::]", "0")
    for host in hosts:
        result = await call(f"http://{host}:{local_app}/", policy())
        assert isinstance(result, CallError) and result.error["name"] == "ForbiddenAddress", (host, result)
    assert CountingHandler.requests == []


# -- real servers -------------------------------------------------------------------------------------


def _register(server_url: str, app_url: str, functions: dict[str, str]) -> httpx.Response:
    fns = [{"id": f"eg-{name}", "name": name, "triggers": [{"event": f"eg/{name}"}],
            "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": url},
                               "retries": {"attempts": 0}}}}
           for name, url in functions.items()]
    return httpx.post(f"{server_url}/fn/register", json={"appName": "eg", "url": app_url, "functions": fns},
                      headers={"authorization": f"Bearer {SIGNING_KEY}"})


def test_production_refuses_forbidden_apps_at_sync_and_at_every_call(
    database_url: str, local_app: int
) -> None:
    """Sync refuses a forbidden URL with a 400 naming the setting and stores nothing. A URL synced
    while allowed (the policy was tightened since) fails its runs with ForbiddenAddress, unsent."""
    functions = {"loop": f"http://localhost:{local_app}/api/inngest?fnId=eg-loop&stepId=step",
                 "meta": "http://169.254.169.254/api/inngest?fnId=eg-meta&stepId=step"}
    loose = start_server(database_url, mode="serve", env={"PGQUEUE_ALLOW_LOOPBACK": "1", LINK_LOCAL: "1"})
    try:
        r = _register(loose.url, f"http://localhost:{local_app}/api/inngest", functions)
        assert r.status_code == 200, r.text
    finally:
        loose.proc.terminate()

    server = start_server(database_url, mode="serve", env={"PGQUEUE_ALLOW_LOOPBACK": "0"})
    try:
        for name, setting in (("loop", LOOPBACK), ("meta", LINK_LOCAL)):
            [run] = server.wait_runs(server.send(f"eg/{name}"), timeout=30)
            assert run["status"] == "Failed" and run["error"]["name"] == "ForbiddenAddress", run
            assert setting in run["error"]["message"]
        assert CountingHandler.requests == []

        for app_url, setting in ((f"http://localhost:{local_app}/api/inngest", LOOPBACK),
                                 ("http://10.20.30.40/api/inngest", NETWORKS),
                                 ("http://100.100.100.200/api/inngest", LINK_LOCAL)):
            r = _register(server.url, app_url, {"other": app_url})
            assert r.status_code == 400 and setting in r.json()["error"], r.text
            with server.client() as c:
                r = c.post("/v1/apps/sync", json={"url": app_url})
            assert r.status_code == 400 and setting in r.json()["error"], r.text
        assert {f["slug"] for f in server.functions("eg")} == {"eg-loop", "eg-meta"}  # unchanged
        assert CountingHandler.requests == []
    finally:
        server.proc.terminate()


def test_a_worker_with_a_signing_key_calls_apps_as_production(database_url: str, local_app: int) -> None:
    """`pgqueue worker` (and tick) run with the dev defaults unless told otherwise; holding a
    signing key means they serve a production deployment, so its egress policy applies."""
    url = f"http://127.0.0.1:{local_app}/api/inngest?fnId=eg-loop&stepId=step"
    server = start_server(database_url, mode="serve", extra_args=("--no-workers",))  # allows loopback
    worker = None
    try:
        assert _register(server.url, url, {"loop": url}).status_code == 200
        env = {**FAST_ENV, "DATABASE_URL": database_url, "PGQUEUE_SIGNING_KEY": SIGNING_KEY}
        worker = start_process("pgqueue-worker-egress", pgqueue_argv("worker"), env=env, url="")
        [run] = server.wait_runs(server.send("eg/loop"), timeout=30)
        assert run["status"] == "Failed" and run["error"]["name"] == "ForbiddenAddress", run
        assert LOOPBACK in run["error"]["message"]
        assert CountingHandler.requests == []
    finally:
        if worker:
            worker.terminate()
        server.proc.terminate()
