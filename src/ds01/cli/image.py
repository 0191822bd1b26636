"""``ds01 image ...``: build, list, update and delete your custom images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context, require
from ds01.cli.options import APT_OPTION, ARCH_OPTION, PIP_OPTION, not_empty, text_option
from ds01.cli.progress import LiveDisplay

if TYPE_CHECKING:
    from ds01.services.image.build import BuildProgress
    from ds01.services.image.service import ImageResult, ImageView

app = typer.Typer(help="Your custom images, built on AIME framework bases.", no_args_is_help=True)


class BuildDisplay(LiveDisplay):
    """Shows a build: on a terminal a live line (step N/M, its instruction, the latest
    output); without one, one plain line per step on stderr; with ``--json``, nothing."""

    def __init__(self, *, quiet: bool) -> None:
        from ds01.cli.output import error_console

        self._console = error_console()
        self._quiet = quiet
        self._live = not quiet and self._console.is_terminal
        self._progress: Any = None
        self._task: Any = None
        self._step = -1

    def _start(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]step[/bold]"),
            MofNCompleteColumn(),
            BarColumn(bar_width=20),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self._console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("preparing", total=None)

    def update(self, event: BuildProgress) -> None:
        if self._quiet:
            return
        from rich.markup import escape

        new_step = event.step != self._step and event.line is None
        self._step = event.step
        if not self._live:
            if new_step and event.step:
                self._console.print(
                    escape(f"Step {event.step}/{event.total}: {_short(event.instruction, 100)}"),
                    soft_wrap=True,
                )
            return
        if self._progress is None:
            self._start()
        text = escape(_short(event.instruction, 60))
        if event.line:
            text += f"  [dim]{escape(_short(event.line, 60))}[/dim]"
        self._progress.update(
            self._task,
            description=text,
            total=event.total or None,
            completed=max(0, event.step - 1),
        )


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _report_build(result: ImageResult, json_out: bool) -> None:
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json(to_json(result))
        return
    from rich.markup import escape

    from ds01.cli.output import console, note

    for line in result.notes:
        note(line)
    out = console()
    if not result.built:
        state = "Wrote" if result.written else "Unchanged:"
        out.print(escape(f"{state} {result.dockerfile}"))
        out.print(escape(f"Build it with: ds01 image update {result.name}"))
        return
    cached = f", {result.cached_steps} of {result.steps} steps from the cache"
    seconds = result.seconds or 0.0
    short_id = (result.image_id or "").removeprefix("sha256:")[:12]
    out.print(f"Built [bold]{escape(result.image)}[/bold] ({short_id}) in {seconds:.0f} s{cached}.")
    out.print(escape(f"  base {result.base}; tiers: {', '.join(result.tiers) or '-'}"))
    out.print(escape(f"  Dockerfile: {result.dockerfile}"))
    out.print(escape(f"  build log:  {result.log}"))
    out.print(
        f"Create a container from it: [bold]ds01 container create {escape(result.name)}[/bold]"
    )


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Project name: ~/workspace/NAME holds the Dockerfile."),
    framework: str = text_option(
        "-f", "--framework", help="Catalog framework for the base (default: pytorch)."
    ),
    version: str = text_option("--version", help="Framework version (default: newest)."),
    arch: str = ARCH_OPTION,
    base: str = text_option("--base", help="Any image as the base instead of the catalog."),
    use_case: str = text_option(
        "-t", "--type", help="Use-case packages: ml cv nlp rl audio ts llm none (default)."
    ),
    jupyter: bool = typer.Option(
        None, "--jupyter/--no-jupyter", help="Jupyter tier (default: on; off with --dockerfile)."
    ),
    datascience: bool = typer.Option(
        None,
        "--datascience/--no-datascience",
        help="pandas, scipy, scikit-learn, matplotlib, seaborn (default: as --jupyter).",
    ),
    pip: list[str] = PIP_OPTION,
    apt: list[str] = APT_OPTION,
    requirements: str = text_option(
        "-r", "--requirements", help="A requirements file; replaces the Jupyter/data tiers."
    ),
    dockerfile: str = text_option(
        "--dockerfile", help="Your own Dockerfile; DS01 adds its user setup and labels."
    ),
    no_build: bool = typer.Option(False, "--no-build", help="Only write the Dockerfile."),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Build every layer anew (newer package versions)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing, different Dockerfile (kept as .bak)."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Write ~/workspace/NAME/Dockerfile for a custom image and build NAME-<you>-image."""
    from ds01.services.image.service import ImageCreateRequest, ImageService

    app_ctx = make_context(ctx)
    name = require(name, "NAME")
    request = ImageCreateRequest(
        name=name,
        framework=framework,
        version=version,
        arch=arch,
        base=base,
        use_case=use_case,
        jupyter=jupyter,
        datascience=datascience,
        pip=tuple(pip or ()),
        apt=tuple(apt or ()),
        requirements=requirements,
        dockerfile=dockerfile,
        build=not no_build,
        force=force,
        nocache=no_cache,
    )
    with BuildDisplay(quiet=json_out) as display:
        result = ImageService(app_ctx).create(app_ctx.actor, request, on_progress=display.update)
    flush_warnings(app_ctx)
    _report_build(result, json_out)


