"""Every error code is an :class:`ErrorCode` member, and the README documents each one.

The source is read as syntax (``ast``), not run: a site that passes a bare string
(``code="quota"``) fails here by name and line even where mypy is not run. The exit code
of each code is derived from the exception classes it is raised with, so the table's exit
column cannot drift from the code either.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import ds01.errors as errors_module
from ds01.errors import DS01Error, ErrorCode

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "ds01"
README = ROOT / "README.md"
SECTION = "## Error codes"

#: Exception class name -> its exit code, for every class of the DS01Error tree.
FAMILY: dict[str, int] = {
    name: cls.exit_code
    for name, cls in inspect.getmembers(errors_module, inspect.isclass)
    if issubclass(cls, DS01Error)
}


@dataclass
class Scan:
    """What the source says about error codes."""

    exits: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    referenced: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8"))


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _member(node: ast.expr) -> str | None:
    """``X`` for ``ErrorCode.X``, else None."""
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ErrorCode"
    ):
        return node.attr
    return None


def _code_arg(call: ast.Call, positions: frozenset[int] = frozenset()) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == "code":
            return kw.value
    for position in sorted(positions):
        if len(call.args) > position:
            return call.args[position]
    return None


def _helpers(trees: list[tuple[str, ast.Module]]) -> dict[str, tuple[int, frozenset[int]]]:
    """Functions with a ``code`` parameter that build one error class from it.

    Name -> (exit code, the positions ``code`` may have among the positional arguments a
    caller writes, ``self`` not counted). ``dockerfile_syntax.refuse`` (keyword-only) and
    the Dockerfile resolver's ``refuse`` (fourth) are such helpers, under one name.
    """
    found: dict[str, tuple[int, frozenset[int]]] = {}
    for _, tree in trees:
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
            kwonly = [a.arg for a in fn.args.kwonlyargs]
            if "code" not in params + kwonly:
                continue
            for call in ast.walk(fn):
                if (
                    isinstance(call, ast.Call)
                    and _called_name(call) in FAMILY
                    and isinstance(arg := _code_arg(call), ast.Name)
                    and arg.id == "code"
                ):
                    skip = 1 if params[:1] in (["self"], ["cls"]) else 0
                    here = {params.index("code") - skip} if "code" in params else set()
                    exit_code = FAMILY[_called_name(call) or ""]
                    before = found.get(fn.name, (exit_code, frozenset()))
                    assert before[0] == exit_code, f"two helpers {fn.name} with other exits"
                    found[fn.name] = (exit_code, before[1] | here)
    return found


def _module_dicts(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level ``NAME = {...: ErrorCode.X}`` tables: name -> the members in them."""
    out: dict[str, list[str]] = {}
    for stmt in tree.body:
        target = value = None
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            target, value = stmt.target.id, stmt.value
        elif isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            target, value = stmt.targets[0].id, stmt.value
        if target and isinstance(value, ast.Dict):
            out[target] = [m for v in value.values if v is not None and (m := _member(v))]
    return out


def scan(trees: list[tuple[str, ast.Module]]) -> Scan:
    helpers = _helpers(trees)
    result = Scan()
    for cls in FAMILY:
        klass = getattr(errors_module, cls)
        result.exits[klass.default_code.value].add(klass.exit_code)
        result.referenced.add(klass.default_code.name)

    for where, tree in trees:
        tables = _module_dicts(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.expr) and (member := _member(node)) is not None:
                result.referenced.add(member)
                if member not in ErrorCode.__members__:
                    result.violations.append(f"{where}:{node.lineno}: no member ErrorCode.{member}")
            if isinstance(node, ast.FunctionDef):
                # a helper's default code: refuse(..., code=ErrorCode.BAD_DOCKERFILE)
                if node.name in helpers:
                    for default in node.args.defaults + node.args.kw_defaults:
                        if default is not None and (m := _member(default)):
                            result.exits[ErrorCode[m].value].add(helpers[node.name][0])
                continue
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "error"
                        and isinstance(value, ast.Constant)
                    ):
                        result.violations.append(
                            f'{where}:{node.lineno}: "error": {value.value!r} (use ErrorCode)'
                        )
                continue
            if not isinstance(node, ast.Call):
                continue
            name = _called_name(node)
            if name in FAMILY:
                exit_code, positions = FAMILY[name], frozenset[int]()
            elif name in helpers:
                exit_code, positions = helpers[name]
            else:
                exit_code, positions = None, frozenset()
            arg = _code_arg(node, positions)
            if arg is None:
                continue
            shown = f"{where}:{node.lineno}: {name}(code={ast.unparse(arg)})"
            if isinstance(arg, ast.Constant):
                result.violations.append(shown)
                continue
            if exit_code is None:
                continue  # code= of something that is not an error (none today)
            if (member := _member(arg)) is not None and member in ErrorCode.__members__:
                result.exits[ErrorCode[member].value].add(exit_code)
            elif isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name):
                for m in tables.get(arg.value.id, []):
                    result.exits[ErrorCode[m].value].add(exit_code)
            elif isinstance(arg, ast.Name) and arg.id == "code":
                pass  # inside a helper: its callers are scanned
            elif isinstance(arg, ast.Attribute) and arg.attr == "code":
                pass  # re-raised with an existing error's code (already an ErrorCode)
            else:
                result.violations.append(shown + " is not an ErrorCode member")
    return result


