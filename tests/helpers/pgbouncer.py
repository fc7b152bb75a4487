"""A real PgBouncer in transaction mode in front of the test cluster (Debian's pgbouncer package).

Started as an unprivileged user (PgBouncer refuses to run as root). Debian's 1.18 has no
prepared-statement support in transaction mode, which is the point: pgqueue must not need it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.helpers.procs import free_port


@dataclass
class PgBouncer:
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    def url_for(self, database_url: str) -> str:
        return psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=str(self.port))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def _binary() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("pgbouncer is not installed: `apt-get install pgbouncer` (Debian) to run these tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = subprocess.run(["apt-get", "install", "-y", "-q", "pgbouncer"], env=env, capture_output=True)
    if install.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "pgbouncer"], env=env, capture_output=True, check=True)
    # The package's own service is not ours: keep it from holding the default port.
    subprocess.run(["service", "pgbouncer", "stop"], capture_output=True, check=False)
    return shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def start(admin_url: str) -> PgBouncer:
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    binary = _binary()
    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-"))
    port = free_port()
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={info.get('host', '127.0.0.1')} port={info.get('port', '5432')} user={info.get('user', 'postgres')}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        "max_client_conn = 1000\ndefault_pool_size = 40\nmax_db_connections = 0\n"
        "server_reset_query =\nignore_startup_parameters = extra_float_digits,options,application_name\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    kwargs: dict = {}
    if user:
        pw = pwd.getpwnam(user)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        for f in folder.iterdir():
            os.chown(f, pw.pw_uid, pw.pw_gid)
        kwargs = {"user": pw.pw_uid, "group": pw.pw_gid}
    process = subprocess.Popen([binary, str(folder / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, **kwargs)
    bouncer = PgBouncer(port, folder, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(bouncer.url_for(admin_url), prepare_threshold=None, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return bouncer
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
                bouncer.stop()
                raise RuntimeError(f"pgbouncer did not start:\n{log[-2000:]}") from None
            time.sleep(0.2)
