"""pgqueue/executor/transport.py (the HTTP/1.1 transport under every request to an app) against
scripted servers on real loopback sockets: each framing an app server may answer with, keep-alive
and its ends, malformed answers as httpx's errors, timeouts, and the egress refusal."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from pgqueue.executor import egress, invoke, transport
from pgqueue.executor.transport import AppTransport

Answer = Callable[[bytes, asyncio.StreamWriter], "asyncio.Future[None] | None"]


@dataclass
class Scripted:
    """A server that reads each request (head + Content-Length body) and writes `answers[n]` for
    the n-th request on its connection (the last one repeats); counts connections and requests."""

    answers: list[bytes]
    close_after: int | None = None  # close the connection after this many answers
    delay_s: float = 0.0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(self.answers[min(served, len(self.answers) - 1)])
                await writer.drain()
                served += 1
                if self.close_after is not None and served >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Scripted]]:
    servers: list[asyncio.Server] = []

    async def start(script: Scripted) -> Scripted:
        server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
        servers.append(server)
        script.port = server.sockets[0].getsockname()[1]
        return script

    made: list[Scripted] = []

    def make(*answers: bytes, **kw: object) -> Scripted:
        script = Scripted(list(answers), **kw)  # type: ignore[arg-type]
        made.append(script)
        return script

    make.start = start  # type: ignore[attr-defined]
    yield make
    for server in servers:
        server.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with invoke.new_client(connect_timeout_s=2, call_timeout_s=2) as c:
        yield c


def ok(body: bytes = b'{"ok":true}', *, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status, len(body), extra, body)


async def started(serve: Callable[..., Scripted], *answers: bytes, **kw: object) -> Scripted:
    return await serve.start(serve(*answers, **kw))  # type: ignore[attr-defined]


async def test_keep_alive_reuses_one_connection_and_sends_the_request_whole(serve, client) -> None:
    app = await started(serve, ok(b'{"n":1}', status=b"206 Partial Content", extra=b"x-inngest-sdk: py\r\n"))
    for i in range(5):
        r = await client.post(f"http://127.0.0.1:{app.port}/api/inngest?fnId=f&stepId=s",
                              content=b'{"i":%d}' % i,
                              headers={"content-type": "application/json", "x-inngest-signature": "t=1&s=x"})
        assert (r.status_code, r.json(), r.headers["x-inngest-sdk"]) == (206, {"n": 1}, "py")
    assert app.connections == 1
    head, _, body = app.requests[4].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/inngest?fnId=f&stepId=s HTTP/1.1\r\n")
    assert b"content-length: 7" in head.lower() and b"x-inngest-signature: t=1&s=x" in head
    assert f"host: 127.0.0.1:{app.port}".encode() in head.lower()
    assert body == b'{"i":4}'


async def test_concurrent_requests_get_their_own_connections_then_share_them(serve, client) -> None:
    app = await started(serve, ok(), delay_s=0.05)
    url = f"http://127.0.0.1:{app.port}/"
    rs = await asyncio.gather(*(client.post(url, content=b"{}") for _ in range(8)))
    assert [r.status_code for r in rs] == [200] * 8 and app.connections == 8
    await asyncio.gather(*(client.post(url, content=b"{}") for _ in range(8)))
    assert app.connections == 8  # all eight were kept and reused


async def test_chunked_bodies_with_extensions_and_trailers(serve, client) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"4;ext=1\r\n[1,2\r\n3\r\n,3]\r\n0\r\nx-trailer: y\r\n\r\n")
    app = await started(serve, chunked)
    for _ in range(2):  # the connection stays usable after a chunked body
        r = await client.get(f"http://127.0.0.1:{app.port}/")
        assert r.json() == [1, 2, 3]
    assert app.connections == 1


async def test_a_body_until_eof_and_connection_close_are_not_reused(serve, client) -> None:
    app = await started(serve, b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=1)
    assert (await client.get(f"http://127.0.0.1:{app.port}/")).text == "until the end"
    assert (await client.get(f"http://127.0.0.1:{app.port}/")).text == "until the end"
    assert app.connections == 2
    closing = await started(serve, ok(extra=b"connection: close\r\n"), close_after=1)
    for _ in range(2):
        assert (await client.get(f"http://127.0.0.1:{closing.port}/")).status_code == 200
    assert closing.connections == 2


async def test_no_body_for_head_204_304_and_informational_answers_skipped(serve, client) -> None:
    app = await started(serve, b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after"),
                        b"HTTP/1.1 204 No Content\r\n\r\n")
    r = await client.post(f"http://127.0.0.1:{app.port}/", content=b"x")
    assert (r.status_code, r.text) == (200, "after")
    r = await client.post(f"http://127.0.0.1:{app.port}/", content=b"x")
    assert (r.status_code, r.content) == (204, b"")
    head = await started(serve, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    r = await client.head(f"http://127.0.0.1:{head.port}/")
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "5")
    r = await client.head(f"http://127.0.0.1:{head.port}/")
    assert head.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_not_used(serve, client) -> None:
    # The app's keep-alive timeout: it closes after one answer without saying so.
    app = await started(serve, ok(), close_after=1)
    assert (await client.get(f"http://127.0.0.1:{app.port}/")).status_code == 200
    await asyncio.sleep(0.05)  # the loop reads the EOF
    assert (await client.get(f"http://127.0.0.1:{app.port}/")).status_code == 200
    assert app.connections == 2


async def test_idle_connections_expire(serve) -> None:
    app = await started(serve, ok())
    async with httpx.AsyncClient(transport=AppTransport(egress.DEV_POLICY, keepalive_expiry_s=0.05)) as c:
        await c.get(f"http://127.0.0.1:{app.port}/")
        await asyncio.sleep(0.1)
        await c.get(f"http://127.0.0.1:{app.port}/")
    assert app.connections == 2


@pytest.mark.parametrize("answer, message", [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "before the end of the body"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\ncontent-length: 11\r\n\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXY", "does not end with CRLF"),
    (b"SMTP ready\r\n\r\n", "malformed response status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed response header line"),
    (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70_000 + b"\r\n\r\n", "longer than"),
    (b"HTTP/1.1 200 OK\r\n", "closed the connection before the response was complete"),
])
async def test_malformed_answers_are_protocol_errors(serve, client, answer: bytes, message: str) -> None:
    app = await started(serve, answer, close_after=1)
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        await client.get(f"http://127.0.0.1:{app.port}/")


async def test_timeouts_and_refused_connections_are_httpx_errors(serve) -> None:
    slow = await started(serve, ok(), delay_s=1.0)
    async with invoke.new_client(connect_timeout_s=1, call_timeout_s=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(f"http://127.0.0.1:{slow.port}/")
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.UnsupportedProtocol):
            await c.get("ftp://127.0.0.1/")


async def test_the_egress_refusal_is_the_cause_of_the_connect_error(serve) -> None:
    app = await started(serve, ok())
    production = egress.Policy(allow_loopback=False, allow_link_local=False, allow_private=False)
    async with invoke.new_client(connect_timeout_s=1, call_timeout_s=1, policy=production) as c:
        with pytest.raises(httpx.ConnectError) as caught:
            await c.get(f"http://127.0.0.1:{app.port}/")
    assert egress.refusal_of(caught.value) is not None and "loopback" in egress.refusal_of(caught.value)
    assert app.connections == 0


async def test_a_large_body_is_streamed_and_a_caller_may_stop_early(serve, client) -> None:
    big = b"x" * (3 * 1024 * 1024)
    app = await started(serve, ok(big))
    async with client.stream("POST", f"http://127.0.0.1:{app.port}/", content=b"y" * 200_000) as r:
        first = await r.aiter_bytes().__anext__()
        assert 0 < len(first) < len(big)
    assert len(app.requests[0]) > 200_000  # the large request body arrived whole
    r = await client.get(f"http://127.0.0.1:{app.port}/")  # the abandoned connection was not reused
    assert len(r.content) == len(big) and app.connections == 2


async def test_https_verifies_the_certificate_for_the_name_called(tmp_path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    app = Scripted([ok(b"secure")])
    server = await asyncio.start_server(app.handle, "localhost", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=AppTransport(egress.DEV_POLICY)) as c:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await c.get(f"https://localhost:{port}/")  # not signed by a CA httpx trusts
        trusting = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(transport=AppTransport(egress.DEV_POLICY, ssl_context=trusting)) as c:
            for _ in range(2):
                assert (await c.get(f"https://localhost:{port}/")).text == "secure"
        assert app.connections == 1  # one kept-alive TLS connection (the refused handshake never got one)
    finally:
        server.close()


async def test_the_executors_direct_call_sends_what_the_client_would(serve, client) -> None:
    app = await started(serve, ok(b'[{"op":"StepRun"}]', status=b"206 Partial Content"))
    req = invoke.CallRequest(f"http://127.0.0.1:{app.port}/api/inngest?fnId=f&stepId=step", b'{"a":1}',
                             {"content-type": "application/json", "x-inngest-signature": "t=1&s=x"}, False)
    for _ in range(3):
        answer = await invoke.send(client, req, max_response_bytes=1024, deadline_s=2)
        assert (answer.status, answer.body) == (206, b'[{"op":"StepRun"}]')
    assert app.connections == 1
    head, _, body = app.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/inngest?fnId=f&stepId=step HTTP/1.1\r\n") and body == b'{"a":1}'
    assert f"host: 127.0.0.1:{app.port}".encode() in head.lower() and b"content-length: 7" in head.lower()
    too_big = await invoke.send(client, req, max_response_bytes=4, deadline_s=2)
    assert too_big.error["name"] == "ResponseTooLarge"


async def test_the_direct_call_sends_each_url_it_is_given_with_a_bounded_cache(
    serve, client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parsed URLs are reused (a function's steps repeat them), never mixed up, and never more than
    MAX_PARSED_URLS are kept."""
    monkeypatch.setattr(transport, "MAX_PARSED_URLS", 3)
    app = await started(serve, ok())
    steps = ["a", "b", "a", "c", "d", "e", "a"]
    for step in steps:
        req = invoke.CallRequest(f"http://127.0.0.1:{app.port}/api/inngest?fnId=f&stepId={step}", b"{}",
                                 {"content-type": "application/json"}, False)
        answer = await invoke.send(client, req, max_response_bytes=1024, deadline_s=2)
        assert answer.status == 200
    sent = [r.split(b" ")[1] for r in app.requests]
    assert sent == [b"/api/inngest?fnId=f&stepId=%s" % s.encode() for s in steps]
    assert 0 < len(client._urls) <= 3  # type: ignore[attr-defined]
