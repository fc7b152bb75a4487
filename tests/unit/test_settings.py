"""Settings from the environment and flags: defaults, parsing, errors naming the setting and the fix."""

from __future__ import annotations

import pytest

from pgqueue.errors import ConfigError
from pgqueue.settings import Settings

KEY = "a1" * 32
SERVE = {"PGQUEUE_SIGNING_KEY": KEY, "PGQUEUE_EVENT_KEYS": "ek1"}


def _error(environ: dict[str, str], **overrides: object) -> str:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ, **overrides)
    message = raised.value.message
    assert "\n" not in message, "CLI errors are one line"
    return message


def test_dev_needs_nothing() -> None:
    settings = Settings.from_env({})

    assert settings.mode == "dev"
    assert not settings.production
    assert settings.database_url is None  # the CLI starts the embedded database
    assert (settings.host, settings.port) == ("127.0.0.1", 8288)
    assert settings.signing_keys == ()
    assert settings.event_keys == ()


def test_environment_values_are_parsed_by_type() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@db/pgqueue",
            "PGQUEUE_PORT": "9000",
            "PGQUEUE_BACKOFF_SCALE": "0.01",
            "PGQUEUE_EVENT_KEYS": " a, b,,c ",
            "PGQUEUE_LEASE_MS": "5000",
            "PGQUEUE_DATA_DIR": "/srv/pg",
            "PGQUEUE_LOG_LEVEL": "DEBUG",
            "HOME": "/root",  # not ours: ignored
        }
    )

    assert settings.database_url == "postgresql://u@db/pgqueue"
    assert settings.port == 9000
    assert settings.backoff_scale == 0.01
    assert settings.event_keys == ("a", "b", "c")
    assert settings.lease_ms == 5000
    assert settings.data_dir == "/srv/pg"
    assert settings.log_level == "DEBUG"


def test_empty_variables_count_as_unset() -> None:
    settings = Settings.from_env({"PGQUEUE_PORT": "", "DATABASE_URL": ""})

    assert settings.port == 8288
    assert settings.database_url is None


def test_flags_override_the_environment_and_absent_flags_do_not() -> None:
    environ = {"PGQUEUE_PORT": "9000", "DATABASE_URL": "postgresql://env/db"}

    settings = Settings.from_env(environ, port=9100, database_url=None, host=None)

    assert settings.port == 9100
    assert settings.database_url == "postgresql://env/db"
    assert settings.host == "127.0.0.1"


def test_serve_with_keys_is_production() -> None:
    settings = Settings.from_env(SERVE, mode="serve")

    assert settings.production
    assert settings.signing_keys == (KEY,)
    assert settings.event_keys == ("ek1",)


def test_prefixed_signing_keys_and_a_fallback_are_accepted() -> None:
    environ = {**SERVE, "PGQUEUE_SIGNING_KEY": f"signkey-prod-{KEY}"}
    environ["PGQUEUE_SIGNING_KEY_FALLBACK"] = "b2" * 32

    settings = Settings.from_env(environ, mode="serve")

    assert settings.signing_keys == (f"signkey-prod-{KEY}", "b2" * 32)


def test_serve_without_a_signing_key_names_the_variable_the_flag_and_how_to_make_one() -> None:
    message = _error({"PGQUEUE_EVENT_KEYS": "ek1"}, mode="serve")

    assert "PGQUEUE_SIGNING_KEY" in message
    assert "--signing-key" in message
    assert "openssl rand -hex 32" in message


def test_serve_without_event_keys_in_the_environment_is_allowed() -> None:
    # Event keys may live in the database (POST /v1/event-keys, `pgqueue event-keys create`).
    settings = Settings.from_env({"PGQUEUE_SIGNING_KEY": KEY}, mode="serve")

    assert settings.event_keys == () and settings.production


def test_a_signing_key_from_a_flag_counts() -> None:
    settings = Settings.from_env({"PGQUEUE_EVENT_KEYS": "ek1"}, mode="serve", signing_key=KEY)

    assert settings.signing_key == KEY


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PGQUEUE_SIGNING_KEY", "not-hex-at-all", "is not hex"),
        ("PGQUEUE_SIGNING_KEY", "abc", "odd number of hex digits"),
        ("PGQUEUE_SIGNING_KEY", "signkey-prod-", "no hex after it"),
        ("PGQUEUE_SIGNING_KEY_FALLBACK", "zz" * 16, "is not hex"),
    ],
)
def test_a_malformed_signing_key_says_what_is_wrong(variable: str, value: str, expected: str) -> None:
    message = _error({**SERVE, variable: value}, mode="serve")

    assert message.startswith(f"{variable} ")
    assert expected in message
    assert "hex" in message


