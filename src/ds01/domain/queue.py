"""The GPU waiting queue: the order entries are served in, and what a pass grants.

Pure: the service stores entries in SQLite, reads the inventory and the holdings in force,
calls :func:`plan` (or :func:`grant_next`) under the allocation lock, and creates each
granted container for its owner.

**Order.** Higher *effective priority* first::

    effective = priority + floor(wait / aging.interval) * aging.step

then earlier ``enqueued_at``, then lower ``id`` (FIFO within a level). Defaults match the
``queue`` settings: one point per 30 minutes waited. A step of 0 turns aging off, and with
it the starvation guarantee below.

**Head-of-line rule (reservation).** A pass walks the entries in order and decides each
against the devices left over by the entries before it:

* an entry that fits is granted, and its devices and charge count for the entries after it;
* an entry that waits for *capacity* reserves every free device it could use (and could
  afford under its quota): no later entry may take those, so a freed device goes to the
  earliest entry that can use it, and a multi-device entry gathers devices as they free;
* an entry that waits for *quota* (its own user's holdings), for a *policy* change, or
  that can *never* fit this machine reserves nothing: it is not waiting on the devices.

A later entry is therefore granted only devices that no entry ahead of it, waiting for
capacity, could use: a small request may pass a big one exactly when it does not take
what the big one waits for.

**Why nobody starves.** Ranking ahead of an entry E at some moment takes either an entry
enqueued before E, or one enqueued after E with a priority more than
``step * floor(gap / interval)`` above E's, ``gap`` being how much later it came (because
``floor(a) - floor(b) >= floor(a - b)``). Priorities are bounded by the policy, so after
:meth:`Aging.overtake_window` no newcomer ranks ahead of E: only finitely many entries
ever can. The first of them in the order takes every device it can use as it frees (the
reservation), and containers end (runtime limits, holds that expire), so it is granted;
then the next; then E.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ds01.domain.allocation import (
    Allocation,
    GpuQuota,
    GpuRequest,
    Holding,
    NoFit,
    NoFitReason,
    Refusal,
    RefusalReason,
    decide_withholding,
    usable_devices,
    user_equivalents,
)
from ds01.domain.devices import Inventory
from ds01.errors import ConfigError

__all__ = [
    "DEFAULT_AGING",
    "Aging",
    "Grant",
    "QueueEntry",
    "QueuePlan",
    "QueueState",
    "WaitReason",
    "Waiting",
    "effective_priority",
    "grant_next",
    "order",
    "plan",
    "position",
    "why_waiting",
]


@dataclass(frozen=True)
class Aging:
    """How waiting raises an entry's priority: ``step`` points per full ``interval``."""

    interval: timedelta = timedelta(minutes=30)
    step: int = 1

    def __post_init__(self) -> None:
        if self.interval <= timedelta(0):
            raise ConfigError(f"The queue aging interval must be positive, not {self.interval}.")
        if self.step < 0:
            raise ConfigError(f"The queue aging step must not be negative, not {self.step}.")

    def bonus(self, waited: timedelta) -> int:
        """Points earned by waiting ``waited`` (a negative wait, from clock skew, earns 0)."""
        if waited <= timedelta(0):
            return 0
        return (waited // self.interval) * self.step

    def overtake_window(self, priority_gap: int) -> timedelta | None:
        """How long after E an entry up to ``priority_gap`` points above E can rank ahead.

        An entry enqueued this long or longer after E never ranks ahead of E. ``None``
        when aging is off and the gap is positive (the newcomer stays ahead for ever).
        """
        if priority_gap <= 0:
            return timedelta(0)
        if self.step == 0:
            return None
        return self.interval * math.ceil(priority_gap / self.step)


DEFAULT_AGING = Aging()


class QueueState(StrEnum):
    WAITING = "waiting"
    #: Its container is being made by the pass named in the entry; it becomes ``granted``
    #: only with a complete container, else waits again (a grant is all or nothing).
    GRANTING = "granting"
    GRANTED = "granted"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


@dataclass(frozen=True)
class QueueEntry:
    """One queued create request.

    ``spec`` is the container specification the service stored (opaque here);
    ``priority`` is the owner's policy priority when it was queued.
    """

    id: int
    user: str
    request: GpuRequest
    spec: str
    priority: int
    enqueued_at: datetime
    state: QueueState = QueueState.WAITING


def effective_priority(entry: QueueEntry, now: datetime, aging: Aging = DEFAULT_AGING) -> int:
    """``priority`` plus what waiting since ``enqueued_at`` has earned by ``now``."""
    return entry.priority + aging.bonus(now - entry.enqueued_at)


def order(
    entries: Sequence[QueueEntry], now: datetime, aging: Aging = DEFAULT_AGING
) -> list[QueueEntry]:
    """The waiting entries, first served first. Entries in other states are left out."""
    waiting = [e for e in entries if e.state is QueueState.WAITING]
    return sorted(waiting, key=lambda e: (-effective_priority(e, now, aging), e.enqueued_at, e.id))


def position(
    entry: QueueEntry, entries: Sequence[QueueEntry], now: datetime, aging: Aging = DEFAULT_AGING
) -> int | None:
    """1-based place of ``entry`` among the waiting entries; ``None`` if it is not waiting."""
    for place, e in enumerate(order(entries, now, aging), start=1):
        if e.id == entry.id:
            return place
    return None


class WaitReason(StrEnum):
    QUOTA = "quota"  # its user holds too much; frees when they release devices
    CAPACITY = "capacity"  # allowed, but the devices it needs are busy or reserved
    POLICY = "policy"  # the policy now refuses it outright (cap, profile): cancel or fix
    NEVER = "never"  # the machine can no longer serve it at all: the service should fail it


@dataclass(frozen=True)
class Grant:
    """An entry the pass grants, with its devices."""

    entry: QueueEntry
    allocation: Allocation
    position: int


@dataclass(frozen=True)
class Waiting:
    """An entry that keeps waiting, where it stands, and why (``detail`` in words)."""

    entry: QueueEntry
    position: int
    effective_priority: int
    why: WaitReason
    detail: str


@dataclass(frozen=True)
class QueuePlan:
    """The outcome of one pass: grants in queue order, and everyone else's standing."""

    grants: tuple[Grant, ...]
    waiting: tuple[Waiting, ...]

    def status(self, entry_id: int) -> Grant | Waiting | None:
        """Where entry ``entry_id`` stands after this pass; ``None`` if it was not waiting."""
        items: list[Grant | Waiting] = [*self.grants, *self.waiting]
        return next((i for i in items if i.entry.id == entry_id), None)


def _why(decision: Refusal | NoFit) -> WaitReason:
    if isinstance(decision, Refusal):
        return WaitReason.QUOTA if decision.reason is RefusalReason.QUOTA else WaitReason.POLICY
    return WaitReason.CAPACITY if decision.reason is NoFitReason.CAPACITY else WaitReason.NEVER


def plan(
    entries: Sequence[QueueEntry],
    now: datetime,
    inventory: Inventory,
    holdings: Sequence[Holding],
    quotas_by_user: Mapping[str, GpuQuota],
    *,
    aging: Aging = DEFAULT_AGING,
) -> QueuePlan:
    """One pass over the queue: grant each entry that fits now, under the reservation rule.

    ``holdings`` are the containers in force. A user with waiting entries must be in
    ``quotas_by_user`` (their current policy), else :class:`ConfigError`.
    """
    held = list(holdings)
    reserved: set[str] = set()
    grants: list[Grant] = []
    waiting: list[Waiting] = []
    for place, entry in enumerate(order(entries, now, aging), start=1):
        quota = quotas_by_user.get(entry.user)
        if quota is None:
            raise ConfigError(
                f"No GPU policy was given for {entry.user!r}, who has queue entry {entry.id}.",
                hint="Resolve the policy of every user with a waiting entry before a pass.",
            )
        decision = decide_withholding(
            entry.request, entry.user, quota, inventory, held, withheld=frozenset(reserved)
        )
        if isinstance(decision, Allocation):
            grants.append(Grant(entry, decision, place))
            held.append(decision.as_holding(f"queue-entry-{entry.id}", entry.user, since=now))
            continue
        why = _why(decision)
        if why is WaitReason.CAPACITY:
            reserved |= _reservable(entry, quota, inventory, held)
        waiting.append(
            Waiting(entry, place, effective_priority(entry, now, aging), why, decision.message)
        )
    return QueuePlan(tuple(grants), tuple(waiting))


def _reservable(
    entry: QueueEntry, quota: GpuQuota, inventory: Inventory, held: Sequence[Holding]
) -> set[str]:
    """The free devices a capacity-waiting entry could use and afford."""
    taken = {u for h in held for u in h.device_uuids}
    limit = quota.max_gpu_equivalents
    budget = None if limit is None else limit - user_equivalents(held, entry.user)
    return {
        d.uuid
        for d in usable_devices(entry.request, quota, inventory)
        if d.uuid not in taken and (budget is None or d.equivalents <= budget)
    }


def grant_next(
    entries: Sequence[QueueEntry],
    now: datetime,
    inventory: Inventory,
    holdings: Sequence[Holding],
    quotas_by_user: Mapping[str, GpuQuota],
    *,
    aging: Aging = DEFAULT_AGING,
) -> list[tuple[QueueEntry, Allocation]]:
    """The entries to grant now, in queue order, each with its devices (see :func:`plan`)."""
    result = plan(entries, now, inventory, holdings, quotas_by_user, aging=aging)
    return [(g.entry, g.allocation) for g in result.grants]


def why_waiting(entry: QueueEntry, queue_plan: QueuePlan) -> WaitReason | None:
    """Why ``entry`` waits after the pass ``queue_plan``; ``None`` when it is granted.

    Run :func:`plan` once and ask it about every entry (``gpu queue`` lists them all).
    """
    status = queue_plan.status(entry.id)
    return status.why if isinstance(status, Waiting) else None
