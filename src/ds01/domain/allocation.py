"""The GPU allocation decision: which devices a request gets, or why it gets none.

Everything here is pure. The service reads the inventory and the holdings (containers'
device labels, read back from Docker each time), takes the host-wide lock, calls
:func:`decide`, and creates the container with the result before it lets the lock go.

Outcomes of :func:`decide` and the exit codes the service maps them to:

* :class:`Allocation` - the devices to give (a CPU-only request gets an empty one).
* :class:`Refusal` - policy forbids it (per-container cap, a MIG profile the user may not
  have, no GPU access at all, or the user's GPU-equivalent quota even with the lightest
  devices this machine has). Exit 3; waiting will not help until the user frees their own
  devices or the policy changes. Carries the numbers: held, asked, allowed.
* :class:`NoFit` ``capacity`` - policy allows it and this machine could serve it, but not
  with what is free now. Exit 4, or a queue entry with ``--wait``.
* :class:`NoFit` ``never`` - no set of devices on this machine could ever serve it, even
  with every other container gone (``--gpus 3`` on two GPUs, a profile no GPU is split
  into). Exit 2 ("bad input, nothing changed"): it must not be queued, since no amount of
  waiting helps; the user changes the request or an admin changes the machine.

Placement rules (deterministic; holdings and inventory order do not matter):

* Exclusive: a device held by any container in force is never offered; one request's
  devices are distinct. A MIG-enabled GPU is never handed out whole, even if a backend
  listed it as a full device.
* ``--gpus N`` asks N devices of one kind, never a mix. A user allowed full GPUs gets
  whole GPUs (MIG off) first; if N whole GPUs are not free (or would break the quota) the
  request falls back to N MIG instances. A user limited to MIG gets MIG instances only.
* ``--gpu-profile P`` asks one MIG instance with at least P's slices and memory (and P's
  ``+me``-style extras), that the user may have.
* Among MIG instances: the lightest sufficient first (GPU equivalents, then memory, then
  an exact profile-name match), then the GPU with the most devices already held (packing
  keeps other GPUs' large instances free), then GPU index, then UUID. Whole GPUs go by
  GPU index, then UUID.
* The quota is checked with what the chosen devices actually weigh (a 1g.5gb instance of
  a 7-slice GPU charges 1/7). Within a kind the lightest come first, so if the chosen
  ones break the quota every free choice of that kind would; whole GPUs that would break
  it give way to MIG instances. Refusal (exit 3) only when even the lightest devices of
  the whole machine would break it; otherwise the request waits for lighter ones to free.

The inputs (:class:`GpuRequest`, :class:`GpuQuota`, :class:`Holding`, MIG profile names)
are defined in :mod:`ds01.domain.gpu_request`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from typing import Literal

from ds01.domain.devices import Device, Inventory, format_equivalents

# The request, quota and holding types live in their own module; they are re-exported
# here (see __all__) so that callers importing them from this module keep working.
from ds01.domain.gpu_request import (
    STOPPED_STATES,
    GpuQuota,
    GpuRequest,
    Holding,
    MigShape,
    RequestKind,
    holdings_in_force,
    normalize_profile,
    parse_mig_profile,
    to_equivalents,
    user_equivalents,
)
from ds01.domain.labels import LIST_SEPARATOR
from ds01.errors import DS01Error, ErrorCode, NoCapacityError, RefusedError, UsageError

__all__ = [
    "STOPPED_STATES",
    "Allocation",
    "CapacitySummary",
    "Decision",
    "DeviceUse",
    "GpuQuota",
    "GpuRequest",
    "Holding",
    "MigShape",
    "NoFit",
    "NoFitReason",
    "Refusal",
    "RefusalReason",
    "RequestKind",
    "allocatable_devices",
    "capacity_summary",
    "decide",
    "decide_withholding",
    "holdings_in_force",
    "normalize_profile",
    "parse_mig_profile",
    "require_allocation",
    "to_equivalents",
    "usable_devices",
    "user_equivalents",
    "validate_before_start",
]

# --------------------------------------------------------------------------- profiles


def _device_shape(device: Device) -> MigShape:
    # The profile name carries the nominal memory users ask for ("20gb"); the driver's
    # memory figure is smaller, so it is only the fallback for an unreadable name.
    parsed = parse_mig_profile(device.mig_profile or "")
    if parsed is not None:
        return MigShape(device.slices, parsed.memory_gb, parsed.extras)
    return MigShape(device.slices, device.memory_mib // 1024)


def _eq_text(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{format_equivalents(value):g} ({value})"


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Allocation:
    """The devices one container gets, in the order Docker and CUDA are given them."""

    devices: tuple[Device, ...]
    equivalents: Fraction

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(d.uuid for d in self.devices)

    @property
    def cuda_visible_devices(self) -> str:
        """Value for ``CUDA_VISIBLE_DEVICES``; empty (CUDA sees nothing) when CPU-only."""
        return ",".join(self.uuids)

    @property
    def gpus_label(self) -> str:
        """Value for AIME's ``aime.mlc.GPUS``: ``device=UUID[;UUID]``, ``0`` when CPU-only.

        ``;`` rather than Docker's ``,``: AIME's ``mlc list`` splits the label string on
        commas, and a comma inside a value would break it for every container of the user.
        """
        return f"device={LIST_SEPARATOR.join(self.uuids)}" if self.devices else "0"

    def as_holding(self, container: str, user: str, *, since: datetime | None = None) -> Holding:
        """The holding this allocation becomes once its container exists."""
        return Holding(container, user, self.uuids, self.equivalents, since=since)


class RefusalReason(StrEnum):
    PER_CONTAINER_LIMIT = "per_container_limit"
    PROFILE_NOT_ALLOWED = "mig_profile_not_allowed"
    NO_GPU_ALLOWED = "no_gpu_allowed"
    QUOTA = "gpu_quota_exceeded"


#: The error code each refusal is reported with (today each reason's own value).
_REFUSAL_CODES: dict[RefusalReason, ErrorCode] = {
    RefusalReason.PER_CONTAINER_LIMIT: ErrorCode.PER_CONTAINER_LIMIT,
    RefusalReason.PROFILE_NOT_ALLOWED: ErrorCode.MIG_PROFILE_NOT_ALLOWED,
    RefusalReason.NO_GPU_ALLOWED: ErrorCode.NO_GPU_ALLOWED,
    RefusalReason.QUOTA: ErrorCode.GPU_QUOTA_EXCEEDED,
}


@dataclass(frozen=True)
class Refusal:
    """Policy forbids the request (exit 3).

    For the limit reasons ``held``/``asked``/``allowed`` are in ``unit``: GPU equivalents
    for the quota (``asked`` is the least this request could be charged on this machine),
    devices for the per-container cap (``held`` is 0: the container is new). The
    permission reasons leave them ``None`` and list ``allowed_profiles``.
    """

    reason: RefusalReason
    message: str
    hint: str
    held: Fraction | None = None
    asked: Fraction | None = None
    allowed: Fraction | None = None
    unit: Literal["equivalents", "devices"] | None = None
    allowed_profiles: tuple[str, ...] | None = None

    def details(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key in ("held", "asked", "allowed"):
            value: Fraction | None = getattr(self, key)
            if value is not None:
                out[key] = format_equivalents(value)
                out[f"{key}_exact"] = str(value)
        if self.unit is not None:
            out["unit"] = self.unit
        if self.allowed_profiles is not None:
            out["allowed_profiles"] = list(self.allowed_profiles)
        return out

    def to_error(self) -> RefusedError:
        return RefusedError(
            self.message, hint=self.hint, code=_REFUSAL_CODES[self.reason], details=self.details()
        )


class NoFitReason(StrEnum):
    CAPACITY = "capacity"  # fits this machine, not what is free now: exit 4 / queue
    NEVER = "never"  # no set of devices here could serve it: exit 2, never queued


@dataclass(frozen=True)
class NoFit:
    """Nothing free fits (``capacity``, exit 4) or nothing here ever could (``never``, exit 2).

    ``usable`` counts the devices on this machine the request could use at all, ``free``
    those not held now.
    """

    reason: NoFitReason
    message: str
    hint: str
    asked: int
    usable: int
    free: int

    def to_error(self) -> DS01Error:
        details: dict[str, object] = {"asked": self.asked, "usable": self.usable, "free": self.free}
        if self.reason is NoFitReason.NEVER:
            return UsageError(
                self.message, hint=self.hint, code=ErrorCode.GPU_REQUEST_NEVER_FITS, details=details
            )
        return NoCapacityError(
            self.message, hint=self.hint, code=ErrorCode.NO_FREE_GPU, details=details
        )


Decision = Allocation | Refusal | NoFit


def require_allocation(decision: Decision) -> Allocation:
    """The allocation, or the decision's error raised (exit 3, 4 or 2)."""
    if isinstance(decision, Allocation):
        return decision
    raise decision.to_error()


