"""A private PostgreSQL cluster in a data folder: the database `pgqueue dev` uses when DATABASE_URL is unset.

`start()` runs initdb once, then pg_ctl from the local PostgreSQL binaries (or the optional `pgserver`
wheel's), listening on 127.0.0.1 and a free port; a cluster already running on the same folder is reused.
PostgreSQL refuses to run as root, so under root the server runs as the `postgres` (else `nobody`) user.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from pgqueue import errors

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
DATABASE = "pgqueue"
MIN_CONNECTIONS = 200

# Searched in this order after PGQUEUE_PG_BIN and `pg_ctl` on PATH; module constants so a test can empty them.
SYSTEM_BIN_GLOBS: tuple[str, ...] = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin")
PGSERVER_MODULE = "pgserver"
FALLBACK_ROOTS: tuple[Path, ...] = (Path("/var/lib/pgqueue"), Path(tempfile.gettempdir()))

_CONF_FILE = "pgqueue.conf"  # rewritten at every start; postgresql.conf includes it
_LOG_FILE = "pgqueue-server.log"  # pg_ctl -l target, appended across restarts
_INCLUDE_LINE = f"include_if_exists = '{_CONF_FILE}'  # added by pgqueue: server settings for this cluster"
_RESERVED = frozenset({"listen_addresses", "port", "unix_socket_directories"})
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; stay under both
# Start failures worth another attempt: the port was taken between picking and binding, or the children of
# a killed postmaster still hold its shared memory for a moment.
_RETRYABLE = (
    "could not bind",
    "Address already in use",
    "could not create any TCP/IP sockets",
    "is still in use",
)
_MISSING = (
    "no PostgreSQL binaries found (looked in PGQUEUE_PG_BIN, `pg_ctl` on PATH, /usr/lib/postgresql/*/bin, "
    "/usr/local/pgsql/bin and the `pgserver` package). Fix one of: install PostgreSQL "
    "(e.g. `apt install postgresql`, `brew install postgresql`), or `pip install pgserver`, "
    "or set DATABASE_URL to an existing database."
)


class EmbeddedStartError(errors.ConfigError):
    """The embedded cluster could not be created or started; the message carries the server log's tail."""


