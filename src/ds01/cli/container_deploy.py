"""``ds01 container deploy | run | retire``: the orchestrators, on the ``container`` group.

:func:`register` adds them to the ``container`` group (``ds01.cli.main`` calls it before
it builds the application, so their hyphenated aliases ``container-deploy``,
``container-run`` and ``container-retire`` are made with the others).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, interactive, make_context
from ds01.cli.guided import Guide, need
from ds01.cli.options import (
    ARCH_OPTION,
    CPU_ONLY_OPTION,
    GPU_PROFILE_OPTION,
    GPUS_OPTION,
    IMAGE_OPTION,
    KEEP_RUNNING_OPTION,
    WAIT_OPTION,
    text_option,
)
from ds01.errors import EXIT_NO_CAPACITY, ErrorCode, UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ds01.domain.actor import Actor
    from ds01.services.container.deploy import PackageChanges
    from ds01.services.context import AppContext
    from ds01.services.image.build import BuildProgress

__all__ = [
    "Displays",
    "deploy",
    "own_container_names",
    "project_names",
    "register",
    "retire",
    "run",
]


def register(group: typer.Typer) -> None:
    """Add ``deploy``, ``run`` and ``retire`` to the ``container`` group."""
    group.command("deploy")(deploy)
    group.command("run")(run)
    group.command("retire")(retire)


GUIDED_OPTION = typer.Option(
    False, "--guided", help="Explain each step while it runs (for first-time users)."
)


def own_container_names(app_ctx: AppContext) -> list[str]:
    from ds01.services.container.operations import ContainerService

    actor = app_ctx.own_actor()
    return [c.display_name for c in ContainerService(app_ctx).own_containers(actor)]


def project_names(app_ctx: AppContext, actor: Actor) -> list[str]:
    from ds01.services.project.service import ProjectService

    return [p.name for p in ProjectService(app_ctx).projects(actor)]


class Displays:
    """The build and pull progress displays of one orchestrator run, opened on the first
    event and closed before anything else is printed (and before a shell takes over the
    terminal), so a live display never draws over other output."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._build: Any = None
        self._pull: Any = None

    def __enter__(self) -> Displays:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def on_build(self, event: BuildProgress) -> None:
        if self._build is None:
            from ds01.cli.image import BuildDisplay

            self._build = BuildDisplay(quiet=self.quiet)
        self._build.update(event)

    def on_pull(self, event: Mapping[str, Any]) -> None:
        if self._pull is None:
            from ds01.cli.progress import PullProgress

            self._pull = PullProgress(enabled=not self.quiet)
        self._pull.update(event)

    def close(self) -> None:
        for display in (self._build, self._pull):
            if display is not None:
                display.__exit__(None, None, None)
        self._build = self._pull = None


def deploy(
    ctx: typer.Context,
    name: str = typer.Argument(
        None, help="Project (and container) name: ~/workspace/NAME is mounted at /workspace."
    ),
    background: bool = typer.Option(
        False, "--background", help="Only start it; do not open a shell."
    ),
    framework: str = text_option(
        "-f", "--framework", help="Catalog framework instead of the project image."
    ),
    version: str = text_option("--version", help="Framework version (default: newest)."),
    image: str = IMAGE_OPTION,
    workspace: str = text_option("-w", "--workspace", help="Host directory mounted at /workspace."),
    arch: str = ARCH_OPTION,
    gpus: int = GPUS_OPTION,
    gpu_profile: str = GPU_PROFILE_OPTION,
    cpu_only: bool = CPU_ONLY_OPTION,
    wait: bool = WAIT_OPTION,
    rebuild: bool = typer.Option(False, "--rebuild", help="Build the project image again first."),
    keep_running: bool = KEEP_RUNNING_OPTION,
    guided: bool = GUIDED_OPTION,
) -> None:
    """Image, container and shell in one step.

    Builds the project image if the project has a Dockerfile and no image, creates the
    container with your limits and a GPU, and opens a shell (or --background). A container
    of that name that exists already is started or opened as it is.
    """
    from ds01.services.container.deploy import DeployRequest

    app_ctx = make_context(ctx)
    name = need(name, "NAME", lambda: _deploy_choices(app_ctx))
    request = DeployRequest(
        name=name,
        framework=framework,
        version=version,
        image=image,
        workspace=workspace,
        arch=arch,
        gpus=gpus,
        gpu_profile=gpu_profile,
        cpu_only=cpu_only,
        wait=wait,
        background=background,
        rebuild=rebuild,
    )
    run_deploy(app_ctx, request, guided=guided, keep_running=keep_running)


def _deploy_choices(app_ctx: AppContext) -> list[str]:
    names = project_names(app_ctx, app_ctx.actor) + own_container_names(app_ctx)
    return sorted(set(names))


