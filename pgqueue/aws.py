"""Settings for the AWS Lambda handlers: the environment plus secrets read once per container.

PGQUEUE_SECRET_ARN names a Secrets Manager secret, PGQUEUE_SSM_PARAMETER an SSM (SecureString)
parameter. Its value is either a JSON object of settings ({"DATABASE_URL": ..., "PGQUEUE_SIGNING_KEY":
..., "PGQUEUE_EVENT_KEYS": ...}), an RDS-style credentials object (username, password, host, port,
dbname), or a bare PostgreSQL URL. Variables set directly on the function win over the secret.
boto3 is imported only when a secret is configured; it ships with the Lambda runtime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pgqueue.errors import ConfigError
from pgqueue.settings import Settings

SECRET_ARN = "PGQUEUE_SECRET_ARN"
# On Lambda an executor stays up for work due within a minute (the schedule's period), so sleeps,
# retries and timeouts do not wait for the next scheduled tick; see pgqueue/tick.py.
# A synchronous Lambda response is at most 6 MB (6,291,456 bytes) as serialized JSON.
LAMBDA_RESPONSE_LIMIT = 6_291_456
LAMBDA_DEFAULTS = {"PGQUEUE_TICK_LINGER_S": "60",
                   "PGQUEUE_MAX_API_RESPONSE_BYTES": str(LAMBDA_RESPONSE_LIMIT - 4096)}
SSM_PARAMETER = "PGQUEUE_SSM_PARAMETER"


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


def secret_environment(environ: Mapping[str, str]) -> dict[str, str]:
    arn, parameter = environ.get(SECRET_ARN), environ.get(SSM_PARAMETER)
    if not arn and not parameter:
        return {}
    import boto3  # type: ignore[import-not-found, unused-ignore]

    if arn:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    else:
        value = boto3.client("ssm").get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    return parse_secret(str(value))


def lambda_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Production-mode settings behind a pooler (RDS Proxy / PgBouncer): the Lambda path always
    polls and never prepares statements on the server."""
    env = dict(os.environ if environ is None else environ)
    merged = {**LAMBDA_DEFAULTS, **secret_environment(env), **{k: v for k, v in env.items() if v != ""}}
    settings = Settings.from_env(merged, mode="serve", pooler=True)
    if not settings.database_url:
        raise ConfigError(f"no database configured: set DATABASE_URL, {SECRET_ARN} or {SSM_PARAMETER}")
    return settings
