"""The executor refuses app URLs resolving to loopback (production), link-local or cloud-metadata
addresses, checked on the resolved IP at connect time — names that resolve there are refused too."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from pgqueue.executor import egress
from tests.compat.conftest import SIGNING_KEY, start_server


@pytest.mark.parametrize(
    ("address", "loopback", "link_local", "refused"),
    [
        ("127.0.0.1", False, False, "a loopback address"),
        ("::1", False, False, "a loopback address"),
        ("::ffff:127.0.0.1", False, False, "a loopback address"),
        ("127.0.0.1", True, False, None),
        ("169.254.169.254", True, False, "a cloud metadata address"),
        ("fd00:ec2::254", True, False, "a cloud metadata address"),
        ("169.254.10.1", True, False, "a link-local address"),
        ("169.254.10.1", True, True, None),
        ("0.0.0.0", True, True, "an unspecified or multicast address"),
        ("10.1.2.3", False, False, None),
        ("93.184.216.34", False, False, None),
    ],
)
def test_address_policy(address: str, loopback: bool, link_local: bool, refused: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert egress.forbidden_reason(ip, allow_loopback=loopback, allow_link_local=link_local) == refused


def test_production_server_refuses_loopback_and_metadata_apps(database_url: str) -> None:
    server = start_server(database_url, mode="serve", env={"PGQUEUE_ALLOW_LOOPBACK": "0"})
    try:
        functions = []
        for name, host in (("loop", "localhost"), ("meta", "169.254.169.254")):
            url = f"http://{host}:9/api/inngest?fnId=eg-{name}&stepId=step"
            functions.append({"id": f"eg-{name}", "name": name, "triggers": [{"event": f"eg/{name}"}],
                              "steps": {"step": {"id": "step", "name": "step",
                                                 "runtime": {"type": "http", "url": url}}}})
        r = httpx.post(f"{server.url}/fn/register", json={"appName": "eg", "url": "http://localhost:9/api/inngest",
                                                           "functions": functions},
                       headers={"authorization": f"Bearer {SIGNING_KEY}"})
        assert r.status_code == 200, r.text
        for name, reason in (("loop", "loopback"), ("meta", "metadata")):
            event_id = server.send(f"eg/{name}")
            [run] = server.wait_runs(event_id, timeout=30)
            assert run["status"] == "Failed"
            assert run["error"]["name"] == "ForbiddenAddress" and reason in run["error"]["message"]
        # Server-initiated sync goes through the same guard.
        with server.client() as c:
            r = c.post("/v1/apps/sync", json={"url": "http://localhost:9/api/inngest"})
        assert r.status_code == 400 and "loopback" in r.json()["error"]
    finally:
        server.proc.terminate()
