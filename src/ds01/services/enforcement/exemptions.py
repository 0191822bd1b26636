"""Admins exempt users from the idle or the runtime limit, until a date, with a reason.

An exemption is a file in ``state_dir/exemptions/`` that only root and the admin group
may write, and it counts only when the kernel says root or a current administrator
wrote it (:mod:`ds01.adapters.exemption_files`): a row typed into the shared database
no longer exempts anyone. Every enforcement pass reads them: an exempt user's
containers that reach the limit get one FYI notice and keep running. Only
administrators grant, list and withdraw exemptions; each change is an event attributed
to the admin, concerning the user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from ds01.adapters.lifecycle_store import LifecycleStore
from ds01.domain.lifecycle import LimitKind
from ds01.domain.units import parse_duration
from ds01.errors import ErrorCode, NotFoundError, RefusedError, UsageError
from ds01.services.audit import audited

if TYPE_CHECKING:
    from ds01.adapters.lifecycle_store import ExemptionRow, LifecycleStore
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["ListedExemption", "grant", "listing", "parse_until", "withdraw"]

_NEVER = ("never", "forever")
_UNTIL_HINT = (
    "Write a date (2025-06-30: through the end of that day, server time), a date and "
    "time (2025-06-30T18:00), a duration from now (7d, 12h), or 'never'."
)
_DURATION = re.compile(r"^\d+(?:\.\d+)?\s*[smhdw]")


def parse_until(text: str, *, now: datetime) -> datetime | None:
    """The end of an exemption as written on the command line (UTC); None for 'never'.

    A bare date means through the end of that day in the server's time zone; a date and
    time without an offset is server time too. The result must lie after ``now``.
    """
    value = text.strip()
    if value.lower() in _NEVER:
        return None
    until: datetime
    if _DURATION.match(value):
        try:
            until = now + timedelta(seconds=parse_duration(value))
        except (ValueError, OverflowError) as exc:
            raise UsageError(f"--until {text!r}: {exc}.", hint=_UNTIL_HINT) from exc
    else:
        try:
            if "T" in value or " " in value:
                parsed = datetime.fromisoformat(value)
                # A time without offset is server time: astimezone() reads it so.
                until = parsed if parsed.tzinfo else parsed.astimezone()
            else:
                day = date.fromisoformat(value)
                until = datetime.combine(day + timedelta(days=1), time(0)).astimezone()
        except ValueError as exc:
            raise UsageError(
                f"--until {text!r} is not a date, a time or a duration.", hint=_UNTIL_HINT
            ) from exc
        except OverflowError as exc:  # 9999-12-31: the day after is past datetime's range
            raise UsageError(
                f"--until {text!r} is outside the dates DS01 can store.", hint=_UNTIL_HINT
            ) from exc
    try:
        until = until.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:59-14:00 is in the year 10000 in UTC
        raise UsageError(
            f"--until {text!r} is outside the dates DS01 can store.", hint=_UNTIL_HINT
        ) from exc
    if until <= now:
        raise UsageError(
            f"--until {text!r} is in the past ({until:%Y-%m-%d %H:%M} UTC).",
            hint="Give a later end, or withdraw the exemption with 'ds01 admin unexempt'.",
        )
    return until


def _require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise RefusedError(
            f"Only administrators may {what}.",
            hint="Ask a DS01 admin (members of the admin group, or root).",
            code=ErrorCode.NOT_ADMIN,
        )


def _store(ctx: AppContext) -> LifecycleStore:
    return LifecycleStore(ctx.state_db)


def _kinds(kinds: Sequence[LimitKind]) -> list[LimitKind]:
    chosen = list(dict.fromkeys(kinds))
    if not chosen:
        raise UsageError(
            "Say which limit: --idle, --runtime, or both.",
            hint="Example: ds01 admin exempt alice --idle --until 2025-06-30 --reason 'demo'",
            code=ErrorCode.MISSING_ARGUMENT,
        )
    return chosen


def grant(
    ctx: AppContext,
    actor: Actor,
    user: str,
    kinds: Sequence[LimitKind],
    *,
    until: str,
    reason: str,
) -> list[ExemptionRow]:
    """Exempt ``user`` from each of ``kinds`` until ``until`` (replaces earlier ones)."""
    _require_admin(actor, "exempt users from lifecycle limits")
    chosen = _kinds(kinds)
    if not reason.strip():
        raise UsageError(
            "An exemption needs a reason (--reason TEXT).",
            hint="The reason is shown to the user and kept in the event log.",
            code=ErrorCode.MISSING_ARGUMENT,
        )

    account = ctx.accounts.actor(user)  # exit 2 for a name that is not a user here
    now = ctx.clock.now()
    end = parse_until(until, now=now)
    rows = []
    store = _store(ctx)
    for kind in chosen:
        with audited(
            ctx, actor, "lifecycle.exempt", f"user:{account.name}", owner=account.name
        ) as audit:
            audit.add(kind=kind.value, until=None if end is None else end.isoformat())
            audit.add(reason=reason.strip())
            rows.append(
                store.set_exemption(
                    user=account.name,
                    kind=kind,
                    until=end,
                    reason=reason.strip(),
                    created_by=actor.name,
                    now=now,
                )
            )
    return rows


def withdraw(
    ctx: AppContext, actor: Actor, user: str, kinds: Sequence[LimitKind]
) -> list[LimitKind]:
    """Withdraw ``user``'s exemptions of ``kinds``; exit 2 when none of them exists."""
    _require_admin(actor, "withdraw exemptions")
    chosen = _kinds(kinds)
    store = _store(ctx)
    removed = []
    for kind in chosen:
        with audited(ctx, actor, "lifecycle.unexempt", f"user:{user}", owner=user) as audit:
            audit.add(kind=kind.value)
            if store.remove_exemption(user, kind):
                removed.append(kind)
            else:
                audit.result = "nothing_to_do"
    if not removed:
        names = " or ".join(k.value for k in chosen)
        raise NotFoundError(
            f"{user} has no {names} exemption.",
            hint="See 'ds01 admin exemptions'.",
            code=ErrorCode.UNKNOWN_EXEMPTION,
        )
    return removed


@dataclass(frozen=True)
class ListedExemption:
    """One line of ``ds01 admin exemptions --json``: the stored exemption, and whether it
    is still in force (``until`` not yet reached) at the time of listing."""

    user: str
    kind: LimitKind
    until: datetime | None
    reason: str
    created_by: str
    created_at: datetime
    active: bool

    @classmethod
    def of(cls, row: ExemptionRow, now: datetime) -> ListedExemption:
        return cls(
            row.user, row.kind, row.until, row.reason, row.created_by, row.created_at,
            active=row.active(now),
        )  # fmt: skip


def listing(ctx: AppContext, actor: Actor) -> list[ListedExemption]:
    """Every stored exemption, expired ones included (``active`` marks them)."""
    _require_admin(actor, "list exemptions")
    now = ctx.clock.now()
    return [ListedExemption.of(row, now) for row in _store(ctx).exemptions()]
