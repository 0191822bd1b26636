"""No function or method in ``src/ds01`` is longer than 80 lines (issue 11).

A function that long does several things; split into named steps, each can be read,
tested and changed alone. The length is the function's span in the source, decorators
left out and its docstring, comments and blank lines counted (``end_lineno - lineno + 1``
of its syntax tree node), so a long docstring is no way round the rule. Nested functions
count on their own and inside the function that holds them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGE_DIR = PROJECT_ROOT / "src" / "ds01"
MAX_LINES = 80

#: Functions allowed to be longer, ``"path/from/ds01.py:qualified.name": "why"``. None
#: today; a new entry needs its reason.
ALLOWED: dict[str, str] = {}


def _long_functions(path: Path, *, limit: int) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, length)`` of each function in ``path`` over ``limit``."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    found.append((name, child.lineno, length))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), "")
    return found


def test_no_function_is_over_80_lines() -> None:
    too_long = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR).as_posix()
        for name, line, length in _long_functions(path, limit=MAX_LINES):
            if f"{relative}:{name}" not in ALLOWED:
                too_long.append(f"{relative}:{line} {name} ({length} lines)")
    assert not too_long, (
        f"Functions over {MAX_LINES} lines; split them into named steps:\n  "
        + "\n  ".join(too_long)
    )


def test_every_allowed_function_still_exists_and_is_long() -> None:
    # An entry outliving its function (split, renamed, moved) would silently allow the
    # next long function of that name.
    stale = []
    for key in ALLOWED:
        relative, name = key.split(":", 1)
        path = PACKAGE_DIR / relative
        long_ones = {found[0] for found in _long_functions(path, limit=MAX_LINES)}
        if not path.is_file() or name not in long_ones:
            stale.append(key)
    assert not stale, f"Entries in ALLOWED with no such long function: {stale}"


def test_the_scan_sees_methods_nested_functions_and_their_full_span(tmp_path: Path) -> None:
    lines = [f"x{i} = {i}" for i in range(79)]

    def block(indent: int) -> str:
        return "\n".join(" " * indent + line for line in lines)

    source = "\n".join(
        [
            "def short():",  # 80 lines: allowed
            block(4),
            "class C:",
            "    async def long(self):",  # 81 lines, its docstring counted
            '        """doc"""',
            block(8),
            "def outer():",  # 83 lines, holding an 81-line function
            "    def inner():",
            block(8),
            "        return 1",
            "    return inner",
            "",
        ]
    )
    module = tmp_path / "m.py"
    module.write_text(source)

    found = {name: length for name, _, length in _long_functions(module, limit=MAX_LINES)}

    assert found == {"C.long": 81, "outer": 83, "outer.inner": 81}