# --------------------------------------------------------------------------- placement


def allocatable_devices(inventory: Inventory) -> tuple[Device, ...]:
    """The inventory's devices that may be handed out, by GPU index then UUID.

    Drops a whole-GPU entry for a MIG-enabled GPU (a backend bug must not hand such a GPU
    out whole) and repeated UUIDs (so one device can never be given twice).
    """
    mig_uuids = {g.uuid for g in inventory.gpus if g.mig_enabled}
    mig_indices = {g.index for g in inventory.gpus if g.mig_enabled}
    seen: dict[str, Device] = {}
    for d in inventory.devices:
        if not d.is_mig and (d.uuid in mig_uuids or d.gpu_index in mig_indices):
            continue
        seen.setdefault(d.uuid, d)
    return tuple(sorted(seen.values(), key=lambda d: (d.gpu_index, d.uuid)))


def _sufficient(device: Device, want: MigShape) -> bool:
    have = _device_shape(device)
    return (
        have.slices >= want.slices
        and have.memory_gb >= want.memory_gb
        and set(want.extras) <= set(have.extras)
    )


def _pools(request: GpuRequest, quota: GpuQuota, devices: Sequence[Device]) -> list[list[Device]]:
    """The kinds of device this request may use, most preferred kind first."""
    mig = [d for d in devices if d.is_mig and quota.may_use_profile(d.mig_profile or "")]
    if request.kind is RequestKind.PROFILE:
        want = parse_mig_profile(request.profile or "")
        if want is None:  # GpuRequest validates its profile; this guards hand-made ones
            raise UsageError(f"{request.profile!r} is not a MIG profile.")
        return [[d for d in mig if _sufficient(d, want)]]
    if quota.allow_full_gpu:
        return [[d for d in devices if not d.is_mig], mig]
    return [mig]


def usable_devices(
    request: GpuRequest, quota: GpuQuota, inventory: Inventory
) -> tuple[Device, ...]:
    """Every device on this machine that this request could be given under this policy.

    Busy or free alike; the queue reserves the free ones for an entry that waits. A kind
    of device the machine has too few of for this request does not count.
    """
    if request.kind is RequestKind.CPU_ONLY or not quota.may_use_gpus:
        return ()
    devices = allocatable_devices(inventory)
    pools = _pools(request, quota, devices)
    wanted = {d.uuid for pool in pools if len(pool) >= request.devices_asked for d in pool}
    return tuple(d for d in devices if d.uuid in wanted)


_SortKey = tuple[object, ...]


def _preference(request: GpuRequest, load: Mapping[int, int]) -> Callable[[Device], _SortKey]:
    exact = request.profile

    def key(d: Device) -> _SortKey:
        if not d.is_mig:
            return (0, d.gpu_index, d.uuid)
        shape = _device_shape(d)
        name_differs = exact is not None and normalize_profile(d.mig_profile or "") != exact
        return (1, d.equivalents, shape.memory_gb, name_differs, -load[d.gpu_index], d.gpu_index,
                d.uuid)  # fmt: skip

    return key


def _lightest_sum(weights: Sequence[Fraction], k: int) -> Fraction:
    return sum(weights[:k], Fraction(0))


def _pick(
    free: Sequence[Device],
    n: int,
    budget: Fraction | None,
    request: GpuRequest,
    load: Counter[int],
) -> tuple[Device, ...] | None:
    """The ``n`` most preferred free devices of one pool, or ``None`` if they do not fit.

    Within a pool the preference is lightest first (whole GPUs all weigh 1), so the
    devices taken are also the lightest ``n``: if they break the budget, every choice of
    ``n`` from this pool would. Each pick counts as load on its GPU, so the next one of
    the same request packs next to it.
    """
    if len(free) < n:
        return None
    remaining = list(free)
    load = Counter(load)
    picked: list[Device] = []
    for _ in range(n):
        choice = min(remaining, key=_preference(request, load))
        picked.append(choice)
        remaining.remove(choice)
        load[choice.gpu_index] += 1
    spent = sum((d.equivalents for d in picked), Fraction(0))
    if budget is not None and spent > budget:
        return None
    return tuple(sorted(picked, key=lambda d: (d.gpu_index, d.uuid)))


