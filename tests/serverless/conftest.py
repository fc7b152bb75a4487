"""Fixtures for the serverless suite: the Lambda handler files loaded in-process (a fresh module,
as in a cold container), recorded event fixtures, a Lambda context, and a loopback stand-in for
the AWS APIs the handlers call (Lambda Invoke, Secrets Manager, SSM GetParameter), reached through
boto3's own endpoint-override variables."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SIGNING_KEY = "signkey-prod-" + "5e7a1c0ffee0b0a7" * 4
EVENT_KEY = "lambda-event-key"
_modules = itertools.count()


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as `context` (the parts handlers use)."""

    remaining_ms: int = 30_000
    function_name: str = "pgqueue-executor"
    aws_request_id: str = "3b7c5f3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def load_handler(name: str) -> ModuleType:
    """Import lambda/<name>.py as a new module, as a fresh Lambda container would."""
    path = ROOT / "lambda" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_lambda_{name}_{next(_modules)}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def close_handler(module: ModuleType) -> None:
    """Close what a container would keep open (pool, HTTP client) and its event loop."""
    loop = module._loop
    pools = [getattr(module, "_pool", None)]
    app = getattr(module, "app", None)
    if app is not None:
        pools.append(app.state.pool)
        http = getattr(app.state, "http", None)
        if http is not None:
            loop.run_until_complete(http.aclose())
    for pool in pools:
        if pool is not None:
            loop.run_until_complete(pool.close())
    loop.close()


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> dict[str, str]:
    """The environment the Terraform stack gives both functions (secrets inlined here)."""
    env = {
        "DATABASE_URL": database_url,
        "PGQUEUE_SIGNING_KEY": SIGNING_KEY,
        "PGQUEUE_EVENT_KEYS": EVENT_KEY,
        "PGQUEUE_BACKOFF_SCALE": "0.002",
        "PGQUEUE_LEASE_MS": "5000",
        "PGQUEUE_ALLOW_LOOPBACK": "1",  # the test apps listen on loopback (refused by default in production)
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def handlers() -> Iterator[Any]:
    """load(name) → a handler module; every module loaded is closed after the test."""
    loaded: list[ModuleType] = []

    def load(name: str) -> ModuleType:
        module = load_handler(name)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        with contextlib.suppress(Exception):
            close_handler(module)


@dataclass
class FakeAws:
    """Records Lambda Invoke calls; answers Secrets Manager GetSecretValue from `secrets` and SSM
    GetParameter from `parameters`, counting the reads of each name in `reads`."""

    url: str
    invokes: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAws]:
    state: FakeAws

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            target = self.headers.get("x-amz-target", "")
            if self.path.startswith("/2015-03-31/functions/"):
                name = self.path.split("/")[3]
                state.invokes.append(
                    {
                        "function": name,
                        "invocation_type": self.headers.get("x-amz-invocation-type"),
                        "payload": json.loads(body or b"null"),
                    }
                )
                self._answer(202, b"")
            elif target == "secretsmanager.GetSecretValue":
                secret_id = json.loads(body)["SecretId"]
                state.reads[secret_id] = state.reads.get(secret_id, 0) + 1
                value = state.secrets.get(secret_id)
                if value is None:
                    self._answer(400, json.dumps({"__type": "ResourceNotFoundException"}).encode())
                else:
                    self._answer(
                        200, json.dumps({"ARN": secret_id, "Name": "pgqueue", "SecretString": value}).encode()
                    )
            elif target == "AmazonSSM.GetParameter":
                name = json.loads(body)["Name"]
                state.reads[name] = state.reads.get(name, 0) + 1
                value = state.parameters.get(name)
                if value is None:
                    self._answer(400, json.dumps({"__type": "ParameterNotFound"}).encode())
                else:
                    parameter = {"Name": name, "Type": "SecureString", "Value": value, "Version": 1}
                    self._answer(200, json.dumps({"Parameter": parameter}).encode())
            else:
                self._answer(404, b"{}")

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/x-amz-json-1.1")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    state = FakeAws(url)
    thread = threading.Thread(target=server.serve_forever, name="fake-aws", daemon=True)
    thread.start()
    for key, value in {
        "AWS_ENDPOINT_URL_LAMBDA": url,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": url,
        "AWS_ENDPOINT_URL_SSM": url,
        "AWS_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def slow_app() -> Iterator[str]:
    """An SDK endpoint that never answers within a short invocation."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            release.wait(30)
            self.send_response(500)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="slow-app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/inngest"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