def test_a_malformed_signing_key_is_refused_in_dev_too() -> None:
    assert "PGQUEUE_SIGNING_KEY" in _error({"PGQUEUE_SIGNING_KEY": "xyz"})


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("PGQUEUE_SIGNNG_KEY", "PGQUEUE_SIGNING_KEY"),
        ("PGQUEUE_EVENT_KEY", "PGQUEUE_EVENT_KEYS"),
        ("PGQUEUE_LEASE", "PGQUEUE_LEASE_MS"),
        ("PGQUEUE_DATADIR", "PGQUEUE_DATA_DIR"),
        ("PGQUEUE_DATABASE_URL", "DATABASE_URL"),
        ("PGQUEUE_CONCURRENCY", "PGQUEUE_WORKER_CONCURRENCY"),
    ],
)
def test_an_unknown_variable_gets_a_did_you_mean(variable: str, suggestion: str) -> None:
    message = _error({variable: "1"})

    assert message == f"unknown setting {variable}; did you mean {suggestion}?"


def test_an_unknown_variable_with_nothing_close_is_still_refused() -> None:
    # the shared PGQUEUE_ prefix alone must not make a name look close
    assert _error({"PGQUEUE_FOO": "1"}) == "unknown setting PGQUEUE_FOO"


def test_a_typo_is_reported_before_missing_serve_keys() -> None:
    message = _error({"PGQUEUE_SIGNNG_KEY": KEY, "PGQUEUE_EVENT_KEYS": "ek1"}, mode="serve")

    assert "did you mean PGQUEUE_SIGNING_KEY?" in message


def test_test_harness_variables_are_not_settings_but_not_refused() -> None:
    Settings.from_env({"PGQUEUE_TEST_DATABASE_URL": "postgresql://x/y", "PGQUEUE_TEST_KEEP": "1"})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PGQUEUE_PORT": "eighty"}, "PGQUEUE_PORT must be a number, got 'eighty'"),
        ({"PGQUEUE_BACKOFF_SCALE": "fast"}, "PGQUEUE_BACKOFF_SCALE must be a number"),
        ({"PGQUEUE_POLL_INTERVAL_MS": "0"}, "PGQUEUE_POLL_INTERVAL_MS must be positive"),
        ({"PGQUEUE_POOL_SIZE": "-1"}, "PGQUEUE_POOL_SIZE must be positive"),
        ({"PGQUEUE_WORKER_CONCURRENCY": "0"}, "PGQUEUE_WORKER_CONCURRENCY must be positive"),
        ({"PGQUEUE_CALL_TIMEOUT_S": "0"}, "PGQUEUE_CALL_TIMEOUT_S must be positive"),
        ({"PGQUEUE_LEASE_MS": "500"}, "PGQUEUE_LEASE_MS must be at least 1000"),
        ({"PGQUEUE_BACKOFF_SCALE": "-1"}, "PGQUEUE_BACKOFF_SCALE must be >= 0"),
        ({"PGQUEUE_SHUTDOWN_GRACE_S": "-5"}, "PGQUEUE_SHUTDOWN_GRACE_S must be >= 0"),
        ({"PGQUEUE_PORT": "70000"}, "PGQUEUE_PORT (or --port) must be between 1 and 65535"),
        ({"PGQUEUE_LOG_LEVEL": "loud"}, "PGQUEUE_LOG_LEVEL (or --log-level) must be one of"),
        ({"PGQUEUE_LOGIN_MAX_FAILURES": "0"}, "PGQUEUE_LOGIN_MAX_FAILURES must be positive"),
        ({"PGQUEUE_LOGIN_ACCOUNT_MAX_FAILURES": "-1"}, "0 turns the account-wide limit off"),
        ({"PGQUEUE_LOGIN_LOCKOUT_S": "0"}, "PGQUEUE_LOGIN_LOCKOUT_S must be positive"),
        ({"PGQUEUE_LOGIN_MAX_LOCKOUT_S": "10"}, "PGQUEUE_LOGIN_MAX_LOCKOUT_S (10) must be at least"),
        ({"PGQUEUE_LOGIN_MAX_LOCKOUT_S": "100000"}, "PGQUEUE_LOGIN_MAX_LOCKOUT_S must be at most 86400"),
        ({"PGQUEUE_ALLOWED_HOSTS": "https://pgqueue.example"}, "PGQUEUE_ALLOWED_HOSTS takes comma-separated"),
        ({"PGQUEUE_ALLOWED_HOSTS": "pgqueue.example:8288"}, "without scheme, port or path"),
        ({"PGQUEUE_ALLOWED_HOSTS": "ok.example,a/b"}, "got 'a/b'"),
        ({"PGQUEUE_ENDPOINT_OUTPUT_ORIGIN": "outputs.example"}, "not an http(s) URL with a host"),
        ({"PGQUEUE_ENDPOINT_OUTPUT_ORIGIN": "https://outputs.example/out"}, "scheme://host[:port] only"),
        ({"PGQUEUE_ENDPOINT_OUTPUT_ORIGIN": "https://u:p@outputs.example"}, "has a path, query or user"),
        ({"PGQUEUE_ENDPOINT_OUTPUT_ORIGIN": "https://outputs.example:port"}, "port is not a number"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], expected: str) -> None:
    assert expected in _error(environ)