def decide(
    request: GpuRequest,
    user: str,
    quota: GpuQuota,
    inventory: Inventory,
    holdings: Sequence[Holding],
) -> Decision:
    """Decide one request against policy and what is free. Pure and deterministic.

    ``holdings`` are all containers in force (see :func:`holdings_in_force`), everyone's:
    they mark devices taken and give ``user``'s charged equivalents.
    """
    return decide_withholding(request, user, quota, inventory, holdings, withheld=frozenset())


def decide_withholding(
    request: GpuRequest,
    user: str,
    quota: GpuQuota,
    inventory: Inventory,
    holdings: Sequence[Holding],
    *,
    withheld: frozenset[str],
) -> Decision:
    """:func:`decide`, with the devices in ``withheld`` treated as taken.

    The queue uses it to keep devices that an earlier entry waits for away from later
    ones; ``withheld`` devices do not count as held by anyone for packing or quota.
    """
    if request.kind is RequestKind.CPU_ONLY:
        return Allocation(devices=(), equivalents=Fraction(0))
    held = user_equivalents(holdings, user)
    n = request.devices_asked
    refusal = _policy_refusal(request, user, quota, n)
    if refusal is not None:
        return refusal

    devices = allocatable_devices(inventory)
    pools = [p for p in _pools(request, quota, devices) if len(p) >= n]
    if not pools:
        return _never(request, quota, devices, n)

    least = min(_lightest_sum(sorted(d.equivalents for d in p), n) for p in pools)
    limit = quota.max_gpu_equivalents
    if limit is not None and held + least > limit:
        return Refusal(
            RefusalReason.QUOTA,
            f"{user} holds {_eq_text(held)} GPU equivalents; {request.describe()} needs at "
            f"least {_eq_text(least)} more, and the limit is {_eq_text(limit)}.",
            "Remove or stop a container you no longer need (`ds01 gpu status` shows what you "
            "hold), or ask for less.",
            held=held,
            asked=least,
            allowed=limit,
            unit="equivalents",
        )

    taken = {u for h in holdings for u in h.device_uuids}
    by_uuid = {d.uuid: d for d in devices}
    load: Counter[int] = Counter(by_uuid[u].gpu_index for u in taken if u in by_uuid)
    budget = None if limit is None else limit - held
    unavailable = taken | withheld
    free_total = 0
    for pool in pools:
        free = [d for d in pool if d.uuid not in unavailable]
        free_total = max(free_total, len(free))
        picked = _pick(free, n, budget, request, load)
        if picked is not None:
            return Allocation(picked, sum((d.equivalents for d in picked), Fraction(0)))

    usable = max(len(p) for p in pools)
    if free_total >= n:
        why = (
            f"{free_total} usable devices are free, but any {n} of them would put {user} over "
            f"the GPU quota ({_eq_text(held)} held, limit {_eq_text(limit or Fraction(0))}); "
            "lighter ones are in use"
        )
    else:
        why = f"{free_total} of the {usable} devices it could use are free"
    return NoFit(
        NoFitReason.CAPACITY,
        f"No free GPU fits {request.describe()} now: {why}.",
        "Add --wait to queue the request, or try again later (`ds01 gpu status` shows who "
        "holds what).",
        asked=n,
        usable=usable,
        free=free_total,
    )


def _policy_refusal(request: GpuRequest, user: str, quota: GpuQuota, n: int) -> Refusal | None:
    """The refusals that do not depend on the machine at all."""
    cap = quota.max_gpus_per_container
    if cap is not None and n > cap:
        return Refusal(
            RefusalReason.PER_CONTAINER_LIMIT,
            f"{request.describe()} in one container is more than {user}'s limit of {cap} "
            "GPU device" + ("s" if cap != 1 else "") + " per container.",
            f"Ask for at most {cap} (--gpus {cap}), or spread the work over several containers."
            if cap
            else "Create the container with --cpu-only.",
            held=Fraction(0),
            asked=Fraction(n),
            allowed=Fraction(cap),
            unit="devices",
        )
    if not quota.may_use_gpus:
        return Refusal(
            RefusalReason.NO_GPU_ALLOWED,
            f"{user}'s policy allows neither full GPUs nor any MIG profile.",
            "Create the container with --cpu-only, or ask an administrator for GPU access.",
            allowed_profiles=(),
        )
    if request.kind is RequestKind.PROFILE and not quota.may_use_profile(request.profile or ""):
        allowed = quota.allowed_mig_profiles or ()
        return Refusal(
            RefusalReason.PROFILE_NOT_ALLOWED,
            f"{user} may not use MIG profile {request.profile}; allowed: "
            f"{', '.join(allowed) or 'none'}.",
            "Ask for one of the allowed profiles with --gpu-profile, or use --gpus 1."
            if allowed
            else "Use --gpus N instead of --gpu-profile.",
            allowed_profiles=allowed,
        )
    return None


