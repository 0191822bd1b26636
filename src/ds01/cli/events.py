"""``ds01 events``: the audit trail of everything DS01 changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context
from ds01.cli.options import MAX_EVENTS, text_option

if TYPE_CHECKING:
    from ds01.adapters.event_log import Event


def register(app: typer.Typer) -> None:
    app.command("events")(events)


def events(
    ctx: typer.Context,
    user: str = text_option("--user", "-u", help="Admins: events of this user."),
    action: str = text_option("--action", help="Only this action (e.g. container)."),
    limit: int = typer.Option(
        100, "--limit", "-n", min=1, max=MAX_EVENTS, help="At most this many, newest."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Show the event log: who did what, when, and the result."""
    from ds01.services.events import list_events

    app_ctx = make_context(ctx)
    rows = list_events(app_ctx, app_ctx.actor, user=user, action=action, limit=limit)
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json([to_json(e) for e in rows])
        return
    from ds01.cli.output import print_table

    print_table(
        None,
        ["TIME", "USER", "ACTION", "TARGET", "RESULT"],
        [[e.ts[:19].replace("T", " "), _who(e), e.action, e.target or "", e.result] for e in rows],
        empty="No events.",
    )


def _who(event: Event) -> str:
    """The actor, and who really wrote the record when that is someone else."""
    if event.forged:
        return f"{event.actor} [FORGED by {event.writer}]"
    by = event.details.get("by")
    if isinstance(by, str) and by != event.actor:
        return f"{event.actor} (by {by})"
    return event.actor
