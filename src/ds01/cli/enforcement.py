"""``ds01 enforce``: one lifecycle-enforcement pass (the systemd timer calls it every
minute); ``--watch`` runs passes every ``enforcement.interval`` seconds until SIGTERM.
For administrators: anyone else gets exit 3.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context
from ds01.errors import ErrorCode

if TYPE_CHECKING:
    from ds01.services.enforcement.passes import PassReport

__all__ = ["enforce"]


def enforce(
    ctx: typer.Context,
    watch: bool = typer.Option(
        False, "--watch", help="Run a pass every enforcement.interval seconds until stopped."
    ),
    json_out: bool = JSON_OPTION,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Decide and report, but notify, stop and remove nothing."
    ),
) -> None:
    """Enforce idle and runtime limits and clean up stopped containers (admins)."""
    from ds01.errors import DS01Error, RefusedError
    from ds01.services.enforcement.passes import EnforceService

    app_ctx = make_context(ctx)
    actor = app_ctx.actor
    if not actor.is_admin:
        raise RefusedError(
            "Only administrators may run lifecycle enforcement.",
            hint="It runs as root from ds01-enforce.timer.",
            code=ErrorCode.NOT_ADMIN,
        )
    if not watch:
        report = EnforceService(app_ctx).run_pass(actor, dry_run=dry_run)
        flush_warnings(app_ctx)
        _show(report, json_out=json_out)
        if not report.ok:
            raise typer.Exit(1)
        return

    from ds01.services.enforcement.passes import watch as watch_loop

    def run_once() -> PassReport | None:
        # A fresh context per pass: the policy file and settings are read again, so an
        # edit applies from the next pass, as it does for the timer.
        pass_ctx = make_context(ctx)
        try:
            report = EnforceService(pass_ctx).run_pass(pass_ctx.actor, dry_run=dry_run)
        except DS01Error as exc:
            _say_error(f"the pass failed: {exc.message}", json_out=json_out)
            return None
        flush_warnings(pass_ctx)
        _show(report, json_out=json_out, compact=True)
        return report

    watch_loop(run_once, interval=app_ctx.settings.enforcement.interval)


def _say_error(message: str, *, json_out: bool) -> None:
    if json_out:
        sys.stdout.write(json.dumps({"error": ErrorCode.PASS_FAILED, "message": message}) + "\n")
        sys.stdout.flush()
    from ds01.cli.output import error_console

    error_console().print(f"[bold red]error:[/bold red] {_escape(message)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _show(report: PassReport, *, json_out: bool, compact: bool = False) -> None:
    """The pass for machines (one JSON document; one line each under --watch) or people."""
    from ds01.serialize import to_json

    if json_out:
        if compact:
            sys.stdout.write(json.dumps(to_json(report.result())) + "\n")
            sys.stdout.flush()
        else:
            from ds01.cli.output import emit_json

            emit_json(to_json(report.result()))
    else:
        _show_human(report)
    from ds01.cli.output import error_console

    err = error_console()
    for error in report.errors:
        where = f"{error.container}: " if error.container else ""
        err.print(f"[bold red]error:[/bold red] {_escape(where + error.message)}")


def _show_human(report: PassReport) -> None:
    from fractions import Fraction

    from ds01.cli.output import console, print_table, warn
    from ds01.domain.devices import format_equivalents

    result = report.result()
    busy = result.busy
    load = ""
    if busy.total_equivalents:
        allocated = format_equivalents(busy.allocated_equivalents or Fraction(0))
        load = (
            f"; {allocated:g} of {format_equivalents(busy.total_equivalents):g} GPU "
            "equivalents allocated"
        )
        if busy.is_busy:
            load += f" (busy: idle timeouts x {busy.idle_timeout_factor:g})"
    counts = result.counts
    done = ", ".join(
        _count(counts[key], word)
        for key, word in (
            ("warn", "warning"),
            ("stop", "stop"),
            ("release_gpu", "GPU release"),
            ("remove", "removal"),
            ("exempted", "exemption notice"),
            ("note", "note"),
        )
        if counts[key]
    )
    prefix = "Dry run: " if report.dry_run else ""
    planned = " planned" if report.dry_run else ""
    console().print(
        f"{prefix}checked {_count(counts['checked'], 'container')} in "
        f"{report.duration_s:.2f} s{load}." + (f" {done}{planned}." if done else " Nothing to do.")
    )
    rows = []
    for outcome in report.containers:
        for action in outcome.actions:
            rows.append(
                [
                    outcome.container,
                    outcome.owner,
                    action["action"],
                    _action_text(action),
                    action.get("result", ""),
                ]
            )
    if rows:
        print_table(None, ["CONTAINER", "OWNER", "ACTION", "WHY", "RESULT"], rows)
    for item in result.queue:
        console().print(f"queue #{item.entry_id} ({item.user}): {item.state}")
    for message in report.warnings:
        warn(message)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _action_text(action: dict[str, object]) -> str:
    kind = action.get("kind")
    if action["action"] == "warn":
        return f"{kind} {action.get('percent')}%: {action.get('reason')}"
    if action["action"] == "stop":
        return f"{kind}: {action.get('reason')}"
    if action["action"] in ("remove", "release_gpu"):
        return str(action.get("detail") or action.get("reason") or "")
    if action["action"] == "note":
        return str(action.get("message", ""))
    return f"{kind}: {action.get('reason')}"


# --------------------------------------------------------------------------- admin
