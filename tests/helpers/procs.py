"""Real processes on loopback: free ports, starting servers, waiting for HTTP readiness."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return int(self.popen.returncode)


def start_process(
    name: str, argv: Sequence[str], *, env: Mapping[str, str], url: str, cwd: Path | None = None
) -> Proc:
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the child
    full_env = {**os.environ, **env}
    popen = subprocess.Popen(
        list(argv), env=full_env, stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd or ROOT,
        start_new_session=True,
    )
    log_file.close()
    return Proc(name, popen, log_path, url)


def wait_http(proc: Proc, path: str, *, timeout: float = 60, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()}")
        try:
            r = httpx.get(proc.url + path, timeout=2)
            if r.status_code == expect:
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} not ready at {path} after {timeout}s ({last}):\n{proc.log()}")


def pgqueue_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pgqueue", *args]


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        proc.terminate()


def wait_until(predicate, *, timeout: float, interval: float = 0.1, message: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")
