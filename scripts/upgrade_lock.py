"""Scheduled-style dependency check: would today's releases still pass the tests?

Creates a fresh virtual environment, installs pgqueue with its extras *without* the lock (so pip picks
the newest versions pyproject.toml's bounds allow), writes what it got as a candidate lock, runs the
test suite in that environment and reports which packages moved and whether the tests passed:

    python scripts/upgrade_lock.py                          # whole suite (as CI), candidate in requirements/
    python scripts/upgrade_lock.py --pytest-args "tests/unit -q"    # a quick look
    python scripts/upgrade_lock.py --apply                  # also replace requirements/lock.txt if green

Exit status: 0 the tests passed with the candidate (nothing moved, or it can replace the lock);
1 the tests failed with it (the summary names what moved: bisect there, or add an upper bound);
2 the candidate could not be installed. Standard library only, so any Python 3.11+ runs it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
CANDIDATE = REPO / "requirements" / "lock.candidate.txt"
EXTRAS = "test,embedded,otel"


def canonical(name: str) -> str:
    """PEP 503 normalised name: pip freeze prints `Jinja2`, the lock may say `jinja2`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version) for every `name==version` line."""
    pins: dict[str, tuple[str, str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        name, sep, version = line.partition("==")
        if sep:
            pins[canonical(name)] = (name.strip(), version.strip())
    return pins


def header(text: str) -> str:
    """The lock's leading comment block, kept on the candidate."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


@dataclass
class Changes:
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # name, old, new
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def lines(self) -> list[str]:
        out = [f"  {name} {old} -> {new}" for name, old, new in self.changed]
        out += [f"  + {name}=={version}" for name, version in self.added]
        out += [f"  - {name}=={version}" for name, version in self.removed]
        return out


def diff(old: str, new: str) -> Changes:
    before, after = parse_lock(old), parse_lock(new)
    changes = Changes()
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            changes.removed.append(before[key])
        elif key not in before:
            changes.added.append(after[key])
        elif before[key][1] != after[key][1]:
            changes.changed.append((after[key][0], before[key][1], after[key][1]))
    return changes


def summary(changes: Changes, *, tests_rc: int | None, candidate: Path, seconds: float) -> str:
    moved = (f"{len(changes.changed)} changed, {len(changes.added)} added, {len(changes.removed)} removed"
             if changes.any else "nothing moved: requirements/lock.txt is current")
    lines = [f"dependencies: {moved}", *changes.lines()]
    if tests_rc is None:
        lines.append("tests: not run (the candidate did not install)")
    else:
        lines.append(f"tests: {'passed' if tests_rc == 0 else f'FAILED (pytest exit {tests_rc})'}")
    lines.append(f"candidate lock: {candidate}  ({seconds:.0f} s)")
    return "\n".join(lines)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--extras", default=EXTRAS, help=f"extras to install (default {EXTRAS})")
    add("--venv", type=Path, help="where to create the environment (default: a temporary folder)")
    add("--keep", action="store_true", help="keep the environment afterwards")
    add("--output", type=Path, default=CANDIDATE, help=f"candidate lock (default {CANDIDATE})")
    add("--pytest-args", default="", help="arguments for pytest (default: the whole suite, as CI)")
    add("--apply", action="store_true", help="replace requirements/lock.txt when the tests pass")
    args = parser.parse_args(argv)

    started = time.monotonic()
    venv = args.venv or Path(tempfile.mkdtemp(prefix="pgqueue-upgrade-"))
    python = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    current = LOCK.read_text()

    def report(changes: Changes, tests_rc: int | None) -> None:
        print()
        print(summary(changes, tests_rc=tests_rc, candidate=args.output, seconds=time.monotonic() - started))

    try:
        if run([sys.executable, "-m", "venv", "--clear", str(venv)]).returncode != 0:
            return 2
        # No -c: the newest versions pyproject.toml allows.
        if run([python, "-m", "pip", "install", "-q", "-e", f"{REPO}[{args.extras}]"], cwd=REPO).returncode:
            report(Changes(), None)
            return 2
        frozen = run([python, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True)
        if frozen.returncode != 0:
            print(frozen.stderr, file=sys.stderr)
            return 2
        candidate = header(current) + frozen.stdout
        args.output.write_text(candidate)
        changes = diff(current, candidate)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        tests = run([python, "-m", "pytest", *args.pytest_args.split()], cwd=REPO, env=env)
        report(changes, tests.returncode)
        if tests.returncode == 0 and args.apply and changes.any:
            LOCK.write_text(candidate)
            print(f"requirements/lock.txt replaced by the candidate ({args.output} kept)")
        return 0 if tests.returncode == 0 else 1
    finally:
        if not args.keep and args.venv is None:
            shutil.rmtree(venv, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
