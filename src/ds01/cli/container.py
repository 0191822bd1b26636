"""``ds01 container ...``: create, open, exec, start, stop, remove, list, stats."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context, require
from ds01.cli.options import (
    ARCH_OPTION,
    CPU_ONLY_OPTION,
    DATA_OPTION,
    GPU_PROFILE_OPTION,
    GPUS_OPTION,
    IMAGE_OPTION,
    KEEP_RUNNING_OPTION,
    MAX_STOP_SECONDS,
    MODELS_OPTION,
    WAIT_OPTION,
    WORKSPACE_OPTION,
    not_empty,
)
from ds01.errors import EXIT_NO_CAPACITY

if TYPE_CHECKING:
    from ds01.services.container.operations import ContainerView
    from ds01.services.context import AppContext

app = typer.Typer(
    help="Your containers: create, open, run commands, stop, remove, list.", no_args_is_help=True
)


def _own_names(app_ctx: AppContext) -> list[str]:
    from ds01.services.container.operations import ContainerService

    svc = ContainerService(app_ctx)
    return [c.display_name for c in svc.own_containers(app_ctx.own_actor())]


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Container name (letters, digits, _ . -)."),
    framework: str = typer.Argument(
        None, help="Catalog framework, e.g. pytorch, tensorflow.", callback=not_empty
    ),
    version: str = typer.Argument(
        None, help="Exact catalog version; default: newest.", callback=not_empty
    ),
    image: str = IMAGE_OPTION,
    workspace: str = WORKSPACE_OPTION,
    data: str = DATA_OPTION,
    models: str = MODELS_OPTION,
    arch: str = ARCH_OPTION,
    gpus: int = GPUS_OPTION,
    gpu_profile: str = GPU_PROFILE_OPTION,
    cpu_only: bool = CPU_ONLY_OPTION,
    wait: bool = WAIT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Create a container from a catalog framework, your project image, or --image."""
    from ds01.services.container.create import CreateRequest, CreateResult, CreateService

    app_ctx = make_context(ctx)
    name = require(name, "NAME")
    request = CreateRequest(
        name=name,
        framework=framework,
        version=version,
        image=image,
        workspace=workspace,
        data=data,
        models=models,
        arch=arch,
        gpus=gpus,
        gpu_profile=gpu_profile,
        cpu_only=cpu_only,
        wait=wait,
    )
    actor = app_ctx.actor
    from ds01.cli.progress import PullProgress

    def show(result: CreateResult) -> None:
        # Called by create() before it records the container as complete: a kill before
        # the result is shown leaves a container the next command removes (issue 10).
        progress.__exit__(None, None, None)  # the pull bars are done; idempotent
        flush_warnings(app_ctx)
        if json_out:
            from ds01.cli.output import emit_json
            from ds01.serialize import to_json

            emit_json(to_json(result))
            return
        from ds01.cli.output import console

        out = console()
        if result.queued:
            out.print(
                f"Queued as request [bold]{result.queued}[/bold]: no GPU fits now. "
                "You will be told when the container is created ('ds01 gpu queue')."
            )
            return
        gpu_text = ", ".join(result.gpus) if result.gpus else "none"
        out.print(f"Created [bold]{result.name}[/bold] ({result.container}) from {result.image}")
        out.print(f"  workspace {result.workspace} -> /workspace;  GPUs: {gpu_text}")
        out.print(f"Open it with: [bold]ds01 container open {result.name}[/bold]")

    with PullProgress(enabled=not json_out) as progress:
        result = CreateService(app_ctx).create(
            actor, request, on_progress=progress.update, on_result=show
        )
    flush_warnings(app_ctx)
    if result.queued:
        raise typer.Exit(EXIT_NO_CAPACITY)  # exit 4: no capacity now; the request waits


@app.command("open")
def open_(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Container name."),
    keep_running: bool = KEEP_RUNNING_OPTION,
) -> None:
    """Open an interactive shell in /workspace (starts the container if needed)."""
    from ds01.services.container.operations import ContainerService

    app_ctx = make_context(ctx)
    name = require(name, "NAME", choices=lambda: _own_names(app_ctx))
    code = ContainerService(app_ctx).open(app_ctx.actor, name, keep_running=keep_running)
    raise typer.Exit(code)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Container name."),
    command: list[str] = typer.Argument(None, help="The command, after '--'."),
) -> None:
    """Run a command in /workspace as you, without a terminal; its exit code is returned."""
    from ds01.services.container.operations import ContainerService

    app_ctx = make_context(ctx)
    argv = list(command or []) + list(ctx.args)

    def forward(out: bytes | None, err: bytes | None) -> None:
        if out:
            sys.stdout.buffer.write(out)
            sys.stdout.buffer.flush()
        if err:
            sys.stderr.buffer.write(err)
            sys.stderr.buffer.flush()

    code = ContainerService(app_ctx).exec(app_ctx.actor, name, argv, on_output=forward)
    raise typer.Exit(code)


