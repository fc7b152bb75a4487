#!/usr/bin/env python3
"""Build the AWS Lambda deployment zip: pgqueue, its dependencies as manylinux wheels for the
target architecture and Python version, compiled bytecode, and the two handler files at the root.

    python scripts/build_lambda.py --arch arm64            # -> dist/pgqueue-lambda-arm64.zip
    python scripts/build_lambda.py --arch x86_64 --python-version 3.13
    python scripts/build_lambda.py --lock                  # regenerate requirements/lambda.txt

Dependencies are installed from requirements/lambda.txt: every package the Lambda functions need,
at the version pinned in requirements/lock.txt, with the sha256 of each wheel, so pip installs only
those files (--require-hashes) and a build cannot quietly pick another version. `--lock`
regenerates it after lock.txt or pyproject.toml's dependencies change: it resolves pyproject's
[project].dependencies under lock.txt's pins for every target below and records each wheel's hash.

Wheels: binary only, for the glibc of the runtime's Amazon Linux. The python3.12 and python3.13
runtimes run on Amazon Linux 2023 (glibc 2.34), so manylinux_2_34 down to manylinux_2_17 /
manylinux2014 wheels are accepted. (Asking for manylinux2014 only made pip fall back to older
releases wherever a package publishes its newer wheels as manylinux_2_28 only: psycopg-binary 3.3
on aarch64, google-re2.) python3.11 (Amazon Linux 2, glibc 2.26) cannot load the locked versions
and is refused. Wheels are downloaded once per target into --wheel-cache (default under /tmp) and
installed from there with --no-index.

Bytecode: the runtime cannot write __pycache__ in /var/task, so without shipped .pyc files every
cold start compiles every module it imports. The tree is compiled with an interpreter of the target
version (found on PATH, under pyenv, or --python-executable) into unchecked-hash .pyc files (valid
whatever the files' timestamps; the zip's are fixed) whose tracebacks name /var/task paths.

The package tree mirrors the wheel: `pgqueue/` with the SQL files at `pgqueue/sql/`, `api/`, and
`api_handler.py` / `executor_handler.py`. boto3 is not bundled: the Lambda Python runtime ships it.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}
DEFAULT_PYTHON = "3.12"
# glibc of the Amazon Linux each supported Lambda Python runtime runs on (Amazon Linux 2023). The
# python3.11 runtime (Amazon Linux 2, glibc 2.26) cannot load the locked google-re2 and, on arm64,
# psycopg-binary, which publish manylinux_2_28 wheels only.
RUNTIME_GLIBC = {"3.12": 34, "3.13": 34}
# What --lock resolves and hashes for; a build for anything else is refused.
TARGETS = tuple((arch, version) for arch in ("x86_64", "arm64") for version in RUNTIME_GLIBC)
LOCK = ROOT / "requirements" / "lock.txt"
LAMBDA_REQUIREMENTS = ROOT / "requirements" / "lambda.txt"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "pgqueue-lambda-wheels"
TASK_ROOT = "/var/task"  # where Lambda unpacks the zip: the paths tracebacks show
# Fixed timestamp inside the zip: the same inputs give the same bytes (and source_code_hash).
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
SKIP_DIRS = {"__pycache__", "bin"}
# The zip's folder comes first on the runtime's sys.path, so a dependency bundled here shadows the
# copy boto3 uses in the Lambda runtime: keep shared ones within botocore's supported range.
RUNTIME_CONSTRAINTS = ["python-dateutil<3"]


def dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def package_name(arch: str, python_version: str) -> str:
    suffix = "" if python_version == DEFAULT_PYTHON else f"-py{python_version.replace('.', '')}"
    return f"pgqueue-lambda-{arch}{suffix}.zip"


def platforms(arch: str, python_version: str) -> list[str]:
    """Every manylinux tag the runtime's glibc can load, newest first."""
    if python_version not in RUNTIME_GLIBC:
        raise SystemExit(f"python{python_version} is not supported: use one of {', '.join(RUNTIME_GLIBC)}")
    machine = ARCHES[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(RUNTIME_GLIBC[python_version], 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def _platform_args(arch: str, python_version: str) -> list[str]:
    args = [arg for tag in platforms(arch, python_version) for arg in ("--platform", tag)]
    return [*args, "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"], check=True)


def _check_target(arch: str, python_version: str) -> None:
    if (arch, python_version) not in TARGETS:
        supported = ", ".join(f"{a}/{v}" for a, v in TARGETS)
        raise SystemExit(
            f"no locked wheels for {arch} python{python_version} (supported: {supported}); the locked"
            " google-re2 and psycopg-binary need glibc 2.28, which python3.11's Amazon Linux 2 lacks"
        )


# -- the lock: requirements/lambda.txt --------------------------------------------------------------

_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256, ...])} of a hashed requirements file."""
    text = path.read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        assert match, line
        found[canonical(match.group(1))] = (match.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return found


def lock(wheel_cache: Path = DEFAULT_CACHE, destination: Path = LAMBDA_REQUIREMENTS) -> Path:
    """Resolve the dependencies under lock.txt's pins for every target and write them with the
    sha256 of every wheel that can be installed (see the module docstring)."""
    versions: dict[str, set[str]] = defaultdict(set)
    hashes: dict[str, set[str]] = defaultdict(set)
    pythons: dict[str, set[str]] = defaultdict(set)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="pgqueue-runtime-") as runtime:
        runtime.write("\n".join(RUNTIME_CONSTRAINTS) + "\n")
        runtime.flush()
        for arch, version in TARGETS:
            folder = wheel_cache / "lock" / f"{arch}-cp{version.replace('.', '')}"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            _pip("download", "--dest", str(folder), "--constraint", str(LOCK), "--constraint", runtime.name,
                 *_platform_args(arch, version), *dependencies())
            for wheel in sorted(folder.glob("*.whl")):
                match = _WHEEL.match(wheel.name)
                assert match, wheel.name
                name = canonical(match.group("name"))
                versions[name].add(match.group("version"))
                hashes[name].add(hashlib.sha256(wheel.read_bytes()).hexdigest())
                pythons[name].add(version)
    pinned = {canonical(k): v for k, (v, _) in read_requirements(LOCK).items()}
    lines = [
        "# Every package the Lambda zip installs, at requirements/lock.txt's versions, with the sha256 of",
        "# each wheel of every target (scripts/build_lambda.py TARGETS); pip installs with --require-hashes.",
        "# Regenerate after changing lock.txt or pyproject.toml's dependencies (downloads the wheels):",
        "#   python scripts/build_lambda.py --lock",
    ]
    all_pythons = {version for _, version in TARGETS}
    for name in sorted(versions):
        if len(versions[name]) != 1:
            raise SystemExit(f"{name}: different versions for different targets: {sorted(versions[name])}")
        [version] = versions[name]
        if pinned.get(name) != version:
            raise SystemExit(f"{name}=={version} is not what requirements/lock.txt pins ({pinned.get(name)})")
        marker = ""
        if pythons[name] != all_pythons:
            marker = " ; " + " or ".join(f'python_version == "{v}"' for v in sorted(pythons[name]))
        hashed = " \\\n".join(f"    --hash=sha256:{digest}" for digest in sorted(hashes[name]))
        lines.append(f"{name}=={version}{marker} \\\n{hashed}")
    destination.write_text("\n".join(lines) + "\n")
    return destination


# -- the build --------------------------------------------------------------------------------------


def download(arch: str, python_version: str, cache: Path, requirements: Path = LAMBDA_REQUIREMENTS) -> Path:
    """The locked wheels for the target into cache/<arch>-cp<ver>/, skipped when already there."""
    folder = cache / f"{arch}-cp{python_version.replace('.', '')}"
    marker = folder / "requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes() + " ".join(platforms(arch, python_version)).encode())
    if marker.is_file() and marker.read_text() == digest.hexdigest():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _pip("download", "--dest", str(folder), "--require-hashes", "--no-deps", "-r", str(requirements),
         *_platform_args(arch, python_version))
    marker.write_text(digest.hexdigest())
    return folder


def find_python(version: str) -> str | None:
    """An interpreter of `version` (e.g. "3.12"): this one, one on PATH, or one pyenv installed."""
    candidates = [sys.executable, shutil.which(f"python{version}")]
    pyenv_root = Path.home() / ".pyenv" / "versions"
    candidates += [str(p) for p in sorted(pyenv_root.glob(f"{version}.*/bin/python{version}"), reverse=True)]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            done = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


def compile_bytecode(tree: Path, python: str) -> None:
    """Unchecked-hash .pyc files next to every module, naming /var/task paths in tracebacks."""
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                    "-s", str(tree), "-p", TASK_ROOT, str(tree)], check=True)


def _copy_tree(src: Path, dst: Path) -> None:
    def skipped(_: str, names: list[str]) -> list[str]:
        return [n for n in names if n in SKIP_DIRS or n.endswith(".pyc")]

    shutil.copytree(src, dst, ignore=skipped)


def stage(arch: str, python_version: str, wheels: Path, target: Path, *, python: str | None,
          requirements: Path = LAMBDA_REQUIREMENTS) -> None:
    """Install the locked wheels and the project into `target`, then compile it with `python`
    (an interpreter of python_version; None ships no bytecode)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    _pip("install", "--no-index", "--find-links", str(wheels), "--require-hashes", "--no-deps",
         "-r", str(requirements), "--target", str(target), "--no-compile", "--no-warn-conflicts",
         *_platform_args(arch, python_version))
    # the project itself, laid out as the wheel lays it out (pyproject: packages + force-include)
    _copy_tree(ROOT / "pgqueue", target / "pgqueue")
    _copy_tree(ROOT / "sql", target / "pgqueue" / "sql")
    _copy_tree(ROOT / "api", target / "api")
    for handler in sorted((ROOT / "lambda").glob("*.py")):
        shutil.copy2(handler, target / handler.name)
    for junk in [*target.rglob("__pycache__"), target / "bin"]:
        if junk.exists():
            shutil.rmtree(junk)
    if python is not None:
        compile_bytecode(target, python)


