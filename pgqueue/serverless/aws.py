"""AWS for the Lambda handlers: settings from the environment plus secrets, re-read at most every
minute; AWS API clients that fail fast; logging set up as the settings say.

PGQUEUE_SECRET_ARN names one or more Secrets Manager secrets (comma-separated), PGQUEUE_SSM_PARAMETER
an SSM (SecureString) parameter. Each value is either a JSON object of settings ({"DATABASE_URL": ...,
"PGQUEUE_SIGNING_KEY": ..., "PGQUEUE_EVENT_KEYS": ...}), an RDS-style credentials object (username,
password, host, port, dbname), or a bare PostgreSQL URL. They are merged in that order, later ones
winning (the Terraform module lists its own secret with the keys first, then yours), and variables
set directly on the function win over all of them. boto3 is imported only when a secret is
configured or a client is asked for; it ships with the Lambda runtime.

A container (the `pgqueue realtime` task the Terraform module runs on ECS) gets the same secrets
without boto3: ECS injects each whole secret value as PGQUEUE_SECRET_VALUE_<n>, which the CLI merges
in the order of n, the same way (`injected_secret_environment`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from pgqueue import logging_setup
from pgqueue.errors import ConfigError
from pgqueue.settings import Settings

log = logging.getLogger(__name__)

SECRET_ARN = "PGQUEUE_SECRET_ARN"
SSM_PARAMETER = "PGQUEUE_SSM_PARAMETER"
# PGQUEUE_SECRET_VALUE_1, _2, ...: whole secret values a container runtime injected (ECS `secrets`)
INJECTED_SECRET = re.compile(r"PGQUEUE_SECRET_VALUE_(\d{1,3})")
# On Lambda an executor stays up for work due within a minute (the schedule's period), so sleeps,
# retries and timeouts do not wait for the next scheduled tick; see pgqueue/serverless/tick.py.
# A synchronous Lambda response is at most 6 MB (6,291,456 bytes) as serialized JSON.
LAMBDA_RESPONSE_LIMIT = 6_291_456
LAMBDA_DEFAULTS = {"PGQUEUE_TICK_LINGER_S": "60",
                   "PGQUEUE_MAX_API_RESPONSE_BYTES": str(LAMBDA_RESPONSE_LIMIT - 4096)}

# AWS API calls from a function (settings, kicks, self-invocation, schedules) answer in milliseconds
# when the service is reachable. When it is not (a VPC without NAT or endpoints), boto3's defaults
# (60 s to connect, 60 s to read, up to 5 attempts) would hold the request past API Gateway's 29 s
# after the events were already committed: give up after about ten seconds at worst instead.
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 3.0
MAX_ATTEMPTS = 2  # the first try and one retry
# Warm containers re-read the secrets this often, so a rotated key reaches them within a minute.
SETTINGS_TTL_S = 60.0


def client(service: str) -> Any:
    """A boto3 client for `service` with short timeouts and one retry (see CONNECT_TIMEOUT_S)."""
    import boto3  # type: ignore[import-not-found, unused-ignore]
    from botocore.config import Config  # type: ignore[import-not-found, unused-ignore]

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    )
    return boto3.client(service, config=config)


def parse_secret(value: str) -> dict[str, str]:
    """Environment variables carried by a secret value (see the module docstring)."""
    text = value.strip()
    if not text.startswith("{"):
        return {"DATABASE_URL": text}
    try:
        data: dict[str, Any] = json.loads(text)
    except ValueError:
        raise ConfigError("the pgqueue secret is neither a PostgreSQL URL nor a JSON object") from None
    found = {k: str(v) for k, v in data.items() if k == "DATABASE_URL" or k.startswith("PGQUEUE_")}
    if found:
        return found
    if {"username", "password", "host"} <= data.keys():
        user, password = quote(str(data["username"]), safe=""), quote(str(data["password"]), safe="")
        db = quote(str(data.get("dbname") or "postgres"), safe="")
        url = f"postgresql://{user}:{password}@{data['host']}:{data.get('port') or 5432}/{db}?sslmode=require"
        return {"DATABASE_URL": url}
    raise ConfigError(
        "the pgqueue secret's JSON has neither DATABASE_URL/PGQUEUE_* keys nor username, password and host"
    )


def secret_arns(environ: Mapping[str, str]) -> list[str]:
    return [arn.strip() for arn in environ.get(SECRET_ARN, "").split(",") if arn.strip()]


def secret_environment(environ: Mapping[str, str], clients: dict[str, Any] | None = None) -> dict[str, str]:
    """The variables of every configured secret, then the parameter, merged (later ones win).
    `clients` caches the boto3 clients between calls."""
    arns, parameter = secret_arns(environ), environ.get(SSM_PARAMETER)
    if not arns and not parameter:
        return {}
    cache = {} if clients is None else clients

    def cached(service: str) -> Any:
        if service not in cache:
            cache[service] = client(service)
        return cache[service]

    merged: dict[str, str] = {}
    for arn in arns:
        value = cached("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        merged.update(parse_secret(str(value)))
    if parameter:
        value = cached("ssm").get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
        merged.update(parse_secret(str(value)))
    return merged


def injected_secret_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with the injected secret values (PGQUEUE_SECRET_VALUE_<n>, in the order of
    n, later ones winning) merged under the variables set directly, which win over all of them."""
    injected = sorted((int(m.group(1)), value) for name, value in environ.items()
                      if (m := INJECTED_SECRET.fullmatch(name)) and value.strip())
    merged: dict[str, str] = {}
    for _, value in injected:
        merged.update(parse_secret(value))
    direct = {k: v for k, v in environ.items() if v != "" and not INJECTED_SECRET.fullmatch(k)}
    return {**merged, **direct}


