"""The ``ds01`` command: ``ds01 <noun> <verb>`` plus the hyphenated aliases.

This module wires the command groups together and turns DS01 errors into one red line
on stderr (plus a JSON object on stdout under ``--json``) and the documented exit code.
Command modules import services inside their functions, so ``ds01 container list``
loads only what listing needs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from ds01 import __version__
from ds01.cli import (
    admin,
    catalog,
    container,
    container_deploy,
    enforcement,
    events,
    gpu,
    image,
    limits,
    project,
    user,
)
from ds01.errors import DS01Error

__all__ = ["build_app", "main"]

# The container group's workflows live in their own module; added here, before anything
# is built, so that every command of the group is registered in this one file.
container_deploy.register(container.app)

#: The command groups, one module each (``ds01 <noun> <verb>`` is ``ds01.cli.<noun>``).
#: Verbs of those in ALIASED also exist as hyphenated top-level aliases
#: (``container-create`` = ``container create``), as users of the existing DS01 type them.
GROUPS: dict[str, typer.Typer] = {
    "container": container.app,
    "image": image.app,
    "gpu": gpu.app,
    "catalog": catalog.app,
    "project": project.app,
    "user": user.app,
    "admin": admin.app,
}
ALIASED = ("container", "image", "project", "user")
#: Hyphenated spellings that are a command's main name, not listed under "Aliases".
MAIN_SPELLINGS = frozenset({"user-setup"})


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ds01 {__version__}")
        raise typer.Exit()


def build_app(only: str | None = None) -> typer.Typer:
    """The command tree; with ``only``, just that command group.

    Building every command (with the aliases, ~60 of them) costs ~30 ms at start-up, so a
    command for one group builds only that group: ``container list`` is typed all day.
    """
    app = typer.Typer(
        name="ds01",
        help="DS01: your ML containers on the shared GPU server, with fair GPU allocation.",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        ctx: typer.Context,
        as_user: str | None = typer.Option(
            None, "--as", metavar="USER", help="Admins: act for USER (with USER's rights)."
        ),
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        ctx.obj = {"as_user": as_user}

    if only is not None:
        app.add_typer(GROUPS[only], name=only)
        return app
    for noun, group in GROUPS.items():
        app.add_typer(group, name=noun)
    events.register(app)
    limits.register(app)
    app.command("enforce")(enforcement.enforce)
    for noun in ALIASED:
        for info in GROUPS[noun].registered_commands:
            if info.callback is None:
                continue
            verb = info.name or info.callback.__name__
            alias = f"{noun}-{verb}"
            if alias in MAIN_SPELLINGS:
                app.command(alias, context_settings=info.context_settings)(info.callback)
                continue
            app.command(
                alias,
                help=f"Same as 'ds01 {noun} {verb}'.",
                rich_help_panel="Aliases",
                context_settings=info.context_settings,
            )(info.callback)
    return app


def _report(exc: DS01Error, want_json: bool) -> int:
    if want_json:
        from ds01.cli.output import emit_json

        emit_json(exc.to_dict())
    from rich.markup import escape

    from ds01.cli.output import error_console

    err = error_console()
    err.print(f"[bold red]error:[/bold red] {escape(exc.message)}")
    if exc.hint:
        err.print(f"[cyan]hint:[/cyan] {escape(exc.hint)}")
    return exc.exit_code


def _group_word(args: Sequence[str]) -> str | None:
    """The command group named on the command line, past the global options."""
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--as":
            i += 2
            continue
        if word.startswith("--as="):
            i += 1
            continue
        return word if word in GROUPS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    app = build_app(_group_word(args))
    try:
        app(args=args, prog_name="ds01")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except DS01Error as exc:
        return _report(exc, "--json" in args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one clear line here, the traceback in a file
        return _internal_error(exc)
    return 0


def _internal_error(exc: Exception) -> int:
    """Report an unexpected exception as a bug, keeping the traceback out of the way."""
    import os
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(exc))
    if os.environ.get("DS01_DEBUG"):
        sys.stderr.write(text)
        return 1
    fd, path = tempfile.mkstemp(prefix="ds01-error-", suffix=".log")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    print(
        f"error: internal error ({type(exc).__name__}: {exc}). This is a DS01 bug; the "
        f"details are in {path} (set DS01_DEBUG=1 to print them).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