SCAN = scan(list(_modules()))


def _table_text() -> tuple[Path, str]:
    readme = README.read_text(encoding="utf-8")
    assert SECTION in readme, f"README.md has no {SECTION!r} section"
    text = readme.split(SECTION, 1)[1]
    return README, re.split(r"^## ", text, maxsplit=1, flags=re.M)[0]


def documented() -> dict[str, str]:
    """code -> the exit cell, from the table's rows ``| `code` | exit | meaning |``."""
    _, text = _table_text()
    rows: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^\|\s*`([a-z0-9_]+)`\s*\|\s*([^|]*?)\s*\|", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} is listed twice"
            rows[match.group(1)] = match.group(2)
    return rows


def test_no_site_passes_a_bare_string() -> None:
    assert SCAN.violations == []


def test_the_scan_finds_bare_strings() -> None:
    """The checker itself: each way of passing a bare string is caught, members are not."""
    source = """
def refuse(line, what, hint, *, code=ErrorCode.BAD_DOCKERFILE):
    return UsageError(what, hint=hint, code=code)
class R:
    def refuse(self, inst, what, hint, code):
        return UsageError(what, hint=hint, code=code)
UsageError("a", code="quota")
refuse(1, "a", "b", code="bad_dockerfile")
R().refuse(1, "a", "b", "unresolvable_dockerfile")
out = {"error": "pass_failed"}
RefusedError("a", code=ErrorCode.NOT_A_MEMBER)
RefusedError("a", code=pick())
RefusedError("a", code=ErrorCode.QUOTA)
R().refuse(1, "a", "b", ErrorCode.RESERVED_LABEL)
"""
    found = scan([("x.py", ast.parse(source))])
    lines = sorted(int(v.split(":")[1]) for v in found.violations)
    assert lines == [7, 8, 9, 10, 11, 11, 12], found.violations
    assert found.exits["quota"] == {3} and found.exits["reserved_label"] == {2}
    assert found.exits["bad_dockerfile"] == {2}


def test_every_member_is_used_in_the_source() -> None:
    unused = sorted(set(ErrorCode.__members__) - SCAN.referenced)
    assert unused == [], f"ErrorCode members no code raises: {unused}"


def test_member_names_are_their_values_in_upper_case() -> None:
    assert [m.name for m in ErrorCode] == [m.value.upper() for m in ErrorCode]


def test_the_table_lists_exactly_the_members() -> None:
    where, _ = _table_text()
    rows = documented()
    missing = sorted(c.value for c in ErrorCode if c.value not in rows)
    unknown = sorted(set(rows) - {c.value for c in ErrorCode})
    assert (missing, unknown) == ([], []), f"{where.name}: missing {missing}, unknown {unknown}"
    assert list(rows) == sorted(rows), "keep the table sorted by code"


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_the_exit_column_matches_the_raising_classes(code: ErrorCode) -> None:
    cell = documented().get(code.value)
    assert cell is not None
    derived = SCAN.exits.get(code.value, set())
    shown = ", ".join(str(e) for e in sorted(derived)) or "—"
    assert cell == shown, f"{code.value}: the table says {cell!r}, the source raises it {shown}"


def test_json_holds_the_plain_string() -> None:
    import json

    err = errors_module.RefusedError("no", code=ErrorCode.QUOTA)
    assert err.code == "quota"
    assert json.loads(json.dumps(err.to_dict()))["error"] == "quota"
    assert json.dumps(err.to_dict()).startswith('{"error": "quota"')
