"""No import cycle in ``src/ds01``: the import graph, built from the source's syntax tree.

An edge ``A -> B`` means that running ``A`` imports ``B``:

- module-level imports **and** imports inside functions and methods: a cycle closed by a
  function-level import is still a cycle (it moves the failure from import time to the
  first call, and ties the two modules together all the same);
- ``from pkg import name`` is an edge to the module ``pkg.name`` when that is a module of
  the package (importing a submodule), and to ``pkg`` otherwise;
- ``import a.b.c`` and ``from a.b.c import n`` also run the packages ``a`` and ``a.b``
  (their ``__init__``), so those are edges too, except to the importer's own enclosing
  packages, which are already running when it is imported (a package ``__init__`` that
  re-exports its submodules is not a cycle);
- relative imports are resolved against the importing module.

Imports under ``if TYPE_CHECKING:`` are **left out**: they never execute, and are how an
annotation names a type without importing its module at run time (their ``else:`` branch
does execute and counts). Dynamic imports (``importlib.import_module``, ``__import__``)
would be invisible here, so a test below checks that ``src/ds01`` has none.

``python3 ../shared/tools/import_cycles.py src ds01`` is an independent check of the same
property; it counts ``TYPE_CHECKING`` imports as edges too, so it may report more.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from tests.conftest import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
PACKAGE = "ds01"


@dataclass(frozen=True)
class Import:
    """Where one edge comes from: the line, and whether it runs only when a function does."""

    line: int
    in_function: bool


Graph = dict[str, dict[str, list[Import]]]


def modules_of(src: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``src``, by dotted name (packages by their own)."""
    out: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Imports(ast.NodeVisitor):
    """Collects (target, Import) for every import that can execute."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module = module
        # The package a relative import starts from: the module's own for an __init__.
        self.anchor = module.split(".") if is_package else module.split(".")[:-1]
        self.known = known
        self.depth = 0  # > 0 inside a function or lambda
        self.found: list[tuple[str, Import]] = []

    def _add(self, dotted: str, line: int) -> None:
        parts = dotted.split(".")
        own = self.module.split(".")
        for n in range(1, len(parts) + 1):
            target = ".".join(parts[:n])
            is_ancestor = own[:n] == parts[:n] and n < len(own)
            if target in self.known and target != self.module and not is_ancestor:
                self.found.append((target, Import(line, self.depth > 0)))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for stmt in node.orelse:  # only the else branch runs
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            up = self.anchor[: len(self.anchor) - (node.level - 1)]
            base = ".".join([*up, base] if base else up)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else base, node.lineno)


def import_graph(src: Path, package: str) -> Graph:
    """Module -> imported module -> where, for every module of ``package``."""
    modules = modules_of(src, package)
    known = set(modules)
    graph: Graph = {name: {} for name in modules}
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for target, where in visitor.found:
            graph[name].setdefault(target, []).append(where)
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """The cycles as Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
    return sorted(found)


def shortest_cycle(graph: Graph, members: list[str]) -> list[str]:
    """One shortest cycle through the first of ``members`` (a strongly connected set)."""
    start, inside = members[0], set(members)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if w in inside and w not in came_from:
                came_from[w] = v
                queue.append(w)
    raise AssertionError(f"{members} is not strongly connected")


def describe(graph: Graph, members: list[str]) -> str:
    """A cycle for a person: its modules, one loop through them, and the import lines."""
    loop = shortest_cycle(graph, members)
    steps = []
    for a, b in pairwise(loop):
        lines = ", ".join(
            f"{w.line}{' (in a function)' if w.in_function else ''}" for w in graph[a][b]
        )
        steps.append(f"    {a} -> {b}  (line {lines})")
    edges = sum(1 for a in members for b in graph[a] if b in members)
    return (
        f"cycle of {len(members)} modules ({edges} imports among them): {' '.join(members)}\n"
        f"  for example:\n" + "\n".join(steps)
    )