def write_zip(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), date_time=ZIP_DATE)
            info.external_attr = (0o755 if path.stat().st_mode & 0o111 else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    tmp.replace(destination)


def build(arch: str, *, python_version: str = DEFAULT_PYTHON, out: Path = ROOT / "dist",
          wheel_cache: Path = DEFAULT_CACHE, keep_staging: bool = False, bytecode: bool = True,
          python_executable: str | None = None) -> Path:
    """Build the zip and return its path; the unzipped tree stays in out/build-<name> if asked."""
    _check_target(arch, python_version)
    python = None
    if bytecode:
        python = python_executable or find_python(python_version)
        if python is None:
            raise SystemExit(
                f"compiling bytecode needs a Python {python_version} interpreter (python{python_version} on"
                " PATH, pyenv, or --python-executable); --no-bytecode builds without (slower cold starts)"
            )
    wheels = download(arch, python_version, wheel_cache)
    name = package_name(arch, python_version)
    staging = out / f"build-{name.removesuffix('.zip')}"
    stage(arch, python_version, wheels, staging, python=python)
    destination = out / name
    write_zip(staging, destination)
    if not keep_staging:
        shutil.rmtree(staging)
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHES), default="arm64",
                        help="Lambda architecture (default arm64)")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON,
                        help=f"Lambda Python runtime version (default {DEFAULT_PYTHON})")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default dist/)")
    parser.add_argument("--wheel-cache", type=Path, default=DEFAULT_CACHE,
                        help=f"downloaded wheels are kept here (default {DEFAULT_CACHE})")
    parser.add_argument("--keep-staging", action="store_true", help="keep the unzipped tree next to the zip")
    parser.add_argument("--python-executable",
                        help="interpreter of --python-version that compiles the bytecode")
    parser.add_argument("--no-bytecode", action="store_true", help="ship no .pyc files (slower cold starts)")
    parser.add_argument("--lock", action="store_true",
                        help="regenerate requirements/lambda.txt (downloads every target's wheels)")
    args = parser.parse_args(argv)
    if args.lock:
        print(lock(args.wheel_cache))
        return 0
    path = build(args.arch, python_version=args.python_version, out=args.out, wheel_cache=args.wheel_cache,
                 keep_staging=args.keep_staging, bytecode=not args.no_bytecode,
                 python_executable=args.python_executable)
    size_mb = path.stat().st_size / 1e6
    print(f"{path} ({size_mb:.1f} MB; Lambda's direct-upload limit is 50 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
