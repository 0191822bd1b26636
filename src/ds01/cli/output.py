"""Printing results: JSON for machines, rich tables for people, errors on stderr.

Colour only on a terminal and never with ``NO_COLOR`` (rich honours both). Rich is
imported only when something is drawn for a person: ``--json`` output never loads it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["console", "emit_json", "error_console", "print_listing", "print_table", "warn"]

_consoles: dict[bool, Console] = {}

_View = TypeVar("_View")


def console(*, stderr: bool = False) -> Console:
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=stderr, highlight=False, soft_wrap=False)
    return _consoles[stderr]


def error_console() -> Console:
    return console(stderr=True)


def emit_json(data: Any) -> None:
    """The stable ``--json`` output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    error_console().print(f"[yellow]warning:[/yellow] {_escape(message)}")


def note(message: str) -> None:
    error_console().print(f"[dim]{_escape(message)}[/dim]")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    empty: str = "Nothing to show.",
) -> None:
    from rich.table import Table

    rows = list(rows)
    if not rows:
        console().print(empty)
        return
    table = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_escape("" if v is None else str(v)) for v in row))
    console().print(table)


def print_listing(
    views: Sequence[_View],
    *,
    json_out: bool,
    columns: Sequence[str],
    cells: Callable[[_View], list[Any]],
    owner: Callable[[_View], str] | None,
    empty: str,
) -> None:
    """What a ``list`` command prints: with ``--json`` the views as a JSON array, else a
    table of ``cells`` per view. ``owner`` is given for a listing of every user's
    (``--all``): the owner then fills a USER column, second, after the name."""
    if json_out:
        from ds01.serialize import to_json

        emit_json([to_json(v) for v in views])
        return
    header = list(columns)
    rows = [cells(v) for v in views]
    if owner is not None:
        header.insert(1, "USER")
        for view, row in zip(views, rows, strict=True):
            row.insert(1, owner(view))
    print_table(None, header, rows, empty=empty)
