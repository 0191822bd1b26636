"""Printing results: JSON for machines, rich tables for people, errors on stderr.

Colour only on a terminal and never with ``NO_COLOR`` (rich honours both). Rich is
imported only when something is drawn for a person: ``--json`` output never loads it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["console", "emit_json", "error_console", "print_table", "warn"]

_consoles: dict[bool, Console] = {}


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
