"""The Lambda handlers invoked in-process with recorded API Gateway / Function URL / ALB /
EventBridge events, against a real database: HTTP answers, raw bodies, one pool per container,
kicks only when configured, secrets from Secrets Manager, and the executor's actions."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgqueue.apps import registration
from pgqueue.db import migrate
from pgqueue.errors import ConfigError
from pgqueue.protocol import signing
from pgqueue.serverless import aws
from pgqueue.settings import Settings
from tests.serverless.conftest import EVENT_KEY, ROOT, SIGNING_KEY, FakeAws, LambdaContext, fixture

CTX = LambdaContext()


def rows(url: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(query, params).fetchall())


def body_of(response: dict[str, Any]) -> Any:
    raw = response["body"]
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return json.loads(raw)


def http_v2(
    method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    event = fixture("http_api_v2_health")
    event["rawPath"] = path
    event["requestContext"]["http"].update(method=method, path=path)
    event["headers"].update(headers or {})
    if body is not None:
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
        event["headers"]["content-type"] = "application/json"
        event["headers"]["content-length"] = str(len(body))
    return event


def register_event(body: bytes, key: str = SIGNING_KEY) -> dict[str, Any]:
    event = fixture("function_url_register")
    event["body"] = base64.b64encode(body).decode()
    event["headers"]["content-length"] = str(len(body))
    event["headers"]["authorization"] = f"Bearer {signing.hashed_key(key)}"
    return event


def app_body(url: str, *functions: dict[str, Any], name: str = "lambda-shop") -> bytes:
    # Compact, non-ASCII, key order as the SDK sends it: the bytes the server must see unchanged.
    payload = {
        "appName": name,
        "url": url,
        "v": "0.1",
        "deployType": "ping",
        "sdk": "py:v0.5.19",
        "framework": "fastapi",
        "functions": list(functions),
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def function(slug: str, url: str, event: str = "lambda/order.created", **extra: Any) -> dict[str, Any]:
    return {
        "id": slug,
        "name": f"{slug} — naïve",
        "triggers": [{"event": event}],
        "steps": {
            "step": {
                "id": "step",
                "name": "step",
                "runtime": {"type": "http", "url": f"{url}?fnId={slug}&stepId=step"},
                "retries": {"attempts": 2},
            }
        },
        **extra,
    }


# -- API handler ------------------------------------------------------------------------------------


def test_health_answers_every_http_event_shape_with_one_pool(
    lambda_env: dict[str, str], handlers: Any
) -> None:
    api = handlers("api_handler")
    rest = fixture("rest_v1_send_event")
    rest.update(httpMethod="GET", path="/health", body=None, resource="/{proxy+}")
    rest["requestContext"].update(httpMethod="GET", path="/prod/health")
    function_url = fixture("function_url_register")
    function_url.update(rawPath="/health", rawQueryString="", body="", isBase64Encoded=False)
    function_url["requestContext"]["http"].update(method="GET", path="/health")
    del function_url["headers"]["authorization"]
    events = {
        "http_api_v2": fixture("http_api_v2_health"),
        "rest_v1": rest,
        "function_url": function_url,
        "alb": fixture("alb_health"),
    }

    pools = set()
    for kind, event in events.items():
        response = api.handler(event, CTX)

        assert response["statusCode"] == 200, (kind, response)
        assert body_of(response) == {
            "status": "ok",
            "mode": "serve",
            "schema_version": migrate.head_version(),
        }
        pools.add(id(api.app.state.pool))

    assert api.pool_opens == 1
    assert len(pools) == 1
    # the pool is small and stays open between invocations: at most two backends for this database
    backends = rows(
        lambda_env["DATABASE_URL"],
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()",
    )
    assert 1 <= backends[0]["n"] <= 2


def test_event_with_a_base64_body_is_stored_exactly(lambda_env: dict[str, str], handlers: Any) -> None:
    api = handlers("api_handler")
    event = fixture("http_api_v2_send_event")

    response = api.handler(event, CTX)

    assert response["statusCode"] == 200, response
    ids = body_of(response)["ids"]
    assert ids == ["01M8BN2GFR041061050R3GG28B"]  # derived from the x-inngest-event-id-seed header
    stored = rows(
        lambda_env["DATABASE_URL"], "SELECT name, data FROM pgqueue.events WHERE id = %s", (ids[0],)
    )
    assert stored == [
        {
            "name": "lambda/order.created",
            "data": {"id": "o_1", "note": "naïve ☃ 🚀", "big": 1234567890123456789},
        }
    ]


def test_rest_api_event_batch_with_a_text_body(lambda_env: dict[str, str], handlers: Any) -> None:
    api = handlers("api_handler")

    response = api.handler(fixture("rest_v1_send_event"), CTX)

    assert response["statusCode"] == 200, response
    ids = body_of(response)["ids"]
    assert len(ids) == 2
    stored = rows(
        lambda_env["DATABASE_URL"],
        "SELECT data->>'email' AS email FROM pgqueue.events WHERE id = ANY(%s) ORDER BY id",
        (ids,),
    )
    assert [r["email"] for r in stored] == ["zoë@example.com", "li@example.com"]


def test_wrong_event_key_is_refused(lambda_env: dict[str, str], handlers: Any) -> None:
    api = handlers("api_handler")
    event = fixture("http_api_v2_send_event")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/e/not-the-key"

    response = api.handler(event, CTX)

    assert response["statusCode"] == 401
    assert rows(lambda_env["DATABASE_URL"], "SELECT count(*) AS n FROM pgqueue.events") == [{"n": 0}]


def test_sdk_registration_through_a_function_url(lambda_env: dict[str, str], handlers: Any) -> None:
    api = handlers("api_handler")
    raw = app_body(
        "https://shop.example.com/api/inngest",
        function("lambda-shop-order", "https://shop.example.com/api/inngest"),
    )

    refused = api.handler(register_event(raw, key="signkey-prod-" + "00" * 32), CTX)
    accepted = api.handler(register_event(raw), CTX)

    assert refused["statusCode"] == 401
    assert accepted["statusCode"] == 200, accepted
    assert body_of(accepted)["ok"] is True
    # the server parsed exactly the bytes the SDK sent: same checksum as parsing them here
    expected = registration.parse_register(json.loads(raw)).checksum
    stored = rows(
        lambda_env["DATABASE_URL"],
        "SELECT a.checksum, f.name FROM pgqueue.apps a JOIN pgqueue.functions f ON f.app_id = a.id",
    )
    assert stored == [{"checksum": expected, "name": "lambda-shop-order — naïve"}]


def test_no_kick_unless_a_kick_function_is_configured(
    lambda_env: dict[str, str], handlers: Any, fake_aws: FakeAws
) -> None:
    api = handlers("api_handler")

    for _ in range(3):
        assert api.handler(fixture("rest_v1_send_event"), CTX)["statusCode"] == 200

    assert fake_aws.invokes == []
    assert api.app.state.kicker is None
    assert rows(lambda_env["DATABASE_URL"], "SELECT last_kick_at::text AS t FROM pgqueue.executor_kicks") == [
        {"t": "-infinity"}
    ]


def test_kicks_are_debounced_across_invocations(
    lambda_env: dict[str, str], handlers: Any, fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGQUEUE_KICK_FUNCTION", "pgqueue-executor")
    monkeypatch.setenv("PGQUEUE_KICK_DEBOUNCE_MS", "60000")
    api = handlers("api_handler")
    other_container = handlers("api_handler")

    for handler in (api.handler, other_container.handler, api.handler):
        assert handler(fixture("rest_v1_send_event"), CTX)["statusCode"] == 200

    assert fake_aws.invokes == [
        {"function": "pgqueue-executor", "invocation_type": "Event", "payload": {"action": "kick"}}
    ]
    rows(
        lambda_env["DATABASE_URL"],
        "UPDATE pgqueue.executor_kicks SET last_kick_at = now() - interval '2 minutes' RETURNING 1",
    )
    assert other_container.handler(fixture("rest_v1_send_event"), CTX)["statusCode"] == 200
    assert len(fake_aws.invokes) == 2


def test_settings_from_a_secrets_manager_secret(
    lambda_env: dict[str, str], handlers: Any, fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgqueue-AbCdEf"
    fake_aws.secrets[arn] = json.dumps(
        {key: lambda_env[key] for key in ("DATABASE_URL", "PGQUEUE_SIGNING_KEY", "PGQUEUE_EVENT_KEYS")}
    )
    for key in ("DATABASE_URL", "PGQUEUE_SIGNING_KEY", "PGQUEUE_EVENT_KEYS"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("PGQUEUE_SECRET_ARN", arn)

    api = handlers("api_handler")

    assert api.settings.pooler is True and api.settings.production
    assert api.handler(fixture("http_api_v2_health"), CTX)["statusCode"] == 200
    assert api.handler(fixture("http_api_v2_send_event"), CTX)["statusCode"] == 200


MODULE_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgqueue-settings-AbCdEf"
USER_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app-database-url-GhIjKl"


def send_with_key(key: str) -> dict[str, Any]:
    event = fixture("http_api_v2_send_event")
    event["rawPath"] = f"/e/{key}"
    event["requestContext"]["http"]["path"] = f"/e/{key}"
    return event


def settings_from_secrets(
    monkeypatch: pytest.MonkeyPatch, fake_aws: FakeAws, lambda_env: dict[str, str], *arns: str
) -> None:
    """The Terraform module's shape: the module's secret with the keys, then the user's secret."""
    for key in ("DATABASE_URL", "PGQUEUE_SIGNING_KEY", "PGQUEUE_EVENT_KEYS"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("PGQUEUE_SECRET_ARN", ",".join(arns))


def test_a_secret_holding_only_a_url_works_with_the_module_secret_holding_the_keys(
    lambda_env: dict[str, str], handlers: Any, fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_aws.secrets[MODULE_SECRET] = json.dumps(
        {"PGQUEUE_SIGNING_KEY": SIGNING_KEY, "PGQUEUE_EVENT_KEYS": EVENT_KEY}
    )
    fake_aws.secrets[USER_SECRET] = lambda_env["DATABASE_URL"]  # a bare URL, as many teams store it
    settings_from_secrets(monkeypatch, fake_aws, lambda_env, MODULE_SECRET, USER_SECRET)

    api = handlers("api_handler")

    assert api.settings.database_url == lambda_env["DATABASE_URL"] and api.settings.event_keys == (EVENT_KEY,)
    assert api.handler(fixture("http_api_v2_send_event"), CTX)["statusCode"] == 200


def test_later_secrets_and_the_parameter_win_and_the_environment_wins_over_all(
    lambda_env: dict[str, str], fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    parameter = "arn:aws:ssm:eu-west-1:123456789012:parameter/pgqueue/settings"
    fake_aws.secrets[MODULE_SECRET] = json.dumps(
        {"PGQUEUE_SIGNING_KEY": SIGNING_KEY, "PGQUEUE_EVENT_KEYS": "generated", "DATABASE_URL": "postgresql://a/x"}
    )
    fake_aws.secrets[USER_SECRET] = json.dumps({"PGQUEUE_EVENT_KEYS": "mine", "DATABASE_URL": "postgresql://b/y"})
    fake_aws.parameters[parameter] = json.dumps({"DATABASE_URL": "postgresql://c/z"})
    env = {"PGQUEUE_SECRET_ARN": f"{MODULE_SECRET}, {USER_SECRET}", "PGQUEUE_SSM_PARAMETER": parameter}

    merged = aws.lambda_settings(env)
    assert merged.database_url == "postgresql://c/z"  # the parameter, read last
    assert merged.event_keys == ("mine",) and merged.signing_key == SIGNING_KEY  # later secret, else earlier
    direct = aws.lambda_settings({**env, "PGQUEUE_EVENT_KEYS": "from-the-function"})
    assert direct.event_keys == ("from-the-function",)


def test_a_rotated_event_key_reaches_warm_containers_within_a_minute(
    lambda_env: dict[str, str], handlers: Any, fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    def module_secret(event_keys: str) -> str:
        return json.dumps(
            {"DATABASE_URL": lambda_env["DATABASE_URL"], "PGQUEUE_SIGNING_KEY": SIGNING_KEY,
             "PGQUEUE_EVENT_KEYS": event_keys}
        )

    fake_aws.secrets[MODULE_SECRET] = module_secret("old-key")
    settings_from_secrets(monkeypatch, fake_aws, lambda_env, MODULE_SECRET)
    api = handlers("api_handler")
    assert api.handler(send_with_key("old-key"), CTX)["statusCode"] == 200

    fake_aws.secrets[MODULE_SECRET] = module_secret("new-key")  # the old key is withdrawn
    # within the minute the container answers from what it read (one read per cold start)
    assert api.handler(send_with_key("old-key"), CTX)["statusCode"] == 200
    assert fake_aws.reads[MODULE_SECRET] == 1

    api.source.read_at -= aws.SETTINGS_TTL_S + 1  # the container's read is now a minute old
    assert api.handler(send_with_key("old-key"), CTX)["statusCode"] == 401
    assert api.handler(send_with_key("new-key"), CTX)["statusCode"] == 200
    assert fake_aws.reads[MODULE_SECRET] == 2 and api.settings.event_keys == ("new-key",)

    # Secrets Manager failing does not take the container down: the last settings stay in use
    del fake_aws.secrets[MODULE_SECRET]
    api.source.read_at -= aws.SETTINGS_TTL_S + 1
    assert api.handler(send_with_key("new-key"), CTX)["statusCode"] == 200
    assert fake_aws.reads[MODULE_SECRET] == 3 and api.source.rereads == 1


def test_a_changed_database_url_opens_a_new_pool(
    lambda_env: dict[str, str], handlers: Any, fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {"PGQUEUE_SIGNING_KEY": SIGNING_KEY, "PGQUEUE_EVENT_KEYS": EVENT_KEY}
    url = lambda_env["DATABASE_URL"]
    fake_aws.secrets[MODULE_SECRET] = json.dumps({**keys, "DATABASE_URL": url})
    settings_from_secrets(monkeypatch, fake_aws, lambda_env, MODULE_SECRET)
    api = handlers("api_handler")
    assert api.handler(fixture("http_api_v2_health"), CTX)["statusCode"] == 200
    first_pool = api.app.state.pool

    # the same database under another URL (a rotated password would look like this)
    moved = psycopg.conninfo.make_conninfo(url, application_name="pgqueue-rotated")
    fake_aws.secrets[MODULE_SECRET] = json.dumps({**keys, "DATABASE_URL": moved})
    api.source.read_at -= aws.SETTINGS_TTL_S + 1

    assert api.handler(fixture("http_api_v2_health"), CTX)["statusCode"] == 200
    assert api.pool_opens == 2 and api.app.state.pool is not first_pool and first_pool.closed
    names = rows(url, "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()")
    assert {"application_name": "pgqueue-rotated"} in names


def test_inside_lambda_the_handlers_log_as_the_settings_say(lambda_env: dict[str, str]) -> None:
    """Lambda's runtime installs its own root handler; the handler replaces it with
    PGQUEUE_LOG_LEVEL / PGQUEUE_LOG_FORMAT, as `pgqueue serve` does (a fresh process: a cold start)."""
    script = """
import logging, sys
sys.path.insert(0, "lambda")
logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] runtime %(message)s")  # the runtime's
import api_handler
logging.getLogger("pgqueue.probe").info("cold start done")
logging.getLogger("pgqueue.probe").debug("not at info")
"""
    env = {
        **os.environ,
        **lambda_env,
        "AWS_LAMBDA_FUNCTION_NAME": "pgqueue-api",
        "PGQUEUE_LOG_LEVEL": "info",
        "PGQUEUE_LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert {"level": "info", "logger": "pgqueue.probe", "message": "cold start done"} in [
        {k: line[k] for k in ("level", "logger", "message")} for line in lines
    ], done.stderr
    assert "runtime" not in done.stderr and "not at info" not in done.stderr
    # outside Lambda (tests, tools importing the handler) the host's logging is left alone
    root = logging.getLogger()
    before = list(root.handlers)
    assert aws.configure_logging(aws.lambda_settings(lambda_env), environ={}) is False
    assert root.handlers == before


def test_aws_clients_give_up_within_seconds_when_aws_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kick to an unreachable Lambda API (a VPC without NAT or endpoints) must not hold the API
    request until its 29 s limit: short timeouts, one retry."""
    accepted: list[socket.socket] = []
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def swallow() -> None:  # accept every connection, answer nothing
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    for key, value in {
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{server.getsockname()[1]}",
        "AWS_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        lambda_client = aws.client("lambda")
        started = time.monotonic()
        with pytest.raises(Exception, match="(?i)timeout|timed out"):
            lambda_client.invoke(FunctionName="pgqueue-executor:live", InvocationType="Event", Payload=b"{}")
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
    budget = aws.MAX_ATTEMPTS * (aws.CONNECT_TIMEOUT_S + aws.READ_TIMEOUT_S) + 2  # + retry back-off
    assert elapsed < budget < 29, elapsed
    assert len(accepted) == aws.MAX_ATTEMPTS  # one retry, not boto3's default of several


def test_secret_values_in_every_supported_shape() -> None:
    assert aws.parse_secret("postgresql://u:p@db:5432/app") == {
        "DATABASE_URL": "postgresql://u:p@db:5432/app"
    }
    assert aws.parse_secret(
        '{"DATABASE_URL": "postgresql://x/y", "PGQUEUE_EVENT_KEYS": "k1,k2", "other": 1}'
    ) == {"DATABASE_URL": "postgresql://x/y", "PGQUEUE_EVENT_KEYS": "k1,k2"}
    rds = aws.parse_secret(
        '{"username": "pg queue", "password": "p@ss/word", "host": "db.proxy", "port": 5432,'
        ' "dbname": "pgqueue", "engine": "postgres"}'
    )
    assert rds == {
        "DATABASE_URL": "postgresql://pg%20queue:p%40ss%2Fword@db.proxy:5432/pgqueue?sslmode=require"
    }
    with pytest.raises(ConfigError, match="username, password and host"):
        aws.parse_secret('{"user": "x"}')


def test_secret_values_a_container_runtime_injected_merge_like_the_lambda_s() -> None:
    """ECS injects each whole secret (the module's, then yours) as PGQUEUE_SECRET_VALUE_<n>: merged in
    the order of n, later ones winning, and variables set directly win over all of them; Settings
    accepts the names."""
    environ = {
        "PGQUEUE_SECRET_VALUE_2": '{"PGQUEUE_SIGNING_KEY": "signkey-prod-bb"}',
        "PGQUEUE_SECRET_VALUE_1": '{"PGQUEUE_SIGNING_KEY": "signkey-prod-aa", "PGQUEUE_EVENT_KEYS": "k",'
                                  ' "DATABASE_URL": "postgresql://module/db"}',
        "PGQUEUE_SECRET_VALUE_10": "postgresql://yours/db",
        "PGQUEUE_LOG_LEVEL": "debug",
        "PGQUEUE_SECRET_VALUE_3": "",
    }
    merged = aws.injected_secret_environment(environ)
    assert {k: v for k, v in merged.items() if not k.startswith("PGQUEUE_SECRET_VALUE_")} == {
        "PGQUEUE_SIGNING_KEY": "signkey-prod-bb", "PGQUEUE_EVENT_KEYS": "k",
        "DATABASE_URL": "postgresql://yours/db", "PGQUEUE_LOG_LEVEL": "debug"}
    assert not any(k.startswith("PGQUEUE_SECRET_VALUE_") for k in merged)
    settings = Settings.from_env({**environ, **merged}, mode="serve")
    assert settings.signing_key == "signkey-prod-bb" and settings.database_url == "postgresql://yours/db"


# -- executor handler -------------------------------------------------------------------------------


def test_migrate_action_applies_the_schema_once(
    empty_database_url: str, handlers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    monkeypatch.setenv("PGQUEUE_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("PGQUEUE_EVENT_KEYS", EVENT_KEY)
    executor = handlers("executor_handler")
    head = migrate.head_version()

    first = executor.handler(fixture("migrate"), CTX)
    second = executor.handler(fixture("migrate"), CTX)

    assert first == {"action": "migrate", "version": head, "applied": list(range(1, head + 1))}
    assert second == {"action": "migrate", "version": head, "applied": []}


@pytest.mark.parametrize(
    ("name", "action"), [("eventbridge_scheduled", "tick"), ("scheduler_tick", "tick"), ("kick", "kick")]
)
def test_schedule_and_kick_events_run_a_tick(
    lambda_env: dict[str, str], handlers: Any, name: str, action: str
) -> None:
    executor = handlers("executor_handler")

    result = executor.handler(fixture(name), LambdaContext(remaining_ms=20_000))

    assert result["action"] == action
    assert result["idle"] is True  # nothing to do: it returns at once rather than spend the budget
    assert result["duration_s"] < 5
    assert executor.pool_opens == 1


def test_the_executor_refuses_http_and_unknown_events(lambda_env: dict[str, str], handlers: Any) -> None:
    executor = handlers("executor_handler")

    with pytest.raises(ValueError, match="api_handler"):
        executor.handler(fixture("http_api_v2_health"), CTX)
    with pytest.raises(ValueError, match="unknown executor action"):
        executor.handler({"action": "drop-tables"}, CTX)


def test_the_tick_publishes_emf_metrics(
    lambda_env: dict[str, str],
    handlers: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "pgqueue-executor")
    api = handlers("api_handler")
    executor = handlers("executor_handler")
    assert api.handler(fixture("rest_v1_send_event"), CTX)["statusCode"] == 200  # two events, no function
    capsys.readouterr()

    executor.handler(fixture("kick"), CTX)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    assert len(emf) == 1
    record = emf[0]
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "pgqueue" and directive["Dimensions"] == [["FunctionName"]]
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"QueueDepth", "OldestDueAgeSeconds"} <= names
    assert all(isinstance(record[name], int | float) for name in names)
    assert record["FunctionName"] == "pgqueue-executor"
    assert record["QueueDepth"] == 0 and record["InboxEvents"] == 0


# -- leases are handed back when the invocation runs out of time -----------------------------------


def test_leases_held_at_the_deadline_are_released(
    lambda_env: dict[str, str], handlers: Any, slow_app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGQUEUE_INLINE_START", "0")  # the executor's runner starts the run
    api = handlers("api_handler")
    executor = handlers("executor_handler")
    raw = app_body(slow_app, function("lambda-shop-slow", slow_app))
    assert api.handler(register_event(raw), CTX)["statusCode"] == 200
    assert api.handler(fixture("http_api_v2_send_event"), CTX)["statusCode"] == 200

    started = time.monotonic()
    result = executor.handler(fixture("kick"), LambdaContext(remaining_ms=2_500))
    elapsed = time.monotonic() - started

    assert elapsed < 2.5  # returned inside the invocation's time
    assert result["runs_created"] == 1
    assert result["items_claimed"] == 1
    assert result["items_released"] == 1
    assert result["idle"] is False
    items = rows(
        lambda_env["DATABASE_URL"],
        "SELECT state::text AS state, attempt, lease_token FROM pgqueue.queue_items",
    )
    assert items == [{"state": "available", "attempt": 0, "lease_token": None}]  # no attempt used


# -- pooler mode ------------------------------------------------------------------------------------


async def test_pooler_mode_prepares_nothing_on_the_server_and_does_not_listen(database_url: str) -> None:
    from pgqueue.db.pool import open_pool
    from pgqueue.services.process import Services
    from pgqueue.settings import Settings

    async def prepared_after_repeats(pooler: bool) -> int:
        pool = await open_pool(database_url, max_size=1, pooler=pooler)
        try:
            async with pool.connection() as conn:
                for _ in range(8):  # psycopg prepares a statement on the server after 5 executions
                    await conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE run_id = %s", ("x",))
                cur = await conn.execute("SELECT count(*) AS n FROM pg_prepared_statements")
                row = await cur.fetchone()
                assert row is not None
                return int(row["n"])
        finally:
            await pool.close()

    assert await prepared_after_repeats(pooler=False) >= 1
    assert await prepared_after_repeats(pooler=True) == 0

    pool = await open_pool(database_url, max_size=2, pooler=True)
    services = Services(Settings(database_url=database_url, pooler=True, poll_interval_ms=100), pool)
    try:
        await services.start()
        assert services.listener._task is None  # no LISTEN connection: every service polls
        assert services.cron._task is not None
    finally:
        await services.stop()
        await pool.close()
