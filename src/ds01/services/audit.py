"""Recording every mutating operation in the event log, whatever its outcome."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ds01.errors import DS01Error, NoCapacityError, RefusedError, UsageError

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["Audit", "audited"]


class Audit:
    """Details gathered while an operation runs; written when it ends."""

    def __init__(self) -> None:
        self.details: dict[str, Any] = {}
        self.result: str | None = None  # set to override "ok" (e.g. "queued")

    def add(self, **details: Any) -> None:
        self.details.update(details)


def _result_for(exc: BaseException) -> str:
    if isinstance(exc, RefusedError):
        return "refused"
    if isinstance(exc, NoCapacityError):
        return "no_capacity"
    if isinstance(exc, UsageError):
        return "bad_input"
    return "failed"


@contextmanager
def audited(
    ctx: AppContext,
    actor: Actor,
    action: str,
    target: str | None,
    *,
    owner: str | None = None,
    by: str | None = None,
) -> Iterator[Audit]:
    """Run an operation and record ``who, what, when, result`` in the event log.

    ``by`` names the real caller when an admin acts for ``actor`` or enforcement acts on
    the owner's container; the event is attributed to the owner and says who did it.
    """
    audit = Audit()
    by = by or ctx.acting_admin
    # Open the log first: an operation whose outcome cannot be recorded must not run.
    ctx.events.ready()
    try:
        yield audit
    except BaseException as exc:
        details = dict(audit.details)
        if isinstance(exc, DS01Error):
            details.update(error=exc.code, message=exc.message)
        elif isinstance(exc, KeyboardInterrupt):
            details.update(error="interrupted")
        else:
            details.update(error=type(exc).__name__, message=str(exc))
        if by:
            details["by"] = by
        _record(
            ctx,
            actor=actor.name,
            action=action,
            target=target,
            result=_result_for(exc),
            owner=owner,
            details=details,
            when="The failure could not be recorded",
        )
        raise
    details = dict(audit.details)
    if by:
        details["by"] = by
    _record(
        ctx,
        actor=actor.name,
        action=action,
        target=target,
        result=audit.result or "ok",
        owner=owner,
        details=details,
        when="Done, but the event could not be recorded",
    )


def _record(
    ctx: AppContext,
    *,
    actor: str,
    action: str,
    target: str | None,
    result: str,
    owner: str | None,
    details: dict[str, Any],
    when: str,
) -> None:
    """Write the event; a log that broke mid-operation becomes a warning, never hides the
    operation's own outcome (the log was checked writable before it started)."""
    try:
        ctx.events.record(
            actor=actor, action=action, target=target, result=result, owner=owner, details=details
        )
    except DS01Error as exc:
        ctx.warnings.append(f"{when}: {exc.message}")
