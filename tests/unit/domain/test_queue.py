"""The GPU waiting queue: ordering with aging, and what one pass grants."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest

from ds01.domain.allocation import Allocation, decide
from ds01.domain.gpu_request import GpuQuota, GpuRequest, Holding
from ds01.domain.queue import (
    DEFAULT_AGING,
    Aging,
    Grant,
    QueueEntry,
    QueueState,
    Waiting,
    WaitReason,
    effective_priority,
    grant_next,
    order,
    plan,
    position,
    why_waiting,
)
from ds01.errors import ConfigError
from tests.unit.domain.test_allocation import T0, full_gpu, holding, inventory, mig_gpu

ANY = GpuQuota()
MIN = timedelta(minutes=1)


def entry(
    id_: int,
    user: str = "u",
    *,
    priority: int = 10,
    at: int = 0,
    request: GpuRequest | None = None,
    state: QueueState = QueueState.WAITING,
) -> QueueEntry:
    """Queue entry ``id_`` enqueued ``at`` minutes after T0."""
    return QueueEntry(
        id=id_,
        user=user,
        request=request or GpuRequest.gpus(1),
        spec=f'{{"name": "c{id_}"}}',
        priority=priority,
        enqueued_at=T0 + at * MIN,
        state=state,
    )


# --------------------------------------------------------------------------- ordering


def test_order_priority_then_fifo_then_id() -> None:
    a = entry(1, priority=10, at=5)
    b = entry(2, priority=50, at=9)
    c = entry(3, priority=10, at=1)
    d = entry(4, priority=10, at=5)
    gone = entry(5, priority=99, state=QueueState.CANCELLED)
    assert [e.id for e in order([a, b, c, d, gone], T0 + 10 * MIN)] == [2, 3, 1, 4]
    assert position(c, [a, b, c, d, gone], T0 + 10 * MIN) == 2
    assert position(gone, [a, b, c, d, gone], T0 + 10 * MIN) is None


def test_effective_priority_ages_by_whole_intervals() -> None:
    aging = Aging(interval=timedelta(minutes=30), step=2)
    e = entry(1, priority=10)
    assert effective_priority(e, T0, aging) == 10
    assert effective_priority(e, T0 + 29 * MIN, aging) == 10
    assert effective_priority(e, T0 + 30 * MIN, aging) == 12
    assert effective_priority(e, T0 + 95 * MIN, aging) == 16
    assert effective_priority(e, T0 - 60 * MIN, aging) == 10  # clock skew earns nothing
    assert Aging(timedelta(minutes=30), 1) == DEFAULT_AGING


def test_aging_lifts_an_old_low_priority_entry_over_newcomers() -> None:
    aging = Aging(interval=timedelta(minutes=30), step=1)
    old = entry(1, priority=10, at=0)
    assert aging.overtake_window(40) == timedelta(hours=20)
    newcomer = entry(2, priority=50, at=60)
    # Early on, the high-priority newcomer goes first...
    assert order([old, newcomer], T0 + 120 * MIN, aging)[0] is newcomer
    # ...but one that arrives a full overtake window later never does.
    late = entry(3, priority=50, at=20 * 60)
    for minutes in range(20 * 60, 30 * 60, 7):
        assert order([old, late], T0 + minutes * MIN, aging)[0] is old


def test_aging_settings_are_validated() -> None:
    with pytest.raises(
        ConfigError, match=r"^The queue aging interval must be positive, not 0:00:00\.$"
    ):
        Aging(interval=timedelta(0))
    with pytest.raises(ConfigError, match=r"^The queue aging step must not be negative, not -1\.$"):
        Aging(step=-1)
    off = Aging(step=0)
    assert off.overtake_window(5) is None
    assert off.overtake_window(0) == timedelta(0)


# --------------------------------------------------------------------------- passes


def test_head_is_granted_when_it_fits() -> None:
    inv = inventory(full_gpu(0), full_gpu(1))
    quotas = {"a": ANY, "b": ANY}
    entries = [entry(1, "a", at=0), entry(2, "b", at=1)]
    busy = [holding("x", "GPU-0000"), holding("y", "GPU-0001")]
    assert grant_next(entries, T0, inv, busy, quotas) == []
    freed = busy[1:]  # GPU 1 is freed
    grants = grant_next(entries, T0, inv, freed, quotas)
    assert [(e.id, a.uuids) for e, a in grants] == [(1, ("GPU-0000",))]


def test_one_pass_grants_several_with_distinct_devices_and_cumulative_quota() -> None:
    inv = inventory(full_gpu(0), full_gpu(1), full_gpu(2), full_gpu(3))
    quotas = {"a": GpuQuota(max_gpu_equivalents=Fraction(2)), "b": ANY}
    entries = [entry(1, "a", at=0), entry(2, "a", at=1), entry(3, "a", at=2), entry(4, "b", at=3)]
    result = plan(entries, T0, inv, [], quotas)
    assert [(g.entry.id, g.allocation.uuids) for g in result.grants] == [
        (1, ("GPU-0000",)),
        (2, ("GPU-0001",)),
        (4, ("GPU-0002",)),
    ]
    (third,) = result.waiting
    assert (third.entry.id, third.why, third.position) == (3, WaitReason.QUOTA, 3)
    assert why_waiting(entries[2], result) is WaitReason.QUOTA
    assert why_waiting(entries[0], result) is None
    assert isinstance(result.status(1), Grant)
    assert result.status(99) is None


def test_capacity_waiting_head_reserves_what_it_could_use() -> None:
    inv = inventory(full_gpu(0), full_gpu(1), mig_gpu(2, ["1g.5gb", "3g.20gb"]))
    quotas = {"big": ANY, "small": ANY, "mig": ANY}
    entries = [
        entry(1, "big", request=GpuRequest.gpus(2), at=0),
        entry(2, "small", request=GpuRequest.gpus(1), at=1),
        entry(3, "mig", request=GpuRequest.mig("3g.20gb"), at=2),
    ]
    # GPU 0 and the 1g instance are busy: free are GPU 1 and the 3g instance.
    busy = [holding("x", "GPU-0000"), holding("y", "MIG-02-00", eq=Fraction(1, 7))]
    result = plan(entries, T0, inv, busy, quotas)
    # The head (2 devices) cannot fit: two whole GPUs or two MIG instances are not free.
    # It reserves GPU 1 and the 3g instance, so entry 2 (1 device) may not take them...
    waiting = {w.entry.id: w.why for w in result.waiting}
    assert waiting == {1: WaitReason.CAPACITY, 2: WaitReason.CAPACITY, 3: WaitReason.CAPACITY}
    assert result.grants == ()
    # ...but without the head, entry 2 gets GPU 1 and entry 3 the 3g instance.
    alone = plan(entries[1:], T0, inv, busy, quotas)
    assert [(g.entry.id, g.allocation.uuids) for g in alone.grants] == [
        (2, ("GPU-0001",)),
        (3, ("MIG-02-01",)),
    ]


def test_a_later_entry_may_pass_using_what_the_head_cannot_use() -> None:
    inv = inventory(full_gpu(0), full_gpu(1), mig_gpu(2, ["1g.5gb", "3g.20gb"]))
    quotas = {"big": GpuQuota(allow_full_gpu=True, allowed_mig_profiles=()), "mig": ANY}
    entries = [
        entry(1, "big", request=GpuRequest.gpus(2), at=0),
        entry(2, "mig", request=GpuRequest.mig("1g.5gb"), at=1),
    ]
    result = plan(entries, T0, inv, [holding("x", "GPU-0000")], quotas)
    assert [(g.entry.id, g.allocation.uuids) for g in result.grants] == [(2, ("MIG-02-00",))]
    assert result.waiting[0].why is WaitReason.CAPACITY


def test_quota_waiting_head_blocks_nobody() -> None:
    inv = inventory(full_gpu(0), full_gpu(1))
    quotas = {"hog": GpuQuota(max_gpu_equivalents=Fraction(1)), "b": ANY}
    entries = [entry(1, "hog", priority=90), entry(2, "b", priority=10)]
    result = plan(entries, T0, inv, [holding("hog", "GPU-0000")], quotas)
    assert [g.entry.id for g in result.grants] == [2]
    assert result.waiting[0].why is WaitReason.QUOTA
    assert "limit is 1" in result.waiting[0].detail


def test_policy_and_never_reasons() -> None:
    inv = inventory(full_gpu(0))
    quotas = {"a": GpuQuota(max_gpus_per_container=1), "b": ANY}
    entries = [entry(1, "a", request=GpuRequest.gpus(2)), entry(2, "b", request=GpuRequest.gpus(2))]
    result = plan(entries, T0, inv, [], quotas)
    assert {w.entry.id: w.why for w in result.waiting} == {
        1: WaitReason.POLICY,
        2: WaitReason.NEVER,
    }


def test_missing_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        plan([entry(1, "ghost")], T0, inventory(full_gpu(0)), [], {})
    assert "ghost" in exc.value.message


def test_cpu_only_entries_are_granted_at_once() -> None:
    inv = inventory(full_gpu(0))
    grants = grant_next(
        [entry(1, request=GpuRequest.cpu_only())], T0, inv, [holding("x", "GPU-0000")], {"u": ANY}
    )
    assert [(e.id, a.devices) for e, a in grants] == [(1, ())]


def test_56_devices_64_queued_requests() -> None:
    inv = inventory(*(mig_gpu(i, ["1g.5gb"] * 7) for i in range(8)))
    quotas = {f"user{n:02d}": GpuQuota(max_gpu_equivalents=Fraction(4)) for n in range(16)}
    entries = [entry(k, f"user{k % 16:02d}", at=k) for k in range(64)]
    result = plan(entries, T0 + 64 * MIN, inv, [], quotas)
    assert len(result.grants) == 56
    uuids = [u for g in result.grants for u in g.allocation.uuids]
    assert len(set(uuids)) == 56
    assert [g.entry.id for g in result.grants] == list(range(56))  # FIFO
    assert [w.entry.id for w in result.waiting] == list(range(56, 64))
    assert all(w.why is WaitReason.CAPACITY for w in result.waiting)
    assert [w.position for w in result.waiting] == list(range(57, 65))


def _minute_low_is_granted(aging: Aging) -> int | None:
    """One GPU, a priority-0 entry, and a priority-50 newcomer every 10 minutes, each
    holding the GPU for 20 minutes once granted: when (if ever) is the old one served?"""
    inv = inventory(full_gpu(0))
    quotas = {"low": ANY, "high": ANY}
    queue: list[QueueEntry] = [entry(0, "low", priority=0, at=0)]
    running: list[tuple[Holding, int]] = []  # holding, minute it ends
    granted_low_at: int | None = None
    for minute in range(0, 24 * 60, 10):
        queue.append(entry(minute + 1, "high", priority=50, at=minute))
        running = [(h, end) for h, end in running if end > minute]
        now = T0 + minute * MIN
        for e, alloc in grant_next(queue, now, inv, [h for h, _ in running], quotas, aging=aging):
            queue.remove(e)
            running.append((alloc.as_holding(f"c{e.id}", e.user), minute + 20))
            if e.user == "low":
                granted_low_at = minute
        if granted_low_at is not None:
            break
    return granted_low_at


def test_nobody_starves_under_a_stream_of_higher_priority_requests() -> None:
    aging = Aging(interval=timedelta(minutes=30), step=5)
    granted_low_at = _minute_low_is_granted(aging)
    assert granted_low_at is not None
    # Newcomers arriving after the overtake window (5 h) cannot pass it; those before it
    # each hold the GPU 20 minutes, so it is served within a bounded time.
    window = aging.overtake_window(50)
    assert window == timedelta(hours=5)
    assert granted_low_at <= 5 * 60 + 30 * 20
    # Without aging the same stream starves it for the whole simulated day.
    assert _minute_low_is_granted(Aging(step=0)) is None


def test_waiting_status_reports_effective_priority() -> None:
    inv = inventory(full_gpu(0))
    e = entry(1, priority=10, at=0)
    result = plan([e], T0 + timedelta(hours=2), inv, [holding("x", "GPU-0000")], {"u": ANY})
    status = result.status(1)
    assert isinstance(status, Waiting)
    assert status.effective_priority == 14
    assert status.detail.startswith("No free GPU fits 1 GPU now")


def test_grant_matches_a_direct_decision_for_the_head() -> None:
    inv = inventory(mig_gpu(0, ["1g.5gb", "2g.10gb"]), full_gpu(1))
    head = entry(1, "a", request=GpuRequest.mig("2g.10gb"))
    direct = decide(head.request, "a", ANY, inv, [])
    assert isinstance(direct, Allocation)
    assert grant_next([head, entry(2, "b", at=3)], T0, inv, [], {"a": ANY, "b": ANY})[0] == (
        head,
        direct,
    )
