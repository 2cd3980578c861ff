"""The project's modules import each other without a cycle, counting every import (deferred and TYPE_CHECKING ones too);
handlers never import the delivery engine or FastAPI."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from ctflow.settings import REPO_ROOT

SOURCE_ROOTS = (REPO_ROOT / "services", REPO_ROOT / "trainer_image")


@cache
def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for root in SOURCE_ROOTS:
        for path in root.rglob("*.py"):
            if "migrations" in path.parts:  # Alembic loads these by path, nothing imports them
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _known(name: str) -> str | None:
    """The longest prefix of `name` that is a project module (None: a library)."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every project module `module` imports, wherever the import statement stands."""
    path, package = modules()[module]
    here = module.split(".") if package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_known(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])])
            target = base if node.level else (node.module or "")
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                known = submodule if submodule in modules() else _known(target)
                if known:
                    found.add(known)
    found.discard(module)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_takes_part_in_an_import_cycle():
    """Deferred imports hide a cycle from the interpreter, not from a reader: none is allowed."""
    graph = {module: imports_of(module) for module in modules()}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a three-module ring is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_handlers_do_not_import_the_delivery_engine():
    """A handler module sees ctflow.handling, never ctflow.intake (and FastAPI with it)."""
    for module in modules():
        if module.endswith(".handlers") or module == "ctflow.handling":
            assert "ctflow.intake" not in imports_of(module), module
            assert "ctflow.service" not in imports_of(module), module


def test_no_service_imports_the_heavy_libraries_at_start_up():
    """Cold start is a product feature on Cloud Run: importing a service's app loads no ledger (SQLAlchemy),
    MLflow, torch or Google client; they load with the warm-up and the first request that needs them."""
    import subprocess
    import sys

    from ctflow.topology import SERVICES

    apps = ", ".join(f"{name.replace('-', '_')}.app" for name in SERVICES)
    probe = (
        f"import sys; import {apps}; "
        "heavy = ('sqlalchemy', 'mlflow', 'torch', 'google.cloud.', 'google.auth', 'alembic', 'numpy'); "
        "print(sorted({m for m in sys.modules if m.startswith(heavy)}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout
