"""Packaging: the Lambda zip builds from manylinux wheels (PyPI; wheels cached under /tmp), the
x86_64 build's handlers import and answer from the unzipped folder with nothing else on the path,
every binary in the arm64 build is an aarch64 manylinux build for the Lambda Python version; the
Dockerfile and docker-compose.yml use entry points that exist and install the package as the README does.

The x86_64 import check builds for the Python running the tests (Lambda has python3.11 and 3.12
runtimes; this machine has 3.11), since a cp312 wheel cannot be imported here; the arm64 build is
checked for the default runtime, 3.12.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from pgqueue import cli
from pgqueue.db import migrate
from tests.serverless.conftest import EVENT_KEY, FIXTURES, ROOT, SIGNING_KEY

ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # EM_X86_64, EM_AARCH64
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_lambda", ROOT / "scripts" / "build_lambda.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """{arch: (zip, unzipped folder)}: x86_64 for the local Python, arm64 for the Lambda default."""
    build = build_module()
    out = tmp_path_factory.mktemp("lambda-dist")
    made = {}
    for arch, version in (("x86_64", LOCAL_PYTHON), ("arm64", build.DEFAULT_PYTHON)):
        path = build.build(arch, python_version=version, out=out)
        folder = out / f"unzipped-{arch}"
        with zipfile.ZipFile(path) as zf:
            zf.extractall(folder)
        made[arch] = (path, folder)
    return made


def test_the_zips_hold_the_project_as_the_wheel_lays_it_out(builds: dict[str, tuple[Path, Path]]) -> None:
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["pgqueue", "api"] and wheel["force-include"] == {"sql": "pgqueue/sql"}
    for path, folder in builds.values():
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            assert {info.date_time for info in zf.infolist()} == {(2020, 1, 1, 0, 0, 0)}  # reproducible
        assert {"api_handler.py", "executor_handler.py", "pgqueue/__init__.py", "api/app.py"} <= names
        for sql in sorted((ROOT / "sql").rglob("*.sql")):
            assert f"pgqueue/sql/{sql.relative_to(ROOT / 'sql').as_posix()}" in names, sql
        assert not any("__pycache__" in n or n.startswith(("tests/", "boto3/", "botocore/")) for n in names)
        assert any(n.startswith("psycopg_binary/") for n in names)  # libpq inside: no layer needed
        size = path.stat().st_size
        unzipped = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert size < 50e6 and unzipped < 250e6, (size, unzipped)  # Lambda's zip and unzipped limits


def test_the_x86_64_handlers_answer_from_the_unzipped_folder(
    builds: dict[str, tuple[Path, Path]], database_url: str
) -> None:
    _, folder = builds["x86_64"]
    script = f"""
import json, sys
import api_handler, executor_handler
assert api_handler.__file__.startswith({str(folder)!r}), api_handler.__file__
assert not any("site-packages" in p for p in sys.path), sys.path
fixtures = {str(FIXTURES)!r}
health = api_handler.handler(json.load(open(fixtures + "/http_api_v2_health.json")), None)
sent = api_handler.handler(json.load(open(fixtures + "/http_api_v2_send_event.json")), None)
tick = executor_handler.handler(json.load(open(fixtures + "/eventbridge_scheduled.json")), None)
print(json.dumps({{"health": health, "sent": sent, "tick": tick}}))
"""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(folder),
        "DATABASE_URL": database_url,
        "PGQUEUE_SIGNING_KEY": SIGNING_KEY,
        "PGQUEUE_EVENT_KEYS": EVENT_KEY,
        "PGQUEUE_INLINE_START": "0",  # the event waits in the inbox for the executor's runner
        "HOME": str(folder),
    }
    # -S: no site-packages, so every import is served by the zip (or the standard library)
    done = subprocess.run(
        [sys.executable, "-S", "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=folder
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["health"]["statusCode"] == 200, out["health"]
    assert json.loads(out["health"]["body"])["schema_version"] == migrate.head_version()
    assert out["sent"]["statusCode"] == 200, out["sent"]
    assert out["tick"]["action"] == "tick" and out["tick"]["events_seen"] == 1 and out["tick"]["idle"] is True


def _wheel_tags(folder: Path) -> dict[str, tuple[bool, list[str]]]:
    found = {}
    for wheel in folder.glob("*.dist-info/WHEEL"):
        lines = wheel.read_text().splitlines()
        pure = any(line.strip().lower() == "root-is-purelib: true" for line in lines)
        tags = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Tag:")]
        found[wheel.parent.name] = (pure, tags)
    return found


def test_every_arm64_binary_targets_aarch64_manylinux_for_the_lambda_python(
    builds: dict[str, tuple[Path, Path]],
) -> None:
    build = build_module()
    _, folder = builds["arm64"]
    cp = "cp" + build.DEFAULT_PYTHON.replace(".", "")
    wheels = _wheel_tags(folder)
    binary = {name: tags for name, (pure, tags) in wheels.items() if not pure}
    assert {"psycopg_binary", "pydantic_core"} <= {n.split("-")[0] for n in binary}, sorted(wheels)
    for name, tags in binary.items():
        assert tags, name
        for tag in tags:
            python, abi, platform = tag.split("-")
            assert "manylinux" in platform and platform.endswith("aarch64"), (name, tag)
            assert python == cp or (abi == "abi3" and int(python[3:]) <= int(cp[3:])), (name, tag)
    shared = [p for p in folder.rglob("*.so*") if p.is_file()]
    assert shared, "no compiled modules found"
    for path in shared:
        header = path.read_bytes()[:20]
        assert header[:4] == b"\x7fELF", path
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINE["arm64"], path


# -- containers -------------------------------------------------------------------------------------


def _subcommands() -> set[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


def test_the_dockerfile_runs_console_scripts_that_exist_and_installs_like_the_readme() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["pgqueue"] == "pgqueue.cli:main"
    entry = next(line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT"))
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert json.loads(entry.removeprefix("ENTRYPOINT")) == ["pgqueue"]
    assert json.loads(cmd.removeprefix("CMD")) == ["serve"]
    assert {"serve", "worker", "migrate", "tick"} <= _subcommands()
    # it copies what the wheel is built from and the lock, then installs with the lock's pins
    for needed in ("pyproject.toml", "pgqueue", "api", "sql", "requirements"):
        assert f"COPY {needed}" in dockerfile, needed
    assert "RUN pip install -c requirements/lock.txt . " in dockerfile
    readme = (ROOT / "README.md").read_text()
    containers = readme.split("## Run in containers")[1].split("\n## ")[0]
    assert "pip install -c requirements/lock.txt ." in containers and "docker compose" in containers


def test_compose_migrates_once_then_runs_serve_and_worker() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["command"][0] == "serve" and services["worker"]["command"] == ["worker"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["build"] == "."
        assert services[name]["command"][0] in _subcommands()
        assert set(services[name]["command"][1:]) <= {"--no-workers"}
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["image"].startswith("postgres:")
    # `serve --no-workers` exists, and the parser accepts every compose command as written
    for name in ("migrate", "api", "worker"):
        cli.build_parser().parse_args(services[name]["command"])