@app.command("update")
def update(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Project name."),
    add_pip: list[str] = typer.Option(
        None, "--add-pip", help="pip packages to add.", callback=not_empty
    ),
    add_apt: list[str] = typer.Option(
        None, "--add-apt", help="Debian packages to add.", callback=not_empty
    ),
    remove: list[str] = typer.Option(
        None, "--remove", help="Custom-tier packages to remove.", callback=not_empty
    ),
    no_build: bool = typer.Option(False, "--no-build", help="Only edit the Dockerfile."),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Build every layer anew (newer package versions)."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Edit the custom tier of ~/workspace/NAME/Dockerfile, then rebuild (from the cache)."""
    from ds01.services.image.service import ImageService, ImageUpdateRequest

    app_ctx = make_context(ctx)
    name = require(name, "NAME")
    request = ImageUpdateRequest(
        name=name,
        add_pip=tuple(add_pip or ()),
        add_apt=tuple(add_apt or ()),
        remove=tuple(remove or ()),
        build=not no_build,
        nocache=no_cache,
    )
    with BuildDisplay(quiet=json_out) as display:
        result = ImageService(app_ctx).update(app_ctx.actor, request, on_progress=display.update)
    flush_warnings(app_ctx)
    _report_build(result, json_out)


@app.command("list")
def list_(
    ctx: typer.Context,
    all_users: bool = typer.Option(False, "--all", help="Admins: every user's images."),
    json_out: bool = JSON_OPTION,
) -> None:
    """List your custom images."""
    from ds01.cli.output import print_listing
    from ds01.services.image.service import ImageService

    app_ctx = make_context(ctx)
    actor = app_ctx.actor if all_users else app_ctx.own_actor()
    views = ImageService(app_ctx).list_views(actor, all_users=all_users)
    print_listing(
        views,
        json_out=json_out,
        columns=("NAME", "IMAGE", "BASE", "TIERS", "SIZE", "CREATED"),
        cells=_image_cells,
        owner=(lambda v: v.user) if all_users else None,
        empty="No custom images yet. Build one: ds01 image create NAME",
    )


def _image_cells(view: ImageView) -> list[Any]:
    created = (view.created or "")[:16].replace("T", " ")
    tiers = ",".join(view.tiers)
    return [view.name, view.image, view.base, tiers, _size(view.size_bytes), created]


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - the loop returns


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Project name."),
    force: bool = typer.Option(
        False, "-f", "--force", help="Stop and remove the containers using it first."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Delete your project's image (the Dockerfile stays)."""
    from ds01.services.image.service import ImageService

    app_ctx = make_context(ctx)
    name = require(name, "NAME")
    result = ImageService(app_ctx).delete(app_ctx.actor, name, force=force)
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json(to_json(result))
        return
    from rich.markup import escape

    from ds01.cli.output import console

    out = console()
    for tag in result.removed_containers:
        done = "Stopped and removed" if tag in result.stopped_containers else "Removed"
        out.print(escape(f"{done} the container {tag}."))
    out.print(escape(f"Deleted the image {result.image}."))
    if result.dockerfile:
        out.print(
            escape(f"Kept {result.dockerfile}: 'ds01 image update {result.name}' builds it again.")
        )
