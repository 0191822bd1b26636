"""``ds01 gpu queue``: one line per waiting request, and where it stands.

A stored row says what was asked for; the pass's plan (or the check that refuses it)
says where the request stands. :class:`QueueItem` joins the two into the ``--json``
object, and :func:`queue_item` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ds01.domain.queue import Grant, QueueState, Waiting

if TYPE_CHECKING:
    from ds01.adapters.queue_store import QueueRow
    from ds01.domain.queue import QueueEntry

__all__ = ["WHY_GRANTABLE", "WHY_REFUSED", "QueueItem", "queue_item"]

#: ``why`` of an entry that fits now (the next pass grants it).
WHY_GRANTABLE = "granted_next_pass"
#: ``why`` of an entry the next pass refuses (its request file or its policy).
WHY_REFUSED = "refused"


@dataclass(frozen=True)
class QueueItem:
    """One waiting request of ``gpu queue --json``.

    ``request`` is the request as words (``1 GPU``), ``name`` the container's name,
    ``enqueued_at`` to the second. ``priority`` is the user's priority under today's
    policy (the row's when the entry is refused); ``position``, ``why`` (a wait reason,
    ``granted_next_pass`` or ``refused``), ``detail`` and ``effective_priority`` (with
    aging; only while waiting) say where it stands.
    """

    id: int
    user: str
    request: str
    name: str | None
    priority: int
    enqueued_at: str
    state: QueueState
    updated_at: str
    container: str | None
    message: str | None
    position: int | None
    why: str
    detail: str
    effective_priority: int | None


def queue_item(
    row: QueueRow,
    entry: QueueEntry | None,
    status: Grant | Waiting | None,
    *,
    refused: str | None = None,
) -> QueueItem:
    """The line of ``row``: ``entry`` is it as checked (``None``: refused, for the reason
    ``refused``), ``status`` where the plan puts it."""
    stored = row.entry
    name = row.spec.get("name")
    position: int | None = None
    effective: int | None = None
    if entry is None:
        why, detail = WHY_REFUSED, f"Refused at the next pass: {refused}."
    elif isinstance(status, Waiting):
        position, effective = status.position, status.effective_priority
        why, detail = status.why.value, status.detail
    elif isinstance(status, Grant):
        position = status.position
        why, detail = WHY_GRANTABLE, "A device is free for it; it is granted in the next pass."
    else:
        # The plan places every entry it is given; an entry missing from it is a bug.
        raise AssertionError(f"queue entry {stored.id} is missing from the plan")
    return QueueItem(
        id=stored.id,
        user=stored.user,
        request=stored.request.describe(),
        name=None if name is None else str(name),
        # The policy's priority, not what the row says (a refused entry has no other).
        priority=stored.priority if entry is None else entry.priority,
        enqueued_at=stored.enqueued_at.isoformat(timespec="seconds"),
        state=stored.state,
        updated_at=row.updated_at,
        container=row.container,
        message=row.message,
        position=position,
        why=why,
        detail=detail,
        effective_priority=effective,
    )
