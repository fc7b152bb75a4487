"""requirements/lock.txt against pyproject.toml: every declared dependency (core and every extra) is
pinned with ==, and each pin satisfies the bounds pyproject declares, so the README's constrained
install can never fail to resolve or quietly install something the bounds exclude. No network."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = (REPO / "pyproject.toml").read_text()
LOCK = (REPO / "requirements" / "lock.txt").read_text()


def declared(pyproject: str) -> list[tuple[str, Requirement]]:
    """(where, requirement) for the core dependencies and every extra, leaving out pgqueue's own
    extras referring to each other ("pgqueue[otel]" in test)."""
    project = tomllib.loads(pyproject)["project"]
    found = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        found += [(f"[{extra}]", Requirement(r)) for r in reqs]
    own = canonicalize_name(project["name"])
    return [(where, r) for where, r in found if canonicalize_name(r.name) != own]


def pins(lock: str) -> tuple[dict[str, Version], list[str]]:
    """The lock's pins by canonical name, and its lines that are not `name==version`."""
    pinned: dict[str, Version] = {}
    bad: list[str] = []
    for raw in lock.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        try:
            parsed = Version(version) if sep else None
        except InvalidVersion:
            parsed = None
        if parsed is None or canonicalize_name(name) in pinned:
            bad.append(line)
            continue
        pinned[canonicalize_name(name)] = parsed
    return pinned, bad


def problems(pyproject: str, lock: str) -> list[str]:
    pinned, bad = pins(lock)
    found = [f"not an exact pin (or a duplicate): {line}" for line in bad]
    for where, req in declared(pyproject):
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            found.append(f"not pinned: {where} {req}")
        elif not req.specifier.contains(version, prereleases=True):
            found.append(f"outside the declared bounds: {where} {req}, lock has {version}")
    return found


def test_the_lock_pins_every_declared_dependency_within_its_bounds() -> None:
    pinned, _ = pins(LOCK)

    assert problems(PYPROJECT, LOCK) == []
    assert len(pinned) > 50  # the whole tree, not a stub
    # `psycopg[binary,pool]` also installs psycopg-binary; the OpenTelemetry SDK comes with the test extra
    assert {"psycopg-binary", "psycopg-pool", "opentelemetry-sdk", "opentelemetry-proto"} <= pinned.keys()


def test_a_missing_pin_is_reported() -> None:
    lock = "\n".join(line for line in LOCK.splitlines() if not line.lower().startswith("httpx=="))

    assert problems(PYPROJECT, lock) == ["not pinned: dependencies httpx<1,>=0.27"]


def test_a_pin_outside_the_bounds_is_reported() -> None:
    lock = LOCK.replace("\npydantic==", "\npydantic==3.0.0\n#")

    assert problems(PYPROJECT, lock) == [
        "outside the declared bounds: dependencies pydantic<3,>=2.6, lock has 3.0.0"]


def test_a_range_or_a_duplicate_in_the_lock_is_reported() -> None:
    lock = LOCK + "\nhttpx>=0.28\nruff==0.17.6\n"

    assert problems(PYPROJECT, lock) == ["not an exact pin (or a duplicate): httpx>=0.28",
                                         "not an exact pin (or a duplicate): ruff==0.17.6"]


def test_a_dependency_of_an_extra_counts_too() -> None:
    pyproject = PYPROJECT.replace('embedded = ["pgserver>=0.1"]',
                                  'embedded = ["pgserver>=0.1", "left-pad>=1"]')

    assert problems(pyproject, LOCK) == ["not pinned: [embedded] left-pad>=1"]
