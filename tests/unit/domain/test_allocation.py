"""The pure GPU allocation decision: requests, policy refusals, placement, status."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from ds01.domain.allocation import (
    Allocation,
    NoFit,
    NoFitReason,
    Refusal,
    RefusalReason,
    allocatable_devices,
    capacity_summary,
    decide,
    require_allocation,
    usable_devices,
    validate_before_start,
)
from ds01.domain.devices import Device, Gpu, Inventory
from ds01.domain.gpu_request import (
    GpuQuota,
    GpuRequest,
    Holding,
    RequestKind,
    holdings_in_force,
    parse_mig_profile,
    to_equivalents,
)
from ds01.domain.labels import ContainerLabels
from ds01.errors import ConfigError, NoCapacityError, RefusedError, UsageError

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- builders
# Shared with test_queue.py and test_allocation_properties.py.

A100_PROFILES = {"1g.5gb": 1, "1g.10gb": 1, "2g.10gb": 2, "3g.20gb": 3, "4g.20gb": 4, "7g.40gb": 7}
A30_PROFILES = {"1g.6gb": 1, "2g.12gb": 2, "4g.24gb": 4}


def full_gpu(index: int, *, mem: int = 40960) -> tuple[Gpu, list[Device]]:
    """A GPU with MIG off: one whole device whose UUID is the GPU's."""
    uuid = f"GPU-{index:04d}"
    gpu = Gpu(index=index, uuid=uuid, name="NVIDIA A100-SXM4-40GB", memory_mib=mem,
              total_slices=7)  # fmt: skip
    return gpu, [Device(uuid, index, gpu.name, mem, slices=7, total_slices=7)]


def mig_gpu(
    index: int, profiles: Sequence[str], *, total: int = 7, whole_listed: bool = False
) -> tuple[Gpu, list[Device]]:
    """A MIG-enabled GPU offering ``profiles`` (``whole_listed``: a buggy backend also
    lists the GPU itself as a whole device)."""
    table = A100_PROFILES if total == 7 else A30_PROFILES
    uuid = f"GPU-{index:04d}"
    gpu = Gpu(index=index, uuid=uuid, name="NVIDIA A100-SXM4-40GB", memory_mib=40960,
              mig_enabled=True, total_slices=total)  # fmt: skip
    devices = [
        Device(
            f"MIG-{index:02d}-{k:02d}",
            index,
            gpu.name,
            memory_mib=int(p.split(".")[1][:-2]) * 1000,
            slices=table[p],
            total_slices=total,
            mig_profile=p,
            parent_uuid=uuid,
        )
        for k, p in enumerate(profiles)
    ]
    if whole_listed:
        devices.append(Device(uuid, index, gpu.name, 40960, slices=total, total_slices=total))
    return gpu, devices


def inventory(*parts: tuple[Gpu, list[Device]]) -> Inventory:
    return Inventory(
        gpus=tuple(g for g, _ in parts),
        devices=tuple(d for _, ds in parts for d in ds),
        source="test",
    )


def held(user: str, alloc: Allocation, name: str | None = None) -> Holding:
    return alloc.as_holding(name or f"{user}-{len(alloc.uuids)}-{alloc.uuids[:1]}", user)


def holding(user: str, *uuids: str, eq: Fraction | int = 1, container: str = "c") -> Holding:
    return Holding(container, user, tuple(uuids), Fraction(eq))


def allocation(decision: object) -> Allocation:
    assert isinstance(decision, Allocation), decision
    return decision


MIG_ONLY = GpuQuota(allow_full_gpu=False)
ANY = GpuQuota()


# --------------------------------------------------------------------------- request


def test_request_constructors_and_normalisation() -> None:
    assert GpuRequest.gpus(2).devices_asked == 2
    req = GpuRequest.mig(" MIG 3G.20GB ")
    assert (req.kind, req.profile, req.devices_asked) == (RequestKind.PROFILE, "3g.20gb", 1)
    assert GpuRequest.cpu_only().devices_asked == 0
    assert GpuRequest.gpus(1).describe() == "1 GPU"
    assert GpuRequest.gpus(3).describe() == "3 GPUs"


