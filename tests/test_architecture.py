"""The shape of the code: modules small enough to read in one sitting, short functions, no import
cycle between modules, and the layers of docs/architecture.md (the import-linter contract in
pyproject.toml). Each failure lists every offender, so one run shows all there is to fix."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "agent"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    """``agent/store/__init__.py`` is ``agent.store``; ``agent/store/database.py`` is ``agent.store.database``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- sizes -----------------------------------------------------------------------------------------

def long_functions(tree: ast.AST) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function and method, nested ones too."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                assert child.end_lineno is not None
                yield name, child.lineno, child.end_lineno - child.lineno + 1
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)
    yield from walk(tree, "")


def test_no_module_is_longer_than_400_lines() -> None:
    too_long = []
    for path in source_files().values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{relative(path)}: {lines} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n" + "\n".join(too_long)


def test_no_function_is_longer_than_60_lines() -> None:
    too_long = []
    for path in source_files().values():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, line, length in long_functions(tree):
            if length > MAX_FUNCTION_LINES:
                too_long.append(f"{relative(path)}:{line} {name}: {length} lines")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def test_the_size_checks_see_methods_nested_functions_and_async_ones() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(3))
    tree = ast.parse(f"class A:\n  def m(self):\n{body}\n    async def inner():\n      pass\n\n"
                     f"async def f():\n  pass\n")
    found = {name: length for name, _, length in long_functions(tree)}
    assert found == {"A.m": 6, "A.m.inner": 2, "f": 2}


# --- import cycles ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` stands for: itself, or the nearest package or module that contains it."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(importer: str, path: Path, modules: dict[str, Path]) -> Iterator[Edge]:
    """Every import of an agent module anywhere in the file: top level, in functions, under TYPE_CHECKING."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importer.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[:len(base) - drop]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from agent.x import y` imports the module agent.x.y when there is one, else agent.x
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        for target in targets:
            imported = resolve(target, modules) if target.split(".")[0] == "agent" else None
            if imported is not None and imported != importer:
                yield Edge(importer, imported, node.lineno)


def import_graph() -> dict[str, list[Edge]]:
    modules = source_files()
    return {name: sorted(set(imports_of(name, path, modules)), key=lambda e: (e.line, e.imported))
            for name, path in modules.items()}


def strongly_connected_components(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[Edge]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            edge = next(edges, None)
            if edge is not None:
                child = edge.imported
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def describe(component: list[str], graph: dict[str, list[Edge]]) -> str:
    members = set(component)
    edges = [f"    {e.importer} -> {e.imported} ({relative(source_files()[e.importer])}:{e.line})"
             for name in component for e in graph[name] if e.imported in members]
    return f"  cycle among {', '.join(component)}:\n" + "\n".join(edges)


def test_no_import_cycle_between_agent_modules() -> None:
    graph = import_graph()
    cycles = strongly_connected_components(graph)
    assert not cycles, "import cycles (function-level imports count too):\n" + "\n".join(
        describe(component, graph) for component in cycles)


def test_cycle_finder_reports_exactly_the_modules_on_a_cycle() -> None:
    def edges(*names: str) -> list[Edge]:
        return [Edge("?", name, 1) for name in names]
    graph = {"a": edges("b"), "b": edges("c"), "c": edges("a", "d"), "d": edges("e"), "e": edges("d"),
             "f": edges("a")}
    assert strongly_connected_components(graph) == [["a", "b", "c"], ["d", "e"]]
    assert strongly_connected_components({"a": edges("b"), "b": []}) == []


def test_import_graph_resolves_submodules_packages_and_relative_imports() -> None:
    graph = import_graph()
    assert all(e.imported in graph for edges in graph.values() for e in edges)  # only agent modules
    assert "agent.cli" in {e.imported for e in graph["agent.__main__"]}  # `from agent.cli import main`


# --- layers ----------------------------------------------------------------------------------------

def test_imports_follow_the_layers_contract_in_pyproject() -> None:
    """`lint-imports` with the [tool.importlinter] contract: no layer imports from one above it."""
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache", "--no-logo"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}{result.stderr}"