# -- the package ---------------------------------------------------------------------------


def test_src_ds01_has_no_import_cycle() -> None:
    graph = import_graph(SRC, PACKAGE)
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles in src/ds01:\n" + "\n".join(
        describe(graph, c) for c in cycles
    )


def test_the_graph_is_read_from_the_real_tree() -> None:
    # Guards the test above against passing on an empty or half-read graph.
    graph = import_graph(SRC, PACKAGE)
    assert len(graph) > 80, sorted(graph)
    assert "ds01.cli.main" in graph and "ds01.errors" in graph
    edges = [w for targets in graph.values() for ws in targets.values() for w in ws]
    assert len(edges) > 300
    assert any(w.in_function for w in edges)  # lazy imports are read, not skipped


def test_src_ds01_has_no_dynamic_import() -> None:
    """The graph cannot see ``importlib.import_module`` or ``__import__``: there are none."""
    seen = []
    for name, path in modules_of(SRC, PACKAGE).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in {"import_module", "__import__"}:
                    seen.append(f"{name}:{node.lineno}")
    assert seen == []


# -- the graph builder, on small packages made for it ---------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in [root / "pkg", *(p for p in (root / "pkg").rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return root


def _cycles(root: Path) -> list[list[str]]:
    return strongly_connected(import_graph(root, "pkg"))


def test_a_cycle_closed_inside_a_function_is_a_cycle(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from pkg.b import g\n",
            "b.py": "def g():\n    from pkg.a import f\n    return f\n",
            "c.py": "import pkg.a\n",  # leads into the cycle, is not part of it
        },
    )
    assert _cycles(root) == [["pkg.a", "pkg.b"]]
    graph = import_graph(root, "pkg")
    assert graph["pkg.b"]["pkg.a"] == [Import(line=2, in_function=True)]
    assert graph["pkg.a"]["pkg.b"] == [Import(line=1, in_function=False)]
    text = describe(graph, ["pkg.a", "pkg.b"])
    assert "pkg.a -> pkg.b  (line 1)" in text
    assert "pkg.b -> pkg.a  (line 2 (in a function))" in text


def test_from_a_package_import_a_submodule_imports_the_submodule(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "sub/x.py": "from pkg import y\n",
            "y.py": "from pkg.sub import x\n",
        },
    )
    assert _cycles(root) == [["pkg.sub.x", "pkg.y"]]


def test_type_checking_imports_are_not_edges_but_their_else_branch_is(tmp_path: Path) -> None:
    only_for_types = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n"
    )
    root = _package(tmp_path, {"a.py": "import pkg.b\n", "b.py": only_for_types})
    assert _cycles(root) == []
    also_at_run_time = (
        "import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    from pkg import a\n"
    )
    (root / "pkg" / "b.py").write_text(also_at_run_time)
    assert _cycles(root) == [["pkg.a", "pkg.b"]]


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "sub/x.py": "from ..y import f\n",
            "sub/z.py": "from . import x\n",
            "y.py": "from .sub.z import g\n",
        },
    )
    assert _cycles(root) == [["pkg.sub.x", "pkg.sub.z", "pkg.y"]]


def test_a_package_reexporting_its_own_submodule_is_not_a_cycle(tmp_path: Path) -> None:
    root = _package(tmp_path, {"sub/x.py": "import pkg.sub.y\n", "sub/y.py": "X = 1\n"})
    (root / "pkg" / "sub" / "__init__.py").write_text("from pkg.sub.x import X\n")
    assert _cycles(root) == []
    # ... but another package's __init__ runs on import, and counts.
    (root / "pkg" / "other.py").write_text("import pkg.sub.y\n")
    (root / "pkg" / "sub" / "y.py").write_text("import pkg.other\n")
    assert _cycles(root) == [["pkg.other", "pkg.sub", "pkg.sub.x", "pkg.sub.y"]]
