"""The README's JavaScript quick start, run as written on Node 20 with the official JS SDK: its
setup commands, its server.js, its sync step, then the event from the Python quick start's curl.

Two departures, both for the test machine: `npm install` is replaced by the test app's installed
node_modules (the same pinned inngest and express), and port 3000 by a free port."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.compat.conftest import Server
from tests.compat.js_fixtures import JS_APP_DIR, ensure_js_app_installed
from tests.helpers.procs import ROOT, free_port, start_process, wait_until

README = ROOT / "README.md"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.index("\n### ", start + len(heading))
    return text[start:end]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def test_the_js_quick_start_runs_as_written(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ensure_js_app_installed()
    server: Server = server_factory("dev")
    section = _section(README.read_text(), "### JavaScript")
    [setup] = _blocks(section, "sh")
    [code] = _blocks(section, "js")
    assert "import express" in code and '"type": "module"' not in code
    workdir = tmp_path / "app"
    workdir.mkdir()
    npm = shutil.which("npm") or "npm"
    for command in (c.strip() for line in setup.splitlines() for c in line.split("&&")):
        argv = shlex.split(command)
        if not argv or argv[0] in ("mkdir", "cd"):
            continue
        if argv[:2] == ["npm", "install"]:
            (workdir / "node_modules").symlink_to(JS_APP_DIR / "node_modules", target_is_directory=True)
            continue
        done = subprocess.run([npm, *argv[1:]], cwd=workdir, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    port = free_port()
    (workdir / "server.js").write_text(code.replace("3000", str(port)))
    run_line = re.search(r"run with: (\S+) node server.js", code)
    assert run_line is not None
    env_name = run_line.group(1).split("=", 1)[0]
    assert env_name == "INNGEST_DEV"
    node = shutil.which("node") or "node"
    app = start_process(
        "readme-js",
        [node, "server.js"],
        env={env_name: server.url},
        url=f"http://127.0.0.1:{port}",
        cwd=workdir,
    )
    try:
        wait_until(lambda: _up(port), timeout=30, message="the quick start's server.js listening")
        # The sync step, as the README gives it.
        sync = re.search(r"curl -X PUT ([^\s`]+)", section)
        assert sync is not None
        httpx.put(sync.group(1).replace("3000", str(port)), timeout=30)
        wait_until(lambda: server.functions("shop-js"), timeout=30, message="shop-js synced")
        event_id = server.send("user/signed.up", {"name": "Ada"})
        [run] = server.wait_runs(event_id, timeout=60)
        assert run["status"] == "Completed", run
        assert run["output"] == "sent to Ada"
    finally:
        app.terminate()


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/inngest", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False
