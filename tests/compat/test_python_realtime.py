"""Realtime with the official Python SDK (`inngest` 0.5.19, `inngest.experimental.realtime`): its
`get_subscription_token` mints a token pgqueue's subscribers accept and its `publish` reaches them,
in dev and production mode (the SDK authenticates with the signing key, as it does for every API
call). The JS SDK's side, functions and subscribers included, is tests/compat/test_js_realtime.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import inngest
import pytest
from inngest.experimental import realtime

from tests.compat.conftest import EVENT_KEY, SIGNING_KEY, Server, start_server
from tests.helpers import realtime as rt

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module", params=["dev", "serve"])
def server(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[Server]:
    srv = start_server(module_database_url, mode=request.param)
    yield srv
    srv.proc.terminate()


def client_for(server: Server) -> inngest.Inngest:
    if server.mode == "serve":
        return inngest.Inngest(app_id="py-realtime", api_base_url=server.url, event_api_base_url=server.url,
                               signing_key=SIGNING_KEY, event_key=EVENT_KEY, is_production=True)
    return inngest.Inngest(app_id="py-realtime", api_base_url=server.url, event_api_base_url=server.url,
                           is_production=False)


async def test_the_python_sdk_mints_tokens_and_publishes(server: Server) -> None:
    client = client_for(server)
    channel = f"py:{uuid.uuid4().hex}"

    token = await realtime.get_subscription_token(client, channel, ["status"])

    assert token["channel"] == channel and token["topics"] == ["status"]
    async with rt.subscribed(server.url, str(token["key"])) as got:
        await realtime.publish(client, channel, "status", {"step": 1})
        await realtime.publish(client, channel, "other-topic", {"not": "mine"})
        realtime.publish_sync(client, channel, "status", {"step": 2})
        await got.wait_for(2)
    assert got.data() == [{"step": 1}, {"step": 2}]
    assert {m["channel"] for m in got.messages} == {channel}
    if server.mode == "serve":  # production: a wrong signing key gets the 401, which the SDK raises
        wrong = inngest.Inngest(app_id="py-realtime", api_base_url=server.url, is_production=True,
                                signing_key="signkey-prod-" + "00" * 32)
        with pytest.raises(Exception, match="HTTP error: 401") as refused:
            await realtime.get_subscription_token(wrong, channel, ["status"])
        assert "signing key" in str(refused.value)
        with pytest.raises(Exception, match="HTTP error: 401"):
            await realtime.publish(wrong, channel, "status", {"a": 1})
