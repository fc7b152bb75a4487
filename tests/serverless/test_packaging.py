"""Packaging: the Lambda zip builds from the wheels requirements/lambda.txt pins and hashes (PyPI;
wheels cached under /tmp, as before), at requirements/lock.txt's versions for both architectures,
with .pyc files compiled for the runtime's Python; the x86_64 build's handlers import and answer
from the unzipped folder with nothing else on the path, run by a Python of the Lambda runtime's
version (3.12, found as the build finds it: PATH or pyenv); every binary in the arm64 build is an
aarch64 manylinux build the runtime's glibc loads. The Dockerfile and docker-compose.yml use entry
points that exist, install the package as the README does, check health and stop gracefully.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
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
from pgqueue.settings import Settings
from tests.helpers.serve import start_serve
from tests.serverless.conftest import EVENT_KEY, FIXTURES, ROOT, SIGNING_KEY

ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # EM_X86_64, EM_AARCH64
AMAZON_LINUX_2023_GLIBC = 34  # python3.12 and python3.13 runtimes


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_lambda", ROOT / "scripts" / "build_lambda.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """{arch: (zip, unzipped folder)}: both for the Lambda default Python."""
    build = build_module()
    out = tmp_path_factory.mktemp("lambda-dist")
    made = {}
    for arch in ("x86_64", "arm64"):
        path = build.build(arch, python_version=build.DEFAULT_PYTHON, out=out)
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
        assert not any(n.startswith(("tests/", "boto3/", "botocore/", "bin/")) for n in names)
        assert any(n.startswith("psycopg_binary/") for n in names)  # libpq inside: no layer needed
        size = path.stat().st_size
        unzipped = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert size < 50e6 and unzipped < 250e6, (size, unzipped)  # Lambda's zip and unzipped limits


def lambda_python() -> str:
    build = build_module()
    python = build.find_python(build.DEFAULT_PYTHON)
    assert python, f"no Python {build.DEFAULT_PYTHON}: the build could not have compiled its bytecode"
    return str(python)


def test_every_module_ships_bytecode_for_the_runtime_python(builds: dict[str, tuple[Path, Path]]) -> None:
    """/var/task is read-only: without .pyc files every cold start compiles what it imports."""
    build = build_module()
    tag = "cpython-" + build.DEFAULT_PYTHON.replace(".", "")
    print_magic = "import importlib.util, sys; sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())"
    magic = subprocess.run([lambda_python(), "-c", print_magic], capture_output=True, text=True, check=True)
    for path, folder in builds.values():
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
        sources = [n for n in names if n.endswith(".py")]
        assert len(sources) > 300, len(sources)
        for source in sources:
            directory, _, file = source.rpartition("/")
            cached = f"{directory}/__pycache__/{file[:-3]}.{tag}.pyc".lstrip("/")
            assert cached in names, source
        assert {n for n in names if n.endswith(".pyc") and f".{tag}." not in n} == set()  # no other Python's
        for module in ("pgqueue/settings.py", "api_handler.py", "psycopg/connection.py", "jinja2/utils.py"):
            directory, _, file = module.rpartition("/")
            header = (folder / directory / "__pycache__" / f"{file[:-3]}.{tag}.pyc").read_bytes()[:16]
            assert header[:4].hex() == magic.stdout, module  # compiled by the runtime's Python version
            # hash-based and unchecked: valid whatever the timestamps Lambda unpacks the files with
            assert int.from_bytes(header[4:8], "little") == 0b01, module


def test_both_architectures_ship_the_locked_versions(builds: dict[str, tuple[Path, Path]]) -> None:
    """arm64 used to get psycopg 3.2 where x86_64 got 3.3: the build asked for manylinux2014 only,
    and psycopg-binary 3.3 publishes aarch64 wheels as manylinux_2_28."""
    build = build_module()
    locked = build.read_requirements(ROOT / "requirements" / "lock.txt")
    shipped = {}
    for arch, (_, folder) in builds.items():
        dist_infos = [d.name.removesuffix(".dist-info").rsplit("-", 1) for d in folder.glob("*.dist-info")]
        shipped[arch] = {build.canonical(name): version for name, version in dist_infos}
        for name, version in shipped[arch].items():
            assert locked[name][0] == version, (arch, name, version, locked[name][0])
    assert shipped["arm64"] == shipped["x86_64"]
    assert shipped["arm64"]["psycopg"] == shipped["arm64"]["psycopg-binary"] == locked["psycopg"][0]
    assert locked["psycopg"][0].startswith("3.3.")


def test_the_lambda_requirements_are_the_lock_s_pins_with_hashes() -> None:
    """requirements/lambda.txt (regenerated by `build_lambda.py --lock`) agrees with lock.txt and
    covers every dependency pyproject.toml declares; each package carries its wheels' hashes."""
    build = build_module()
    locked = build.read_requirements(ROOT / "requirements" / "lock.txt")
    pinned = build.read_requirements(ROOT / "requirements" / "lambda.txt")
    for name, (version, hashes) in pinned.items():
        assert locked[name][0] == version, (name, version, locked[name][0])
        assert hashes and all(len(h) == 64 for h in hashes), name
    declared = {build.canonical(re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0]) for dep in build.dependencies()}
    assert declared <= set(pinned), declared - set(pinned)
    assert {"psycopg-binary", "psycopg-pool", "pydantic-core"} <= set(pinned)  # extras and transitive ones
    assert not {"boto3", "botocore", "pytest"} & set(pinned)  # the runtime's, or test-only
    # one wheel per target for the compiled ones
    assert len(pinned["psycopg-binary"][1]) == len(build.TARGETS)


