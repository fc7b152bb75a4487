"""The embedded database against real clusters: start, reuse, restart, crash, and the root/user split."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest

from pgqueue import errors
from pgqueue.db import embedded

FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[2]
root_only = pytest.mark.skipif(not ROOT, reason="switching to another user needs root")


class Clusters:
    """Every cluster a test starts, stopped (and its fallback folder removed) when the test ends."""

    def __init__(self) -> None:
        self.folders: list[Path] = []
        self.removable: list[Path] = []

    def start(self, folder: Path, settings: Mapping[str, str] | None = None) -> embedded.EmbeddedPostgres:
        db = embedded.start(folder, settings=settings)
        self.track(db.data_dir)
        return db

    def track(self, folder: Path) -> None:
        if folder not in self.folders:
            self.folders.append(folder)

    def stop_all(self) -> None:
        pg_bin = embedded.find_pg_bin()
        assert pg_bin is not None
        leaks: list[str] = []
        for folder in self.folders:
            if not (folder / "postmaster.pid").exists():
                continue
            owner = pwd.getpwuid(folder.stat().st_uid).pw_name if ROOT else None
            handle = embedded.EmbeddedPostgres(
                url="", data_dir=folder, port=0, owned=True, pg_bin=pg_bin, run_as=owner, log_file=folder
            )
            try:
                handle.stop("immediate")
            except errors.PgQueueError as exc:
                if not _stale(folder):
                    leaks.append(f"{folder}: {exc}")
        for folder in self.removable:
            shutil.rmtree(folder, ignore_errors=True)
        assert not leaks, leaks


@pytest.fixture
def clusters() -> Iterator[Clusters]:
    tracked = Clusters()
    yield tracked
    tracked.stop_all()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temp folder every user can traverse (pytest's tmp_path sits under a mode-700 folder as root)."""
    path = Path(tempfile.mkdtemp(prefix="pgqueue-embedded-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _query(url: str, statement: LiteralString) -> tuple[object, ...]:
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(statement).fetchone()
    assert row is not None
    return tuple(row)


def _postmaster_pid(folder: Path) -> int:
    return int((folder / "postmaster.pid").read_text().splitlines()[0])


def _gone(pid: int) -> bool:
    """Exited, or a zombie nobody reaps (a container's init may not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _stale(folder: Path) -> bool:
    return _gone(_postmaster_pid(folder))


def _uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(part) for part in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


def test_start_serves_the_pgqueue_database_on_loopback(workdir: Path, clusters: Clusters) -> None:
    db = clusters.start(workdir / "pgdata", settings=FAST)

    assert db.owned
    assert db.url == f"postgresql://postgres@127.0.0.1:{db.port}/pgqueue"
    assert db.admin_url() == f"postgresql://postgres@127.0.0.1:{db.port}/postgres"
    database, user, address, port, listen, connections, fsync = _query(
        db.url,
        "SELECT current_database(), current_user, host(inet_server_addr()), inet_server_port(), "
        "current_setting('listen_addresses'), current_setting('max_connections')::int, "
        "current_setting('fsync')",
    )
    assert (database, user, address, port) == ("pgqueue", "postgres", "127.0.0.1", db.port)
    assert listen == "127.0.0.1"
    assert isinstance(connections, int) and connections >= 200
    assert fsync == "off"


def test_data_survives_a_restart_without_a_new_initdb(workdir: Path, clusters: Clusters) -> None:
    first = clusters.start(workdir / "pgdata", settings=FAST)
    with psycopg.connect(first.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    (system_id,) = _query(first.url, "SELECT system_identifier FROM pg_control_system()")
    first.stop()
    assert not (first.data_dir / "postmaster.pid").exists()

    second = clusters.start(workdir / "pgdata")

    assert second.owned
    assert second.data_dir == first.data_dir
    assert _query(second.url, "SELECT note FROM kept") == ("still here",)
    assert _query(second.url, "SELECT system_identifier FROM pg_control_system()") == (system_id,)
    assert _query(second.url, "SHOW fsync") == ("on",), "durability is the default without test settings"


def test_a_second_start_reuses_the_running_server(workdir: Path, clusters: Clusters) -> None:
    first = clusters.start(workdir / "pgdata", settings=FAST)

    second = clusters.start(workdir / "pgdata", settings=FAST)

    assert not second.owned
    assert (second.port, second.url, second.data_dir) == (first.port, first.url, first.data_dir)
    assert _postmaster_pid(first.data_dir) == _postmaster_pid(second.data_dir)
    second.stop()  # not owned: a no-op
    assert _query(first.url, "SELECT 1") == (1,)
    first.stop()
    assert not (first.data_dir / "postmaster.pid").exists()


def test_concurrent_starts_on_one_folder_share_one_server(workdir: Path, clusters: Clusters) -> None:
    def start() -> embedded.EmbeddedPostgres:
        return clusters.start(workdir / "pgdata", settings=FAST)

    with ThreadPoolExecutor(max_workers=2) as pool:
        started = [future.result() for future in [pool.submit(start), pool.submit(start)]]

    assert sorted(db.owned for db in started) == [False, True]
    assert started[0].url == started[1].url


def test_a_stale_postmaster_pid_after_kill_9_does_not_block_start(workdir: Path, clusters: Clusters) -> None:
    # synchronous_commit stays on: the row must reach the kernel before the kill
    first = clusters.start(workdir / "pgdata", settings={"fsync": "off"})
    with psycopg.connect(first.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept AS SELECT 'survived' AS note")
    pid = _postmaster_pid(first.data_dir)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, "postmaster did not die"
        time.sleep(0.05)
    assert (first.data_dir / "postmaster.pid").exists(), "the crash leaves its pid file behind"

    second = clusters.start(workdir / "pgdata", settings={"fsync": "off"})

    assert second.owned
    assert _postmaster_pid(second.data_dir) != pid
    assert _query(second.url, "SELECT note FROM kept") == ("survived",)


def test_a_stale_postmaster_pid_of_a_dead_process_is_left_to_pg_ctl(
    workdir: Path, clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    first = clusters.start(workdir / "pgdata", settings=FAST)
    pid_file = first.data_dir / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    first.stop()
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid is free, not a zombie
    pid_file.write_text("\n".join([str(dead.pid), *lines[1:]]) + "\n")
    owner = first.data_dir.stat()
    os.chown(pid_file, owner.st_uid, owner.st_gid)

    with caplog.at_level(logging.INFO, logger=embedded.__name__):
        second = clusters.start(workdir / "pgdata", settings=FAST)

    assert second.owned
    assert _postmaster_pid(second.data_dir) != dead.pid
    assert not [record for record in caplog.records if "removing stale" in record.getMessage()]


@root_only
def test_under_root_the_server_runs_as_an_unprivileged_user(workdir: Path, clusters: Clusters) -> None:
    db = clusters.start(workdir / "pgdata", settings=FAST)

    # read the backend's uids while its connection is open: it may exit as soon as that closes
    with psycopg.connect(db.url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('data_directory'), pg_backend_pid()").fetchone()
        assert row is not None
        data_directory, backend = row
        backend_uids = _uids(backend)

    assert isinstance(data_directory, str) and isinstance(backend, int)
    assert Path(data_directory) == db.data_dir
    assert db.data_dir.stat().st_uid != 0
    assert db.run_as is not None and pwd.getpwnam(db.run_as).pw_uid == db.data_dir.stat().st_uid
    assert 0 not in _uids(_postmaster_pid(db.data_dir))
    assert 0 not in backend_uids


@root_only
def test_under_root_an_unreachable_folder_moves_to_a_reachable_one(
    workdir: Path, clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    private = workdir / "private"
    private.mkdir(mode=0o700)
    requested = private / "pgdata"

    with caplog.at_level(logging.WARNING, logger=embedded.__name__):
        db = clusters.start(requested, settings=FAST)
    clusters.removable.append(db.data_dir)

    assert db.data_dir != requested
    assert not requested.exists()
    assert db.data_dir.parent in {root for root in embedded.FALLBACK_ROOTS} | {Path(tempfile.gettempdir())}
    assert _query(db.url, "SELECT current_setting('data_directory')") == (str(db.data_dir),)
    (line,) = [record.getMessage() for record in caplog.records if str(db.data_dir) in record.getMessage()]
    assert str(requested) in line

    db.stop()
    again = clusters.start(requested, settings=FAST)
    assert again.data_dir == db.data_dir, "the fallback folder is stable across starts"


@root_only
def test_a_normal_user_runs_the_server_directly(workdir: Path, clusters: Clusters) -> None:
    user = pwd.getpwnam("nobody")
    home = workdir / "home"
    home.mkdir()
    os.chown(home, user.pw_uid, user.pw_gid)
    folder = home / "pgdata"
    clusters.track(folder)
    # The interpreter lives under /root here, out of nobody's reach: import everything as root, then
    # drop to nobody before start(), as a normal user's process would be from the beginning.
    child = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "import psycopg\n"
        "from pgqueue.db import embedded\n"
        f"os.setgroups([]); os.setgid({user.pw_gid}); os.setuid({user.pw_uid})\n"
        "assert os.geteuid() != 0\n"
        f"db = embedded.start(Path(sys.argv[1]), settings={FAST!r})\n"
        "print(db.url, db.owned, db.run_as)\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(REPO)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    command = [sys.executable, "-c", child, str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    url, owned, run_as = done.stdout.split()
    assert (owned, run_as) == ("True", "None")
    assert folder.stat().st_uid == user.pw_uid
    assert _query(url, "SELECT current_setting('data_directory')") == (str(folder),)
    assert _uids(_postmaster_pid(folder)) == [user.pw_uid] * 4

    # root meets the cluster nobody started: reuses it, runs pg_ctl as its owner, stops it on request
    reused = clusters.start(folder)
    assert (reused.url, reused.owned, reused.run_as) == (url, False, "nobody")
    reused.stop(force=True)
    assert not (folder / "postmaster.pid").exists()


def test_without_binaries_the_error_names_both_fixes(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(workdir))
    monkeypatch.setattr(embedded, "SYSTEM_BIN_GLOBS", ())
    monkeypatch.setattr(embedded, "PGSERVER_MODULE", "pgqueue_test_no_such_module")

    assert embedded.find_pg_bin() is None
    with pytest.raises(errors.ConfigError) as raised:
        embedded.start(workdir / "pgdata")
    assert "install PostgreSQL" in raised.value.message
    assert "pip install pgserver" in raised.value.message
    assert "DATABASE_URL" in raised.value.message


def test_pg_bin_env_accepts_a_folder_or_pg_ctl_and_refuses_anything_else(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = embedded.find_pg_bin()
    assert found is not None
    monkeypatch.setenv("PGQUEUE_PG_BIN", str(found))
    assert embedded.find_pg_bin() == found
    monkeypatch.setenv("PGQUEUE_PG_BIN", str(found / "pg_ctl"))
    assert embedded.find_pg_bin() == found
    monkeypatch.setenv("PGQUEUE_PG_BIN", str(workdir))
    with pytest.raises(errors.ConfigError, match="PGQUEUE_PG_BIN"):
        embedded.find_pg_bin()


def test_settings_pgqueue_manages_are_refused(workdir: Path) -> None:
    with pytest.raises(errors.ConfigError, match="'port' is managed by pgqueue"):
        embedded.start(workdir / "pgdata", settings={"port": "5432"})
    with pytest.raises(errors.ConfigError, match="not a valid setting"):
        embedded.start(workdir / "pgdata", settings={"work_mem = '1GB'\nfsync": "off"})
    assert not (workdir / "pgdata").exists()


def test_a_folder_with_other_files_is_refused(workdir: Path) -> None:
    (workdir / "pgdata").mkdir()
    (workdir / "pgdata" / "notes.txt").write_text("mine")

    with pytest.raises(errors.ConfigError, match="neither empty nor a PostgreSQL data folder"):
        embedded.start(workdir / "pgdata", settings=FAST)
    assert (workdir / "pgdata" / "notes.txt").read_text() == "mine"


def test_default_data_dir_is_under_cwd_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PGQUEUE_DATA_DIR", raising=False)
    assert embedded.default_data_dir() == tmp_path / ".pgqueue" / "pgdata"
    monkeypatch.setenv("PGQUEUE_DATA_DIR", "elsewhere/pg")
    assert embedded.default_data_dir() == tmp_path / "elsewhere" / "pg"
