"""An independent model of GPU allocation and the queue, written from the rules in DESIGN.md
and the allocation/queue docstrings, for the property tests to compare quantities with.

Nothing here calls ``ds01.domain``'s helpers (no ``Device.equivalents``, no
``user_equivalents``, no ``usable_devices``, no ``normalize_profile``): weights come from the
profile name's slices over the parent GPU's ``total_slices`` (a whole GPU weighs 1), charges
are counted by the model itself, and whether a request fits the budget is decided by
enumerating placements, not by trusting that "the lightest n" are enough. Only the data
classes (Device, Gpu, Inventory, GpuQuota, GpuRequest, QueueEntry) are read.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction

from ds01.domain.devices import Device, Inventory
from ds01.domain.gpu_request import GpuQuota, GpuRequest, RequestKind
from ds01.domain.queue import QueueEntry

_NAME = re.compile(r"^(?P<slices>\d+)g\.(?P<mem>\d+)gb(?P<extras>(?:\+[a-z0-9]+)*)$")


def _shape(profile: str) -> tuple[int, int, frozenset[str]]:
    m = _NAME.match(profile)
    assert m is not None, f"the model only knows well-formed profile names, not {profile!r}"
    extras = frozenset(e for e in m.group("extras").split("+") if e)
    return int(m.group("slices")), int(m.group("mem")), extras


def weight(device: Device, inv: Inventory) -> Fraction:
    """GPU equivalents from first principles: 1 whole; slices / the parent's total slices."""
    if device.mig_profile is None:
        return Fraction(1)
    (gpu,) = [g for g in inv.gpus if g.index == device.gpu_index]
    assert gpu.total_slices is not None
    return Fraction(_shape(device.mig_profile)[0], gpu.total_slices)


def offered(inv: Inventory) -> list[Device]:
    """Devices that may be handed out: never a MIG-enabled GPU whole; each UUID once."""
    mig_on = [g for g in inv.gpus if g.mig_enabled]
    out: dict[str, Device] = {}
    for d in inv.devices:
        whole_of_mig = d.mig_profile is None and any(
            g.uuid == d.uuid or g.index == d.gpu_index for g in mig_on
        )
        if not whole_of_mig and d.uuid not in out:
            out[d.uuid] = d
    return list(out.values())


def _allowed(quota: GpuQuota, profile: str) -> bool:
    return quota.allowed_mig_profiles is None or profile in quota.allowed_mig_profiles


def kinds(request: GpuRequest, quota: GpuQuota, devices: Sequence[Device]) -> list[list[Device]]:
    """The kinds of device a request may use, preferred first (never a mix)."""
    mig = [d for d in devices if d.mig_profile is not None and _allowed(quota, d.mig_profile)]
    if request.kind is RequestKind.PROFILE:
        assert request.profile is not None
        slices, mem, extras = _shape(request.profile)
        return [
            [
                d
                for d in mig
                if _shape(d.mig_profile or "")[0] >= slices
                and _shape(d.mig_profile or "")[1] >= mem
                and extras <= _shape(d.mig_profile or "")[2]
            ]
        ]
    whole = [d for d in devices if d.mig_profile is None]
    return [whole, mig] if quota.allow_full_gpu else [mig]


def _placements(pool: Sequence[Device], n: int, inv: Inventory) -> list[Fraction]:
    """The total weight of every distinct placement of ``n`` devices of ``pool``.

    Devices of one weight are interchangeable for the total, so placements are enumerated
    as multisets of weights (bounded by how many devices have each weight): exhaustive,
    and small enough for hypothesis.
    """
    have = Counter(weight(d, inv) for d in pool)
    totals = []
    for combo in itertools.combinations_with_replacement(sorted(have), n):
        if all(combo.count(w) <= have[w] for w in set(combo)):
            totals.append(sum(combo, Fraction(0)))
    return totals


@dataclass(frozen=True)
class Outcome:
    """What the model says of one request: ``kind`` is alloc, per_container_limit,
    no_gpu_allowed, mig_profile_not_allowed, gpu_quota_exceeded, capacity or never."""

    kind: str
    devices: tuple[str, ...] = ()  # sorted UUIDs, for alloc
    charge: Fraction = Fraction(0)  # for alloc
    held: Fraction | None = None  # for the quota refusal
    asked: Fraction | None = None
    allowed: Fraction | None = None
    usable: int = 0  # for capacity / never
    free: int = 0
    usable_uuids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ModelHolding:
    container: str
    user: str
    uuids: tuple[str, ...]
    charge: Fraction


def charged(holdings: Sequence[ModelHolding], user: str) -> Fraction:
    total = Fraction(0)
    for h in holdings:
        if h.user == user:
            total += h.charge
    return total


def decide(
    request: GpuRequest,
    user: str,
    quota: GpuQuota,
    inv: Inventory,
    holdings: Sequence[ModelHolding],
    *,
    withheld: frozenset[str] = frozenset(),
) -> Outcome:
    if request.kind is RequestKind.CPU_ONLY:
        return Outcome("alloc")
    n = request.count if request.kind is RequestKind.DEVICES else 1
    cap = quota.max_gpus_per_container
    if cap is not None and n > cap:
        return Outcome("per_container_limit")
    if not quota.allow_full_gpu and quota.allowed_mig_profiles == ():
        return Outcome("no_gpu_allowed")
    if request.kind is RequestKind.PROFILE and not _allowed(quota, request.profile or ""):
        return Outcome("mig_profile_not_allowed")
    devices = offered(inv)
    pools = [p for p in kinds(request, quota, devices) if len(p) >= n]
    usable_uuids = frozenset(d.uuid for p in pools for d in p)
    if not pools:
        whole = kinds(request, quota, devices)
        return Outcome("never", usable=max((len(p) for p in whole), default=0))
    least = min(min(_placements(p, n, inv)) for p in pools)
    held = charged(holdings, user)
    limit = quota.max_gpu_equivalents
    if limit is not None and held + least > limit:
        return Outcome("gpu_quota_exceeded", held=held, asked=least, allowed=limit)
    taken = {u for h in holdings for u in h.uuids}
    present = {d.uuid: d for d in devices}
    load = Counter(present[u].gpu_index for u in taken if u in present)
    free_most = 0
    for pool in pools:
        free = [d for d in pool if d.uuid not in taken | withheld]
        free_most = max(free_most, len(free))
        if len(free) < n:
            continue
        fits = [t for t in _placements(free, n, inv) if limit is None or held + t <= limit]
        if not fits:
            continue
        picks = _preferred(free, n, request, inv, load)
        total = sum((weight(d, inv) for d in picks), Fraction(0))
        # The placement the rules prefer must itself fit whenever any placement does.
        assert total == min(fits), (total, min(fits))
        return Outcome("alloc", tuple(sorted(d.uuid for d in picks)), total)
    return Outcome(
        "capacity",
        usable=max(len(p) for p in pools),
        free=free_most,
        usable_uuids=usable_uuids,
    )


def _preferred(
    free: Sequence[Device], n: int, request: GpuRequest, inv: Inventory, load: Counter[int]
) -> list[Device]:
    """The lexicographically first sequence of ``n`` picks under the placement rules.

    Each pick's rank: whole GPUs by GPU index then UUID; MIG instances lightest first
    (weight, then the memory the profile name promises, then an exact profile match), then
    the GPU with the most devices held (counting this request's earlier picks: packing),
    then GPU index, then UUID. Ranks are unique (UUID last), so the first sequence is
    built pick by pick.
    """
    load = Counter(load)
    left = list(free)
    picks: list[Device] = []
    for _ in range(n):

        def rank(d: Device) -> tuple[object, ...]:
            if d.mig_profile is None:
                return (d.gpu_index, d.uuid)
            exact = request.profile is None or d.mig_profile == request.profile
            mem = _shape(d.mig_profile)[1]
            return (weight(d, inv), mem, not exact, -load[d.gpu_index], d.gpu_index, d.uuid)

        best = min(left, key=rank)
        picks.append(best)
        left.remove(best)
        load[best.gpu_index] += 1
    return picks


# --------------------------------------------------------------------------- queue


def aged(entry: QueueEntry, now: datetime, interval: timedelta, step: int) -> int:
    """priority + step * floor(wait / interval); a wait of zero or less earns nothing."""
    wait_us = (now - entry.enqueued_at) // timedelta(microseconds=1)
    if wait_us <= 0:
        return entry.priority
    return entry.priority + step * (wait_us // (interval // timedelta(microseconds=1)))


def queue_order(
    entries: Sequence[QueueEntry], now: datetime, interval: timedelta, step: int
) -> list[QueueEntry]:
    waiting = [e for e in entries if e.state.value == "waiting"]
    return sorted(waiting, key=lambda e: (-aged(e, now, interval, step), e.enqueued_at, e.id))


_WHY = {
    "gpu_quota_exceeded": "quota",
    "capacity": "capacity",
    "never": "never",
    "per_container_limit": "policy",
    "no_gpu_allowed": "policy",
    "mig_profile_not_allowed": "policy",
}


@dataclass(frozen=True)
class PlanRow:
    entry_id: int
    position: int
    granted: tuple[str, ...] | None  # sorted UUIDs when granted
    why: str | None  # why it waits
    effective: int


def queue_pass(
    entries: Sequence[QueueEntry],
    now: datetime,
    inv: Inventory,
    holdings: Sequence[ModelHolding],
    quotas: Mapping[str, GpuQuota],
    *,
    interval: timedelta,
    step: int,
) -> list[PlanRow]:
    """One pass: grant what fits, in order; a capacity-waiter reserves every free device
    it could use and afford, so no later entry takes one."""
    held = list(holdings)
    reserved: set[str] = set()
    rows = []
    for place, e in enumerate(queue_order(entries, now, interval, step), start=1):
        quota = quotas[e.user]
        out = decide(e.request, e.user, quota, inv, held, withheld=frozenset(reserved))
        if out.kind == "alloc":
            rows.append(PlanRow(e.id, place, out.devices, None, aged(e, now, interval, step)))
            held.append(ModelHolding(f"q{e.id}", e.user, out.devices, out.charge))
            continue
        if out.kind == "capacity":
            taken = {u for h in held for u in h.uuids}
            limit = quota.max_gpu_equivalents
            room = None if limit is None else limit - charged(held, e.user)
            reserved |= {
                d.uuid
                for d in offered(inv)
                if d.uuid in out.usable_uuids
                and d.uuid not in taken
                and (room is None or weight(d, inv) <= room)
            }
        rows.append(PlanRow(e.id, place, None, _WHY[out.kind], aged(e, now, interval, step)))
    return rows