def test_a_wheel_whose_hash_is_not_locked_is_refused(
    builds: dict[str, tuple[Path, Path]], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """pip installs a wheel only if the lock lists its sha256 (--require-hashes): with this very
    wheel's hash replaced (as if the file had changed) the install stops."""
    build = build_module()
    wheels = build.DEFAULT_CACHE / "x86_64-cp312"  # downloaded by the builds above
    [wheel] = wheels.glob("psycopg_binary-*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    text = (ROOT / "requirements" / "lambda.txt").read_text()
    assert digest in text
    tampered = tmp_path / "lambda.txt"
    tampered.write_text(text.replace(digest, "0" * 64))
    tree = tmp_path / "tree"

    with pytest.raises(subprocess.CalledProcessError):
        build.stage("x86_64", build.DEFAULT_PYTHON, wheels, tree, python=None, requirements=tampered)

    assert "DO NOT MATCH THE HASHES" in capfd.readouterr().err
    assert not (tree / "psycopg_binary").exists()


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
    # -S: no site-packages, so every import is served by the zip (or the standard library); the
    # runtime's Python version, as the zip's compiled modules and bytecode are for it
    done = subprocess.run(
        [lambda_python(), "-S", "-c", script],
        env=env, capture_output=True, text=True, timeout=120, cwd=folder,
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
        loadable = []  # a wheel lists every tag it satisfies: one the runtime's glibc loads suffices
        for tag in tags:
            python, abi, platform = tag.split("-")
            assert "manylinux" in platform and platform.endswith("aarch64"), (name, tag)
            assert python == cp or (abi == "abi3" and int(python[3:]) <= int(cp[3:])), (name, tag)
            glibc = re.fullmatch(r"manylinux(?:2014|_2_(\d+))_aarch64", platform)
            assert glibc, (name, tag)
            loadable.append(int(glibc.group(1) or 17) <= AMAZON_LINUX_2023_GLIBC)
        assert any(loadable), (name, tags)
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


def _healthcheck_command(dockerfile: str) -> list[str]:
    joined = dockerfile.replace("\\\n", " ")
    [line] = [line for line in joined.splitlines() if line.startswith("HEALTHCHECK")]
    return list(json.loads(line.split(" CMD ", 1)[1]))


def test_the_image_health_check_asks_serve_for_health(database_url: str) -> None:
    """The Dockerfile's HEALTHCHECK, run as Docker runs it, passes against a running `pgqueue serve`
    and fails once nothing answers."""
    command = _healthcheck_command((ROOT / "Dockerfile").read_text())
    assert command[0] == "python"
    server = start_serve(database_url)
    port = server.url.rsplit(":", 1)[1]
    check_env = {"PATH": os.environ.get("PATH", ""), "PGQUEUE_PORT": port}
    try:
        healthy = subprocess.run(
            [sys.executable, *command[1:]], env=check_env, capture_output=True, text=True, timeout=30
        )
    finally:
        server.stop()
    stopped = subprocess.run(
        [sys.executable, *command[1:]], env=check_env, capture_output=True, text=True, timeout=30
    )
    assert healthy.returncode == 0, healthy.stderr
    assert stopped.returncode != 0


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_compose_gives_a_graceful_stop_its_grace_and_checks_only_serve() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    grace = Settings.from_env({}).shutdown_grace_s  # what PGQUEUE_SHUTDOWN_GRACE_S defaults to
    for name in ("api", "worker", "migrate"):
        # Docker sends SIGKILL after stop_grace_period (default 10 s): it must outlast the grace
        assert _seconds(services[name]["stop_grace_period"]) >= grace + 5, name
    assert "healthcheck" not in services["api"]  # the image's HEALTHCHECK applies
    for name in ("worker", "migrate"):  # nothing listens there
        assert services[name]["healthcheck"] == {"disable": True}, name
