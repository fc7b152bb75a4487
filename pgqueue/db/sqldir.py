"""Locate the shipped SQL folder: `sql/` in a checkout, `pgqueue/sql` inside an installed wheel."""

from __future__ import annotations

from pathlib import Path


def sql_dir() -> Path:
    package = Path(__file__).resolve().parents[1]  # pgqueue/
    for candidate in (package / "sql", package.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(f"pgqueue's sql/ folder is missing next to {package}; reinstall the package")
