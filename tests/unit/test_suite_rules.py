"""Rules for the test suite itself, checked on its source.

Every ``pytest.raises`` pins *which* error it expects: a ``match=`` on the message, or an
``as name`` whose ``name.value`` is checked afterwards (its ``code``, exit code, errno,
message). A bare ``pytest.raises(UsageError)`` would pass when the code fails with a
different usage error for a different reason (issue 17).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

TESTS = PROJECT_ROOT / "tests"


def _is_raises(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "raises"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pytest"
    )


def _value_read_after(function: ast.AST, name: str, line: int) -> bool:
    return any(
        isinstance(n, ast.Attribute)
        and n.attr == "value"
        and isinstance(n.value, ast.Name)
        and n.value.id == name
        and n.lineno > line
        for n in ast.walk(function)
    )


def unpinned_raises(path: Path, root: Path = PROJECT_ROOT) -> list[str]:
    """``file:line`` of each ``pytest.raises`` that neither matches nor checks the error."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    checked: set[int] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.With | ast.AsyncWith):
                continue
            for item in node.items:
                call = item.context_expr
                if not isinstance(call, ast.Call) or not _is_raises(call):
                    continue
                checked.add(id(call))
                if any(k.arg == "match" for k in call.keywords):
                    continue
                target = item.optional_vars
                if isinstance(target, ast.Name) and _value_read_after(
                    function, target.id, node.lineno
                ):
                    continue
                found.append(f"{path.relative_to(root)}:{call.lineno}")
    # pytest.raises(X, func, ...) or one outside a with: only match= can pin those.
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and _is_raises(node)
            and id(node) not in checked
            and not any(k.arg == "match" for k in node.keywords)
        ):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found)


def test_every_pytest_raises_pins_the_error() -> None:
    found = [hit for path in sorted(TESTS.rglob("*.py")) for hit in unpinned_raises(path)]
    assert found == [], (
        "pytest.raises without match= and without a check of the raised error afterwards "
        "(exc.value.code, .errno, .message):\n" + "\n".join(found)
    )


def test_the_rule_sees_an_unpinned_raises(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\n"
        "def test_a():\n"
        "    with pytest.raises(ValueError):\n"  # line 3: unpinned
        "        int('x')\n"
        "    with pytest.raises(ValueError, match='invalid literal'):\n"
        "        int('x')\n"
        "    with pytest.raises(ValueError) as err:\n"
        "        int('x')\n"
        "    assert 'x' in str(err.value)\n"
        "    with pytest.raises(ValueError) as unused:\n"  # line 10: named, never read
        "        int('x')\n"
        "    pytest.raises(ValueError, int, 'x')\n"  # line 12: call form, no match
    )
    found = unpinned_raises(sample, root=tmp_path)
    assert found == ["test_sample.py:10", "test_sample.py:12", "test_sample.py:3"]
