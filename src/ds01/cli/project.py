"""``ds01 project init`` and ``ds01 project launch`` (also ``project-init``,
``project-launch``): a workspace directory with its Dockerfile, layout and git, then a
container from it. On a terminal they ask for what is missing; without one they never ask:
they use the flags and defaults, or exit 2 naming what is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, interactive, make_context
from ds01.cli.container_deploy import GUIDED_OPTION, project_names, run_deploy
from ds01.cli.guided import Guide, choose, need
from ds01.cli.options import (
    APT_OPTION,
    ARCH_OPTION,
    CPU_ONLY_OPTION,
    GPU_PROFILE_OPTION,
    GPUS_OPTION,
    KEEP_RUNNING_OPTION,
    PIP_OPTION,
    WAIT_OPTION,
    text_option,
)
from ds01.errors import ErrorCode, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["ProjectChoices", "app", "project_wizard", "wizard_guide"]

app = typer.Typer(
    help="Your projects: a workspace directory with its Dockerfile, layout and git.",
    no_args_is_help=True,
)


def wizard_guide(app_ctx: AppContext, actor: Actor, guided: bool, *, quiet: bool = False) -> Guide:
    workspace = app_ctx.settings.workspace_base(actor.name, actor.home)
    return Guide(guided=guided, quiet=quiet, values={"workspace": str(workspace)})


# -- project init -----------------------------------------------------------------------


class ProjectChoices:
    """What the project wizard still has to ask for (``None``: ask on a terminal)."""

    def __init__(
        self,
        *,
        name: str | None = None,
        use_case: str | None = None,
        framework: str | None = None,
        version: str | None = None,
        arch: str | None = None,
        jupyter: bool | None = None,
        datascience: bool | None = None,
        pip: tuple[str, ...] | None = None,
        apt: tuple[str, ...] = (),
        description: str | None = None,
        git: bool = True,
    ) -> None:
        self.name = name
        self.use_case = use_case
        self.framework = framework
        self.version = version
        self.arch = arch
        self.jupyter = jupyter
        self.datascience = datascience
        self.pip = pip
        self.apt = apt
        self.description = description
        self.git = git


@app.command("init")
def project_init(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Project name: ~/workspace/NAME is created."),
    use_case: str = text_option(
        "-t", "--type", help="Use-case packages: ml cv nlp rl audio ts llm none."
    ),
    framework: str = text_option(
        "-f", "--framework", help="Catalog framework for the image (default: pytorch)."
    ),
    version: str = text_option("--version", help="Framework version (default: newest)."),
    arch: str = ARCH_OPTION,
    jupyter: bool = typer.Option(
        None, "--jupyter/--no-jupyter", help="Jupyter in the image (default: yes)."
    ),
    datascience: bool = typer.Option(
        None,
        "--datascience/--no-datascience",
        help="pandas, scipy, scikit-learn, matplotlib, seaborn (default: as --jupyter).",
    ),
    pip: list[str] = PIP_OPTION,
    apt: list[str] = APT_OPTION,
    description: str = typer.Option(None, "--desc", help="One line for the README."),
    no_git: bool = typer.Option(False, "--no-git", help="No git repository."),
    guided: bool = GUIDED_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Create a project: ~/workspace/NAME with its Dockerfile, layout and git.

    Makes data/raw, data/processed, notebooks, src, models, outputs, requirements.txt, the
    Dockerfile (as 'image create --no-build'), README.md, an ML .gitignore and a git
    repository with a first commit. On a terminal, asks for what the flags leave open.
    """
    app_ctx = make_context(ctx)
    actor = app_ctx.actor
    if not name and (json_out or not interactive()):
        need(name, "NAME", list)  # exits 2 naming NAME
    choices = ProjectChoices(
        name=name,
        use_case=use_case,
        framework=framework,
        version=version,
        arch=arch,
        jupyter=jupyter,
        datascience=datascience,
        pip=tuple(pip) if pip else None,
        apt=tuple(apt or ()),
        description=description,
        git=not no_git,
    )
    guide = wizard_guide(app_ctx, actor, guided, quiet=json_out)
    project_wizard(app_ctx, actor, guide, choices, offer_launch=False, json_out=json_out)


