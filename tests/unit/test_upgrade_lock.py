"""scripts/upgrade_lock.py's report: what moved between the lock and a candidate (the network part,
a fresh install and the test run, is the script's own job and not repeated here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("upgrade_lock", REPO / "scripts" / "upgrade_lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["upgrade_lock"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


upgrade = load_script()

OLD = """# Pinned versions
# second comment line
Jinja2==3.1.6
httpx==0.28.1
six==1.17.0
"""
NEW = """jinja2==3.1.7
httpx==0.28.1
opentelemetry-sdk==1.46.0
"""


def test_diff_matches_names_the_way_pip_does_and_sorts_moves_into_kinds() -> None:
    changes = upgrade.diff(OLD, NEW)

    assert changes.changed == [("jinja2", "3.1.6", "3.1.7")]
    assert changes.added == [("opentelemetry-sdk", "1.46.0")]
    assert changes.removed == [("six", "1.17.0")]
    assert changes.lines() == ["  jinja2 3.1.6 -> 3.1.7", "  + opentelemetry-sdk==1.46.0", "  - six==1.17.0"]


def test_an_identical_candidate_moves_nothing() -> None:
    lock = (REPO / "requirements" / "lock.txt").read_text()

    changes = upgrade.diff(lock, upgrade.header(lock) + "\n".join(
        line for line in lock.splitlines() if not line.startswith("#")))

    assert not changes.any
    assert len(upgrade.parse_lock(lock)) > 50


def test_the_candidate_keeps_the_lock_header() -> None:
    assert upgrade.header(OLD) == "# Pinned versions\n# second comment line\n"


def test_summary_says_pass_or_fail_and_what_moved(tmp_path: Path) -> None:
    changes = upgrade.diff(OLD, NEW)

    failed = upgrade.summary(changes, tests_rc=1, candidate=tmp_path / "c.txt", seconds=12)
    passed = upgrade.summary(upgrade.Changes(), tests_rc=0, candidate=tmp_path / "c.txt", seconds=3)
    broken = upgrade.summary(upgrade.Changes(), tests_rc=None, candidate=tmp_path / "c.txt", seconds=3)

    assert failed.splitlines()[0] == "dependencies: 1 changed, 1 added, 1 removed"
    assert "  jinja2 3.1.6 -> 3.1.7" in failed and "tests: FAILED (pytest exit 1)" in failed
    assert passed.splitlines()[:2] == ["dependencies: nothing moved: requirements/lock.txt is current",
                                       "tests: passed"]
    assert "tests: not run" in broken
