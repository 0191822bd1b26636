"""Reading the event log, with the same privacy rule as containers.

Each record carries its writer (the owner of the file it was in, as the kernel says)
and ``forged`` when that writer could not have made it (:mod:`ds01.adapters.event_log`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ds01.errors import ErrorCode, RefusedError

if TYPE_CHECKING:
    from ds01.adapters.event_log import Event
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["list_events"]


def list_events(
    ctx: AppContext, actor: Actor, *, user: str | None, action: str | None, limit: int
) -> list[Event]:
    """Users see their own events; admins see anyone's (all when ``user`` is None)."""
    if user is not None and user != actor.name and not actor.is_admin:
        raise RefusedError(
            "Only administrators may read other users' events.",
            hint="Drop --user to see your own.",
            code=ErrorCode.NOT_ADMIN,
        )
    who = user if user is not None else (None if actor.is_admin else actor.name)
    found = list(ctx.events.query(user=who, action=action, limit=limit))
    # Forged records, damaged lines, unreadable files: said, never silently dropped.
    ctx.warnings.extend(ctx.events.problems)
    return found
