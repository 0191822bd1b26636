"""Pieces every command shares: the context, the ``--json`` flag, warnings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from ds01.services.context import AppContext

__all__ = ["JSON_OPTION", "flush_warnings", "interactive", "make_context", "require"]

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON (keys in README).")


def make_context(ctx: typer.Context) -> AppContext:
    """The application context for this invocation (``--as`` applied)."""
    from ds01.services.context import AppContext

    obj: dict[str, Any] = ctx.find_root().obj or {}
    return AppContext(act_as=obj.get("as_user"))


def flush_warnings(app_ctx: AppContext) -> None:
    """Print warnings collected while working (catalog fallback, deprecated keys)."""
    if not app_ctx.warnings:
        return
    from ds01.cli.output import warn

    for message in dict.fromkeys(app_ctx.warnings):
        warn(message)
    app_ctx.warnings.clear()


def interactive() -> bool:
    """True when a person is at a terminal (prompts allowed)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def require(value: str | None, name: str, *, choices: Callable[[], list[str]] | None = None) -> str:
    """A required argument: on a terminal a picker over ``choices()`` (computed only then:
    listing may need Docker), without one exit 2 naming the argument."""
    if value:
        return value
    if not interactive():
        from ds01.errors import ErrorCode, UsageError

        raise UsageError(
            f"Missing argument {name}.",
            hint="Pass it on the command line (no terminal to ask on).",
            code=ErrorCode.MISSING_ARGUMENT,
        )
    from ds01.cli.prompts import pick

    return pick(name, choices() if choices else [])