def lambda_settings(
    environ: Mapping[str, str] | None = None, clients: dict[str, Any] | None = None
) -> Settings:
    """Production-mode settings behind a pooler (RDS Proxy / PgBouncer): the Lambda path always
    polls and never prepares statements on the server."""
    env = dict(os.environ if environ is None else environ)
    direct = {k: v for k, v in env.items() if v != ""}
    merged = {**LAMBDA_DEFAULTS, **secret_environment(env, clients), **direct}
    settings = Settings.from_env(merged, mode="serve", pooler=True)
    if not settings.database_url:
        raise ConfigError(f"no database configured: set DATABASE_URL, {SECRET_ARN} or {SSM_PARAMETER}")
    return settings


class LambdaSettings:
    """The settings of one Lambda container: read when it starts (a bad configuration fails the cold
    start loudly), then re-read from the secrets when `get()` finds them older than `ttl_s`. A failed
    re-read keeps the settings in use and is tried again one TTL later."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        ttl_s: float = SETTINGS_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._clients: dict[str, Any] = {}
        self._monotonic = monotonic
        self.ttl_s = ttl_s
        self.current = lambda_settings(self._environ, self._clients)
        self.read_at = monotonic()
        self.rereads = 0  # successful re-reads since the cold start
        # Without secrets there is nothing to re-read: a container's environment never changes.
        self.refreshing = bool(secret_arns(self._environ) or self._environ.get(SSM_PARAMETER))

    def get(self) -> Settings:
        if not self.refreshing or self._monotonic() - self.read_at < self.ttl_s:
            return self.current
        self.read_at = self._monotonic()
        try:
            fresh = lambda_settings(self._environ, self._clients)
        except Exception as exc:
            log.warning("re-reading the settings failed, the current ones stay in use: %s", exc)
            return self.current
        self.rereads += 1
        if fresh != self.current:
            log.info("settings changed in the secret; using the new ones")
            self.current = fresh
        return self.current


def configure_logging(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    """Inside a Lambda container (AWS_LAMBDA_FUNCTION_NAME is set) replace the runtime's logging with
    PGQUEUE_LOG_LEVEL and PGQUEUE_LOG_FORMAT, as the CLI does for a process; elsewhere (a handler
    imported by tests or tools) leave the host's logging alone. True when it configured."""
    env = os.environ if environ is None else environ
    if not env.get("AWS_LAMBDA_FUNCTION_NAME"):
        return False
    logging_setup.configure(settings.log_level, settings.log_format)
    return True