def _never(request: GpuRequest, quota: GpuQuota, devices: Sequence[Device], n: int) -> NoFit:
    pools = _pools(request, quota, devices)
    usable = max((len(p) for p in pools), default=0)
    profiles = sorted({d.mig_profile for d in devices if d.mig_profile})
    whole = sum(1 for d in devices if not d.is_mig)
    offer = f"{whole} full GPUs" + (f", MIG instances {', '.join(profiles)}" if profiles else "")
    limited = "" if quota.allow_full_gpu else " (you may use MIG instances only)"
    return NoFit(
        NoFitReason.NEVER,
        f"{request.describe()} can never fit on this machine{limited}: it offers {offer}, "
        f"of which at most {usable} could serve this request.",
        "Ask for fewer or smaller devices (`ds01 gpu status` lists them).",
        asked=n,
        usable=usable,
        free=0,
    )


# --------------------------------------------------------------------------- status


def validate_before_start(labels_uuids: Sequence[str], inventory: Inventory) -> list[str]:
    """The container's device UUIDs that the inventory no longer offers (empty: all there).

    A GPU whose MIG mode was turned on since counts as missing: starting the container
    would hand the whole, now partitioned, GPU out.
    """
    present = {d.uuid for d in allocatable_devices(inventory)}
    return [u for u in labels_uuids if u not in present]


@dataclass(frozen=True)
class DeviceUse:
    """One device and the containers holding it (normally none or one)."""

    device: Device
    holders: tuple[Holding, ...] = ()

    @property
    def holder(self) -> Holding | None:
        return self.holders[0] if self.holders else None

    @property
    def free(self) -> bool:
        return not self.holders


@dataclass(frozen=True)
class CapacitySummary:
    """What ``gpu status`` shows: every device and its holder, and what is free."""

    devices: tuple[DeviceUse, ...]
    total_equivalents: Fraction
    free_equivalents: Fraction
    charged_by_user: tuple[tuple[str, Fraction], ...]
    #: Holdings naming devices the inventory lacks: (holding, missing UUID).
    missing: tuple[tuple[Holding, str], ...] = field(default_factory=tuple)

    @property
    def held_equivalents(self) -> Fraction:
        return self.total_equivalents - self.free_equivalents

    @property
    def free_devices(self) -> tuple[Device, ...]:
        return tuple(u.device for u in self.devices if u.free)

    @property
    def double_held(self) -> tuple[DeviceUse, ...]:
        """Devices held by more than one container: never made by DS01, shown loudly."""
        return tuple(u for u in self.devices if len(u.holders) > 1)


def capacity_summary(inventory: Inventory, holdings: Sequence[Holding]) -> CapacitySummary:
    """Per device who holds it, free equivalents, and each user's charge."""
    devices = allocatable_devices(inventory)
    known = {d.uuid for d in devices}
    holders: dict[str, list[Holding]] = {}
    missing: list[tuple[Holding, str]] = []
    for h in sorted(holdings, key=lambda h: (h.container, h.user)):
        for u in h.device_uuids:
            if u in known:
                holders.setdefault(u, []).append(h)
            else:
                missing.append((h, u))
    uses = tuple(DeviceUse(d, tuple(holders.get(d.uuid, ()))) for d in devices)
    charged: dict[str, Fraction] = {}
    for h in holdings:
        charged[h.user] = charged.get(h.user, Fraction(0)) + h.equivalents
    return CapacitySummary(
        devices=uses,
        total_equivalents=sum((d.equivalents for d in devices), Fraction(0)),
        free_equivalents=sum((u.device.equivalents for u in uses if u.free), Fraction(0)),
        charged_by_user=tuple(sorted(charged.items())),
        missing=tuple(missing),
    )