def run_deploy(
    app_ctx: AppContext,
    request: Any,
    *,
    guided: bool,
    keep_running: bool = False,
    launch: bool = False,
) -> None:
    """Deploy (``launch``: as ``project launch``), report, then open the shell."""
    from dataclasses import replace

    from ds01.services.container.deploy import Orchestrator
    from ds01.services.project.service import launch as launch_project

    actor = app_ctx.actor
    if not request.background and not interactive():
        from ds01.cli.output import note

        note("No terminal to open a shell on: starting the container in the background.")
        request = replace(request, background=True)
    with Displays() as displays:
        guide = _guide(app_ctx, actor, request.name, guided, displays)
        if launch:
            result = launch_project(
                app_ctx,
                actor,
                request,
                narrator=guide,
                on_build=displays.on_build,
                on_pull=displays.on_pull,
            )
        else:
            orchestrator = Orchestrator(
                app_ctx, guide, on_build=displays.on_build, on_pull=displays.on_pull
            )
            result = orchestrator.deploy(actor, request)
    flush_warnings(app_ctx)
    if result.queued is not None:
        raise typer.Exit(EXIT_NO_CAPACITY)
    if request.background:
        guide.note(f"Open a shell: ds01 container run {request.name}")
        guide.note(f"When you are done: ds01 container retire {request.name}")
        return
    done = Orchestrator(app_ctx, guide).open_shell(actor, result, keep_running=keep_running)
    raise typer.Exit(done.shell_exit or 0)


def _guide(
    app_ctx: AppContext, actor: Actor, name: str, guided: bool, displays: Displays | None = None
) -> Guide:
    workspace = app_ctx.settings.workspace_base(actor.name, actor.home)
    return Guide(
        guided=guided,
        values={"name": name, "workspace": str(workspace)},
        before_print=displays.close if displays is not None else None,
    )


def run(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Container name."),
    keep_running: bool = KEEP_RUNNING_OPTION,
) -> None:
    """Start the container if it is stopped, then open a shell in /workspace."""
    from ds01.services.container.operations import ContainerService

    app_ctx = make_context(ctx)
    name = need(name, "NAME", lambda: own_container_names(app_ctx))
    if not interactive():
        raise UsageError(
            "'container run' opens a shell and needs a terminal.",
            hint=f"Start it with 'ds01 container start {name}', or run one command with "
            f"'ds01 container exec {name} -- CMD'.",
            code=ErrorCode.NEEDS_TERMINAL,
        )
    code = ContainerService(app_ctx).open(app_ctx.actor, name, keep_running=keep_running)
    raise typer.Exit(code)


def retire(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Container name."),
    save_packages: bool = typer.Option(
        None,
        "--save-packages/--no-save-packages",
        help="Add the pip packages installed in the container to the project's Dockerfile "
        "(custom tier) first. Default: ask on a terminal, otherwise list them only.",
    ),
    yes: bool = typer.Option(
        False, "-y", "--yes", help="Do not ask for confirmation (required without a terminal)."
    ),
    guided: bool = GUIDED_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Done with a container: stop it, remove it, release its GPU.

    First lists the pip packages installed in it since its image and offers to add them
    to the project's Dockerfile. Your workspace and the image stay.
    """
    from ds01.services.container.deploy import Orchestrator

    app_ctx = make_context(ctx)
    name = need(name, "NAME", lambda: own_container_names(app_ctx))
    if not yes:
        if not interactive():
            raise UsageError(
                f"Retiring removes the container {name!r}; confirm with --yes.",
                hint=f"ds01 container retire {name} --yes [--save-packages]",
                code=ErrorCode.CONFIRMATION_NEEDED,
            )
        from ds01.cli.prompts import confirm

        if not confirm(
            f"Retire {name}: stop and remove the container and release its GPU?", default=True
        ):
            typer.echo("Cancelled; nothing was changed.")
            return
    actor = app_ctx.actor
    guide = _guide(app_ctx, actor, name, guided)
    guide.quiet = json_out
    decide = _ask_to_save if interactive() and not json_out else None
    result = Orchestrator(app_ctx, guide).retire(
        actor, name, save_packages=save_packages, decide=decide
    )
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json(to_json(result))
        return
    guide.note(f"Retired {result.name}. A fresh container: ds01 container deploy {result.name}")


def _ask_to_save(changes: PackageChanges, dockerfile: Path) -> bool:
    from ds01.cli.prompts import confirm

    count = len(changes.added)
    what, them = ("this package", "it") if count == 1 else (f"these {count} packages", "them")
    return confirm(
        f"Add {what} to {dockerfile} (custom tier), so the next build has {them}?",
        default=True,
    )
