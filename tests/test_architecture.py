"""The shape of the house, drawn from the code: which package may import which, and how
big a module or a folder may grow before a newcomer loses the thread.

The import graph is read with ``ast`` from the sources (nothing is imported), so a rule
broken inside a function or under ``TYPE_CHECKING`` counts as much as one at the top.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "resolvers", "adapters", "demo")
PRODUCTION = ("gateway", "resolvers", "adapters")
MAX_MODULE_LINES = 400
MAX_FOLDER_MODULES = 15
# Sizes are drawn over the whole repository (tests and benchmarks are read as often as
# the code), except Alembic's versions folder: one flat folder of revisions, named by
# number, is that tool's convention, and a reader scans it by number rather than name.
NOT_SIZED = (("migrations", "versions"),)
# Folders that are not the project's sources: tooling, builds, caches.
NOT_SOURCES = {"__pycache__", "build", "dist", "node_modules"}
# Libraries of the edge: the services below it speak domain values and errors only.
EDGE_LIBRARIES = ("starlette", "strawberry", "graphql")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def sized_sources() -> Iterator[Path]:
    """Every Python file of the repository that the size rules apply to."""
    for folder, subfolders, files in os.walk(ROOT):
        here = Path(folder)
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".")
            and name not in NOT_SOURCES
            and not name.endswith(".egg-info")
            and (here / name).relative_to(ROOT).parts not in NOT_SIZED
        )
        yield from (here / name for name in sorted(files) if name.endswith(".py"))


def imports(path: Path, module: str | None = None) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports (absolute names), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # ``from gateway import demo`` imports a module too
                yield node.lineno, f"{name}.{alias.name}"


# What gateway/db may use besides itself: the shared error tiers, settings and metrics.
DATABASE_MAY_IMPORT = {"db", "errors", "settings", "observability"}


def top(name: str) -> str:
    return name.split(".", 1)[0]


def violations(rule: str) -> list[str]:
    found = []
    for path in sources():
        where = top(module_name(path))
        for line, name in imports(path):
            target = top(name)
            broken = (
                (rule == "edge" and where in {"gateway", "adapters"} and target == "resolvers")
                or (rule == "demo" and where in PRODUCTION and target in {"demo", "tests"})
                or (
                    rule == "libraries"
                    and where in {"gateway", "adapters"}
                    and target in EDGE_LIBRARIES
                )
                or (rule == "adapters" and where == "adapters" and target == "gateway")
                or (
                    rule == "database"
                    and module_name(path).startswith("gateway.db.")
                    and name.startswith("gateway.")
                    and name.split(".")[1] not in DATABASE_MAY_IMPORT
                )
            )
            if broken:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return sorted(set(found))


@pytest.mark.parametrize(
    ("rule", "meaning"),
    [
        ("edge", "services (gateway/) and adapters never import the edge (resolvers/)"),
        ("demo", "production code never imports the demo or the tests"),
        ("libraries", "services and adapters know nothing of HTTP or GraphQL libraries"),
        ("adapters", "adapters never import the services above them"),
        ("database", "the database layer (gateway/db) never imports the services above it"),
    ],
)
def test_imports_point_down(rule: str, meaning: str) -> None:
    assert violations(rule) == [], meaning


def test_no_module_over_the_size_a_reader_keeps_in_mind() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in sized_sources()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert long == []


def test_no_folder_too_flat_to_scan() -> None:
    # Every module counts, ``__init__.py`` too: a reader scanning the folder sees it.
    crowded = []
    for folder in {path.parent for path in sized_sources()}:
        modules = list(folder.glob("*.py"))
        if len(modules) > MAX_FOLDER_MODULES:
            crowded.append(f"{folder.relative_to(ROOT)}: {len(modules)} modules")
    assert sorted(crowded) == []


def test_every_package_says_what_it_holds() -> None:
    silent = [
        str(init.relative_to(ROOT))
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
        if ast.get_docstring(ast.parse(init.read_text())) is None
    ]
    assert silent == []


def test_the_graph_sees_every_form_of_import(tmp_path: Path) -> None:
    """The checker itself can fail: imports inside functions, relative ones and
    ``from package import module`` are all drawn."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "def f():\n    from resolvers.app import create_app\n"
        "from .. import sibling\nimport starlette.responses as r\n"
    )
    names = {name for _, name in imports(planted, "gateway.ingest.planted")}
    assert {"resolvers.app", "gateway.sibling", "starlette.responses"} <= names
