"""Allocation and queue rules the random properties rarely reach, each on a machine built
to make it decide: unparsable MIG profile names (sizes from the driver's memory), profile
extras, exact-name preference, MIG-enabled GPUs listed whole by UUID or by index, the
never-fits wording without MIG, per-user charges, and the queue's reservations (kept
across several capacity waiters, bounded by what each waiter can afford)."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest

from ds01.domain.allocation import (
    Allocation,
    NoFit,
    allocatable_devices,
    capacity_summary,
    decide,
)
from ds01.domain.devices import Device, Gpu, Inventory
from ds01.domain.gpu_request import GpuQuota, GpuRequest, Holding, RequestKind
from ds01.domain.queue import Aging, QueueEntry, WaitReason, plan, position
from ds01.errors import ConfigError, UsageError
from tests.unit.domain.test_allocation import T0, full_gpu, holding, inventory, mig_gpu

MIG_ONLY = GpuQuota(allow_full_gpu=False)
NAME = "NVIDIA A100-SXM4-40GB"


def mig_device(uuid: str, index: int, profile: str, slices: int, mem_mib: int) -> Device:
    return Device(uuid, index, NAME, mem_mib, slices=slices, total_slices=7,
                  mig_profile=profile, parent_uuid=f"GPU-{index:04d}")  # fmt: skip


def mig_host(*devices: Device) -> Inventory:
    indices = sorted({d.gpu_index for d in devices})
    gpus = tuple(
        Gpu(i, f"GPU-{i:04d}", NAME, 40960, mig_enabled=True, total_slices=7) for i in indices
    )
    return Inventory(gpus, devices, "test")


def picked(decision: object) -> tuple[str, ...]:
    assert isinstance(decision, Allocation), decision
    return decision.uuids


# --------------------------------------------------------------------------- allocation


def test_an_unparsable_profile_name_is_sized_by_the_drivers_memory() -> None:
    """'1c.2g.10gb' (a compute-instance name) is no profile: its size is memory_mib // 1024,
    so 10240 MiB serves a 2g.10gb request and 10239 MiB does not."""
    enough = mig_host(mig_device("MIG-a", 0, "1c.2g.10gb", 2, 10240))
    assert picked(decide(GpuRequest.mig("2g.10gb"), "u", ANY_Q, enough, [])) == ("MIG-a",)
    short = mig_host(mig_device("MIG-b", 0, "1c.2g.10gb", 2, 10239))
    never = decide(GpuRequest.mig("2g.10gb"), "u", ANY_Q, short, [])
    assert isinstance(never, NoFit) and never.reason.value == "never"
    one_slice = mig_host(mig_device("MIG-c", 0, "1c.2g.10gb", 1, 10240))
    assert isinstance(decide(GpuRequest.mig("2g.10gb"), "u", ANY_Q, one_slice, []), NoFit)


def test_whole_gigabytes_tie_and_packing_decides() -> None:
    """9300 and 9900 MiB are both 9 whole GB: a tie on memory, so the busier GPU wins."""
    inv = mig_host(
        mig_device("MIG-0-a", 0, "1c.1g.9gb", 1, 9300),
        mig_device("MIG-1-a", 1, "1c.1g.9gb", 1, 9900),
        mig_device("MIG-1-b", 1, "1c.1g.9gb", 1, 9900),
    )
    busy = [holding("v", "MIG-1-b", eq=Fraction(1, 7))]
    assert picked(decide(GpuRequest.gpus(1), "u", MIG_ONLY, inv, busy)) == ("MIG-1-a",)


def test_profile_extras_must_be_offered() -> None:
    inv = mig_host(
        mig_device("MIG-plain", 0, "1g.10gb", 1, 9856),
        mig_device("MIG-me", 1, "1g.10gb+me", 1, 9856),
    )
    assert picked(decide(GpuRequest.mig("1g.10gb+me"), "u", ANY_Q, inv, [])) == ("MIG-me",)
    only_plain = mig_host(mig_device("MIG-plain", 0, "1g.10gb", 1, 9856))
    assert isinstance(decide(GpuRequest.mig("1g.10gb+me"), "u", ANY_Q, only_plain, []), NoFit)


def test_the_exact_profile_name_is_preferred_among_equals() -> None:
    """Same slices, same memory: the instance named as asked wins, even on a later GPU."""
    inv = mig_host(
        mig_device("MIG-0-me", 0, "1g.10gb+me", 1, 9856),
        mig_device("MIG-1-plain", 1, "1g.10gb", 1, 9856),
    )
    assert picked(decide(GpuRequest.mig("1g.10gb"), "u", ANY_Q, inv, [])) == ("MIG-1-plain",)
    # For --gpus no name is asked for: GPU index decides.
    assert picked(decide(GpuRequest.gpus(1), "u", MIG_ONLY, inv, [])) == ("MIG-0-me",)


def test_a_hand_made_request_with_a_bad_profile_is_refused() -> None:
    request = GpuRequest.mig("1g.5gb")
    object.__setattr__(request, "profile", "nonsense")  # bypasses validation
    inv = inventory(mig_gpu(0, ["1g.5gb"]))
    with pytest.raises(UsageError, match=r"^'nonsense' is not a MIG profile\.$"):
        decide(request, "u", GpuQuota(allowed_mig_profiles=None), inv, [])
    assert request.kind is RequestKind.PROFILE


def test_a_mig_gpu_listed_whole_is_dropped_by_uuid_or_by_index() -> None:
    gpu = Gpu(1, "GPU-0001", NAME, 40960, mig_enabled=True, total_slices=7)
    same_uuid = Device("GPU-0001", 9, NAME, 40960, slices=7, total_slices=7)
    same_index = Device("GPU-other", 1, NAME, 40960, slices=7, total_slices=7)
    inv = Inventory((gpu,), (same_uuid, same_index), "test")
    assert allocatable_devices(inv) == ()


def test_never_without_mig_names_only_full_gpus() -> None:
    inv = inventory(full_gpu(0), full_gpu(1))
    never = decide(GpuRequest.gpus(3), "u", ANY_Q, inv, [])
    assert isinstance(never, NoFit)
    assert never.message == (
        "3 GPUs can never fit on this machine: it offers 2 full GPUs, of which at most 2 "
        "could serve this request."
    )


def test_as_holding_and_charges_per_user() -> None:
    inv = inventory(full_gpu(0), mig_gpu(1, ["1g.5gb", "3g.20gb"]))
    alloc = picked_alloc(decide(GpuRequest.gpus(1), "u", MIG_ONLY, inv, []))
    h = alloc.as_holding("c1", "u", since=T0)
    assert h == Holding("c1", "u", ("MIG-01-00",), Fraction(1, 7), since=T0)
    holdings = [
        holding("u", "MIG-01-00", eq=Fraction(1, 7), container="a"),
        holding("u", "MIG-01-01", eq=Fraction(3, 7), container="b"),
        holding("v", "GPU-0000", container="c"),
    ]
    summary = capacity_summary(inv, holdings)
    assert summary.charged_by_user == (("u", Fraction(4, 7)), ("v", Fraction(1)))
    assert (summary.total_equivalents, summary.free_equivalents) == (Fraction(11, 7), Fraction(0))
    assert summary.held_equivalents == Fraction(11, 7)


def picked_alloc(decision: object) -> Allocation:
    assert isinstance(decision, Allocation), decision
    return decision


ANY_Q = GpuQuota()

# --------------------------------------------------------------------------- queue


def entry(id_: int, user: str, request: GpuRequest, at: int = 0, priority: int = 10) -> QueueEntry:
    return QueueEntry(id_, user, request, "{}", priority, T0 + timedelta(minutes=at))


def test_reservations_of_several_capacity_waiters_add_up() -> None:
    """Two waiters each reserve what they could use; the first one's reservation still
    holds after the second reserves (a later 1-GPU entry gets neither)."""
    inv = inventory(full_gpu(0), full_gpu(1), full_gpu(2), mig_gpu(3, ["3g.20gb"]))
    quotas = {"big": GpuQuota(allowed_mig_profiles=()), "mig": ANY_Q, "late": ANY_Q}
    entries = [
        entry(1, "big", GpuRequest.gpus(3), at=0),  # 2 whole GPUs free: waits, reserves both
        entry(2, "mig", GpuRequest.mig("4g.20gb"), at=1),  # nothing that size: never
        entry(3, "late", GpuRequest.gpus(1), at=2),  # may use the 3g instance only
    ]
    busy = [holding("x", "GPU-0000")]
    result = plan(entries, T0, inv, busy, quotas)
    assert [(g.entry.id, g.allocation.uuids) for g in result.grants] == [(3, ("MIG-03-00",))]
    waits = [(w.entry.id, w.why) for w in result.waiting]
    assert waits == [(1, WaitReason.CAPACITY), (2, WaitReason.NEVER)]

    two_waiters = [
        entry(1, "big", GpuRequest.gpus(3), at=0),  # reserves GPU 1 and 2
        entry(2, "mig", GpuRequest.mig("3g.20gb"), at=1),  # busy: reserves nothing free
        entry(3, "late", GpuRequest.gpus(1), at=2),
    ]
    busy = [holding("x", "GPU-0000"), holding("y", "MIG-03-00", eq=Fraction(3, 7))]
    result = plan(two_waiters, T0, inv, busy, quotas)
    assert result.grants == ()
    assert [(w.entry.id, w.why) for w in result.waiting] == [
        (1, WaitReason.CAPACITY),
        (2, WaitReason.CAPACITY),
        (3, WaitReason.CAPACITY),
    ]


def test_a_waiter_reserves_only_what_it_can_afford() -> None:
    """'small' holds 1/7 of a 3/7 limit, so it may spend 2/7 more: waiting for two devices,
    it reserves the free 2g instance (exactly 2/7) but not the 3g one (3/7)."""
    inv = inventory(mig_gpu(0, ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]))
    quotas = {
        "small": GpuQuota(allow_full_gpu=False, max_gpu_equivalents=Fraction(3, 7)),
        "other": GpuQuota(allow_full_gpu=False),
    }
    entries = [
        entry(1, "small", GpuRequest.gpus(2), at=0),
        entry(2, "other", GpuRequest.mig("3g.20gb"), at=1),  # not reserved: granted
        entry(3, "other", GpuRequest.mig("2g.10gb"), at=2),  # reserved by entry 1: waits
    ]
    busy = [
        holding("small", "elsewhere", eq=Fraction(1, 7), container="s"),
        holding("x", "MIG-00-00", eq=Fraction(1, 7), container="x"),
        holding("y", "MIG-00-01", eq=Fraction(1, 7), container="y"),
    ]
    result = plan(entries, T0, inv, busy, quotas)
    assert [(g.entry.id, g.allocation.uuids) for g in result.grants] == [(2, ("MIG-00-03",))]
    assert [(w.entry.id, w.why) for w in result.waiting] == [
        (1, WaitReason.CAPACITY),
        (3, WaitReason.CAPACITY),
    ]


def test_a_pass_without_a_policy_says_what_to_do() -> None:
    inv = inventory(full_gpu(0))
    with pytest.raises(ConfigError) as info:
        plan([entry(7, "nobody", GpuRequest.gpus(1))], T0, inv, [], {})
    assert str(info.value) == "No GPU policy was given for 'nobody', who has queue entry 7."
    assert info.value.hint == "Resolve the policy of every user with a waiting entry before a pass."


def test_position_uses_the_aging_given() -> None:
    old = entry(1, "a", GpuRequest.gpus(1), at=0, priority=0)
    new = entry(2, "b", GpuRequest.gpus(1), at=50, priority=1)
    now = T0 + timedelta(minutes=60)
    assert position(old, [old, new], now) == 1  # default: 0 + 2 points beats 1 + 0
    fast = Aging(interval=timedelta(minutes=1), step=1)
    assert position(new, [old, new], now, fast) == 2
    slow = Aging(interval=timedelta(hours=2), step=1)
    assert position(old, [old, new], now, slow) == 2
    assert position(new, [old, new], now, slow) == 1
