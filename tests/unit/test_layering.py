"""Static checks on the source tree: imports follow the architecture's arrows, and SQL is never built
from strings (f-strings, str.format, % or +). Both walk the AST, so they need no database."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pgqueue"
API = REPO / "api"

THIRD_PARTY_SQL = frozenset({"psycopg", "psycopg_pool"})


def _python_files(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module `path` imports (including under TYPE_CHECKING and inside functions), absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            for alias in node.names:
                # `from pgqueue import ids` imports the module pgqueue.ids, not the package
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(candidate) else base


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _within(module: str, *prefixes: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_import_walker_resolves_relative_and_package_imports() -> None:
    # sanity check of the walker on this repo's own files, so the layering tests below are not vacuous
    events = {name for _, name in imported_modules(PACKAGE / "store" / "events.py")}
    assert "pgqueue.ids" in events  # `from pgqueue import ids`
    assert "pgqueue.db.queries" in events
    assert "psycopg.types.json" in events


# --- layering -----------------------------------------------------------------------------------------


# The architecture's order, written once: a unit may import its own layer and the layers before it,
# never a later one. Units are the top-level modules and packages of pgqueue/, plus api/ and lambda/.
# The README's "Architecture" section lists the same packages in the same order.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("pgqueue.errors", "pgqueue.ids", "pgqueue.durations", "pgqueue.models",
                     "pgqueue.storable", "pgqueue.logging_setup", "pgqueue.service_loop")),
    ("protocol", ("pgqueue.protocol",)),
    ("settings and telemetry", ("pgqueue.settings", "pgqueue.telemetry")),
    ("db", ("pgqueue.db",)),
    ("store", ("pgqueue.store",)),
    ("expressions and events", ("pgqueue.expressions", "pgqueue.events")),
    ("runs", ("pgqueue.runs",)),
    ("realtime", ("pgqueue.realtime",)),
    ("runner and queue", ("pgqueue.runner", "pgqueue.queue")),
    ("executor", ("pgqueue.executor",)),
    ("apps", ("pgqueue.apps",)),
    ("services and serverless", ("pgqueue.services", "pgqueue.serverless")),
    ("admin", ("pgqueue.admin",)),
    ("surface", ("pgqueue", "pgqueue.cli", "pgqueue.__main__", "api", "lambda")),
)


def unit_of(module: str) -> str:
    """The top-level module or package `module` belongs to: pgqueue.runner.cron -> pgqueue.runner."""
    parts = module.split(".")
    if parts[0] in ("api", "lambda"):
        return parts[0]
    return ".".join(parts[:2])


def layer_of(module: str) -> int | None:
    unit = unit_of(module)
    for index, (_, units) in enumerate(LAYERS):
        if unit in units:
            return index
    return None


def import_edges() -> list[tuple[str, int, str]]:
    """(importer, line, imported) for every import between pgqueue/api/lambda modules."""
    return [
        (_module_name(path), line, module)
        for path in _python_files(PACKAGE, API, REPO / "lambda")
        for line, module in imported_modules(path)
        if _top(module) in ("pgqueue", "api")
    ]


def upward_imports(edges: list[tuple[str, int, str]]) -> list[str]:
    found = []
    for importer, line, module in edges:
        mine, theirs = layer_of(importer), layer_of(module)
        if mine is not None and theirs is not None and theirs > mine:
            found.append(f"{importer}:{line} ({LAYERS[mine][0]}) imports {module} ({LAYERS[theirs][0]})")
    return found


def test_every_unit_has_a_place_in_the_layer_order() -> None:
    units = {unit_of(_module_name(path)) for path in _python_files(PACKAGE, API, REPO / "lambda")}
    placed = {unit for _, layer in LAYERS for unit in layer}

    assert units - placed == set(), "add these to LAYERS (and the README's architecture section)"
    assert placed - units == set(), "LAYERS names units that no longer exist"


def test_imports_run_only_downward_in_the_layer_order() -> None:
    edges = import_edges()
    assert len(edges) > 100  # the walker sees the tree

    violations = upward_imports(edges)

    assert not violations, "imports against the architecture's order:\n" + "\n".join(violations)


def test_the_layer_check_catches_an_upward_import() -> None:
    # the check is not vacuous: the store importing the runner, or settings importing the executor
    assert upward_imports([("pgqueue.store.runs", 1, "pgqueue.runner.starting")])
    assert upward_imports([("pgqueue.settings", 1, "pgqueue.executor.egress")])
    assert not upward_imports([("pgqueue.runner.starting", 1, "pgqueue.store.runs")])


def test_no_two_modules_differ_only_by_a_letter_or_a_folder() -> None:
    # service.py beside services.py, control.py beside store/control.py: names a newcomer cannot tell
    # apart. Package __init__ files and a package named for the store module it serves are fine.
    stems: dict[str, list[str]] = {}
    for path in _python_files(PACKAGE):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        stems.setdefault(path.stem.rstrip("s"), []).append(str(path.relative_to(REPO)))

    twins = {stem: paths for stem, paths in stems.items() if len(paths) > 1}

    assert not twins, twins



STORE_MAY_IMPORT = ("pgqueue.db", "pgqueue.models", "pgqueue.errors", "pgqueue.ids", "pgqueue.store")


def _store_violations() -> list[str]:
    found: list[str] = []
    for path in _python_files(PACKAGE / "store"):
        for line, module in imported_modules(path):
            if _top(module) in sys.stdlib_module_names or _top(module) in THIRD_PARTY_SQL:
                continue
            if _within(module, *STORE_MAY_IMPORT):
                continue
            found.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return found


def test_store_imports_only_db_models_errors_ids_stdlib_and_psycopg() -> None:
    # The store is the bottom of the data flow: it must not know about registration, the runner, the
    # executor or the API. Sibling store modules are the same layer and allowed.
    assert _python_files(PACKAGE / "store"), "no store modules found"

    violations = _store_violations()

    assert not violations, "pgqueue/store imports upward:\n" + "\n".join(violations)


DB_MAY_IMPORT = ("pgqueue.db", "pgqueue.errors", "pgqueue.models", "pgqueue.ids")


def test_db_layer_imports_nothing_above_it() -> None:
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in _python_files(PACKAGE / "db")
        for line, module in imported_modules(path)
        if _top(module) in ("pgqueue", "api") and not _within(module, *DB_MAY_IMPORT)
    ]

    assert not violations, "pgqueue/db imports upward:\n" + "\n".join(violations)


@pytest.mark.parametrize("module", ["models", "errors", "ids", "storable", "logging_setup", "service_loop"])
def test_foundation_modules_import_no_other_pgqueue_module(module: str) -> None:
    path = PACKAGE / f"{module}.py"
    inside = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for line, name in imported_modules(path)
        if _top(name) in ("pgqueue", "api") and not _within(name, "pgqueue.errors")
    ]

    assert not inside, inside


EXPRESSIONS_MAY_IMPORT = ("pgqueue.expressions", "pgqueue.errors")
EXPRESSIONS_THIRD_PARTY = frozenset({"re2"})


def _expressions_violations() -> list[str]:
    found: list[str] = []
    for path in _python_files(PACKAGE / "expressions"):
        for line, module in imported_modules(path):
            if _top(module) in sys.stdlib_module_names or _top(module) in EXPRESSIONS_THIRD_PARTY:
                continue
            if _within(module, *EXPRESSIONS_MAY_IMPORT):
                continue
            found.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return found


def test_expressions_import_only_errors_stdlib_and_re2() -> None:
    # The expression language is a leaf: the runner, pausing, registration and control use it, never
    # the other way round, so it can be tested (and fuzzed) without a database or an event loop.
    assert len(_python_files(PACKAGE / "expressions")) > 5, "no expressions package found"

    violations = _expressions_violations()

    assert not violations, "pgqueue/expressions imports upward:\n" + "\n".join(violations)


def test_the_old_expressions_module_is_gone() -> None:
    assert not (PACKAGE / "runner" / "expressions.py").exists()
    importers = [
        f"{path.relative_to(REPO)}:{line}"
        for path in _python_files(PACKAGE, API, REPO / "tests")
        for line, module in imported_modules(path)
        if _within(module, "pgqueue.runner.expressions")
    ]

    assert not importers, importers


def test_only_the_cli_imports_the_web_layer() -> None:
    # `api` sits on top of the package; within pgqueue only the command line (which serves it) may use it.
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in _python_files(PACKAGE)
        if path != PACKAGE / "cli.py"
        for line, module in imported_modules(path)
        if _top(module) == "api"
    ]

    assert not violations, violations


# --- SQL is never built from strings ------------------------------------------------------------------


_SQL_TEXT = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\S+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(CREATE|DROP|ALTER)\s+(OR\s+REPLACE\s+)?(TABLE|SCHEMA|DATABASE|INDEX|FUNCTION|TYPE|VIEW|ROLE)\b"
    r"|\bTRUNCATE\b|\b(LISTEN|NOTIFY)\s+\w"
)
_EXECUTORS = frozenset({"execute", "executemany"})


def _string_parts(node: ast.AST) -> str:
    return " ".join(
        part.value
        for part in ast.walk(node)
        if isinstance(part, ast.Constant) and isinstance(part.value, str)
    )


def _built_string(node: ast.AST) -> str | None:
    """How `node` builds a string at run time (f-string, .format, %, +, join), or None."""
    if isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in node.values):
        return "f-string"
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Mod)
        and isinstance(node.left, ast.Constant | ast.JoinedStr)
    ):
        return "% formatting"
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add)
        and (
            _built_string(node.left)
            or _built_string(node.right)
            or any(
                isinstance(side, ast.Constant | ast.JoinedStr) and isinstance(getattr(side, "value", ""), str)
                for side in (node.left, node.right)
            )
        )
    ):
        return "concatenation"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        receiver = node.func.value
        if node.func.attr == "format" and isinstance(receiver, ast.Constant | ast.JoinedStr):
            return "str.format"
        if node.func.attr == "join" and isinstance(receiver, ast.Constant):
            return "str.join"
    return None


def _is_sql_composable(node: ast.expr) -> bool:
    """`sql.SQL(...)`, `SQL(...)`, `psycopg.sql.SQL(...)` (and their .format/.join): the safe way."""
    func = node.func if isinstance(node, ast.Call) else None
    if (
        isinstance(func, ast.Attribute)
        and func.attr in ("format", "join")
        and isinstance(func.value, ast.Call)
    ):
        return _is_sql_composable(func.value)
    if isinstance(func, ast.Name):
        return func.id in ("SQL", "Composed")
    if isinstance(func, ast.Attribute):
        return func.attr in ("SQL", "Composed")
    return False


def sql_string_building(source: str, filename: str = "<source>") -> list[str]:
    """Places in `source` where SQL is assembled from strings instead of named queries or psycopg.sql."""
    tree = ast.parse(source, filename=filename)
    problems: list[str] = []
    # assignments per scope, to follow `query = f"..."; cur.execute(query)`
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
        elif (
            isinstance(node, ast.AnnAssign | ast.AugAssign)
            and isinstance(node.target, ast.Name)
            and node.value
        ):
            value = (
                node.value if isinstance(node, ast.AnnAssign) else ast.BinOp(node.target, node.op, node.value)
            )
            assigned.setdefault(node.target.id, []).append(value)

    def origins(node: ast.expr) -> list[ast.expr]:
        if isinstance(node, ast.Name) and node.id in assigned:
            return assigned[node.id]
        if isinstance(node, ast.IfExp):
            return [node.body, node.orelse]
        return [node]

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _EXECUTORS and node.args:
            for origin in origins(node.args[0]):
                how = _built_string(origin)
                if how:
                    problems.append(f"{filename}:{node.lineno}: {func.attr}() of a string built with {how}")
        if _is_sql_composable(node) and not (
            isinstance(func, ast.Attribute) and func.attr in ("format", "join")
        ):
            if node.args and not (
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
            ):
                for origin in origins(node.args[0]):
                    if not (isinstance(origin, ast.Constant) and isinstance(origin.value, str)):
                        problems.append(f"{filename}:{node.lineno}: sql.SQL() of a non-literal string")
    for node in ast.walk(tree):
        how = _built_string(node)
        if how and _SQL_TEXT.search(_string_parts(node)):
            problems.append(f"{filename}:{node.lineno}: SQL text built with {how}")
    return sorted(set(problems))


@pytest.mark.parametrize(
    "source",
    [
        'cur.execute(f"SELECT * FROM pgqueue.runs WHERE id = {run_id}")',
        'cur.execute("SELECT * FROM pgqueue.runs WHERE id = {}".format(run_id))',
        'cur.execute("SELECT * FROM pgqueue.runs WHERE id = %s" % run_id)',
        'cur.execute("SELECT * FROM " + table)',
        'query = f"DELETE FROM pgqueue.{table}"\nawait conn.execute(query)',
        "q = \"UPDATE pgqueue.runs SET status = '{}'\".format(s)",
        'conn.execute(sql.SQL(f"LISTEN {channel}"))',
        'stmt = f"DROP TABLE {name}"',
    ],
    ids=[
        "f-string",
        "format",
        "percent",
        "concat",
        "via-variable",
        "format-anywhere",
        "sql-of-fstring",
        "ddl",
    ],
)
def test_the_sql_building_check_catches(source: str) -> None:
    assert sql_string_building(source), f"not caught: {source}"


@pytest.mark.parametrize(
    "source",
    [
        'cur.execute(q("run_get"), {"run_id": run_id})',
        'cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))',
        'conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))',
        'query = q("a") if x else q("b")\ncur.execute(query, params)',
        "cur.execute(cast(LiteralString, path.read_text()))",
        'raise ConfigError(f"{name} must be positive, got {value}")',
        'log.info(f"selected {n} rows from the inbox")',
    ],
    ids=["named", "literal", "composable", "conditional-named", "file", "message", "prose"],
)
def test_the_sql_building_check_allows(source: str) -> None:
    assert sql_string_building(source) == []


def test_no_sql_is_built_from_strings_in_pgqueue_or_api() -> None:
    files = _python_files(PACKAGE, API)
    assert len(files) > 20

    problems = [
        problem
        for path in files
        for problem in sql_string_building(path.read_text(), str(path.relative_to(REPO)))
    ]

    assert not problems, "\n".join(problems)


def test_only_the_store_and_db_layers_execute_sql() -> None:
    # "store/: the only Python that issues SQL" (db/ holds the migrator, notify listener and embedded PG)
    outside = []
    for path in _python_files(PACKAGE, API):
        if _within(_module_name(path), "pgqueue.store", "pgqueue.db"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _EXECUTORS
                and isinstance(node.func.value, ast.Name | ast.Attribute)
                and re.search(r"conn|cur", ast.unparse(node.func.value))
            ):
                outside.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node.func)}")

    assert not outside, outside
