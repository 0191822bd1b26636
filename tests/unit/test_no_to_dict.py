"""Results are serialised by ``ds01.serialize.to_json`` alone: no hand-written ``to_dict``.

A new result is a frozen dataclass whose fields are its JSON (``json_key``,
``JSON_SKIP``, ``JSON_OMIT_EMPTY``, ``JSON_OMIT_NONE``, ``json_round`` where the JSON
differs), so the ``--json`` output and the daemon's wire format come from one place. A
method named ``to_dict`` anywhere in ``src/ds01`` fails this test unless it is in the
allow-list below, with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ds01

SRC = Path(ds01.__file__).parent

#: ``(module path under src/ds01, class)`` → why it keeps a ``to_dict``.
ALLOWED: dict[tuple[str, str], str] = {
    ("errors.py", "DS01Error"): (
        "an exception, not a dataclass: its JSON (error, message, hint, details) is "
        "the error document the CLI prints on exit 1-4"
    ),
}


def _to_dicts() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                is_method = isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                if is_method and getattr(item, "name", None) == "to_dict":
                    found.add((path.relative_to(SRC).as_posix(), node.name))
    return found


def _module_level_to_dicts() -> list[str]:
    return [
        path.relative_to(SRC).as_posix()
        for path in sorted(SRC.rglob("*.py"))
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef) and node.name == "to_dict"
    ]


def test_no_result_has_a_hand_written_to_dict() -> None:
    unexpected = _to_dicts() - set(ALLOWED)
    assert not unexpected, (
        f"to_dict methods {sorted(unexpected)}: make the dataclass's fields its JSON and "
        "print to_json(result) (see ds01/serialize.py), or add it to ALLOWED with a reason"
    )
    assert not _module_level_to_dicts()


def test_the_allow_list_names_only_what_exists() -> None:
    # A stale entry would let a new to_dict of that name in unnoticed.
    assert set(ALLOWED) <= _to_dicts()
