"""Property-based tests of the allocator and the queue over random machines and users.

Inventories mix whole GPUs, MIG-partitioned 7-slice and 4-slice GPUs with random valid
profiles, MIG-enabled GPUs with no instances, and (as a backend bug) MIG-enabled GPUs
also listed whole. Random users with random quotas send random requests; every grant is
applied as a holding and random holdings are freed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.domain.allocation import (
    Allocation,
    NoFit,
    Refusal,
    allocatable_devices,
    decide,
    usable_devices,
)
from ds01.domain.devices import Device, Gpu, Inventory
from ds01.domain.gpu_request import (
    GpuQuota,
    GpuRequest,
    Holding,
    RequestKind,
    parse_mig_profile,
    user_equivalents,
)
from ds01.domain.queue import Aging, Grant, QueueEntry, Waiting, WaitReason, order, plan
from tests.unit.test_allocation import A30_PROFILES, A100_PROFILES, T0, full_gpu, inventory, mig_gpu

PROPS = settings(max_examples=120, deadline=None)
USERS = ("ann", "bob", "cyd", "dee")
ALL_PROFILES = sorted({*A100_PROFILES, *A30_PROFILES})

# --------------------------------------------------------------------------- strategies


@st.composite
def gpus(draw: st.DrawFn, index: int) -> tuple[Gpu, list[Device]]:
    kind = draw(
        st.sampled_from(["full", "mig7", "mig7", "mig4", "full", "mig-empty", "mig-listed-whole"])
    )
    if kind == "full":
        return full_gpu(index)
    if kind in ("mig-empty", "mig-listed-whole"):
        return mig_gpu(index, [], whole_listed=kind == "mig-listed-whole")
    table, total = (A100_PROFILES, 7) if kind == "mig7" else (A30_PROFILES, 4)
    # Partition the GPU: instances that fit its slices, usually until it is full.
    profiles: list[str] = []
    free = total
    while fitting := [p for p in sorted(table) if table[p] <= free]:
        if draw(st.integers(0, 7)) == 7:
            break
        profile = draw(st.sampled_from(fitting))
        profiles.append(profile)
        free -= table[profile]
    return mig_gpu(index, profiles, total=total)


@st.composite
def inventories(draw: st.DrawFn) -> Inventory:
    count = draw(st.integers(1, 6))
    return inventory(*(draw(gpus(i)) for i in range(count)))


# Mostly permissive policies, so that many requests are granted and the machine fills up;
# the restrictive values still come up often enough to exercise every refusal.
quotas = st.builds(
    GpuQuota,
    max_gpu_equivalents=st.one_of(
        st.none(),
        st.fractions(min_value=Fraction(1, 7), max_value=4, max_denominator=28),
        st.fractions(min_value=0, max_value=1, max_denominator=7),
    ),
    max_gpus_per_container=st.sampled_from([None, 3, None, 2, 1, 0]),
    allow_full_gpu=st.sampled_from([True, False, True]),
    allowed_mig_profiles=st.one_of(
        st.none(),
        st.none(),
        st.lists(st.sampled_from(ALL_PROFILES), unique=True, max_size=4).map(tuple),
    ),
    priority=st.integers(0, 100),
)
user_quotas = st.fixed_dictionaries(dict.fromkeys(USERS, quotas))
requests = st.sampled_from(
    [GpuRequest.gpus(n) for n in (1, 1, 1, 1, 1, 1, 2, 2, 2, 3)]
    + [GpuRequest.mig(p) for p in ("1g.5gb", "2g.10gb", "3g.20gb", "1g.6gb", "2g.12gb")]
    + [GpuRequest.mig(p) for p in ALL_PROFILES]
    + [GpuRequest.cpu_only()]
)


@dataclass(frozen=True)
class Ask:
    user: str
    request: GpuRequest


@dataclass(frozen=True)
class Free:
    pick: int  # which holding (modulo how many there are)


operations = st.lists(
    st.one_of(
        st.builds(Ask, st.sampled_from(USERS), requests),
        st.builds(Ask, st.sampled_from(USERS), requests),
        st.builds(Ask, st.sampled_from(USERS), requests),
        st.builds(Free, st.integers(0, 1000)),
    ),
    min_size=4,
    max_size=40,
)

# --------------------------------------------------------------------------- checks


def check_allocation(
    alloc: Allocation, request: GpuRequest, quota: GpuQuota, inv: Inventory
) -> None:
    """Everything one allocation must satisfy on its own."""
    devices = alloc.devices
    assert len(devices) == request.devices_asked
    assert len({d.uuid for d in devices}) == len(devices)
    assert alloc.equivalents == sum((d.equivalents for d in devices), Fraction(0))
    assert alloc.cuda_visible_devices == ",".join(d.uuid for d in devices)
    if devices:
        assert alloc.gpus_label == "device=" + alloc.cuda_visible_devices.replace(",", ";")
    offered = set(allocatable_devices(inv))
    mig_on = {g.index for g in inv.gpus if g.mig_enabled}
    for d in devices:
        assert d in offered
        assert d.is_mig or d.gpu_index not in mig_on  # a MIG-enabled GPU never whole
        if not quota.allow_full_gpu:
            assert d.is_mig  # MIG-only users never get a whole GPU
        if d.is_mig:
            assert quota.may_use_profile(d.mig_profile or "")
    assert len({d.is_mig for d in devices}) <= 1  # never a mix of kinds
    cap = quota.max_gpus_per_container
    assert cap is None or len(devices) <= cap
    if request.kind is RequestKind.PROFILE:
        want = parse_mig_profile(request.profile or "")
        assert want is not None
        (d,) = devices
        assert d.slices >= want.slices


def check_state(holdings: list[Holding], quotas_by_user: dict[str, GpuQuota]) -> None:
    """Invariants of the whole machine: exclusive devices, nobody above quota."""
    uuids = [u for h in holdings for u in h.device_uuids]
    assert len(uuids) == len(set(uuids)), "a device is held twice"
    for user, quota in quotas_by_user.items():
        limit = quota.max_gpu_equivalents
        assert limit is None or user_equivalents(holdings, user) <= limit


def run(
    inv: Inventory, quotas_by_user: dict[str, GpuQuota], ops: list[Ask | Free]
) -> list[Holding]:
    """Apply the operations, checking every decision and the state after each step."""
    holdings: list[Holding] = []
    for k, op in enumerate(ops):
        if isinstance(op, Free):
            if holdings:
                holdings.pop(op.pick % len(holdings))
            continue
        quota = quotas_by_user[op.user]
        decision = decide(op.request, op.user, quota, inv, holdings)
        # Deterministic, and blind to the order holdings were read back in.
        assert decide(op.request, op.user, quota, inv, list(reversed(holdings))) == decision
        if isinstance(decision, Allocation):
            check_allocation(decision, op.request, quota, inv)
            holdings.append(decision.as_holding(f"c{k}", op.user))
        else:
            assert isinstance(decision, Refusal | NoFit)
            assert decision.message
            assert decision.to_error().exit_code in (2, 3, 4)
        check_state(holdings, quotas_by_user)
    return holdings


# --------------------------------------------------------------------------- allocator


@PROPS
@given(inventories(), user_quotas, operations)
def test_random_sequences_keep_every_invariant(
    inv: Inventory, quotas_by_user: dict[str, GpuQuota], ops: list[Ask | Free]
) -> None:
    run(inv, quotas_by_user, ops)


@PROPS
@given(
    inventories(),
    user_quotas,
    operations,
    st.builds(Ask, st.sampled_from(USERS), requests),
    st.randoms(use_true_random=False),
)
def test_decisions_ignore_input_order(
    inv: Inventory,
    quotas_by_user: dict[str, GpuQuota],
    ops: list[Ask | Free],
    ask: Ask,
    rnd: random.Random,
) -> None:
    user, request = ask.user, ask.request
    holdings = run(inv, quotas_by_user, ops)
    expected = decide(request, user, quotas_by_user[user], inv, holdings)
    devices = list(inv.devices)
    shuffled_holdings = list(holdings)
    rnd.shuffle(devices)
    rnd.shuffle(shuffled_holdings)
    shuffled = Inventory(inv.gpus, tuple(devices), inv.source)
    assert decide(request, user, quotas_by_user[user], shuffled, shuffled_holdings) == expected


@PROPS
@given(inventories(), user_quotas, st.sampled_from(USERS), requests)
def test_refusal_and_never_do_not_depend_on_other_users(
    inv: Inventory, quotas_by_user: dict[str, GpuQuota], user: str, request: GpuRequest
) -> None:
    """On an empty machine nothing is ever 'capacity': it fits, is refused, or never fits."""
    decision = decide(request, user, quotas_by_user[user], inv, [])
    assert not (isinstance(decision, NoFit) and decision.reason.value == "capacity")


# --------------------------------------------------------------------------- queue

entries_strategy = st.lists(
    st.tuples(st.sampled_from(USERS), requests, st.integers(0, 100), st.integers(0, 600)),
    min_size=1,
    max_size=8,
)


def make_entries(raw: list[tuple[str, GpuRequest, int, int]]) -> list[QueueEntry]:
    return [
        QueueEntry(k, user, request, "{}", priority, T0 + timedelta(minutes=at))
        for k, (user, request, priority, at) in enumerate(raw)
    ]


@PROPS
@given(inventories(), user_quotas, operations, st.integers(0, 1000), entries_strategy)
def test_a_pass_grants_the_head_when_it_fits_and_keeps_invariants(
    inv: Inventory,
    quotas_by_user: dict[str, GpuQuota],
    ops: list[Ask | Free],
    freed: int,
    raw: list[tuple[str, GpuRequest, int, int]],
) -> None:
    holdings = run(inv, quotas_by_user, ops)
    if holdings:
        holdings.pop(freed % len(holdings))  # a device frees up
    entries = make_entries(raw)
    now = T0 + timedelta(hours=12)
    result = plan(entries, now, inv, holdings, quotas_by_user)
    ordered = order(entries, now)
    head = ordered[0]
    direct = decide(head.request, head.user, quotas_by_user[head.user], inv, holdings)
    if isinstance(direct, Allocation):
        assert result.grants[0].entry == head
        assert result.grants[0].allocation == direct
    else:
        assert all(g.entry != head for g in result.grants)

    # Every entry is accounted for once, at its place in the order.
    items: list[Grant | Waiting] = [*result.grants, *result.waiting]
    placed = sorted(items, key=lambda item: item.position)
    assert [item.entry for item in placed] == ordered

    # Grants are exclusive, on free devices, within quota and policy, one after another.
    state = list(holdings)
    for g in result.grants:
        check_allocation(g.allocation, g.entry.request, quotas_by_user[g.entry.user], inv)
        state.append(g.allocation.as_holding(f"q{g.entry.id}", g.entry.user))
        check_state(state, quotas_by_user)

    # Reservation: no grant takes a device an earlier capacity-waiter could use and afford.
    for g in result.grants:
        taken = set(g.allocation.uuids)
        for w in result.waiting:
            if w.position > g.position or w.why is not WaitReason.CAPACITY:
                continue
            quota = quotas_by_user[w.entry.user]
            grants_before_w = [
                x.allocation.as_holding("x", x.entry.user)
                for x in result.grants
                if x.position < w.position
            ]
            spent = user_equivalents([*holdings, *grants_before_w], w.entry.user)
            limit = quota.max_gpu_equivalents
            wanted = {
                d.uuid
                for d in usable_devices(w.entry.request, quota, inv)
                if limit is None or d.equivalents <= limit - spent
            }
            assert not taken & wanted, (w.entry, g.entry)


@PROPS
@given(inventories(), user_quotas, entries_strategy, st.randoms(use_true_random=False))
def test_freed_devices_go_to_the_queue_head(
    inv: Inventory,
    quotas_by_user: dict[str, GpuQuota],
    raw: list[tuple[str, GpuRequest, int, int]],
    rnd: random.Random,
) -> None:
    """Start with every device busy and free them one at a time, in random order. While
    the head waits for capacity no later entry gets a device the head could use; as soon
    as the head fits, the pass grants it first."""
    busy = [
        Holding(f"x{k}", "outsider", (d.uuid,), d.equivalents)
        for k, d in enumerate(allocatable_devices(inv))
    ]
    rnd.shuffle(busy)
    entries = make_entries(raw)
    now = T0 + timedelta(hours=12)
    head = order(entries, now)[0]
    quota = quotas_by_user[head.user]
    limit = quota.max_gpu_equivalents
    head_could_use = {
        d.uuid
        for d in usable_devices(head.request, quota, inv)
        if limit is None or d.equivalents <= limit
    }
    while True:
        result = plan(entries, now, inv, busy, quotas_by_user)
        fits = isinstance(decide(head.request, head.user, quota, inv, busy), Allocation)
        if fits:
            assert result.grants[0].entry == head
            return
        status = result.status(head.id)
        assert isinstance(status, Waiting)
        if status.why is WaitReason.CAPACITY:
            for g in result.grants:
                assert not set(g.allocation.uuids) & head_could_use, (head, g.entry)
        if not busy:
            assert status.why is not WaitReason.CAPACITY  # an empty machine: never "capacity"
            return
        busy.pop()


@PROPS
@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 5000)), min_size=2, max_size=8),
    st.integers(1, 120),
    st.integers(1, 10),
    st.integers(0, 5000),
)
def test_aging_lifts_every_entry_over_all_later_arrivals(
    raw: list[tuple[int, int]], interval_min: int, step: int, extra_min: int
) -> None:
    """An entry ranks ahead of every entry that came at least the overtake window later,
    whatever their priorities: aging eventually brings it to the front."""
    aging = Aging(interval=timedelta(minutes=interval_min), step=step)
    entries = [
        QueueEntry(k, "u", GpuRequest.gpus(1), "{}", priority, T0 + timedelta(minutes=at))
        for k, (priority, at) in enumerate(raw)
    ]
    now = max(e.enqueued_at for e in entries) + timedelta(minutes=extra_min)
    rank = {e.id: i for i, e in enumerate(order(entries, now, aging))}
    for e in entries:
        for f in entries:
            window = aging.overtake_window(f.priority - e.priority)
            assert window is not None
            if f.enqueued_at - e.enqueued_at >= max(window, timedelta(microseconds=1)):
                assert rank[e.id] < rank[f.id]


@PROPS
@given(st.integers(0, 100), st.integers(0, 100), st.integers(1, 60), st.integers(1, 10))
def test_a_waiting_entry_reaches_the_front_of_later_arrivals(
    low: int, high: int, interval_min: int, step: int
) -> None:
    """However low its priority, an entry waiting long enough is first among newcomers."""
    aging = Aging(interval=timedelta(minutes=interval_min), step=step)
    old = QueueEntry(0, "u", GpuRequest.gpus(1), "{}", low, T0)
    window = aging.overtake_window(high - low) or timedelta(0)
    now = T0 + window + timedelta(minutes=interval_min)
    newcomers = [
        QueueEntry(k, "v", GpuRequest.gpus(1), "{}", high, now - timedelta(minutes=m))
        for k, m in enumerate((0, 1, interval_min // 2), start=1)
        if now - timedelta(minutes=m) >= T0 + window
    ]
    assert order([*newcomers, old], now, aging)[0] == old