@dataclass(frozen=True, slots=True)
class EmbeddedPostgres:
    """A running embedded cluster. `owned` is True when this process started it (and so should stop it)."""

    url: str
    data_dir: Path
    port: int
    owned: bool
    pg_bin: Path
    run_as: str | None  # the user the server runs as when this process is root; None: the current user
    log_file: Path

    def admin_url(self, dbname: str = "postgres") -> str:
        return _url(self.port, dbname)

    def stop(self, mode: str = "fast", *, force: bool = False, timeout: float = 60.0) -> None:
        """`pg_ctl stop`, only if this process started the server unless `force`; a stopped server is fine."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"stop mode must be smart, fast or immediate, not {mode!r}")
        if not (self.owned or force):
            logger.debug(
                "embedded PostgreSQL on port %d was started elsewhere; leaving it running", self.port
            )
            return
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        user = _user_named(self.run_as) if self.run_as is not None and os.geteuid() == 0 else None
        seconds = max(1, int(timeout))
        args = ["stop", "-D", self.data_dir, "-m", mode, "-w", "-t", str(seconds)]
        done = _run(self.pg_bin / "pg_ctl", args, user, timeout=timeout + 5)
        if done.returncode != 0 and pid_file.exists():
            raise EmbeddedStartError(f"pg_ctl stop failed for {self.data_dir}: {_output(done)}")


@dataclass(frozen=True, slots=True)
class _User:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class _PidFile:
    """postmaster.pid: line 1 pid, 4 port, 8 status (`starting`, `ready`, `stopping`, `standby`)."""

    pid: int
    port: int | None
    status: str


def default_data_dir() -> Path:
    """`./.pgqueue/pgdata` under the current directory, or PGQUEUE_DATA_DIR when set."""
    configured = os.environ.get("PGQUEUE_DATA_DIR")
    if configured:
        return Path(os.path.abspath(Path(configured).expanduser()))
    return Path.cwd() / ".pgqueue" / "pgdata"


def find_pg_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: PGQUEUE_PG_BIN, `pg_ctl` on PATH, the system
    install folders (newest version first), then the `pgserver` wheel. None when there are none."""
    configured = os.environ.get("PGQUEUE_PG_BIN")
    if configured:
        path = Path(configured).expanduser()
        folder = path.parent if path.is_file() else path
        if not _is_pg_bin(folder):
            raise errors.ConfigError(
                f"PGQUEUE_PG_BIN={configured} does not hold initdb, pg_ctl and postgres; point it at "
                "PostgreSQL's bin folder (e.g. /usr/lib/postgresql/16/bin) or unset it"
            )
        return folder
    on_path = shutil.which("pg_ctl")
    if on_path is not None and _is_pg_bin(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    for pattern in SYSTEM_BIN_GLOBS:
        for folder in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            if _is_pg_bin(Path(folder)):
                return Path(folder)
    spec = importlib.util.find_spec(PGSERVER_MODULE)
    if spec is not None and spec.origin is not None:
        folder = Path(spec.origin).parent / "pginstall" / "bin"
        if _is_pg_bin(folder):
            return folder
    return None


def start(
    data_dir: Path, *, settings: Mapping[str, str] | None = None, timeout: float = 60.0
) -> EmbeddedPostgres:
    """Start (or reuse) the cluster in `data_dir` and return its URL once it accepts connections.

    The first start runs initdb (superuser `postgres`, trust auth on loopback, database `pgqueue`); later
    starts reuse the data. `settings` are extra server settings written to `pgqueue.conf` at each start.
    """
    deadline = time.monotonic() + timeout
    extra = _validated(settings or {})
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise errors.ConfigError(_MISSING)
    requested = Path(os.path.abspath(Path(data_dir).expanduser()))
    requested.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(requested, deadline):
        user = _service_user() if os.geteuid() == 0 else None
        try:
            folder, user = _place(requested, user)
        except PermissionError as exc:
            raise errors.ConfigError(
                f"cannot use {requested} as the embedded database's folder ({exc}); it belongs to another "
                "user: set PGQUEUE_DATA_DIR to a folder of yours, or set DATABASE_URL"
            ) from exc
        log_file = folder / _LOG_FILE
        port = _running_port(folder, deadline, log_file)
        if port is not None:
            if extra:
                logger.info(
                    "embedded PostgreSQL in %s is already running; settings %s not applied", folder, extra
                )
            _wait_ready(port, folder, deadline, log_file, 0)
            _ensure_database(port)
            return _embedded(port, folder, owned=False, pg_bin=pg_bin, user=user)
        if user is not None:
            _check_executable(pg_bin, user)
        if not (folder / "PG_VERSION").exists():
            _initdb(pg_bin, folder, user, extra, deadline)
        port = _pg_ctl_start(pg_bin, folder, user, extra, deadline)
        try:
            _ensure_database(port)
        except BaseException:
            _embedded(port, folder, owned=True, pg_bin=pg_bin, user=user).stop("immediate")
            raise
        logger.info("embedded PostgreSQL started: data in %s, port %d", folder, port)
        return _embedded(port, folder, owned=True, pg_bin=pg_bin, user=user)


# --- binaries and users -------------------------------------------------------------------------------


def _is_pg_bin(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(folder: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: "16" sorts above "9.6"
    version = Path(folder).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def _service_user() -> _User:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return _User(entry.pw_name, entry.pw_uid, entry.pw_gid)
    raise errors.ConfigError(
        "running as root, and PostgreSQL refuses to run as root, but there is neither a `postgres` nor a "
        "`nobody` user to run it as; create one (`useradd --system postgres`), or run pgqueue as a normal "
        "user, or set DATABASE_URL"
    )


def _user_named(name: str) -> _User:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        uid = int(name)  # a uid without a passwd entry (containers) is recorded as its number
        return _User(name, uid, uid)
    return _User(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _owner(folder: Path) -> _User:
    info = folder.stat()
    try:
        entry = pwd.getpwuid(info.st_uid)
    except KeyError:
        return _User(str(info.st_uid), info.st_uid, info.st_gid)
    return _User(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _as_user(user: _User, script: str, *args: str | Path) -> bool:
    """Run a tiny /bin/sh test as `user`: the only honest answer to "can that user reach this"."""
    done = _run("/bin/sh", ["-c", script, "sh", *args], user, timeout=30)
    return done.returncode == 0


def _check_executable(pg_bin: Path, user: _User) -> None:
    if not _as_user(user, 'test -x "$1"/initdb && test -x "$1"/pg_ctl && test -x "$1"/postgres', pg_bin):
        raise errors.ConfigError(
            f"running as root, PostgreSQL must run as user {user.name}, who cannot execute the binaries in "
            f"{pg_bin} (a `pip install pgserver` under /root is not reachable by other users); install "
            "PostgreSQL system-wide (e.g. `apt install postgresql`), set PGQUEUE_PG_BIN to binaries that "
            f"user can run, or set DATABASE_URL"
        )


# --- where the data lives ----------------------------------------------------------------------------


def _place(requested: Path, user: _User | None) -> tuple[Path, _User | None]:
    """The data folder to use and the user to run as. As root, a folder the server user cannot reach
    (say under /root, mode 700) is swapped for one under /var/lib/pgqueue (else the temp folder)."""
    if user is None:
        _prepare(requested, None)
        return requested, None
    if _is_cluster(requested):
        return requested, _cluster_owner(requested)
    if _prepare(requested, user):
        return requested, user
    digest = hashlib.sha256(str(requested).encode()).hexdigest()[:12]
    for root in FALLBACK_ROOTS:
        candidate = root / digest if root.name == "pgqueue" else root / f"pgqueue-{digest}"
        try:
            root.mkdir(mode=0o755, parents=True, exist_ok=True)
            if _is_cluster(candidate):
                placed, owner = candidate, _cluster_owner(candidate)
            elif _prepare(candidate, user):
                placed, owner = candidate, user
            else:
                continue
        except (OSError, errors.ConfigError) as exc:
            logger.debug("fallback data folder %s unusable: %s", candidate, exc)
            continue
        logger.warning(
            "PostgreSQL runs as user %s, who cannot reach %s; the embedded database's data lives in %s",
            owner.name,
            requested,
            placed,
        )
        return placed, owner
    raise errors.ConfigError(
        f"running as root, PostgreSQL must run as user {user.name}, who cannot reach {requested} nor a "
        f"fallback under {', '.join(str(r) for r in FALLBACK_ROOTS)}; set PGQUEUE_DATA_DIR to a folder that "
        "user can write, run pgqueue as a normal user, or set DATABASE_URL"
    )


def _is_cluster(folder: Path) -> bool:
    return (folder / "PG_VERSION").is_file()


def _cluster_owner(folder: Path) -> _User:
    owner = _owner(folder)
    if owner.uid == 0:
        raise errors.ConfigError(
            f"the PostgreSQL data folder {folder} is owned by root, and PostgreSQL refuses to run as root; "
            f"`chown -R postgres: {folder}` or point PGQUEUE_DATA_DIR elsewhere"
        )
    return owner


def _prepare(folder: Path, user: _User | None) -> bool:
    """Create `folder` for the server user; False (and nothing left behind) when that user cannot reach it."""
    created = not folder.exists()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _is_cluster(folder) and any(folder.iterdir()):
        raise errors.ConfigError(
            f"{folder} is neither empty nor a PostgreSQL data folder; set PGQUEUE_DATA_DIR to a new or "
            "empty folder"
        )
    if user is None:
        return True
    before = folder.stat()
    os.chown(folder, user.uid, user.gid)
    os.chmod(folder, 0o700)
    if _as_user(user, 'test -d "$1" && test -w "$1" && test -x "$1"', folder):
        return True
    if created:
        folder.rmdir()
    else:
        os.chown(folder, before.st_uid, before.st_gid)
        os.chmod(folder, before.st_mode & 0o7777)
    return False


@contextlib.contextmanager
def _folder_lock(folder: Path, deadline: float) -> Generator[None, None, None]:
    """Serialise concurrent start() calls on one folder (two `pgqueue dev` processes starting together)."""
    path = folder.parent / f".{folder.name}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            logger.debug("cannot open lock file %s; starting without it", path)
            yield
            return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedStartError(
                        f"another process holds {path} (starting the same embedded database) for too long"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


# --- the server ---------------------------------------------------------------------------------------


def _validated(settings: Mapping[str, str]) -> dict[str, str]:
    for name, value in settings.items():
        if name in _RESERVED:
            raise errors.ConfigError(
                f"embedded PostgreSQL setting {name!r} is managed by pgqueue (loopback only, free port); "
                "remove it, or run your own server and set DATABASE_URL"
            )
        if not _SETTING_NAME.match(name) or "\n" in str(value) or "\r" in str(value):
            raise errors.ConfigError(f"embedded PostgreSQL setting {name}={value!r} is not a valid setting")
    return {name: str(value) for name, value in settings.items()}


def _initdb(
    pg_bin: Path, folder: Path, user: _User | None, extra: Mapping[str, str], deadline: float
) -> None:
    """initdb into a sibling folder, then rename it into place: a killed initdb leaves no half cluster."""
    staging = folder.parent / f".{folder.name}.initdb"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(mode=0o700)
    if user is not None:
        os.chown(staging, user.uid, user.gid)
    args: list[str | Path] = ["-D", staging, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale"]
    if extra.get("fsync") == "off":
        args.append("--no-sync")  # the caller gave up durability for speed (tests)
    try:
        done = _run(pg_bin / "initdb", args, user, timeout=_remaining(deadline))
        if done.returncode != 0:
            raise EmbeddedStartError(f"initdb failed for {folder}: {_output(done)}")
        with (staging / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\n{_INCLUDE_LINE}\n")
        # the target is missing or empty here (checked by _prepare); rename() replaces an empty folder
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_conf(folder: Path, user: _User | None, port: int, extra: Mapping[str, str]) -> None:
    socket_dir = str(folder) if len(f"{folder}/.s.PGSQL.{port}") <= _SOCKET_PATH_MAX else ""
    values = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        # inside the data folder, which the server user owns; '' (TCP only) when the path is too long
        "unix_socket_directories": socket_dir,
        "max_connections": str(MIN_CONNECTIONS),
        **extra,
    }
    lines = ["# Written by pgqueue at every start of the embedded database; edits here are overwritten."]
    lines += [f"{name} = '{_quote(value)}'" for name, value in values.items()]
    target = folder / _CONF_FILE
    staging = folder / f"{_CONF_FILE}.tmp"
    staging.write_text("\n".join(lines) + "\n", encoding="utf-8")
    staging.chmod(0o600)
    if user is not None:
        os.chown(staging, user.uid, user.gid)
    os.replace(staging, target)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


def _pg_ctl_start(
    pg_bin: Path, folder: Path, user: _User | None, extra: Mapping[str, str], deadline: float
) -> int:
    log_file = folder / _LOG_FILE
    while True:
        port = _free_port()
        _write_conf(folder, user, port, extra)
        offset = log_file.stat().st_size if log_file.exists() else 0
        seconds = str(max(1, int(_remaining(deadline))))
        args: list[str | Path] = ["start", "-D", folder, "-l", log_file, "-w", "-t", seconds, "-s"]
        # its own session: a Ctrl-C meant for `pgqueue dev` must not reach the server, which dev stops itself
        done = _run(pg_bin / "pg_ctl", args, user, timeout=_remaining(deadline) + 5, new_session=True)
        if done.returncode == 0:
            _wait_ready(port, folder, deadline, log_file, offset)
            return port
        tail = _log_tail(log_file, offset)
        if (folder / "postmaster.pid").exists():
            # pg_ctl gave up waiting but the server lives on: do not leak it
            stopper = ["stop", "-D", folder, "-m", "immediate", "-w"]
            _run(pg_bin / "pg_ctl", stopper, user, timeout=30)
        if any(marker in tail for marker in _RETRYABLE) and time.monotonic() < deadline - 0.5:
            logger.debug("embedded PostgreSQL start failed (retrying): %s", tail.strip().splitlines()[-1:])
            time.sleep(0.2)
            continue
        raise EmbeddedStartError(
            f"PostgreSQL in {folder} did not start: {_output(done)}\n--- tail of {log_file} ---\n{tail}"
        )


def _running_port(folder: Path, deadline: float, log_file: Path) -> int | None:
    """The port of a server already running on `folder`, waiting out `starting`/`stopping`; None if none."""
    while True:
        pid_file = _read_pid_file(folder)
        if pid_file is None:
            return None
        if not _is_postmaster_of(pid_file.pid, folder):
            if _pid_alive(pid_file.pid):
                # the pid now belongs to another process (or a zombie nobody reaped): PostgreSQL would
                # refuse to start, though the server that wrote the file is gone
                stale = folder / "postmaster.pid"
                logger.info("removing stale %s (pid %d is not its server)", stale, pid_file.pid)
                stale.unlink(missing_ok=True)
            return None  # a plain stale file (crash) is handled by pg_ctl and the postmaster
        if pid_file.status in ("ready", "standby") and pid_file.port is not None:
            return pid_file.port
        if time.monotonic() > deadline:
            raise EmbeddedStartError(
                f"PostgreSQL in {folder} (pid {pid_file.pid}) stayed {pid_file.status or 'starting'!r}\n"
                f"--- tail of {log_file} ---\n{_log_tail(log_file, 0)}"
            )
        time.sleep(0.1)


def _read_pid_file(folder: Path) -> _PidFile | None:
    try:
        lines = (folder / "postmaster.pid").read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return _PidFile(int(lines[0]), port, status)


def _is_postmaster_of(pid: int, folder: Path) -> bool:
    # The postmaster chdirs into its data folder, so /proc/<pid>/cwd tells a live server from a recycled pid.
    try:
        return os.path.samefile(f"/proc/{pid}/cwd", folder)
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _pid_alive(pid)  # no /proc (macOS): trust kill(0)
    except OSError:
        return _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_ready(port: int, folder: Path, deadline: float, log_file: Path, offset: int) -> None:
    last: Exception | None = None
    while True:
        try:
            with psycopg.connect(_url(port, "postgres"), connect_timeout=2, autocommit=True) as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        except psycopg.OperationalError as exc:
            last = exc
        else:
            if row is None or not os.path.samefile(str(row[0]), folder):
                raise EmbeddedStartError(f"port {port} serves {row and row[0]}, not the cluster in {folder}")
            return
        if time.monotonic() > deadline:
            raise EmbeddedStartError(
                f"PostgreSQL in {folder} does not accept connections on port {port}: {last}\n"
                f"--- tail of {log_file} ---\n{_log_tail(log_file, offset)}"
            )
        time.sleep(0.1)


def _ensure_database(port: int) -> None:
    with psycopg.connect(_url(port, "postgres"), connect_timeout=5, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if exists is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))


def _embedded(port: int, folder: Path, *, owned: bool, pg_bin: Path, user: _User | None) -> EmbeddedPostgres:
    return EmbeddedPostgres(
        url=_url(port, DATABASE),
        data_dir=folder,
        port=port,
        owned=owned,
        pg_bin=pg_bin,
        run_as=user.name if user is not None else None,
        log_file=folder / _LOG_FILE,
    )


# --- small pieces -------------------------------------------------------------------------------------


def _url(port: int, dbname: str) -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{quote(dbname, safe='')}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _remaining(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _run(
    program: str | Path,
    args: Sequence[str | Path],
    user: _User | None,
    *,
    timeout: float,
    new_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    # PG* variables of the caller's shell must not redirect initdb/pg_ctl; C locale keeps messages parseable.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    try:
        return subprocess.run(
            [str(program), *(str(arg) for arg in args)],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",  # chdir happens before the uid switch: pick a folder every user can enter
            timeout=timeout,
            check=False,
            start_new_session=new_session,
            user=user.uid if user is not None else None,
            group=user.gid if user is not None else None,
            extra_groups=[] if user is not None else None,
        )
    except subprocess.TimeoutExpired as exc:
        command = " ".join(str(part) for part in (program, *args))
        raise EmbeddedStartError(f"{command} took longer than {timeout:.0f}s") from exc


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}")[-2000:]


def _log_tail(log_file: Path, offset: int, lines: int = 20) -> str:
    try:
        with log_file.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(no server log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"