def project_wizard(
    app_ctx: AppContext,
    actor: Actor,
    guide: Guide,
    choices: ProjectChoices,
    *,
    offer_launch: bool,
    json_out: bool = False,
) -> None:
    from ds01.services.project.service import ProjectInitRequest, ProjectService

    terminal = interactive() and not json_out
    guide.phase(1, 3, "Choices", "project")
    if terminal:
        _ask_missing(app_ctx, choices)
    if choices.name is None:  # unreachable: asked above, or refused without a terminal
        raise UsageError("Missing argument NAME.", code=ErrorCode.MISSING_ARGUMENT)
    guide.values["name"] = choices.name
    jupyter = True if choices.jupyter is None else choices.jupyter
    datascience = jupyter if choices.datascience is None else choices.datascience
    request = ProjectInitRequest(
        name=choices.name,
        use_case=choices.use_case,
        framework=choices.framework,
        version=choices.version,
        arch=choices.arch,
        jupyter=jupyter,
        datascience=datascience,
        pip=choices.pip or (),
        apt=choices.apt,
        description=choices.description,
        git=choices.git,
    )
    result = ProjectService(app_ctx).init(actor, request, narrator=guide)
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json(to_json(result))
        return
    for line in result.notes:
        guide.note(f"note: {line}")
    made = ", ".join(result.created) or "nothing new"
    guide.note(f"Project {result.name} in {result.path}: {made}.")
    if result.kept:
        guide.note(f"Kept as they were: {', '.join(result.kept)}.")
    if offer_launch and terminal:
        from ds01.cli.prompts import confirm

        if confirm(
            "Build the image and open a container now? (the first build takes a few minutes)",
            default=True,
        ):
            from ds01.services.container.deploy import DeployRequest

            run_deploy(app_ctx, DeployRequest(name=result.name), guided=guide.guided, launch=True)
            return
    guide.note(f"Next: ds01 project launch {result.name}")


def _ask_missing(app_ctx: AppContext, choices: ProjectChoices) -> None:
    """The wizard's questions, for whatever the flags left open (terminal only)."""
    from ds01.cli.help_text import USE_CASE_DESCRIPTIONS
    from ds01.cli.prompts import ask, confirm
    from ds01.domain.naming import validate_name
    from ds01.domain.packages import USE_CASE_PACKAGES, UseCase, plan_packages, split_package_list

    out_note = _printer()
    while choices.name is None:
        answer = ask("Project name (letters, digits, - _ .)", default="my-project").strip()
        try:
            choices.name = validate_name(answer, what="project name")
        except UsageError as exc:
            out_note(exc.message)
    if choices.framework is None:
        frameworks = _frameworks(app_ctx, choices.arch)
        if len(frameworks) > 1:
            default = next((f for f in frameworks if f.casefold() == "pytorch"), frameworks[0])
            options = [(f, "from the AIME catalog") for f in frameworks]
            choices.framework = choose("Framework", options, default=default)
    if choices.use_case is None:
        options = []
        for case in UseCase:
            packages = " ".join(USE_CASE_PACKAGES[case])
            text = USE_CASE_DESCRIPTIONS.get(case.value, "")
            options.append((case.value, f"{text} ({packages})" if packages else text))
        choices.use_case = choose("Use case", options, default="none")
    if choices.jupyter is None and choices.datascience is None:
        both = confirm(
            "Include Jupyter and the data-science set (pandas, scipy, scikit-learn, "
            "matplotlib, seaborn)?",
            default=True,
        )
        choices.jupyter = choices.datascience = both
    while choices.pip is None:
        answer = ask("Extra pip packages, separated by spaces (Enter: none)", default="")
        try:
            plan_packages(pip=split_package_list(answer), system_tools=False)
        except UsageError as exc:
            out_note(exc.message)
            continue
        choices.pip = (answer,) if answer.strip() else ()


def _frameworks(app_ctx: AppContext, arch: str | None) -> list[str]:
    from ds01.services.catalog import resolve_arch

    resolved, _ = resolve_arch(app_ctx, arch, required=False)
    try:
        return list(app_ctx.catalog.frameworks(resolved))
    except UsageError:
        return list(app_ctx.catalog.frameworks())


def _printer() -> Callable[[str], None]:
    from rich.markup import escape

    from ds01.cli.output import console

    def say(text: str) -> None:
        console().print(f"[red]{escape(text)}[/red]")

    return say


# -- project launch ---------------------------------------------------------------------


@app.command("launch")
def project_launch(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Project name (a directory in ~/workspace)."),
    background: bool = typer.Option(
        False, "--background", help="Only start the container; do not open a shell."
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build the image again first."),
    gpus: int = GPUS_OPTION,
    gpu_profile: str = GPU_PROFILE_OPTION,
    cpu_only: bool = CPU_ONLY_OPTION,
    wait: bool = WAIT_OPTION,
    keep_running: bool = KEEP_RUNNING_OPTION,
    guided: bool = GUIDED_OPTION,
) -> None:
    """Build the project's image if needed, then deploy it.

    Builds ~/workspace/NAME/Dockerfile when the image is missing (or with --rebuild), then
    creates the container with your limits and a GPU and opens a shell (or --background).
    """
    from ds01.services.container.deploy import DeployRequest

    app_ctx = make_context(ctx)
    name = need(name, "NAME", lambda: project_names(app_ctx, app_ctx.actor))
    request = DeployRequest(
        name=name,
        gpus=gpus,
        gpu_profile=gpu_profile,
        cpu_only=cpu_only,
        wait=wait,
        background=background,
        rebuild=rebuild,
    )
    run_deploy(app_ctx, request, guided=guided, keep_running=keep_running, launch=True)
