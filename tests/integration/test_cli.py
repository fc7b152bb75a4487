"""The `pgqueue` command as real processes against real PostgreSQL: migrate (twice, concurrently), serve's
schema check and /health, one-line configuration errors, and `pgqueue dev` on its own embedded database
(as the current user and as a normal user), whose data survives a restart."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import psycopg
import pytest

from pgqueue.db import embedded, migrate
from tests.helpers.procs import ROOT, Proc, free_port, pgqueue_argv, start_process, wait_http

KEY = "5e" * 32
ROOT_USER = os.geteuid() == 0
# Runs `pgqueue dev` as a normal user from a root test process. The interpreter and its site-packages live
# under /root (mode 700) here, out of a normal user's reach, so everything `pgqueue dev` imports later is
# imported first, as root; then the process drops to the user for good and runs the real CLI entry point.
LAUNCH_AS_USER = """
import contextlib, importlib, pkgutil, sys

import api.app, pgqueue.cli, pgqueue.db.embedded, pgqueue.db.migrate
for name in ("glob", "gc", "pwd", "encodings.idna", "fastapi.telemetry._runtime"):
    with contextlib.suppress(ImportError):
        importlib.import_module(name)
for package in ("uvicorn", "h11", "httpcore", "anyio._backends"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        with contextlib.suppress(Exception):  # optional extras (websockets, gunicorn, uvloop, ...)
            importlib.import_module(info.name)

# httpx opens certifi's CA bundle (in site-packages) for every client; a normal user's own install could
# read it, so give this one a readable copy of the same file
import os, shutil, certifi
bundle = os.path.join(os.environ["HOME"], ".cacert.pem")
shutil.copyfile(certifi.where(), bundle)
os.chmod(bundle, 0o644)
certifi.where = lambda: bundle

uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
assert os.geteuid() == uid and os.getuid() == uid
sys.exit(pgqueue.cli.main(sys.argv[3:]))
"""


# --- helpers ------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Children inherit os.environ (tests/helpers/procs.py): no database or pgqueue settings leak in."""
    for name in list(os.environ):
        if name == "DATABASE_URL" or (name.startswith("PGQUEUE_") and name != "PGQUEUE_PG_BIN"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("PGQUEUE_SHUTDOWN_GRACE_S", "2")


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pgqueue_argv(*args),
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    (line,) = lines
    assert line.startswith("pgqueue: "), line
    for text in expected:
        assert text in line, line
    return line


def versions(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT version FROM pgqueue.schema_migrations ORDER BY version").fetchall()
    return [int(version) for (version,) in rows]


def head() -> list[int]:
    return list(range(1, migrate.head_version() + 1))


def start_pgqueue(
    name: str,
    args: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    return start_process(
        name, pgqueue_argv(*args, "--port", str(port)), env=env or {}, url=f"http://127.0.0.1:{port}", cwd=cwd
    )


def stop(proc: Proc) -> int:
    """SIGTERM, then the exit code (the process must go within the test's time budget)."""
    code = proc.terminate(timeout=20)
    assert code == 0, f"{proc.name} exited with {code} after SIGTERM:\n{proc.log()}"
    return code


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; any still running at the end are killed."""
    started: list[Proc] = []
    yield started
    for proc in started:
        if proc.popen.poll() is None:
            proc.kill9()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temp folder every user can traverse (pytest's tmp_path sits under a mode-700 folder as root);
    clusters left running in it are stopped at the end."""
    path = Path(tempfile.mkdtemp(prefix="pgqueue-cli-"))
    path.chmod(0o755)
    yield path
    leaks = [_stop_cluster(pid_file.parent) for pid_file in path.rglob("postmaster.pid")]
    shutil.rmtree(path, ignore_errors=True)
    assert not any(leaks), "a cluster was still running after its `pgqueue dev` stopped"


def _stop_cluster(folder: Path) -> bool:
    """Stop a cluster left in `folder`; True if one was really running."""
    pid = int((folder / "postmaster.pid").read_text().splitlines()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    pg_bin = embedded.find_pg_bin()
    assert pg_bin is not None
    owner = pwd.getpwuid(folder.stat().st_uid).pw_name if ROOT_USER else None
    handle = embedded.EmbeddedPostgres(
        url="", data_dir=folder, port=0, owned=True, pg_bin=pg_bin, run_as=owner, log_file=folder
    )
    handle.stop("immediate")
    return True


def _postmaster(folder: Path) -> tuple[int, int]:
    """(pid, port) of the running cluster in `folder`, from postmaster.pid."""
    lines = (folder / "postmaster.pid").read_text().splitlines()
    return int(lines[0]), int(lines[3])


def _uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(part) for part in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


def send_event(proc: Proc, name: str) -> str:
    response = httpx.post(f"{proc.url}/e/anykey", json={"name": name, "data": {"n": 1}}, timeout=10)
    assert response.status_code == 200, response.text
    (event_id,) = response.json()["ids"]
    return str(event_id)


def fetch_event(proc: Proc, event_id: str) -> httpx.Response:
    return httpx.get(f"{proc.url}/v1/events/{event_id}", timeout=10)


# --- configuration errors: exit code 2 and one line naming the fix ------------------------------------------


# `dev` cases point at a closed port: were the check under test missing, they fail fast instead of starting
# an embedded database and a server
NO_SERVER = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"}


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["serve"], {}, ["PGQUEUE_SIGNING_KEY", "--signing-key"]),
        # No event key configured is not an error (keys may live in the database: `pgqueue
        # event-keys create`); what stops this one is the missing database.
        (["serve", "--signing-key", KEY], {}, ["no database configured", "DATABASE_URL"]),
        (["serve", "--signing-key", "not-a-hex-key", "--event-key", "ek"], {}, ["--signing-key", "not hex"]),
        (["serve", "--event-key", "ek"], {"PGQUEUE_SIGNING_KEY": "xyz"}, ["PGQUEUE_SIGNING_KEY", "not hex"]),
        (
            ["dev"],
            {"PGQUEUE_SIGNNG_KEY": KEY, **NO_SERVER},
            ["unknown setting PGQUEUE_SIGNNG_KEY; did you mean PGQUEUE_SIGNING_KEY?"],
        ),
        (["serve", "--signing-key", KEY, "--event-key", "ek"], {}, ["DATABASE_URL", "--database-url"]),
        (["migrate"], {}, ["no database configured", "DATABASE_URL"]),
        (["worker"], {}, ["no database configured", "DATABASE_URL"]),
        (["dev", "--log-level", "loud"], NO_SERVER, ["--log-level"]),
    ],
    ids=[
        "no-signing-key",
        "no-event-keys-is-fine",
        "non-hex-flag",
        "non-hex-env",
        "unknown-env",
        "serve-no-database",
        "migrate-no-database",
        "worker-no-database",
        "bad-log-level",
    ],
)
def test_configuration_errors_are_one_line_with_the_fix(
    args: list[str], env: dict[str, str], expected: list[str]
) -> None:
    assert_one_line_error(run_cli(*args, env=env), *expected)


def test_an_unreachable_database_is_one_line_not_a_traceback() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"

    for args in (["migrate"], ["serve", "--signing-key", KEY, "--event-key", "ek"]):
        done = run_cli(*args, env={"DATABASE_URL": url})

        assert_one_line_error(done, "cannot reach the database", "DATABASE_URL")


# --- migrate ------------------------------------------------------------------------------------------------


def test_migrate_twice_applies_everything_then_nothing(empty_database_url: str) -> None:
    first = run_cli("migrate", env={"DATABASE_URL": empty_database_url})
    second = run_cli("migrate", "--database-url", empty_database_url)

    assert first.returncode == 0, first.stderr
    assert f"at version {migrate.head_version()} (applied: {head()})" in first.stdout
    assert second.returncode == 0, second.stderr
    assert f"at version {migrate.head_version()} (applied: none)" in second.stdout
    assert versions(empty_database_url) == head()


def test_concurrent_migrate_processes_both_succeed_and_record_each_version_once(
    empty_database_url: str,
) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    children = [
        subprocess.Popen(
            pgqueue_argv("migrate"),
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [child.communicate(timeout=60) for child in children]

    assert [child.returncode for child in children] == [0, 0, 0], outputs
    applied = [out for out, _ in outputs if f"(applied: {head()})" in out]
    assert len(applied) == 1, outputs
    assert sum("(applied: none)" in out for out, _ in outputs) == 2, outputs
    assert versions(empty_database_url) == head()


# --- serve and the schema check -----------------------------------------------------------------------------

SERVE = ["serve", "--host", "127.0.0.1", "--signing-key", KEY, "--event-key", "ek"]
DELETE_LAST_VERSION = (
    "DELETE FROM pgqueue.schema_migrations"
    " WHERE version = (SELECT max(version) FROM pgqueue.schema_migrations)"
)


@pytest.mark.parametrize("schema", ["missing", "behind"])
def test_serve_refuses_an_unmigrated_or_outdated_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        if schema == "missing":
            conn.execute("DROP SCHEMA pgqueue CASCADE")
        else:
            conn.execute(DELETE_LAST_VERSION)

    done = run_cli(*SERVE, "--port", str(free_port()), env={"DATABASE_URL": database_url})

    assert_one_line_error(done, "run `pgqueue migrate`", "--migrate")


def test_serve_migrate_starts_and_health_turns_503_when_the_schema_falls_behind(
    empty_database_url: str, procs: list[Proc]
) -> None:
    port = free_port()
    # PGQUEUE_HOST instead of --host: an explicit loopback setting must win over serve's 0.0.0.0 default
    args = ["serve", "--signing-key", KEY, "--event-key", "ek", "--migrate"]
    env = {"DATABASE_URL": empty_database_url, "PGQUEUE_HOST": "127.0.0.1"}
    proc = start_pgqueue("cli-serve", args, port, env=env)
    procs.append(proc)
    wait_http(proc, "/health", timeout=30)
    assert f"on http://127.0.0.1:{port}" in proc.log()

    healthy = httpx.get(f"{proc.url}/health", timeout=5)
    assert healthy.json() == {"status": "ok", "mode": "serve", "schema_version": migrate.head_version()}
    assert versions(empty_database_url) == head()

    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(DELETE_LAST_VERSION)
    behind = httpx.get(f"{proc.url}/health", timeout=5)

    assert behind.status_code == 503
    assert behind.json()["status"] == 503
    assert "run `pgqueue migrate`" in behind.json()["error"]

    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA pgqueue CASCADE")
    gone = httpx.get(f"{proc.url}/health", timeout=5)

    assert gone.status_code == 503
    assert "no pgqueue schema: run `pgqueue migrate`" in gone.json()["error"]
    stop(proc)


# --- dev ----------------------------------------------------------------------------------------------------


def test_dev_with_database_url_migrates_and_uses_it(
    empty_database_url: str, workdir: Path, procs: list[Proc]
) -> None:
    data_dir = workdir / "pgdata"
    proc = start_pgqueue(
        "cli-dev-url",
        ["dev", "--data-dir", str(data_dir)],
        free_port(),
        env={"DATABASE_URL": empty_database_url},
    )
    procs.append(proc)
    wait_http(proc, "/health", timeout=30)

    event_id = send_event(proc, "x/y")

    assert versions(empty_database_url) == head()
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        stored = conn.execute("SELECT name FROM pgqueue.events WHERE id = %s", (event_id,)).fetchone()
    assert stored == ("x/y",)
    assert not data_dir.exists(), "no embedded database when DATABASE_URL is set"
    stop(proc)


def test_dev_without_database_url_keeps_its_embedded_data_across_restarts(
    workdir: Path, procs: list[Proc]
) -> None:
    data_dir = workdir / "pgdata"
    first = start_pgqueue("cli-dev-embedded", ["dev", "--data-dir", str(data_dir)], free_port(), cwd=workdir)
    procs.append(first)
    wait_http(first, "/health", timeout=60)
    assert httpx.get(f"{first.url}/health", timeout=5).json()["mode"] == "dev"

    event_id = send_event(first, "x/y")
    _, pg_port = _postmaster(data_dir)
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/pgqueue", autocommit=True) as conn:
        data_directory, fsync = conn.execute(
            "SELECT current_setting('data_directory'), current_setting('fsync')"
        ).fetchone() or (None, None)
    assert Path(str(data_directory)) == data_dir
    assert fsync == "on", "the embedded database keeps fsync on"
    stop(first)
    assert not (data_dir / "postmaster.pid").exists(), "dev stops the cluster it started"

    # same folder, chosen this time through PGQUEUE_DATA_DIR from another working directory
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    second = start_pgqueue(
        "cli-dev-embedded-again", ["dev"], free_port(), env={"PGQUEUE_DATA_DIR": str(data_dir)}, cwd=elsewhere
    )
    procs.append(second)
    wait_http(second, "/health", timeout=60)

    kept = fetch_event(second, event_id)

    assert kept.status_code == 200, kept.text
    assert (kept.json()["data"]["id"], kept.json()["data"]["name"]) == (event_id, "x/y")
    assert not (elsewhere / ".pgqueue").exists()
    stop(second)
    assert not (data_dir / "postmaster.pid").exists()


def _start_dev_as_normal_user(
    name: str, args: Sequence[str], port: int, home: Path, user: pwd.struct_passwd
) -> Proc:
    env = {"HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = ["dev", *args, "--port", str(port)]
    if ROOT_USER:
        # The checkout may sit in a folder only root can read (CI clones into a 0700 temporary
        # folder): the user runs a readable copy of the code, as an installed package would be.
        code = home.parent / "code"
        if not code.exists():
            for part in ("pgqueue", "api", "sql"):
                shutil.copytree(ROOT / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
            for path in [code, *code.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        env["PYTHONPATH"] = str(code)
        command = [sys.executable, "-c", LAUNCH_AS_USER, str(user.pw_uid), str(user.pw_gid), *argv]
    else:
        command = pgqueue_argv(*argv)  # already a normal user
    return start_process(name, command, env=env, url=f"http://127.0.0.1:{port}", cwd=home)


def test_dev_runs_as_a_normal_user_with_the_default_data_folder(workdir: Path, procs: list[Proc]) -> None:
    user = pwd.getpwnam("nobody") if ROOT_USER else pwd.getpwuid(os.geteuid())
    home = workdir / "home"
    home.mkdir()
    if ROOT_USER:
        os.chown(home, user.pw_uid, user.pw_gid)
    data_dir = home / ".pgqueue" / "pgdata"  # the default: ./.pgqueue/pgdata under the working directory

    first = _start_dev_as_normal_user("cli-dev-user", [], free_port(), home, user)
    procs.append(first)
    wait_http(first, "/health", timeout=60)
    event_id = send_event(first, "x/y")

    assert _uids(first.popen.pid) == [user.pw_uid] * 4, "the whole `pgqueue dev` runs as the user"
    postmaster_pid, pg_port = _postmaster(data_dir)
    assert _uids(postmaster_pid) == [user.pw_uid] * 4, "so does its PostgreSQL"
    assert data_dir.stat().st_uid == user.pw_uid
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/pgqueue", autocommit=True) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
    stop(first)
    assert not (data_dir / "postmaster.pid").exists()

    second = _start_dev_as_normal_user(
        "cli-dev-user-again", ["--data-dir", str(data_dir)], free_port(), home, user
    )
    procs.append(second)
    wait_http(second, "/health", timeout=60)

    kept = fetch_event(second, event_id)

    assert kept.status_code == 200, kept.text
    assert kept.json()["data"]["name"] == "x/y"
    stop(second)
    assert not (data_dir / "postmaster.pid").exists()


def test_sigterm_while_dev_starts_its_database_still_exits_cleanly(workdir: Path, procs: list[Proc]) -> None:
    # SIGTERM before uvicorn owns the signal (initdb, migrations) must not leave a cluster behind
    data_dir = workdir / "pgdata"
    proc = start_pgqueue("cli-dev-early-term", ["dev", "--data-dir", str(data_dir)], free_port(), cwd=workdir)
    procs.append(proc)
    deadline = time.monotonic() + 30
    while not (data_dir / "postmaster.pid").exists():
        assert proc.popen.poll() is None, proc.log()
        assert time.monotonic() < deadline, f"no cluster started:\n{proc.log()}"
        time.sleep(0.02)
    os.killpg(proc.popen.pid, signal.SIGTERM)
    code = proc.popen.wait(timeout=30)

    assert code == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()
    deadline = time.monotonic() + 10
    while (data_dir / "postmaster.pid").exists():
        assert time.monotonic() < deadline, f"the cluster outlived `pgqueue dev`:\n{proc.log()}"
        time.sleep(0.05)


# --- event keys ---------------------------------------------------------------------------------------------


def test_event_keys_create_list_and_revoke(database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    created = run_cli("event-keys", "create", "billing", "--event", "billing/*", "--event", "shop/paid",
                      env=env)
    assert created.returncode == 0, created.stderr
    row = json.loads(created.stdout)
    assert row["key"].startswith("evk_") and row["event_names"] == ["billing/*", "shop/paid"]
    assert "only time the key is shown" in created.stderr
    listed = [json.loads(line) for line in run_cli("event-keys", "list", env=env).stdout.splitlines()]
    assert [(k["id"], k["revoked_at"]) for k in listed] == [(row["id"], None)]
    assert row["key"] not in json.dumps(listed)
    revoked = run_cli("event-keys", "revoke", row["id"], env=env)
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked_at"]
    assert run_cli("event-keys", "list", "--active", env=env).stdout.strip() == ""
    missing = run_cli("event-keys", "revoke", "nope", env=env)
    assert_one_line_error(missing, "event key nope not found")
    bad = run_cli("event-keys", "create", "x", "--event", "a*b", env=env)
    assert_one_line_error(bad, "wildcard")
