"""``ds01 user setup`` (also ``user-setup``): getting started on this server. Checks the
account, offers an SSH key and the connection guide, and on a terminal offers the project
wizard (:mod:`ds01.cli.project`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, interactive, make_context
from ds01.cli.container_deploy import GUIDED_OPTION
from ds01.cli.guided import Guide

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.services.user.setup import OnboardingService, SetupReport

from ds01.cli.project import ProjectChoices, project_wizard, wizard_guide

__all__ = ["app"]

app = typer.Typer(help="Getting started on this server.", no_args_is_help=True)


# -- user-setup -------------------------------------------------------------------------

_MARKS = {"ok": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]"}


@app.command("setup")
def user_setup(
    ctx: typer.Context,
    quick: bool = typer.Option(
        False, "--quick", help="Only the checks, one line each (for experienced users)."
    ),
    guided: bool = GUIDED_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Get started: checks, SSH key, VS Code, then your first project.

    Checks and explains what you need here (Docker, your limits, GPUs, the workspace, an
    SSH key), shows how to connect VS Code, then offers to create and launch a project.
    Changes nothing without asking; safe to run again at any time.
    """
    from ds01.services.user.setup import OnboardingService

    app_ctx = make_context(ctx)
    actor = app_ctx.actor
    terminal = interactive() and not json_out
    guide = wizard_guide(app_ctx, actor, guided, quiet=json_out)
    if not quick:
        guide.phase(1, 3, "Checks", "checks")
    service = OnboardingService(app_ctx)
    report = service.check(actor)
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json(to_json(report))
        raise typer.Exit(1 if report.failed else 0)
    _print_checks(report, quick=quick, guide=guide)
    if quick or not terminal:
        if not quick and not report.failed:
            guide.note("Next: ds01 project-init NAME (or run ds01 user-setup on a terminal).")
        raise typer.Exit(1 if report.failed else 0)

    guide.phase(2, 3, "Connecting: SSH and VS Code", "ssh")
    _ssh_key(service, actor, report, guide)
    guide.explain("vscode")
    from ds01.services.user.setup import connect_guide

    first = report.projects[0] if report.projects else None
    for line in connect_guide(actor, report.host, report.workspace, first):
        guide.note(line)

    guide.phase(3, 3, "Your first project", "project")
    if report.failed:
        guide.note("Fix the problems marked ✗ above first, then run 'ds01 user-setup' again.")
        raise typer.Exit(1)
    from ds01.cli.prompts import confirm

    question = (
        "Create another project now?" if report.projects else "Create your first project now?"
    )
    if not confirm(question, default=not report.projects):
        guide.note("Later: ds01 project-init NAME, then ds01 project launch NAME.")
        return
    project_wizard(app_ctx, actor, guide, ProjectChoices(), offer_launch=True)


def _print_checks(report: SetupReport, *, quick: bool, guide: Guide) -> None:
    from rich.markup import escape

    out = guide.console
    for check in report.checks:
        mark = _MARKS[check.status.value]
        out.print(f"  {mark} [bold]{escape(check.title)}[/bold]: {escape(check.summary)}")
        if quick:
            continue
        guide.explain(check.key)
        for line in check.details:
            out.print(f"      {escape(line)}")
        if check.fix and check.status.value != "ok":
            out.print(f"      [cyan]→[/cyan] {escape(check.fix)}")


def _ssh_key(service: OnboardingService, actor: Actor, report: SetupReport, guide: Guide) -> None:
    from ds01.cli.prompts import confirm

    key = report.ssh_public_key
    if key is None and os.geteuid() != actor.uid:
        guide.note(f"{actor.name} has no SSH key; they can make one with ssh-keygen -t ed25519.")
        return
    if key is None:
        if not confirm("Create an SSH key on this server now (ssh-keygen, ed25519)?", default=True):
            guide.note("Later: ssh-keygen -t ed25519")
            return
        key = service.create_ssh_key(actor)
        guide.note(f"Created {key}.")
    try:
        public = key.read_text(encoding="utf-8").strip()
    except OSError as exc:
        guide.note(f"Your public key is {key} ({exc.strerror}).")
        return
    guide.note(f"Your public key ({key}); add it to GitHub/GitLab to use git over SSH:")
    guide.note(f"  {public}")