@app.command("start")
def start(ctx: typer.Context, name: str = typer.Argument(None, help="Container name.")) -> None:
    """Start a stopped container in the background."""
    from ds01.services.container.operations import ContainerService

    app_ctx = make_context(ctx)
    name = require(name, "NAME", choices=lambda: _own_names(app_ctx))
    details = ContainerService(app_ctx).start(app_ctx.actor, name)
    flush_warnings(app_ctx)
    typer.echo(f"Started {details.info.display_name}.")


@app.command("stop")
def stop(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Container name."),
    time: int = typer.Option(
        None, "-t", "--time", min=0, max=MAX_STOP_SECONDS, help="Seconds before SIGKILL."
    ),
) -> None:
    """Stop a running container (SIGTERM, then SIGKILL after the grace time)."""
    from ds01.services.container.operations import ContainerService

    app_ctx = make_context(ctx)
    name = require(name, "NAME", choices=lambda: _own_names(app_ctx))
    details = ContainerService(app_ctx).stop(app_ctx.actor, name, timeout=time)
    flush_warnings(app_ctx)
    typer.echo(f"Stopped {details.info.display_name}.")


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Container name."),
    force: bool = typer.Option(False, "-f", "--force", help="Remove even if running."),
) -> None:
    """Remove a container (your workspace and the image stay)."""
    from ds01.services.container.operations import ContainerService
    from ds01.services.gpu.queue import process_queue_quietly

    app_ctx = make_context(ctx)
    name = require(name, "NAME", choices=lambda: _own_names(app_ctx))
    removal = ContainerService(app_ctx).remove(app_ctx.actor, name, force=force)
    if removal.freed_devices:
        process_queue_quietly(app_ctx)  # its devices may be what the queue waits for
    flush_warnings(app_ctx)
    typer.echo(f"Removed {removal.details.info.display_name}. Your workspace is untouched.")


@app.command("list")
def list_(
    ctx: typer.Context,
    all_users: bool = typer.Option(False, "--all", help="Admins: every user's containers."),
    json_out: bool = JSON_OPTION,
) -> None:
    """List your containers in every state (AIME's and DS01's)."""
    from ds01.cli.output import print_listing
    from ds01.services.container.operations import ContainerService

    app_ctx = make_context(ctx)
    actor = app_ctx.actor if all_users else app_ctx.own_actor()
    views = ContainerService(app_ctx).list_views(actor, all_users=all_users)
    print_listing(
        views,
        json_out=json_out,
        columns=("NAME", "STATUS", "FRAMEWORK", "GPUS", "IMAGE"),
        cells=lambda v: [v.name, v.status, v.framework, _gpu_cell(v), v.image],
        owner=(lambda v: v.user or "?") if all_users else None,
        empty="No containers yet. Create one: ds01 container create NAME pytorch",
    )


def _gpu_cell(view: ContainerView) -> str:
    if not view.gpus:
        return "-"
    return f"{len(view.gpus)} ({view.gpu_equivalents:g} eq)"


@app.command("stats")
def stats(ctx: typer.Context, json_out: bool = JSON_OPTION) -> None:
    """CPU, memory and processes of your running containers."""
    from ds01.services.container.operations import ContainerService

    app_ctx = make_context(ctx)
    views = ContainerService(app_ctx).stats(app_ctx.own_actor())
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json([to_json(v) for v in views])
        return
    from ds01.cli.output import print_table

    print_table(
        None,
        ["NAME", "CPU %", "MEMORY", "LIMIT", "PIDS", "GPUS"],
        [
            [
                v.name,
                v.cpu_percent,
                _size(v.memory_bytes),
                _size(v.memory_limit_bytes),
                v.pids,
                len(v.gpus),
            ]
            for v in views
        ],
        empty="None of your containers is running.",
    )


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{value} B"
