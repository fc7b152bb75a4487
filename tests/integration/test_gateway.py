"""pgqueue/executor/gateway.py against a real HTTP server on loopback, through the executor's own
HTTP client (the egress policy's transport): what the SDK-level tests (tests/compat/test_*_ops.py)
cannot reach with the SDKs' default models: the other AI formats' credentials, header joining,
redirects, the size limit, the egress refusal in production, malformed ops; and (issue 22) that no
credential is stored, logged or carried to another origin, and that compressed bodies are decoded
within the cap."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pgqueue.executor import gateway, invoke
from pgqueue.protocol.outcome import Op, Ops
from pgqueue.settings import Settings
from tests.compat import upstream_stub
from tests.compat.upstream_stub import Upstream
from tests.helpers import stub

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


# -- credentials, redirects, compressed bodies (issue 22) -----------------------------------------


def _echo(method: str, path: str, headers: dict[str, str], body: bytes) -> stub.Answer:
    return stub.json_answer(200, {"method": method, "path": path, "headers": headers, "body": body.decode()})


async def test_a_redirect_to_another_origin_carries_none_of_the_callers_headers(
    client: httpx.AsyncClient,
) -> None:
    with stub.running(_echo) as elsewhere:
        def origin(method: str, path: str, headers: dict[str, str], body: bytes) -> stub.Answer:
            if path.startswith("/away"):
                return 307, {"Location": f"{elsewhere.url}/landed"}, b""
            if path.startswith("/see-other"):
                return 303, {"Location": "/here"}, b""
            if path.startswith("/loop"):
                return 302, {"Location": "/loop"}, b""
            return _echo(method, path, headers, body)

        with stub.running(origin) as here:
            headers = {"Authorization": "Bearer sk-123456", "X-Custom": "mine", "Content-Type": "text/plain"}
            away = await _one(client, _fetch(f"{here.url}/away", method="POST", body="payload",
                                             headers=headers))
            assert away.op == "StepRun", away
            landed = json.loads(away.data["body"])
            # 307 keeps the method and body; the headers stayed with the origin they were given for.
            assert (landed["path"], landed["method"], landed["body"]) == ("/landed", "POST", "payload")
            assert not {"authorization", "x-custom", "content-type"} & set(landed["headers"]), landed
            # 303 turns into a GET without a body; within the origin the caller's headers stay.
            other = await _one(client, _fetch(f"{here.url}/see-other", method="POST", body="x",
                                              headers=headers))
            seen = json.loads(other.data["body"])
            assert (seen["path"], seen["method"], seen["body"]) == ("/here", "GET", "")
            assert seen["headers"]["authorization"] == "Bearer sk-123456"
            assert seen["headers"]["x-custom"] == "mine"
            assert "content-type" not in seen["headers"]
            looping = await _one(client, _fetch(f"{here.url}/loop"))
            assert looping.op == "StepError" and "more than 20 redirects" in looping.error["message"]


async def test_an_ai_call_follows_no_redirect(client: httpx.AsyncClient) -> None:
    with stub.running(_echo) as elsewhere, stub.running(
            lambda m, p, h, b: (308, {"Location": f"{elsewhere.url}/v1/chat/completions"}, b"")) as moved:
        result = await _one(client, _ai(f"{moved.url}/v1/chat/completions", "anthropic"))
    assert result.op == "StepFailed", result  # a retry would be redirected again
    assert "redirect (308)" in result.error["message"] and elsewhere.seen() == []


async def test_no_credential_reaches_a_stored_error_or_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = "k-5ec2e7-key"
    big = b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'

    def echoing_error(method: str, path: str, headers: dict[str, str], body: bytes) -> stub.Answer:
        return stub.json_answer(401, {"error": f"bad key in {path} / {headers.get('x-api-key')}"})

    gemini = f"/v1beta/models/m:generateContent?key={key}"
    with stub.running(lambda m, p, h, b: (200, {}, big)) as huge, stub.running(echoing_error) as echoing:
        caplog.set_level("INFO", logger="pgqueue.executor.gateway")
        results = [
            await _one(client, _ai(f"{huge.url}{gemini}", "gemini", auth_key=key)),
            await _one(client, _ai(f"{echoing.url}/v1/messages", "anthropic", auth_key=key)),
            await _one(client, _ai(f"ftp://127.0.0.1{gemini}", "gemini", auth_key=key)),
            await _one(client, _fetch("http://user:pw-123456@127.0.0.1:1/x?token=tok-123456")),
        ]
    assert [r.op for r in results] == ["StepFailed", "StepError", "StepFailed", "StepError"], results
    stored = json.dumps([r.error for r in results]) + caplog.text
    for secret in (key, "pw-123456", "tok-123456"):
        assert secret not in stored, (secret, stored)
    assert results[0].error["name"] == "OutputTooLarge" and "key=[REDACTED]" in results[0].error["message"]


async def test_a_fetch_stores_its_url_without_credentials_and_sends_basic_auth(
    client: httpx.AsyncClient,
) -> None:
    with stub.running(_echo) as echo:
        host = echo.url.removeprefix("http://")
        result = await _one(client, _fetch(f"http://ann:pw-123456@{host}/data?api_key=k-123456&page=2"))
    assert result.op == "StepRun", result
    assert result.data["url"] == f"http://ann:[REDACTED]@{host}/data?api_key=[REDACTED]&page=2"
    sent = json.loads(result.data["body"])
    assert sent["path"] == "/data?api_key=k-123456&page=2"  # the request itself is as asked
    assert sent["headers"]["authorization"] == "Basic " + base64.b64encode(b"ann:pw-123456").decode()


@pytest.mark.parametrize(("encoding", "encode"), [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),  # zlib-wrapped, as the RFC says
    ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw, as some servers send
    ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
])
async def test_compressed_bodies_are_decoded(
    client: httpx.AsyncClient, encoding: str, encode: Any
) -> None:
    text = "hello, compressed world " * 1000
    with stub.running(lambda m, p, h, b: (200, {"Content-Encoding": encoding}, encode(text.encode()))) as up:
        result = await _one(client, _fetch(f"{up.url}/z"))
    assert result.op == "StepRun" and result.data["body"] == text, result


async def test_a_compressed_body_is_refused_as_soon_as_it_passes_the_cap(client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    just_under = gzip.compress(b"a" * (gateway.MAX_RESPONSE_BYTES - 100))
    with stub.running(lambda m, p, h, b: (200, {"Content-Encoding": "gzip"}, bomb if "bomb" in p else
                                          just_under if "under" in p else b"\x1f\x8bnot gzip")) as up:
        refused = await _one(client, _fetch(f"{up.url}/bomb"))
        taken = await _one(client, _fetch(f"{up.url}/under"))
        broken = await _one(client, _fetch(f"{up.url}/broken"))
    assert refused.op == "StepFailed" and refused.error["name"] == "OutputTooLarge", refused
    assert taken.op == "StepRun" and len(taken.data["body"]) == gateway.MAX_RESPONSE_BYTES - 100
    assert broken.op == "StepError" and "DecodingError" in broken.error["message"], broken


async def test_a_cookie_one_fetch_received_is_not_sent_with_the_next(client: httpx.AsyncClient) -> None:
    def site(method: str, path: str, headers: dict[str, str], body: bytes) -> stub.Answer:
        if path == "/login":
            return 200, {"Set-Cookie": "session=run-a-secret; Path=/"}, b"ok"
        return _echo(method, path, headers, body)

    with stub.running(site) as up:
        await _one(client, _fetch(f"{up.url}/login"))
        later = await _one(client, _fetch(f"{up.url}/me"))
    assert "cookie" not in json.loads(later.data["body"])["headers"]