def test_overrides_are_validated_too() -> None:
    settings = Settings.from_env({})

    with pytest.raises(ConfigError, match="PGQUEUE_SIGNING_KEY"):
        settings.with_overrides(signing_key="nothex")
    assert settings.with_overrides(port=None, host="0.0.0.0").host == "0.0.0.0"
    assert settings.with_overrides(port=None).port == 8288, "None means: keep"


def test_login_throttling_defaults_and_overrides() -> None:
    default = Settings.from_env({})
    assert (default.login_max_failures, default.login_account_max_failures) == (5, 20)
    assert (default.login_lockout_s, default.login_max_lockout_s) == (15.0, 900.0)
    tuned = Settings.from_env({"PGQUEUE_LOGIN_MAX_FAILURES": "3", "PGQUEUE_LOGIN_ACCOUNT_MAX_FAILURES": "0",
                               "PGQUEUE_LOGIN_LOCKOUT_S": "2.5", "PGQUEUE_LOGIN_MAX_LOCKOUT_S": "60"})
    assert (tuned.login_max_failures, tuned.login_account_max_failures) == (3, 0)
    assert (tuned.login_lockout_s, tuned.login_max_lockout_s) == (2.5, 60.0)


def test_the_admin_password_needs_12_characters_and_the_error_does_not_show_it() -> None:
    message = _error({**SERVE, "PGQUEUE_ADMIN_PASSWORD": "hunter2hunte"[:11]})
    assert message.startswith("PGQUEUE_ADMIN_PASSWORD must be at least 12 characters long, it has 11")
    assert "openssl rand" in message and "hunter2hunt" not in message
    assert Settings.from_env({**SERVE, "PGQUEUE_ADMIN_PASSWORD": "x" * 12}).admin_password == "x" * 12


def test_allowed_hosts_are_a_list_of_names_addresses_and_patterns() -> None:
    environ = {"PGQUEUE_ALLOWED_HOSTS": "pgqueue.internal, .dev.example,10.0.0.5,[fd00::1],*"}
    settings = Settings.from_env(environ)
    assert settings.allowed_hosts == ("pgqueue.internal", ".dev.example", "10.0.0.5", "[fd00::1]", "*")
    assert Settings.from_env({}).allowed_hosts == ()
    assert "did you mean PGQUEUE_ALLOWED_HOSTS" in _error({"PGQUEUE_ALLOWED_HOST": "x"})


def test_the_endpoint_output_origin_is_kept_as_an_origin() -> None:
    settings = Settings.from_env({"PGQUEUE_ENDPOINT_OUTPUT_ORIGIN": "https://Outputs.Example:8443/"})
    assert settings.output_origin == "https://outputs.example:8443"
    assert Settings.from_env({}).output_origin is None


@pytest.mark.parametrize(
    ("env", "hours"),
    [
        ({}, 72),  # a third of the default 7-day window, in whole days
        ({"PGQUEUE_RETENTION_DAYS": "1"}, 24),
        ({"PGQUEUE_RETENTION_DAYS": "30"}, 240),
        ({"PGQUEUE_RETENTION_DAYS": "365"}, 744),  # at most 31 days
        ({"PGQUEUE_RETENTION_DAYS": "0"}, 720),  # everything kept: monthly sets
        ({"PGQUEUE_PARTITION_HOURS": "6"}, 6),
    ],
)
def test_the_history_partition_width_follows_the_retention_window(env: dict[str, str], hours: int) -> None:
    assert Settings.from_env(env).partition_width_hours == hours


@pytest.mark.parametrize("value", ["0", "1.5", "745"])
def test_a_partition_width_that_is_not_whole_hours_up_to_31_days_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="PGQUEUE_PARTITION_HOURS"):
        Settings.from_env({"PGQUEUE_PARTITION_HOURS": value}).validate()
