"""``ds01 limits [USER]``: the resolved resource limits and where each value came from."""

from __future__ import annotations

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context
from ds01.cli.options import not_empty


def register(app: typer.Typer) -> None:
    app.command("limits")(limits)
    app.command("check-limits", help="Same as 'ds01 limits'.", rich_help_panel="Aliases")(limits)


def limits(
    ctx: typer.Context,
    user: str = typer.Argument(None, help="Admins: another user's limits.", callback=not_empty),
    json_out: bool = JSON_OPTION,
    docker_args: bool = typer.Option(
        False, "--docker-args", help="Print the docker create flags these limits mean."
    ),
) -> None:
    """Your limits (CPUs, memory, GPUs, timeouts) and their source: default, group, user."""
    from ds01.services.limits import describe_limits

    app_ctx = make_context(ctx)
    report, resolved = describe_limits(app_ctx, app_ctx.actor, user)
    flush_warnings(app_ctx)
    if docker_args:
        typer.echo(" ".join(resolved.docker_cli_args(cgroup_parent=report.cgroup_parent)))
        return
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json(to_json(report))
        return
    from ds01.cli.output import console, print_table

    console().print(
        f"User [bold]{report.user}[/bold], group [bold]{report.group}[/bold] "
        f"({report.group_via}); containers go under {report.cgroup_parent}"
    )
    print_table(
        None,
        ["LIMIT", "VALUE", "FROM"],
        [[key, item.display, item.source] for key, item in report.limits.items()],
    )
