"""Realtime over HTTP, WebSocket and SSE against real `pgqueue` processes (api/routes/realtime.py).

What is checked: publishing and minting tokens need the signing key; a subscriber receives its
channel's topics in order and nothing of another channel or topic, with Inngest's message shape;
expired and forged tokens are refused when connecting, with a JSON error (and never logged); SSE
carries ids and resumes after Last-Event-ID; a message over the limit is refused with a 413 naming
the setting and leaves nothing behind; a streamed publish arrives as datastream-start, chunks,
datastream-end; a durable endpoint's tee reaches a subscriber that joins late; a subscriber that
stops reading is closed with its reason while another gets every message; a message published in the
application's transaction arrives at commit; a publisher on one process reaches a subscriber on
another, listening or (behind PgBouncer) polling; the dev server lets pages of other origins
subscribe; an API that cannot hold subscriptions (the Lambda's) says where to go; `pgqueue realtime`
serves realtime alone.
The official SDKs' side is in tests/compat/test_js_realtime.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import InvalidStatus

import pgqueue
from api.app import create_app
from pgqueue.db.pool import open_pool
from pgqueue.realtime import tokens
from pgqueue.settings import Settings
from tests.compat.conftest import Server, start_server
from tests.helpers import realtime as rt
from tests.helpers.procs import free_port, pgqueue_argv, start_process, wait_http
from tests.helpers.serve import BEARER, SIGNING_KEY, ServeProc, rows, start_serve

# Small buffers, so a stuck subscriber passes them quickly.
BUFFER_ENV = {"PGQUEUE_REALTIME_BUFFER_MESSAGES": "300", "PGQUEUE_REALTIME_BUFFER_BYTES": "600000"}


@pytest.fixture(scope="module")
def prod(module_database_url: str) -> Iterator[ServeProc]:
    server = start_serve(module_database_url, env=BUFFER_ENV, name="pgqueue-serve-realtime")
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def api(server: ServeProc | Server, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    # idle connections expire before uvicorn's 5 s keep-alive timeout closes them under a request
    limits = httpx.Limits(keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30, limits=limits) as client:
        yield client


def _stored(database_url: str, channel: str) -> int:
    return int(rows(database_url, "SELECT count(*) AS n FROM pgqueue.realtime_messages WHERE channel = %s",
                    (channel,))[0]["n"])


async def test_publishing_and_tokens_need_the_signing_key(prod: ServeProc) -> None:
    async with api(prod) as anonymous:
        r = await anonymous.post("/v1/realtime/publish", params={"channel": "c", "topic": "t"}, json={"a": 1})
        assert r.status_code == 401 and "signing key" in r.json()["error"]
        r = await anonymous.post("/v1/realtime/token", json=[{"channel": "c", "name": "t", "kind": "run"}])
        assert r.status_code == 401
        r = await anonymous.post("/v1/realtime/publish/tee", params={"channel": "01RUN"},
                                 content=b"data: 1\n\n",
                                 headers={"content-type": "application/octet-stream"})
        assert r.status_code == 401
        r = await anonymous.get("/v1/realtime/sse")
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert r.headers["access-control-allow-origin"] == "*"
    with pytest.raises(InvalidStatus) as refused:
        async with rt.subscribed(prod.url, "nope"):
            pass
    assert refused.value.response.status_code == 401
    assert "malformed" in json.loads(refused.value.response.body or b"{}")["error"]
    assert _stored(prod.database_url, "c") == 0


async def test_a_subscriber_gets_its_channel_s_topics_in_order_and_nothing_else(prod: ServeProc) -> None:
    async with api(prod, **BEARER) as client:
        jwt = await rt.token(client, "user:1", ["progress", "done"])
        async with rt.subscribed(prod.url, jwt) as got:
            await rt.publish(client, "user:2", "progress", {"not": "mine"})
            await rt.publish(client, "user:1", "other-topic", {"not": "mine"})
            for n in range(50):
                await rt.publish(client, "user:1", "progress", {"n": n}, run_id="01J0RUN")
            await rt.publish(client, "user:1", "done", "finished")
            await got.wait_for(51)
            await asyncio.sleep(0.3)  # nothing else arrives
    assert got.data() == [{"n": n} for n in range(50)] + ["finished"]
    first = got.messages[0]
    assert first["kind"] == "data" and first["channel"] == "user:1" and first["topic"] == "progress"
    assert first["run_id"] == "01J0RUN" and first["created_at"].endswith("Z")
    assert "run_id" not in got.messages[-1]
    # the token is a credential: uvicorn's WebSocket log line shows it redacted
    assert jwt not in prod.log() and "token=[redacted]" in prod.log()


async def test_expired_and_forged_tokens_are_refused_when_connecting(prod: ServeProc) -> None:
    keys = (SIGNING_KEY,)
    expired = tokens.mint("user:1", ["progress"], signing_keys=keys, ttl_s=60, now=time.time() - 120)
    forged = tokens.mint("user:1", ["progress"], signing_keys=("signkey-prod-" + "00" * 32,), ttl_s=60)
    for token, reason in [(expired, "expired"), (forged, "not valid here")]:
        with pytest.raises(InvalidStatus) as refused:
            async with rt.subscribed(prod.url, token):
                pass
        assert refused.value.response.status_code == 401
        assert reason in json.loads(refused.value.response.body or b"{}")["error"]
        async with api(prod) as client:
            r = await client.get("/v1/realtime/sse", params={"token": token})
        assert r.status_code == 401 and reason in r.json()["error"]


async def test_sse_carries_ids_and_resumes_after_the_last_event_id(prod: ServeProc) -> None:
    async with api(prod, **BEARER) as client:
        jwt = await rt.token(client, "sse-room", ["chat"])
        seen: list[str] = []
        reader = asyncio.create_task(rt.sse_events(client, jwt, seen))
        try:
            await _until(lambda: _subscribers(prod) >= 1)
            ids = [(await rt.publish(client, "sse-room", "chat", {"n": n}))["ids"][0] for n in range(3)]
            await _until(lambda: len(seen) >= 6)
        finally:
            reader.cancel()
        first = seen[:6]
        assert [line for line in first if line.startswith("id: ")] == [f"id: {i}" for i in ids]
        assert [json.loads(line)["data"] for line in first if not line.startswith("id: ")] == [
            {"n": 0}, {"n": 1}, {"n": 2}]
        resumed: list[str] = []
        resume = {"last-event-id": str(ids[0])}
        reader = asyncio.create_task(rt.sse_events(client, jwt, resumed, headers=resume))
        try:
            await _until(lambda: len(resumed) >= 4)
        finally:
            reader.cancel()
    assert [json.loads(s)["data"] for s in resumed[1::2]] == [{"n": 1}, {"n": 2}]


async def test_a_message_over_the_limit_is_refused_naming_the_setting(prod: ServeProc) -> None:
    async with api(prod, **BEARER) as client:
        r = await client.post("/v1/realtime/publish", params={"channel": "big", "topic": "t"},
                              json={"blob": "x" * 600_000})
        assert r.status_code == 413
        assert "the limit is 524288 bytes" in r.json()["error"]
        assert "PGQUEUE_REALTIME_MAX_MESSAGE_BYTES" in r.json()["error"]
        for params, reason in [({"topic": "t"}, "channel"), ({"channel": "c"}, "topic"),
                               ({"channel": "c", "topic": "t", "run_id": "x" * 200}, "run_id")]:
            r = await client.post("/v1/realtime/publish", params=params, json={})
            assert r.status_code == 400 and reason in r.json()["error"], r.text
        r = await client.post("/v1/realtime/publish", params={"channel": "big", "topic": "t"},
                              content=b'{"nul": "a\\u0000b"}', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "NUL" in r.json()["error"]
    assert _stored(prod.database_url, "big") == 0


async def test_a_streamed_publish_arrives_as_start_chunks_and_end(prod: ServeProc) -> None:
    text = "streamed é😀 " * 400

    async def body() -> AsyncIterator[bytes]:
        data = text.encode()
        for i in range(0, len(data), 333):  # cuts through multibyte characters
            yield data[i:i + 333]
            await asyncio.sleep(0)

    async with api(prod, **BEARER) as client:
        jwt = await rt.token(client, "llm", ["tokens"])
        async with rt.subscribed(prod.url, jwt) as got:
            r = await client.post("/v1/realtime/publish", params={"channel": "llm", "topic": "tokens"},
                                  content=body(), headers={"content-type": "text/stream"})
            assert r.status_code == 200, r.text
            await _until(lambda: bool(got.messages) and got.messages[-1]["kind"] == "datastream-end")
    kinds = [m["kind"] for m in got.messages]
    assert kinds[0] == "datastream-start" and kinds[-1] == "datastream-end" and set(kinds[1:-1]) == {"chunk"}
    stream_id = got.messages[0]["data"]
    assert got.messages[-1]["data"] == stream_id
    assert all(m["stream_id"] == stream_id and m["channel"] == "llm" and m["topic"] == "tokens"
               for m in got.messages[1:-1])
    assert "".join(m["data"] for m in got.messages[1:-1]) == text


async def test_a_durable_endpoint_s_tee_reaches_a_subscriber_that_joins_late(prod: ServeProc) -> None:
    run_id = "01J0TEE0000000000000000000"
    frames = ['event: inngest.metadata\ndata: {"runId":"01J0TEE0000000000000000000"}\n\n',
              'event: inngest.stream\ndata: {"data":"one"}\n\n',
              'event: inngest.response\ndata: {"status":"succeeded","response":{"body":"{}",'
              '"headers":{},"statusCode":200}}\n\n']
    stream = "".join(frames).encode()

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(stream), 17):
            yield stream[i:i + 17]

    async with api(prod, **BEARER) as client:
        r = await client.post("/v1/realtime/publish/tee", params={"channel": run_id}, content=body(),
                              headers={"content-type": "application/octet-stream"})
        assert r.status_code == 200 and r.json()["data"]["messages"] == 3, r.text
        jwt = tokens.mint(run_id, [tokens.STREAM_TOPIC], signing_keys=(SIGNING_KEY,), ttl_s=60)
        seen: list[str] = []
        reader = asyncio.create_task(rt.sse_events(client, jwt, seen, raw=True))
        try:
            await _until(lambda: "inngest.response" in "".join(seen))
        finally:
            reader.cancel()
        async with rt.subscribed(prod.url, jwt, raw=True) as got:
            await got.wait_for(3)
    assert "".join(seen).replace(": subscribed\n\n", "") == "".join(frames)
    assert got.messages == frames


async def test_a_subscriber_that_stops_reading_is_closed_and_another_gets_everything(prod: ServeProc) -> None:
    # 10 MB: more than the socket buffers on both sides hold, so the server's own buffer must fill
    count, blob = 2000, "y" * 5000
    async with api(prod, **BEARER) as client:
        jwt = await rt.token(client, "firehose", ["t"])
        before = await _stats(prod)
        stuck = rt.StuckSubscriber(prod.url, jwt)
        assert stuck.status == "101"
        stuck_sse = rt.StuckSubscriber(prod.url, jwt, sse=True)
        assert stuck_sse.status == "200"
        try:
            async with rt.subscribed(prod.url, jwt, max_queue=None) as got:
                await _until(lambda: _subscribers(prod) >= 3)
                for start in range(0, count, 100):
                    await asyncio.gather(*(_publish_raw(client, "firehose", {"n": n, "b": blob})
                                           for n in range(start, start + 100)))
                await got.wait_for(count, timeout=120)
                stats = await _stats(prod)
        finally:
            stuck.close()
            stuck_sse.close()
    # all of them, each once; per-channel order is commit order, so sort the concurrent batches' ids
    assert sorted(m["data"]["n"] for m in got.messages) == list(range(count))
    assert stats["dropped"] == before["dropped"] + 2  # the WebSocket and the SSE one
    assert stats["subscribers"] == 1  # both cut, not lingering
    assert "fell behind" in stats["last_drop"] and "firehose" in stats["last_drop"]
    assert stats["queued_bytes"] <= 600_000


async def test_a_stream_the_client_abandons_delivers_what_came_and_logs_no_error(prod: ServeProc) -> None:
    async with api(prod, **BEARER) as client:
        jwt = await rt.token(client, "abandoned", ["t"])
        async with rt.subscribed(prod.url, jwt) as got:
            async def body() -> AsyncIterator[bytes]:
                yield b"first part "
                await asyncio.sleep(30)  # the client gives up long before
                yield b"never"

            publishing = asyncio.create_task(client.post(
                "/v1/realtime/publish", params={"channel": "abandoned", "topic": "t"}, content=body(),
                headers={"content-type": "text/stream"}))
            await _until(lambda: any(m["kind"] == "chunk" for m in got.messages))
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
            await _until(lambda: got.messages[-1]["kind"] == "datastream-end")
    assert [m["kind"] for m in got.messages] == ["datastream-start", "chunk", "datastream-end"]
    assert got.messages[1]["data"] == "first part "
    await asyncio.sleep(0.2)
    assert "client closed the connection during POST /v1/realtime/publish" in prod.log()
    assert "Traceback" not in prod.log() and "unhandled error" not in prod.log()


async def test_messages_published_while_the_listener_is_down_arrive_in_order(prod: ServeProc) -> None:
    """NOTIFYs sent while the process's LISTEN connection is gone are lost; when it reconnects, the
    hub reads each channel after the last id it saw, so nothing is missed or reordered."""
    async with api(prod, **BEARER) as client:
        jwt = await rt.token(client, "outage", ["t"])
        async with rt.subscribed(prod.url, jwt) as got:
            await _until(lambda: _subscribers(prod) >= 1)
            await rt.publish(client, "outage", "t", 0)
            await got.wait_for(1)
            with psycopg.connect(prod.database_url, autocommit=True) as conn:
                gone = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                    " WHERE query = 'LISTEN \"pgqueue_realtime\"'").fetchall()
                assert gone == [(True,)]
                for n in range(1, 21):  # before it reconnects (it waits 0.2 s first): NOTIFYs lost
                    pgqueue.publish(conn, "outage", "t", n)
            await got.wait_for(21)
    assert got.data() == list(range(21))
    assert "listener connection lost" in prod.log()


async def test_a_message_published_in_the_application_s_transaction_arrives_at_commit(
    prod: ServeProc,
) -> None:
    async with api(prod, **BEARER) as client:
        jwt = await rt.token(client, "orders:7", ["status"])
    async with rt.subscribed(prod.url, jwt) as got:
        await _until(lambda: _subscribers(prod) >= 1)
        with psycopg.connect(prod.database_url) as conn:
            with conn.transaction(force_rollback=True):
                pgqueue.publish(conn, "orders:7", "status", {"state": "rolled back"})
            with conn.transaction():
                pgqueue.publish(conn, "orders:7", "status", {"state": "paid"})
                await asyncio.sleep(0.3)
                assert got.messages == []
        await got.wait_for(1)
        await asyncio.sleep(0.2)
    assert got.data() == [{"state": "paid"}]


async def test_a_publisher_on_one_process_reaches_a_subscriber_on_another(
    prod: ServeProc, module_database_url: str, pgbouncer: Any
) -> None:
    other = start_serve(module_database_url, name="pgqueue-serve-realtime-2")
    bounced = start_serve(pgbouncer.url_for(module_database_url), env={"PGQUEUE_POOLER": "1",
                          "PGQUEUE_REALTIME_POLL_MS": "50"}, name="pgqueue-serve-realtime-pooler")
    direct = start_serve(pgbouncer.url_for(module_database_url),
                         env={"PGQUEUE_POOLER": "1", "PGQUEUE_REALTIME_LISTEN_URL": module_database_url},
                         name="pgqueue-serve-realtime-direct")
    try:
        async with api(prod, **BEARER) as client:
            jwt = await rt.token(client, "across", ["t"])
            async with rt.subscribed(other.url, jwt) as on_other, \
                    rt.subscribed(bounced.url, jwt) as polling, \
                    rt.subscribed(direct.url, jwt) as listening:
                for server in (other, bounced, direct):
                    await _until(lambda s=server: _subscribers(s) >= 1)  # type: ignore[misc]
                for n in range(20):
                    await rt.publish(client, "across", "t", n)
                for got in (on_other, polling, listening):
                    await got.wait_for(20)
        assert on_other.data() == polling.data() == listening.data() == list(range(20))
        assert (await _stats(bounced))["mode"] == "poll"
        assert (await _stats(direct))["mode"] == "listen" and (await _stats(direct))["listening"]
    finally:
        for server in (other, bounced, direct):
            server.stop()


async def test_the_dev_server_lets_pages_of_other_origins_subscribe(module_database_url: str) -> None:
    server = start_server(module_database_url)
    page = {"origin": "http://app.example.test"}
    try:
        async with api(server) as client:
            jwt = await rt.token(client, "dev-room", ["t"])
            r = await client.post("/v1/realtime/token", json=[{"channel": "c", "name": "t"}], headers=page)
            assert r.status_code == 403  # minting stays same-origin only
            async with rt.subscribed(server.url, jwt, origin="http://app.example.test") as got:  # type: ignore[arg-type]
                await _until(lambda: _subscribers(server) >= 1)
                r = await client.post("/v1/realtime/publish", params={"channel": "dev-room", "topic": "t"},
                                      content=b"plain words", headers={"content-type": "text/stream"})
                assert r.status_code == 200, r.text
                await _until(lambda: any(m["kind"] == "datastream-end" for m in got.messages))
            async with client.stream("GET", "/v1/realtime/sse", params={"token": jwt}, headers=page) as r:
                assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
            asking = {**page, "access-control-request-method": "GET",
                      "access-control-request-headers": "last-event-id"}
            preflight = await client.options("/v1/realtime/sse", headers=asking)
            assert preflight.status_code == 204
            assert "last-event-id" in preflight.headers["access-control-allow-headers"]
    finally:
        server.proc.terminate()
    assert "".join(m["data"] for m in got.messages if m["kind"] == "chunk") == "plain words"


async def test_an_api_without_a_hub_says_where_subscribers_go(database_url: str) -> None:
    async def opener() -> Any:
        return await open_pool(database_url, max_size=2)

    for realtime_url, expected in [(None, 501), ("https://rt.example.com", 307)]:
        settings = Settings(mode="serve", database_url=database_url, signing_key=SIGNING_KEY,
                            event_keys=("k",), realtime_url=realtime_url).validated()
        app = create_app(settings, run_services=False, open_pool_lazily=opener)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            r = await c.get("/v1/realtime/sse", params={"token": "abc"})
            await app.state.pool.close()
        assert r.status_code == expected
        if expected == 501:
            assert "pgqueue realtime" in r.json()["error"] and "PGQUEUE_REALTIME_URL" in r.json()["error"]
        else:
            assert r.headers["location"] == "https://rt.example.com/v1/realtime/sse?token=abc"


async def test_pgqueue_realtime_serves_realtime_alone(database_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_process("pgqueue-realtime", pgqueue_argv("realtime", "--port", str(port)),
                         env={"DATABASE_URL": database_url}, url=url)
    try:
        wait_http(proc, "/health", timeout=60)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.post("/e/key", json={"name": "x"})).status_code == 404
            assert (await client.get("/runs")).status_code == 404
            jwt = await rt.token(client, "alone", ["t"])
            async with rt.subscribed(url, jwt) as got:
                await rt.publish(client, "alone", "t", "hi")
                await got.wait_for(1)
        assert got.data() == ["hi"]
    finally:
        proc.terminate()


# -- helpers ---------------------------------------------------------------------------------------


async def _publish_raw(client: httpx.AsyncClient, channel: str, data: Any) -> None:
    r = await client.post("/v1/realtime/publish", params={"channel": channel, "topic": "t"}, json=data)
    assert r.status_code == 200, r.text


async def _stats(server: ServeProc | Server) -> dict[str, Any]:
    async with api(server, **BEARER) as client:
        r = await client.get("/v1/realtime/stats")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def _subscribers(server: ServeProc | Server) -> int:
    r = httpx.get(f"{server.url}/v1/realtime/stats", headers=BEARER, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["data"]["subscribers"])


async def _until(predicate: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)
