"""Property-based tests of the allocator and the queue, against an independent model.

Inventories mix whole GPUs, MIG-partitioned 7-slice and 4-slice GPUs with random valid
profiles, MIG-enabled GPUs with no instances, and (as a backend bug) MIG-enabled GPUs
also listed whole. Random users with random quotas send random requests; every grant is
applied as a holding and random holdings are freed.

Every decision is compared, quantity by quantity, with :mod:`tests.unit.domain.gpu_model`: which
devices (exactly), what they are charged (exact fractions from slices over the GPU's total
slices), the quota refusal's held/asked/allowed, the no-fit counts, and the queue's order
(priority + step * floor(wait / interval)), grants and reasons. The model enumerates
placements and counts charges itself; it shares no helper with the implementation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.domain.allocation import Allocation, NoFit, Refusal, decide
from ds01.domain.devices import Device, Gpu, Inventory
from ds01.domain.gpu_request import GpuQuota, GpuRequest, Holding
from ds01.domain.queue import Aging, Grant, QueueEntry, Waiting, order, plan
from tests.unit.domain import gpu_model as model
from tests.unit.domain.test_allocation import (
    A30_PROFILES,
    A100_PROFILES,
    T0,
    full_gpu,
    inventory,
    mig_gpu,
)

PROPS = settings(max_examples=100, deadline=None)
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


# Limits that sit exactly on sums of device weights (k/7, k/4, k/28) come up often, so the
# quota's "held + asked > limit" boundary is hit on, just below and just above.
BOUNDARY_LIMITS = sorted(
    {Fraction(k, 7) for k in range(15)}
    | {Fraction(k, 4) for k in range(9)}
    | {Fraction(k, 28) for k in (1, 11, 15, 29)}
)
quotas = st.builds(
    GpuQuota,
    max_gpu_equivalents=st.one_of(
        st.none(),
        st.sampled_from(BOUNDARY_LIMITS),
        st.fractions(min_value=Fraction(1, 7), max_value=4, max_denominator=28),
    ),
    max_gpus_per_container=st.sampled_from([None, 3, None, 2, 1, 0]),
    allow_full_gpu=st.sampled_from([True, False, True]),
    allowed_mig_profiles=st.one_of(
        st.none(),
        st.none(),
        st.just(()),
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
    max_size=30,
)

# --------------------------------------------------------------------------- comparison


def as_holdings(held: list[model.ModelHolding]) -> list[Holding]:
    """The model's holdings as the implementation reads them (charge from the model)."""
    return [Holding(h.container, h.user, h.uuids, h.charge) for h in held]


def same(decision: object, expected: model.Outcome) -> None:
    """The implementation's decision equals the model's, quantity by quantity."""
    if isinstance(decision, Allocation):
        assert expected.kind == "alloc", (decision, expected)
        assert tuple(sorted(decision.uuids)) == expected.devices
        assert decision.equivalents == expected.charge
        # Handed to Docker and CUDA by GPU index, then UUID.
        assert [(d.gpu_index, d.uuid) for d in decision.devices] == sorted(
            (d.gpu_index, d.uuid) for d in decision.devices
        )
        assert decision.cuda_visible_devices == ",".join(decision.uuids)
        return
    if isinstance(decision, Refusal):
        assert decision.reason.value == expected.kind, (decision, expected)
        if expected.kind == "gpu_quota_exceeded":
            assert (decision.held, decision.asked, decision.allowed) == (
                expected.held,
                expected.asked,
                expected.allowed,
            )
            assert decision.to_error().exit_code == 3
        return
    assert isinstance(decision, NoFit), decision
    assert decision.reason.value == expected.kind, (decision, expected)
    assert (decision.usable, decision.free) == (expected.usable, expected.free)
    assert decision.to_error().exit_code == (4 if expected.kind == "capacity" else 2)


def run(
    inv: Inventory, quotas_by_user: dict[str, GpuQuota], ops: list[Ask | Free]
) -> list[model.ModelHolding]:
    """Apply the operations, comparing every decision with the model and checking that no
    device is held twice and nobody is charged above their limit (the model's count)."""
    held: list[model.ModelHolding] = []
    for k, op in enumerate(ops):
        if isinstance(op, Free):
            if held:
                held.pop(op.pick % len(held))
            continue
        quota = quotas_by_user[op.user]
        holdings = as_holdings(held)
        decision = decide(op.request, op.user, quota, inv, holdings)
        expected = model.decide(op.request, op.user, quota, inv, held)
        same(decision, expected)
        # Blind to the order holdings were read back in.
        assert decide(op.request, op.user, quota, inv, holdings[::-1]) == decision
        if expected.kind == "alloc" and expected.devices:
            held.append(model.ModelHolding(f"c{k}", op.user, expected.devices, expected.charge))
        uuids = [u for h in held for u in h.uuids]
        assert len(uuids) == len(set(uuids)), "a device is held twice"
        for user, q in quotas_by_user.items():
            limit = q.max_gpu_equivalents
            assert limit is None or model.charged(held, user) <= limit
    return held


# --------------------------------------------------------------------------- allocator


