"""``ds01 enforce`` (lifecycle enforcement) and ``ds01 admin exempt|exemptions|unexempt``.

``ds01 enforce`` runs one pass (the systemd timer calls it every minute); ``--watch``
runs passes every ``enforcement.interval`` seconds until SIGTERM. All of these are for
administrators: anyone else gets exit 3.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context
from ds01.cli.options import not_empty
from ds01.errors import ErrorCode

if TYPE_CHECKING:
    from ds01.domain.lifecycle import LimitKind
    from ds01.services.enforce import PassReport

__all__ = ["admin_app", "register"]

admin_app = typer.Typer(
    help="Administration: lifecycle exemptions.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``ds01 enforce`` and the ``ds01 admin`` group to the root application."""
    app.command("enforce")(enforce)
    app.add_typer(admin_app, name="admin")


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
    from ds01.services.enforce import EnforceService

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

    from ds01.services.enforce import watch as watch_loop

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
    if json_out:
        if compact:
            sys.stdout.write(json.dumps(report.to_dict(), default=str) + "\n")
            sys.stdout.flush()
        else:
            from ds01.cli.output import emit_json

            emit_json(report.to_dict())
    else:
        _show_human(report)
    from ds01.cli.output import error_console

    err = error_console()
    for error in report.errors:
        where = f"{error.container}: " if error.container else ""
        err.print(f"[bold red]error:[/bold red] {_escape(where + error.message)}")


def _show_human(report: PassReport) -> None:
    from ds01.cli.output import console, print_table, warn

    data = report.to_dict()
    busy = data["busy"]
    load = ""
    if busy["total_equivalents"]:
        load = (
            f"; {busy['allocated_equivalents']:g} of {busy['total_equivalents']:g} GPU "
            "equivalents allocated"
        )
        if busy["is_busy"]:
            load += f" (busy: idle timeouts x {busy['idle_timeout_factor']:g})"
    counts = data["counts"]
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
    for item in report.queue:
        console().print(f"queue #{item['id']} ({item['user']}): {item['state']}")
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


def _kinds(idle: bool, runtime: bool) -> list[LimitKind]:
    from ds01.domain.lifecycle import LimitKind

    return [k for k, on in ((LimitKind.IDLE, idle), (LimitKind.RUNTIME, runtime)) if on]


@admin_app.command("apply-limits")
def apply_limits(
    ctx: typer.Context,
    users: list[str] = typer.Argument(
        None, help="Users (default: everyone with a container).", callback=not_empty
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Set users' combined (aggregate) limits on their parent cgroups now (root)."""
    from ds01.services.limits import apply_user_limits

    app_ctx = make_context(ctx)
    results = apply_user_limits(app_ctx, app_ctx.actor, users or None)
    if json_out:
        from ds01.cli.output import emit_json

        emit_json(results)
        return
    from ds01.cli.output import print_table

    print_table(
        None,
        ["USER", "APPLIED", "WHERE", "NOTE"],
        [
            [r["user"], "yes" if r["applied"] else "no", r["where"] or "", r["reason"]]
            for r in results
        ],
        empty="No users with containers.",
    )


@admin_app.command("exempt")
def exempt(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user to exempt.", callback=not_empty),
    idle: bool = typer.Option(False, "--idle", help="From the idle timeout."),
    runtime: bool = typer.Option(False, "--runtime", help="From the maximum runtime."),
    until: str = typer.Option(
        ...,
        "--until",
        metavar="DATE",
        help="Last day (2025-06-30), a time (2025-06-30T18:00), a duration (7d), or never.",
        callback=not_empty,
    ),
    reason: str = typer.Option(
        ..., "--reason", help="Why; shown to the user and logged.", callback=not_empty
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Exempt USER from the idle and/or runtime limit until DATE."""
    from ds01.services.exemptions import grant

    app_ctx = make_context(ctx)
    rows = grant(app_ctx, app_ctx.actor, user, _kinds(idle, runtime), until=until, reason=reason)
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json

        emit_json([r.to_dict() for r in rows])
        return
    from ds01.cli.output import console

    for row in rows:
        end = "with no end" if row.until is None else f"until {row.until:%Y-%m-%d %H:%M} UTC"
        console().print(f"{row.user} is exempt from the {row.kind.value} limit {end}.")


@admin_app.command("exemptions")
def exemptions(ctx: typer.Context, json_out: bool = JSON_OPTION) -> None:
    """List exemptions from lifecycle limits (expired ones are marked)."""
    from ds01.services.exemptions import listing

    app_ctx = make_context(ctx)
    rows = listing(app_ctx, app_ctx.actor)
    now = app_ctx.clock.now()
    if json_out:
        from ds01.cli.output import emit_json

        emit_json([r.to_dict(now) for r in rows])
        return
    from ds01.cli.output import print_table

    print_table(
        None,
        ["USER", "LIMIT", "UNTIL", "REASON", "BY", "ACTIVE"],
        [
            [
                r.user,
                r.kind.value,
                "never" if r.until is None else f"{r.until:%Y-%m-%d %H:%M} UTC",
                r.reason,
                r.created_by,
                "yes" if r.active(now) else "expired",
            ]
            for r in rows
        ],
        empty="No exemptions.",
    )


@admin_app.command("unexempt")
def unexempt(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user whose exemption ends now.", callback=not_empty),
    idle: bool = typer.Option(False, "--idle", help="The idle-timeout exemption."),
    runtime: bool = typer.Option(False, "--runtime", help="The maximum-runtime exemption."),
) -> None:
    """Withdraw USER's exemption from the idle and/or runtime limit."""
    from ds01.services.exemptions import withdraw

    app_ctx = make_context(ctx)
    removed = withdraw(app_ctx, app_ctx.actor, user, _kinds(idle, runtime))
    from ds01.cli.output import console

    for kind in removed:
        console().print(f"{user} is no longer exempt from the {kind.value} limit.")
