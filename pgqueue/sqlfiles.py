"""Locate the shipped SQL folder: `sql/` in a checkout, `pgqueue/sql` inside an installed wheel."""

from __future__ import annotations

from pathlib import Path


def sql_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(f"pgqueue's sql/ folder is missing next to {here}; reinstall the package")