@PROPS
@given(inventories(), user_quotas, operations)
def test_every_decision_matches_the_model(
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
    holdings = as_holdings(run(inv, quotas_by_user, ops))
    expected = decide(request, user, quotas_by_user[user], inv, holdings)
    devices = list(inv.devices)
    rnd.shuffle(devices)
    rnd.shuffle(holdings)
    shuffled = Inventory(inv.gpus, tuple(devices), inv.source)
    assert decide(request, user, quotas_by_user[user], shuffled, holdings) == expected


@PROPS
@given(inventories(), user_quotas, st.sampled_from(USERS), requests)
def test_an_empty_machine_never_says_capacity(
    inv: Inventory, quotas_by_user: dict[str, GpuQuota], user: str, request: GpuRequest
) -> None:
    """On an empty machine a request fits, is refused, or never fits: never 'capacity'."""
    decision = decide(request, user, quotas_by_user[user], inv, [])
    same(decision, model.decide(request, user, quotas_by_user[user], inv, []))
    assert not (isinstance(decision, NoFit) and decision.reason.value == "capacity")


# --------------------------------------------------------------------------- queue

entries_strategy = st.lists(
    st.tuples(st.sampled_from(USERS), requests, st.integers(0, 100), st.integers(0, 600)),
    min_size=1,
    max_size=8,
)
agings = st.builds(
    lambda minutes, step: (timedelta(minutes=minutes), step),
    st.sampled_from([1, 7, 30, 60, 90]),
    st.integers(0, 5),
)


def make_entries(raw: list[tuple[str, GpuRequest, int, int]]) -> list[QueueEntry]:
    return [
        QueueEntry(k, user, request, "{}", priority, T0 + timedelta(minutes=at))
        for k, (user, request, priority, at) in enumerate(raw)
    ]


@PROPS
@given(
    inventories(),
    user_quotas,
    operations,
    st.integers(0, 1000),
    entries_strategy,
    agings,
    st.integers(0, 24 * 60),
)
def test_a_queue_pass_matches_the_model(  # noqa: PLR0917 (hypothesis passes positionally)
    inv: Inventory,
    quotas_by_user: dict[str, GpuQuota],
    ops: list[Ask | Free],
    freed: int,
    raw: list[tuple[str, GpuRequest, int, int]],
    aging: tuple[timedelta, int],
    later: int,
) -> None:
    """Order, positions, effective priorities, the exact devices granted and why each
    other entry waits, all as the model's pass (with reservation) has them."""
    held = run(inv, quotas_by_user, ops)
    if held:
        held.pop(freed % len(held))  # a device frees up
    entries = make_entries(raw)
    now = T0 + timedelta(minutes=later)
    interval, step = aging
    result = plan(entries, now, inv, as_holdings(held), quotas_by_user, aging=Aging(interval, step))
    expected = model.queue_pass(
        entries, now, inv, held, quotas_by_user, interval=interval, step=step
    )
    items: list[Grant | Waiting] = sorted(
        [*result.grants, *result.waiting], key=lambda item: item.position
    )
    got = [
        model.PlanRow(
            item.entry.id,
            item.position,
            tuple(sorted(item.allocation.uuids)) if isinstance(item, Grant) else None,
            item.why.value if isinstance(item, Waiting) else None,
            item.effective_priority if isinstance(item, Waiting) else expected_row.effective,
        )
        for item, expected_row in zip(items, expected, strict=True)
    ]
    assert got == expected
    assert [e.id for e in order(entries, now, Aging(interval, step))] == [
        r.entry_id for r in expected
    ]


@PROPS
@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 5000)), min_size=2, max_size=8),
    st.integers(1, 120),
    st.integers(0, 10),
    st.integers(-60, 5000),
)
def test_order_is_priority_plus_step_per_whole_interval(
    raw: list[tuple[int, int]], interval_min: int, step: int, extra_min: int
) -> None:
    """The order is by priority + step * floor(wait / interval), then enqueue time, then
    id; checked on waits that are exact multiples of the interval (the boundary)."""
    aging = Aging(interval=timedelta(minutes=interval_min), step=step)
    entries = [
        QueueEntry(k, "u", GpuRequest.gpus(1), "{}", priority, T0 + timedelta(minutes=at))
        for k, (priority, at) in enumerate(raw)
    ]
    for now in (
        T0 + timedelta(minutes=extra_min),
        entries[0].enqueued_at + aging.interval * 3,  # exactly three intervals
        entries[0].enqueued_at + aging.interval * 3 - timedelta(microseconds=1),
    ):
        interval = timedelta(minutes=interval_min)
        assert order(entries, now, aging) == model.queue_order(entries, now, interval, step)


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
    """An entry ranks ahead of every entry that came at least ceil(gap / step) intervals
    later, whatever their priorities: aging eventually brings it to the front."""
    interval = timedelta(minutes=interval_min)
    aging = Aging(interval=interval, step=step)
    entries = [
        QueueEntry(k, "u", GpuRequest.gpus(1), "{}", priority, T0 + timedelta(minutes=at))
        for k, (priority, at) in enumerate(raw)
    ]
    now = max(e.enqueued_at for e in entries) + timedelta(minutes=extra_min)
    rank = {e.id: i for i, e in enumerate(order(entries, now, aging))}
    for e in entries:
        for f in entries:
            gap = f.priority - e.priority
            window = interval * max(0, -(-gap // step))  # ceil(gap / step) intervals
            assert aging.overtake_window(gap) == window
            if f.enqueued_at - e.enqueued_at >= max(window, timedelta(microseconds=1)):
                assert rank[e.id] < rank[f.id]
