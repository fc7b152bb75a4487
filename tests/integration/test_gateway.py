"""pgqueue/executor/gateway.py against a real HTTP server on loopback, through the executor's own
HTTP client (the egress policy's transport): what the SDK-level tests (tests/compat/test_*_ops.py)
cannot reach with the SDKs' default models: the other AI formats' credentials, header joining,
redirects, the size limit, the egress refusal in production, malformed ops."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pgqueue.executor import gateway, invoke
from pgqueue.protocol.outcome import Op, Ops
from pgqueue.settings import Settings
from tests.compat import upstream_stub
from tests.compat.upstream_stub import Upstream

upstream = upstream_stub.upstream  # the fixture, by name


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with invoke.client_for(Settings(mode="dev"), call_timeout_s=10) as c:
        yield c


async def _one(client: httpx.AsyncClient, op: Op, *, deadline_s: float = 10) -> Op:
    performed = await gateway.perform(client, Ops((op,), None, False, None), deadline_s=deadline_s)
    [result] = performed.outcome.ops
    return result


def _fetch(url: str, **opts: Any) -> Op:
    return Op(op="Gateway", id="hashed-fetch", name="step.fetch: host", opts={"url": url, **opts})


def _ai(url: str, fmt: str, **opts: Any) -> Op:
    body = {"model": "m", "messages": [{"role": "user", "content": f"format {fmt}"}]}
    return Op(op="AIGateway", id="hashed-ai", name="ask",
              opts={"type": "step.ai.infer", "url": url, "format": fmt, "auth_key": "k-123", "body": body,
                    "headers": {"X-Extra": "1"}, **opts})


@pytest.mark.parametrize(("fmt", "header", "value", "query"), [
    ("openai-chat", "authorization", "Bearer k-123", ""),
    ("anthropic", "x-api-key", "k-123", ""),
    ("bedrock", "authorization", "k-123", ""),
    ("gemini", None, None, "key=k-123"),
])
async def test_ai_credentials_go_where_each_format_expects(
    client: httpx.AsyncClient, upstream: Upstream, fmt: str, header: str | None, value: str | None, query: str
) -> None:
    result = await _one(client, _ai(f"{upstream.url}/v1/chat/completions", fmt))
    assert result.op == "StepRun", result
    assert result.data["choices"][0]["message"]["content"] == f"echo: format {fmt}"
    assert result.opts == {"type": "step.ai.infer"}  # the credentials are not handed on
    [sent] = [r for r in upstream.requests_to("/v1/chat/completions") if f"format {fmt}" in r["body"]]
    assert sent["path"].endswith(f"?{query}") if query else "?" not in sent["path"]
    if header:
        assert sent["headers"][header] == value
    assert sent["headers"]["x-extra"] == "1" and sent["headers"]["content-type"] == "application/json"
    assert json.loads(sent["body"])["model"] == "m"


async def test_fetch_joins_repeated_headers_and_follows_redirects(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    multi = await _one(client, _fetch(f"{upstream.url}/fetch/multi"))
    assert multi.op == "StepRun" and multi.data["headers"]["X-Multi"] == "one,two"
    redirected = await _one(client, _fetch(f"{upstream.url}/fetch/redirect"))
    assert redirected.op == "StepRun", redirected
    assert redirected.data["status_code"] == 200 and redirected.data["body"] == "hello from upstream"
    assert redirected.data["url"] == f"{upstream.url}/fetch/redirect"  # the URL asked for, as Inngest reports


async def test_fetch_of_more_than_a_step_output_fails_the_step(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    result = await _one(client, _fetch(f"{upstream.url}/fetch/big"))
    assert result.op == "StepFailed"  # no retry can make it smaller
    assert result.error["name"] == "OutputTooLarge" and "4 MB" in result.error["message"]


async def test_fetch_deadline_is_a_retriable_error(client: httpx.AsyncClient, upstream: Upstream) -> None:
    result = await _one(client, _fetch(f"{upstream.url}/fetch/hello"), deadline_s=0)
    assert result.op == "StepError", result
    assert result.error["name"] == "GatewayError" and "no complete response within" in result.error["message"]


async def test_production_egress_policy_refuses_loopback(upstream: Upstream) -> None:
    # The client `pgqueue serve` builds, without PGQUEUE_ALLOW_LOOPBACK.
    async with invoke.client_for(Settings(mode="serve"), call_timeout_s=10) as production:
        result = await _one(production, _fetch(f"{upstream.url}/fetch/hello"))
    assert result.op == "StepFailed"
    assert result.error["name"] == "ForbiddenAddress" and "127.0.0.1" in result.error["message"]


@pytest.mark.parametrize(("op", "fragment"), [
    (_fetch("ftp://example.com/file"), "is not an http(s) URL"),
    (_fetch("http://127.0.0.1/", method="GE T"), "is not an HTTP method"),
    (Op(op="Gateway", id="x", opts={}), "names no URL"),
    (Op(op="AIGateway", id="x", opts={"url": "http://127.0.0.1/", "body": "text"}), "must be a JSON object"),
])
async def test_malformed_ops_fail_their_step_without_a_request(
    client: httpx.AsyncClient, op: Op, fragment: str
) -> None:
    result = await _one(client, op)
    assert result.op == "StepFailed", result
    assert fragment in result.error["message"]