@pytest.mark.parametrize("count", [0, -1, True])
def test_gpus_must_be_a_positive_whole_number(count: int) -> None:
    with pytest.raises(UsageError) as exc:
        GpuRequest.gpus(count)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("profile", ["nonsense", "3g", "0g.5gb", "3g.0gb", "3g.20", "g.20gb", ""])
def test_profile_syntax_is_checked(profile: str) -> None:
    with pytest.raises(UsageError) as exc:
        GpuRequest.mig(profile)
    assert exc.value.exit_code == 2
    assert "not a MIG profile" in exc.value.message


def test_parse_mig_profile() -> None:
    shape = parse_mig_profile("1g.18gb+me")
    assert shape is not None
    assert (shape.slices, shape.memory_gb, shape.extras) == (1, 18, ("me",))
    assert parse_mig_profile("7g.141gb") is not None
    assert parse_mig_profile("GPU 0") is None


@pytest.mark.parametrize(
    "request_", [GpuRequest.gpus(3), GpuRequest.mig("2g.10gb"), GpuRequest.cpu_only()]
)
def test_request_encode_decode_round_trip(request_: GpuRequest) -> None:
    assert GpuRequest.decode(request_.encode()) == request_


@pytest.mark.parametrize("text", ["gpus:x", "gpus:0", "profile:bad", "mig", "cpu-only:1"])
def test_request_decode_rejects_garbage(text: str) -> None:
    with pytest.raises(
        UsageError, match=r"is not a stored GPU request|whole number of GPUs|is not a MIG profile"
    ):
        GpuRequest.decode(text)


# --------------------------------------------------------------------------- quota


def test_quota_values_become_exact_fractions() -> None:
    assert to_equivalents(0.5) == Fraction(1, 2)
    assert to_equivalents("3/7") == Fraction(3, 7)
    assert to_equivalents(2) == 2
    quota = GpuQuota(max_gpu_equivalents=to_equivalents(1.5), allowed_mig_profiles=("1G.5GB",))
    assert quota.max_gpu_equivalents == Fraction(3, 2)
    assert quota.allowed_mig_profiles == ("1g.5gb",)
    assert quota.may_use_profile("MIG 1g.5gb")
    assert not quota.may_use_profile("2g.10gb")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_gpu_equivalents": Fraction(-1)},
        {"max_gpus_per_container": -1},
        {"allowed_mig_profiles": ("big",)},
    ],
)
def test_quota_rejects_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(
        ConfigError, match=r"must not be negative|whole number ≥ 0|names no MIG profile"
    ):
        GpuQuota(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["lots", True, "1/0"])
