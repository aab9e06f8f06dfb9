"""Import structure: no private names across a package's modules, no import cycles (lazy imports included).

Checked for the whole ``connector`` tree and, with the private-name rule, for the packages that keep it:
``connector.model`` and ``connector.cli``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

CONNECTOR = REPO / "connector"
STRICT_PACKAGES = ("model", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only: never imported at run time)."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every ``from connector... import`` / ``import connector...`` in the file, wherever it
    stands (lazy imports included), except under ``if TYPE_CHECKING:``."""
    found: list[tuple[str, list[str]]] = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("connector"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("connector"))
    return found


def _graph(package: Path) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in _imports(path):
            # `from connector.model import train` names a module, `from connector.model.data import X` a package
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules] or [target]
            graph[name].update(t for t in targets if t in modules and t != name and not name.startswith(t + "."))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge of a depth-first walk (empty: the graph has none)."""
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node])
        done.add(node)

    for start in sorted(graph):
        visit(start, [])
    return cycles


@pytest.mark.parametrize("package", STRICT_PACKAGES)
def test_no_module_imports_another_modules_private_names(package: str) -> None:
    root = CONNECTOR / package
    offenders = [
        f"{_module_name(path)} imports {n} from {module}"
        for path in root.rglob("*.py")
        for module, names in _imports(path)
        for n in names
        if n.startswith("_") and module != _module_name(path)
    ]
    assert offenders == []


def test_the_model_package_has_no_import_cycle() -> None:
    graph = _graph(CONNECTOR / "model")
    assert "connector.model.artifacts" in graph["connector.model.baseline"]
    cycles = _cycles(graph)
    assert cycles == [], cycles[0]


def test_the_connector_tree_has_no_import_cycle() -> None:
    graph = _graph(CONNECTOR)
    assert "connector.cli.learning" in graph["connector.cli.daemon"]  # the graph sees the CLI's own imports
    cycles = _cycles(graph)
    assert cycles == [], cycles[0]


def test_library_code_does_not_import_the_cli() -> None:
    """The CLI is the top layer: only ``connector.cli`` itself and ``python -m connector`` import it."""
    offenders = [
        f"{_module_name(path)} imports {module}"
        for path in CONNECTOR.rglob("*.py")
        if not _module_name(path).startswith("connector.cli") and _module_name(path) != "connector.__main__"
        for module, _names in _imports(path)
        if module == "connector.cli" or module.startswith("connector.cli.")
    ]
    assert offenders == []


@pytest.mark.parametrize("module", sorted(_module_name(p) for p in (CONNECTOR / "cli").glob("*.py")
                                          if p.name != "__main__.py"))
def test_each_cli_module_imports_alone(module: str) -> None:
    """A fresh interpreter imports the module first: an import cycle would leave a name half-defined."""
    code = f"import importlib; importlib.import_module({module!r})"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert importlib.import_module(module)
