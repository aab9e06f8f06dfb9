"""The model package's import structure: no private names across modules, no import cycles (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "connector" / "model"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every ``from connector... import`` / ``import connector...`` in the file, wherever it stands."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("connector"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("connector"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in _imports(path):
            # `from connector.model import train` names a module, `from connector.model.data import X` a package
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules] or [target]
            graph[name].update(t for t in targets if t in modules and t != name and not name.startswith(t + "."))
    return graph


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = [
        f"{_module_name(path)} imports {n} from {module}"
        for path in PACKAGE.rglob("*.py")
        for module, names in _imports(path)
        for n in names
        if n.startswith("_") and module != _module_name(path)
    ]
    assert offenders == []


def test_the_model_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert "connector.model.artifacts" in graph["connector.model.baseline"]
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node])

    for start in sorted(graph):
        visit(start, [])
    assert cycles == [], cycles[0]
