"""The shape of the code, measured: no import cycle between the project's files, no module over 500 lines, no
function over 100.

Every import counts, function-local ones included (those are for optional dependencies, and an optional dependency is
never one of ours); imports under ``if TYPE_CHECKING:`` do not, since they never run. ``from pkg import name`` is an
edge to ``pkg.name`` when that is a module of ours, else to ``pkg``. Run ``python tests/test_structure.py`` for the
measurements (largest modules, longest functions, cycles).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where each import package of ours lives (pyproject's package-dir): the card's top-level folders are subpackages.
PACKAGE_DIRS = {"worldsim": "worldsim", "worldsim.envs": "envs", "worldsim.agents": "agents",
                "worldsim.training": "training", "worldsim.assets": "assets"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the installed package."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            # worldsim/ holds no envs/agents/training folders, so names never collide.
            modules[name] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool):
    """Yield the dotted names a module imports (absolute), skipping TYPE_CHECKING blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                yield base, alias.name
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports."""
    modules = project_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for base, member in _imports(tree, name, path.name == "__init__.py"):
            target = f"{base}.{member}" if member and f"{base}.{member}" in modules else base
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def module_lengths() -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, path in project_modules().items()}


def function_lengths() -> dict[str, int]:
    """``module:function`` -> lines from its ``def`` (decorators excluded) to its last line."""
    lengths = {}
    for name, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{name}:{node.name}:{node.lineno}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_module_over_500_lines():
    over = {m: n for m, n in module_lengths().items() if n > MAX_MODULE_LINES}
    assert not over, over


def test_no_function_over_100_lines():
    over = {f: n for f, n in function_lengths().items() if n > MAX_FUNCTION_LINES}
    assert not over, over


if __name__ == "__main__":
    for component in cycles(import_graph()):
        print("cycle:", " ".join(component))
    print("largest modules:")
    for name, n in sorted(module_lengths().items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {n:5d} {name}")
    print("longest functions:")
    for name, n in sorted(function_lengths().items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {n:5d} {name}")
