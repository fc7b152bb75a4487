"""Named SQL statements loaded once from sql/queries/*.sql.

A file holds blocks that start with `-- name: <name>`; the statement runs until the next block.
Python never builds SQL from strings: call sites look a statement up by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import LiteralString, cast

from pgqueue.db.sqldir import sql_dir

_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    sql: LiteralString

    def __str__(self) -> str:
        return self.name


def _load() -> MappingProxyType[str, Query]:
    found: dict[str, Query] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        text = path.read_text()
        parts = _NAME.split(text)
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"duplicate query name {name!r} in {path.name}")
            statement = body.strip().rstrip(";").strip()
            if not statement:
                raise RuntimeError(f"query {name!r} in {path.name} is empty")
            found[name] = Query(name, cast(LiteralString, statement))
    return MappingProxyType(found)


QUERIES = _load()


def q(name: str) -> LiteralString:
    """The SQL text of a named query (KeyError names the missing query)."""
    try:
        return QUERIES[name].sql
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in sql/queries") from None
