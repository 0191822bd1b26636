"""``ds01 admin apply-limits | exempt | exemptions | unexempt``: limits and lifecycle
exemptions, for administrators (anyone else gets exit 3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context
from ds01.cli.options import not_empty

if TYPE_CHECKING:
    from ds01.domain.lifecycle import LimitKind

__all__ = ["app"]

app = typer.Typer(
    help="Administration: lifecycle exemptions.",
    no_args_is_help=True,
)


def _kinds(idle: bool, runtime: bool) -> list[LimitKind]:
    from ds01.domain.lifecycle import LimitKind

    return [k for k, on in ((LimitKind.IDLE, idle), (LimitKind.RUNTIME, runtime)) if on]


@app.command("apply-limits")
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
        from ds01.serialize import to_json

        emit_json([to_json(r) for r in results])
        return
    from ds01.cli.output import print_table

    print_table(
        None,
        ["USER", "APPLIED", "WHERE", "NOTE"],
        [[r.user, "yes" if r.applied else "no", r.where or "", r.reason] for r in results],
        empty="No users with containers.",
    )


@app.command("exempt")
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
    from ds01.services.enforcement.exemptions import grant

    app_ctx = make_context(ctx)
    rows = grant(app_ctx, app_ctx.actor, user, _kinds(idle, runtime), until=until, reason=reason)
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json([to_json(r) for r in rows])
        return
    from ds01.cli.output import console

    for row in rows:
        end = "with no end" if row.until is None else f"until {row.until:%Y-%m-%d %H:%M} UTC"
        console().print(f"{row.user} is exempt from the {row.kind.value} limit {end}.")


@app.command("exemptions")
def exemptions(ctx: typer.Context, json_out: bool = JSON_OPTION) -> None:
    """List exemptions from lifecycle limits (expired ones are marked)."""
    from ds01.services.enforcement.exemptions import listing

    app_ctx = make_context(ctx)
    rows = listing(app_ctx, app_ctx.actor)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json([to_json(r) for r in rows])
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
                "yes" if r.active else "expired",
            ]
            for r in rows
        ],
        empty="No exemptions.",
    )


@app.command("unexempt")
def unexempt(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user whose exemption ends now.", callback=not_empty),
    idle: bool = typer.Option(False, "--idle", help="The idle-timeout exemption."),
    runtime: bool = typer.Option(False, "--runtime", help="The maximum-runtime exemption."),
) -> None:
    """Withdraw USER's exemption from the idle and/or runtime limit."""
    from ds01.services.enforcement.exemptions import withdraw

    app_ctx = make_context(ctx)
    removed = withdraw(app_ctx, app_ctx.actor, user, _kinds(idle, runtime))
    from ds01.cli.output import console

    for kind in removed:
        console().print(f"{user} is no longer exempt from the {kind.value} limit.")
