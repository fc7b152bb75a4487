#!/usr/bin/env python3
"""Build the AWS Lambda deployment zip: pgqueue, its dependencies as manylinux wheels for the
target architecture and Python version, and the two handler files at the root of the zip.

    python scripts/build_lambda.py --arch arm64            # -> dist/pgqueue-lambda-arm64.zip
    python scripts/build_lambda.py --arch x86_64 --python-version 3.12

Dependencies come from pyproject.toml's [project].dependencies (psycopg[binary] brings libpq, so
no layer is needed). Wheels are downloaded once per platform into --wheel-cache (default under
/tmp) and installed from there with --no-index; only binary wheels are accepted, so a build on
any machine yields a package for Amazon Linux. The package tree mirrors the wheel: `pgqueue/`
with the SQL files at `pgqueue/sql/`, `api/`, and `api_handler.py` / `executor_handler.py`.
boto3 is not bundled: the Lambda Python runtime ships it.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHES = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
DEFAULT_PYTHON = "3.12"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "pgqueue-lambda-wheels"
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


def _pip(*args: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="pgqueue-constraints-") as constraints:
        constraints.write("\n".join(RUNTIME_CONSTRAINTS) + "\n")
        constraints.flush()
        subprocess.run([sys.executable, "-m", "pip", *args, "--constraint", constraints.name,
                        "--disable-pip-version-check", "--quiet"], check=True)


def _platform_args(arch: str, python_version: str) -> list[str]:
    return ["--platform", ARCHES[arch], "--only-binary=:all:", "--python-version", python_version,
            "--implementation", "cp"]


def download(arch: str, python_version: str, cache: Path, requirements: list[str]) -> Path:
    """Wheels for the target into cache/<platform>-cp<ver>/, skipped when already there."""
    folder = cache / f"{ARCHES[arch]}-cp{python_version.replace('.', '')}"
    marker = folder / "requirements.sha256"
    digest = hashlib.sha256("\n".join(sorted(requirements + RUNTIME_CONSTRAINTS)).encode()).hexdigest()
    if marker.is_file() and marker.read_text() == digest:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _pip("download", "--dest", str(folder), *_platform_args(arch, python_version), *requirements)
    marker.write_text(digest)
    return folder


def _copy_tree(src: Path, dst: Path) -> None:
    def skipped(_: str, names: list[str]) -> list[str]:
        return [n for n in names if n in SKIP_DIRS or n.endswith(".pyc")]

    shutil.copytree(src, dst, ignore=skipped)


def stage(arch: str, python_version: str, wheels: Path, requirements: list[str], target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    _pip("install", "--no-index", "--find-links", str(wheels), "--target", str(target), "--no-compile",
         "--no-warn-conflicts",
         *_platform_args(arch, python_version), *requirements)
    # the project itself, laid out as the wheel lays it out (pyproject: packages + force-include)
    _copy_tree(ROOT / "pgqueue", target / "pgqueue")
    _copy_tree(ROOT / "sql", target / "pgqueue" / "sql")
    _copy_tree(ROOT / "api", target / "api")
    for handler in sorted((ROOT / "lambda").glob("*.py")):
        shutil.copy2(handler, target / handler.name)
    for junk in [*target.rglob("__pycache__"), target / "bin"]:
        if junk.exists():
            shutil.rmtree(junk)


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
          wheel_cache: Path = DEFAULT_CACHE, keep_staging: bool = False) -> Path:
    """Build the zip and return its path; the unzipped tree stays in out/build-<name> if asked."""
    requirements = dependencies()
    wheels = download(arch, python_version, wheel_cache, requirements)
    name = package_name(arch, python_version)
    staging = out / f"build-{name.removesuffix('.zip')}"
    stage(arch, python_version, wheels, requirements, staging)
    destination = out / name
    write_zip(staging, destination)
    if not keep_staging:
        shutil.rmtree(staging)
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHES), default="arm64",
                        help="Lambda architecture (default arm64)")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON,
                        help=f"Lambda Python runtime version (default {DEFAULT_PYTHON})")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default dist/)")
    parser.add_argument("--wheel-cache", type=Path, default=DEFAULT_CACHE,
                        help=f"downloaded wheels are kept here (default {DEFAULT_CACHE})")
    parser.add_argument("--keep-staging", action="store_true", help="keep the unzipped tree next to the zip")
    args = parser.parse_args(argv)
    path = build(args.arch, python_version=args.python_version, out=args.out, wheel_cache=args.wheel_cache,
                 keep_staging=args.keep_staging)
    size_mb = path.stat().st_size / 1e6
    print(f"{path} ({size_mb:.1f} MB; Lambda's direct-upload limit is 50 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