def test_to_equivalents_rejects_non_numbers(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^GPU equivalents must be a number"):
        to_equivalents(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- basics


def test_cpu_only_gets_no_device_and_hides_cuda() -> None:
    alloc = allocation(decide(GpuRequest.cpu_only(), "u", GpuQuota(), inventory(), []))
    assert alloc.devices == ()
    assert alloc.equivalents == 0
    assert alloc.cuda_visible_devices == ""
    assert alloc.gpus_label == "0"


def test_full_gpu_user_gets_lowest_free_whole_gpu_with_labels() -> None:
    inv = inventory(full_gpu(0), full_gpu(1), full_gpu(2))
    alloc = allocation(decide(GpuRequest.gpus(2), "ann", ANY, inv, [holding("bob", "GPU-0000")]))
    assert alloc.uuids == ("GPU-0001", "GPU-0002")
    assert alloc.equivalents == 2
    assert alloc.cuda_visible_devices == "GPU-0001,GPU-0002"
    assert alloc.gpus_label == "device=GPU-0001;GPU-0002"  # no comma: AIME's mlc list
    h = alloc.as_holding("c1", "ann", since=T0)
    assert (h.user, h.device_uuids, h.equivalents, h.since) == ("ann", alloc.uuids, Fraction(2), T0)


def test_mig_only_user_never_gets_a_whole_gpu_and_gets_smallest_first() -> None:
    inv = inventory(full_gpu(0), mig_gpu(1, ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]))
    alloc = allocation(decide(GpuRequest.gpus(1), "s", MIG_ONLY, inv, []))
    assert alloc.devices[0].mig_profile == "1g.5gb"
    assert alloc.equivalents == Fraction(1, 7)
    # --gpus 3 for a MIG-only user: three MIG instances, lightest first.
    alloc3 = allocation(decide(GpuRequest.gpus(3), "s", MIG_ONLY, inv, []))
    assert sorted(d.slices for d in alloc3.devices) == [1, 1, 2]
    assert all(d.is_mig for d in alloc3.devices)
    assert alloc3.equivalents == Fraction(4, 7)


def test_full_gpu_user_prefers_whole_gpu_and_mig_user_keeps_it_free() -> None:
    inv = inventory(mig_gpu(0, ["1g.5gb"] * 7), full_gpu(1))
    assert allocation(decide(GpuRequest.gpus(1), "f", ANY, inv, [])).uuids == ("GPU-0001",)
    assert allocation(decide(GpuRequest.gpus(1), "m", MIG_ONLY, inv, [])).devices[0].is_mig


def test_mig_request_packs_onto_the_gpu_with_most_held_instances() -> None:
    inv = inventory(mig_gpu(0, ["1g.5gb"] * 7), mig_gpu(1, ["1g.5gb"] * 7))
    # Nothing held: lowest GPU index, lowest UUID.
    assert allocation(decide(GpuRequest.gpus(1), "a", MIG_ONLY, inv, [])).uuids == ("MIG-00-00",)
    # GPU 1 already has two instances held, GPU 0 one: the new one goes to GPU 1.
    hold = [
        holding("x", "MIG-00-03", eq=Fraction(1, 7)),
        holding("y", "MIG-01-00", "MIG-01-05", eq=Fraction(2, 7)),
    ]
    assert allocation(decide(GpuRequest.gpus(1), "a", MIG_ONLY, inv, hold)).uuids == ("MIG-01-01",)
    # A multi-device request packs its own devices together.
    alloc = allocation(decide(GpuRequest.gpus(3), "a", MIG_ONLY, inv, hold))
    assert {d.gpu_index for d in alloc.devices} == {1}


def test_full_gpu_user_falls_back_to_mig_but_never_mixes_kinds() -> None:
    inv = inventory(full_gpu(0), mig_gpu(1, ["1g.5gb", "2g.10gb", "3g.20gb"]))
    # One whole GPU free, two asked: not one whole + one MIG, but two MIG instances.
    alloc = allocation(decide(GpuRequest.gpus(2), "f", ANY, inv, []))
    assert all(d.is_mig for d in alloc.devices)
    assert alloc.equivalents == Fraction(3, 7)
    # Whole GPU busy: one asked gets the lightest MIG instance.
    alloc1 = allocation(decide(GpuRequest.gpus(1), "f", ANY, inv, [holding("x", "GPU-0000")]))
    assert alloc1.devices[0].mig_profile == "1g.5gb"


def test_profile_request_takes_exact_profile_then_smallest_sufficient() -> None:
    inv = inventory(
        mig_gpu(0, ["1g.5gb", "2g.10gb", "3g.20gb"]), mig_gpu(1, ["4g.20gb", "3g.20gb"])
    )
    alloc = allocation(decide(GpuRequest.mig("3g.20gb"), "u", ANY, inv, []))
    assert alloc.uuids == ("MIG-00-02",)
    assert alloc.equivalents == Fraction(3, 7)
    busy = [
        holding("x", "MIG-00-02", eq=Fraction(3, 7)),
        holding("y", "MIG-01-01", eq=Fraction(3, 7)),
    ]
    bigger = allocation(decide(GpuRequest.mig("3g.20gb"), "u", ANY, inv, busy))
    assert bigger.devices[0].mig_profile == "4g.20gb"
    assert bigger.equivalents == Fraction(4, 7)  # charged what it weighs, not what was asked
    # Never a smaller instance than asked.
    all_big_busy = [*busy, holding("z", "MIG-01-00", eq=Fraction(4, 7))]
    nofit = decide(GpuRequest.mig("3g.20gb"), "u", ANY, inv, all_big_busy)
    assert isinstance(nofit, NoFit)
    assert nofit.reason is NoFitReason.CAPACITY


def test_profile_request_memory_and_extras_must_suffice() -> None:
    inv = inventory(mig_gpu(0, ["1g.5gb", "1g.10gb", "2g.10gb"]))
    assert allocation(decide(GpuRequest.mig("1g.10gb"), "u", ANY, inv, [])).uuids == ("MIG-00-01",)
    never = decide(GpuRequest.mig("1g.10gb+me"), "u", ANY, inv, [])
    assert isinstance(never, NoFit)
    assert never.reason is NoFitReason.NEVER


def test_mig_enabled_gpu_is_never_handed_out_whole() -> None:
    # MIG on with no instances offers nothing, even if a backend lists the GPU itself.
    inv = inventory(mig_gpu(0, [], whole_listed=True), full_gpu(1))
    assert [d.uuid for d in allocatable_devices(inv)] == ["GPU-0001"]
    assert allocation(decide(GpuRequest.gpus(1), "u", ANY, inv, [])).uuids == ("GPU-0001",)
    never = decide(GpuRequest.gpus(2), "u", ANY, inv, [])
    assert isinstance(never, NoFit)
    assert never.reason is NoFitReason.NEVER


def test_mixed_7_and_4_slice_gpus_weigh_by_their_own_total() -> None:
    inv = inventory(mig_gpu(0, ["1g.6gb", "1g.6gb"], total=4), mig_gpu(1, ["1g.5gb"]))
    alloc = allocation(decide(GpuRequest.gpus(1), "u", MIG_ONLY, inv, []))
    assert alloc.equivalents == Fraction(1, 7)  # the lighter one first
    alloc2 = allocation(decide(GpuRequest.gpus(2), "u", MIG_ONLY, inv, []))
    assert alloc2.equivalents == Fraction(1, 7) + Fraction(1, 4)


# --------------------------------------------------------------------------- quota checks


def test_quota_uses_actual_weight_of_mig_instances() -> None:
    inv = inventory(mig_gpu(0, ["1g.5gb"] * 7))
    quota = GpuQuota(max_gpu_equivalents=Fraction(2, 7), allow_full_gpu=False)
    hold = [holding("u", "MIG-00-00", eq=Fraction(1, 7))]
    alloc = allocation(decide(GpuRequest.gpus(1), "u", quota, inv, hold))
    assert alloc.equivalents == Fraction(1, 7)
    refused = decide(GpuRequest.gpus(1), "u", quota, inv, [*hold, held("u", alloc)])
    assert isinstance(refused, Refusal)
    assert refused.reason is RefusalReason.QUOTA


def test_whole_gpu_that_would_break_quota_gives_way_to_mig() -> None:
    inv = inventory(full_gpu(0), mig_gpu(1, ["3g.20gb", "4g.20gb"]))
    quota = GpuQuota(max_gpu_equivalents=Fraction(1, 2))
    alloc = allocation(decide(GpuRequest.gpus(1), "u", quota, inv, []))
    assert alloc.devices[0].mig_profile == "3g.20gb"


def test_quota_refusal_carries_held_asked_allowed() -> None:
    inv = inventory(full_gpu(0), full_gpu(1), mig_gpu(2, ["3g.20gb", "4g.20gb"]))
    quota = GpuQuota(max_gpu_equivalents=Fraction(5, 4))
    refusal = decide(GpuRequest.gpus(1), "ann", quota, inv, [holding("ann", "GPU-0000")])
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusalReason.QUOTA
    numbers = (refusal.held, refusal.asked, refusal.allowed)
    assert numbers == (Fraction(1), Fraction(3, 7), Fraction(5, 4))
    assert "holds 1 GPU equivalents" in refusal.message
    assert "0.4286 (3/7)" in refusal.message
    assert "1.25 (5/4)" in refusal.message
    error = refusal.to_error()
    assert isinstance(error, RefusedError)
    assert error.exit_code == 3
    assert error.code == "gpu_quota_exceeded"
    assert error.details["held"] == 1.0
    assert error.details["asked_exact"] == "3/7"
    assert error.details["allowed"] == 1.25


def test_quota_counts_all_of_the_users_containers_only() -> None:
    inv = inventory(full_gpu(0), full_gpu(1), full_gpu(2))
    quota = GpuQuota(max_gpu_equivalents=Fraction(2))
    hold = [holding("ann", "GPU-0000", container="a"), holding("bob", "GPU-0001", container="b")]
    assert allocation(decide(GpuRequest.gpus(1), "ann", quota, inv, hold)).uuids == ("GPU-0002",)
    refusal = decide(GpuRequest.gpus(2), "ann", quota, inv, hold)
    assert isinstance(refusal, Refusal)
    assert (refusal.held, refusal.asked, refusal.allowed) == (Fraction(1), Fraction(2), Fraction(2))


def test_lighter_devices_busy_means_capacity_not_refusal() -> None:
    inv = inventory(mig_gpu(0, ["1g.5gb", "3g.20gb"]))
    quota = GpuQuota(max_gpu_equivalents=Fraction(1, 7), allow_full_gpu=False)
    nofit = decide(
        GpuRequest.gpus(1), "u", quota, inv, [holding("x", "MIG-00-00", eq=Fraction(1, 7))]
    )
    assert isinstance(nofit, NoFit)
    assert nofit.reason is NoFitReason.CAPACITY
    assert "over the GPU quota" in nofit.message


def test_per_container_cap_refusal() -> None:
    inv = inventory(full_gpu(0), full_gpu(1), full_gpu(2))
    refusal = decide(GpuRequest.gpus(3), "u", GpuQuota(max_gpus_per_container=2), inv, [])
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusalReason.PER_CONTAINER_LIMIT
    assert (refusal.held, refusal.asked, refusal.allowed, refusal.unit) == (
        Fraction(0),
        Fraction(3),
        Fraction(2),
        "devices",
    )
    assert "3 GPUs" in refusal.message
    assert "limit of 2" in refusal.message
    assert refusal.to_error().details["asked"] == 3.0
    # A profile asks one device; a cap of 0 allows none.
    zero = decide(GpuRequest.mig("1g.5gb"), "u", GpuQuota(max_gpus_per_container=0), inv, [])
    assert isinstance(zero, Refusal)
    assert "--cpu-only" in zero.hint


def test_profile_not_allowed_and_no_gpu_allowed() -> None:
    inv = inventory(mig_gpu(0, ["1g.5gb", "3g.20gb"]))
    quota = GpuQuota(allow_full_gpu=False, allowed_mig_profiles=("1g.5gb",))
    refusal = decide(GpuRequest.mig("3g.20gb"), "u", quota, inv, [])
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusalReason.PROFILE_NOT_ALLOWED
    assert refusal.allowed_profiles == ("1g.5gb",)
    assert "1g.5gb" in refusal.message
    # --gpus N is served with allowed profiles only.
    alloc = allocation(decide(GpuRequest.gpus(1), "u", quota, inv, []))
    assert alloc.devices[0].mig_profile == "1g.5gb"
    never = decide(GpuRequest.gpus(2), "u", quota, inv, [])
    assert isinstance(never, NoFit)
    assert never.reason is NoFitReason.NEVER
    nothing = GpuQuota(allow_full_gpu=False, allowed_mig_profiles=())
    refusal2 = decide(GpuRequest.gpus(1), "u", nothing, inv, [])
    assert isinstance(refusal2, Refusal)
    assert refusal2.reason is RefusalReason.NO_GPU_ALLOWED


# --------------------------------------------------------------------------- no fit


def test_request_larger_than_machine_never_fits_exit_2() -> None:
    inv = inventory(full_gpu(0), full_gpu(1))
    never = decide(GpuRequest.gpus(3), "u", ANY, inv, [])
    assert isinstance(never, NoFit)
    assert never.reason is NoFitReason.NEVER
    assert (never.asked, never.usable) == (3, 2)
    error = never.to_error()
    assert isinstance(error, UsageError)
    assert error.exit_code == 2
    # A MIG-only user on a machine without MIG instances can never be served either.
    mig_never = decide(GpuRequest.gpus(1), "u", MIG_ONLY, inv, [])
    assert isinstance(mig_never, NoFit)
    assert mig_never.reason is NoFitReason.NEVER
    assert "MIG instances only" in mig_never.message


def test_busy_machine_is_capacity_exit_4() -> None:
    inv = inventory(full_gpu(0), full_gpu(1))
    busy = [holding("a", "GPU-0000"), holding("b", "GPU-0001")]
    nofit = decide(GpuRequest.gpus(1), "u", ANY, inv, busy)
    assert isinstance(nofit, NoFit)
    assert nofit.reason is NoFitReason.CAPACITY
    assert (nofit.asked, nofit.usable, nofit.free) == (1, 2, 0)
    assert "--wait" in nofit.hint
    with pytest.raises(NoCapacityError) as exc:
        require_allocation(nofit)
    assert exc.value.exit_code == 4
    with pytest.raises(RefusedError, match=r"more than u\'s limit of 1 GPU device per container"):
        require_allocation(
            decide(GpuRequest.gpus(2), "u", GpuQuota(max_gpus_per_container=1), inv, [])
        )
    assert require_allocation(decide(GpuRequest.gpus(1), "u", ANY, inv, busy[:1])).uuids == (
        "GPU-0001",
    )


def test_usable_devices() -> None:
    inv = inventory(full_gpu(0), mig_gpu(1, ["1g.5gb", "3g.20gb"]))
    assert [d.uuid for d in usable_devices(GpuRequest.gpus(1), MIG_ONLY, inv)] == [
        "MIG-01-00",
        "MIG-01-01",
    ]
    assert [d.uuid for d in usable_devices(GpuRequest.mig("2g.10gb"), ANY, inv)] == ["MIG-01-01"]
    # Two whole GPUs are not on this machine: only the MIG pool can serve --gpus 2.
    assert [d.uuid for d in usable_devices(GpuRequest.gpus(2), ANY, inv)] == [
        "MIG-01-00",
        "MIG-01-01",
    ]
    assert usable_devices(GpuRequest.cpu_only(), ANY, inv) == ()


# --------------------------------------------------------------------------- the stress example


def test_56_mig_devices_64_requests_16_users() -> None:
    """8x A100 each 7 x 1g.5gb; 64 single-device requests from 16 users (quota 4 each)."""
    inv = inventory(*(mig_gpu(i, ["1g.5gb"] * 7) for i in range(8)))
    assert len(inv.devices) == 56
    quota = GpuQuota(max_gpu_equivalents=Fraction(4))
    requests = [f"user{n % 16:02d}" for n in range(64)]
    holdings: list[Holding] = []
    outcomes: list[object] = []
    for k, user in enumerate(requests):
        decision = decide(GpuRequest.gpus(1), user, quota, inv, holdings)
        outcomes.append(decision)
        if isinstance(decision, Allocation):
            holdings.append(decision.as_holding(f"c{k}", user))
    granted = [o for o in outcomes if isinstance(o, Allocation)]
    assert len(granted) == 56
    uuids = [u for a in granted for u in a.uuids]
    assert len(set(uuids)) == 56 == len(uuids)
    rest = outcomes[56:]
    assert len(rest) == 8
    assert all(isinstance(o, NoFit) and o.reason is NoFitReason.CAPACITY for o in rest)
    # Packing: the first seven filled GPU 0 before anything went to GPU 1.
    assert {d.gpu_index for a in granted[:7] for d in a.devices} == {0}


def test_decision_is_independent_of_input_order() -> None:
    inv = inventory(mig_gpu(0, ["1g.5gb"] * 3 + ["2g.10gb"]), full_gpu(1), mig_gpu(2, ["3g.20gb"]))
    hold = [
        holding("a", "MIG-00-01", eq=Fraction(1, 7), container="a"),
        holding("b", "GPU-0001", container="b"),
    ]
    expected = decide(GpuRequest.gpus(2), "u", ANY, inv, hold)
    rng = random.Random(7)
    for _ in range(5):
        devices = list(inv.devices)
        rng.shuffle(devices)
        shuffled = Inventory(inv.gpus, tuple(devices), inv.source)
        assert decide(GpuRequest.gpus(2), "u", ANY, shuffled, list(reversed(hold))) == expected


# --------------------------------------------------------------------------- holdings


def test_hold_after_stop() -> None:
    running = Holding("r", "u", ("GPU-0000",), Fraction(1), state="running")
    created = Holding("c", "u", ("GPU-0001",), Fraction(1), state="created")
    stopped = Holding("s", "u", ("GPU-0002",), Fraction(1), state="exited", finished_at=T0)
    undated = Holding("x", "u", ("GPU-0003",), Fraction(1), state="exited")
    quarter = timedelta(minutes=15)
    assert not running.hold_expired(T0 + timedelta(days=9), quarter)
    assert not created.hold_expired(T0 + timedelta(days=9), quarter)
    assert not stopped.hold_expired(T0 + timedelta(minutes=14), quarter)
    assert stopped.hold_expired(T0 + quarter, quarter)
    assert not stopped.hold_expired(T0 + timedelta(days=999), None)  # None holds forever
    assert not undated.hold_expired(T0 + timedelta(days=9), quarter)
    everyone = [running, created, stopped, undated]
    later = T0 + timedelta(hours=1)
    assert holdings_in_force(everyone, later, {}, quarter) == [running, created, undated]
    assert holdings_in_force(everyone, later, {"u": None}, quarter) == everyone
    assert holdings_in_force(everyone, later, {}) == everyone


def test_expired_hold_frees_the_device() -> None:
    inv = inventory(full_gpu(0))
    stopped = Holding("s", "a", ("GPU-0000",), Fraction(1), state="exited", finished_at=T0)
    nofit = decide(GpuRequest.gpus(1), "u", ANY, inv, [stopped])
    assert isinstance(nofit, NoFit)
    in_force = holdings_in_force([stopped], T0 + timedelta(hours=1), {"a": timedelta(minutes=15)})
    assert allocation(decide(GpuRequest.gpus(1), "u", ANY, inv, in_force)).uuids == ("GPU-0000",)


def test_holding_from_labels() -> None:
    labels = ContainerLabels(
        name="work",
        user="ann",
        framework="Pytorch-2.4.0",
        gpus="device=MIG-00-00,MIG-00-01",
        gpu_uuids=("MIG-00-00", "MIG-00-01"),
        gpu_equivalents=Fraction(2, 7),
        gpu_allocated_at=T0.isoformat(),
    )
    decoded = ContainerLabels.decode(labels.encode())
    assert decoded is not None
    h = Holding.from_labels("work._.1000", decoded, state="exited", finished_at=T0)
    assert h == Holding(
        "work._.1000", "ann", ("MIG-00-00", "MIG-00-01"), Fraction(2, 7), "exited", T0, T0
    )
    bad_date = ContainerLabels(name="w", user="ann", framework="x", gpu_allocated_at="yesterday")
    assert Holding.from_labels("w", bad_date, state="running").since is None


# --------------------------------------------------------------------------- status


def test_validate_before_start() -> None:
    inv = inventory(full_gpu(0), mig_gpu(1, ["1g.5gb"]))
    assert validate_before_start(["GPU-0000", "MIG-01-00"], inv) == []
    assert validate_before_start(["GPU-0000", "MIG-09-09", "GPU-0007"], inv) == [
        "MIG-09-09",
        "GPU-0007",
    ]
    # GPU 1's whole UUID still exists, but MIG is on: starting would hand it out whole.
    assert validate_before_start(["GPU-0001"], inv) == ["GPU-0001"]


def test_capacity_summary() -> None:
    inv = inventory(full_gpu(0), mig_gpu(1, ["1g.5gb", "3g.20gb"]))
    ann = Holding("a", "ann", ("GPU-0000",), Fraction(1), since=T0)
    bob = Holding("b", "bob", ("MIG-01-01", "MIG-77-00"), Fraction(4, 7))
    summary = capacity_summary(inv, [bob, ann])
    assert [(u.device.uuid, u.holder.user if u.holder else None) for u in summary.devices] == [
        ("GPU-0000", "ann"),
        ("MIG-01-00", None),
        ("MIG-01-01", "bob"),
    ]
    assert summary.total_equivalents == Fraction(11, 7)
    assert summary.free_equivalents == Fraction(1, 7)
    assert summary.held_equivalents == Fraction(10, 7)
    assert [d.uuid for d in summary.free_devices] == ["MIG-01-00"]
    assert summary.charged_by_user == (("ann", Fraction(1)), ("bob", Fraction(4, 7)))
    assert summary.missing == ((bob, "MIG-77-00"),)
    assert summary.double_held == ()
    legacy = capacity_summary(inv, [ann, Holding("z", "zed", ("GPU-0000",), Fraction(1))])
    assert [u.device.uuid for u in legacy.double_held] == ["GPU-0000"]
