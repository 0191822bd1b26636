"""``ds01 gpu ...``: devices and who holds them; the waiting queue."""

from __future__ import annotations

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context
from ds01.cli.options import MAX_ID

app = typer.Typer(
    help="GPUs and MIG slices: who holds what, and the waiting queue.", no_args_is_help=True
)
queue_app = typer.Typer(help="Requests waiting for a GPU (create --wait).")
app.add_typer(queue_app, name="queue")


@app.command("status")
def status(ctx: typer.Context, json_out: bool = JSON_OPTION) -> None:
    """Every device, who holds it (user, container, since), utilization, free capacity."""
    from ds01.services.gpu.status import GpuService

    app_ctx = make_context(ctx)
    status_ = GpuService(app_ctx).status()
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json(to_json(status_))
        return
    from ds01.cli.output import console, print_table
    from ds01.domain.devices import format_equivalents

    rows = []
    for d in status_.devices:
        what = f"GPU {d.gpu_index}" + (f" MIG {d.mig_profile}" if d.mig_profile else "")
        util = "-" if d.utilization_gpu is None else f"{d.utilization_gpu}%"
        holder = f"{d.user} / {d.container}" if d.user else "free"
        since = "" if d.since is None else d.since.isoformat()[:16].replace("T", " ")
        rows.append([what, d.name, f"{format_equivalents(d.equivalents):g}", util, holder, since])
    print_table(
        None,
        ["DEVICE", "NAME", "EQ", "UTIL", "HELD BY", "SINCE"],
        rows,
        empty=f"No GPU devices (inventory: {status_.source}).",
    )
    free = format_equivalents(status_.free_equivalents)
    total = format_equivalents(status_.total_equivalents)
    console().print(f"Free: {free:g} of {total:g} GPU equivalents.")


@queue_app.callback(invoke_without_command=True)
def queue(
    ctx: typer.Context,
    all_users: bool = typer.Option(False, "--all", help="Admins: every user's entries."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Your waiting requests: position, and why they wait (quota or capacity)."""
    if ctx.invoked_subcommand is not None:
        return
    from ds01.services.gpu.queue import QueueService

    app_ctx = make_context(ctx)
    rows = QueueService(app_ctx).listing(app_ctx.actor, all_users=all_users)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json([to_json(r) for r in rows])
        return
    from ds01.cli.output import print_table

    print_table(
        None,
        ["ID", "POS", "USER", "NAME", "REQUEST", "WAITING SINCE", "WHY"],
        [
            [
                r.id,
                r.position,
                r.user,
                r.name,
                r.request,
                r.enqueued_at[:16].replace("T", " "),
                r.why,
            ]
            for r in rows
        ],
        empty="Nothing is waiting.",
    )


@queue_app.command("cancel")
def cancel(
    ctx: typer.Context,
    entry_id: int = typer.Argument(..., min=1, max=MAX_ID, metavar="ID", help="Queue entry id."),
) -> None:
    """Cancel one of your waiting requests."""
    from ds01.services.gpu.queue import QueueService

    app_ctx = make_context(ctx)
    row = QueueService(app_ctx).cancel(app_ctx.actor, entry_id)
    typer.echo(f"Cancelled queue entry {entry_id} ({row.spec.get('name')}).")
