"""Whole lifecycle decisions written out: the state stored for the next pass, every action
with its words and numbers, and the deadlines shown in status, for a container created
and never started, stopped (GPU hold, container hold, no stop time), being removed,
idle to its first warning, and at its first runtime warning."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ds01.domain.containers import ContainerState
from ds01.domain.idle import Activity, Assessment, LifecycleState
from ds01.domain.lifecycle import (
    ContainerPolicy,
    Decision,
    LimitKind,
    Note,
    ReleaseGpu,
    Remove,
    RemoveReason,
    Warn,
    decide,
)
from tests.unit.domain.test_lifecycle import GPU, GPU_BUSY, HOUR, MIG, MIN, QUIET, T0, running

P = ContainerPolicy()


def test_created_old() -> None:
    """A container created 31 min ago and never started is removed."""
    decision = decide(
        running(state=ContainerState.CREATED, started_at=None, created_at=T0 - 31 * MIN),
        None,
        P,
        LifecycleState(),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=None,
            idle_since=None,
            sent=frozenset(),
            keep_alive_seen=None,
            counters=None,
        ),
        actions=(
            Remove(
                reason=RemoveReason.NEVER_STARTED, detail="created 31 min ago and never started"
            ),
        ),
        assessment=None,
        idle=False,
        idle_deadline=None,
        runtime_deadline=None,
    )


def test_created_young() -> None:
    """One second short of the 30 min limit it stays."""
    decision = decide(
        running(
            state=ContainerState.CREATED,
            started_at=None,
            created_at=T0 - 30 * MIN + timedelta(seconds=1),
        ),
        None,
        P,
        LifecycleState(),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=None,
            idle_since=None,
            sent=frozenset(),
            keep_alive_seen=None,
            counters=None,
        ),
        actions=(),
        assessment=None,
        idle=False,
        idle_deadline=None,
        runtime_deadline=None,
    )


def test_stopped_gpu() -> None:
    """Stopped 20 min: its GPUs are released (held 15 min), the container kept (30 min);
    idle records end, runtime warnings stay sent."""
    decision = decide(
        running(
            state=ContainerState.EXITED,
            started_at=T0 - 2 * HOUR,
            finished_at=T0 - 20 * MIN,
            devices=GPU + MIG,
        ),
        None,
        P,
        LifecycleState(
            run_started_at=T0 - 2 * HOUR,
            idle_since=T0 - HOUR,
            sent=frozenset({"idle-80", "runtime-75"}),
        ),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=datetime(2025, 3, 3, 7, 0, tzinfo=UTC),
            idle_since=None,
            sent=frozenset({"runtime-75"}),
            keep_alive_seen=None,
            counters=None,
        ),
        actions=(
            ReleaseGpu(
                reason="stopped 20 min ago; GPUs are held 15 min after a stop",
                devices=("GPU-1111", "MIG-2222"),
                stopped_for=timedelta(seconds=1200),
            ),
        ),
        assessment=None,
        idle=False,
        idle_deadline=None,
        runtime_deadline=None,
    )


def test_stopped_old() -> None:
    """Stopped 31 min: removed."""
    decision = decide(
        running(
            state=ContainerState.EXITED,
            started_at=T0 - 2 * HOUR,
            finished_at=T0 - 31 * MIN,
            devices=GPU + MIG,
        ),
        None,
        P,
        LifecycleState(
            run_started_at=T0 - 2 * HOUR,
            idle_since=T0 - HOUR,
            sent=frozenset({"idle-80", "runtime-75"}),
        ),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=datetime(2025, 3, 3, 7, 0, tzinfo=UTC),
            idle_since=None,
            sent=frozenset({"runtime-75"}),
            keep_alive_seen=None,
            counters=None,
        ),
        actions=(
            Remove(
                reason=RemoveReason.HOLD_EXPIRED,
                detail="stopped 31 min ago; stopped containers are kept 30 min",
            ),
        ),
        assessment=None,
        idle=False,
        idle_deadline=None,
        runtime_deadline=None,
    )


def test_stopped_undated() -> None:
    """No stop time: a note, once, and nothing removed."""
    decision = decide(
        running(state=ContainerState.EXITED, started_at=T0 - 2 * HOUR, finished_at=None),
        None,
        P,
        LifecycleState(run_started_at=T0 - 2 * HOUR),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=datetime(2025, 3, 3, 7, 0, tzinfo=UTC),
            idle_since=None,
            sent=frozenset({"note-no-finish-time"}),
            keep_alive_seen=None,
            counters=None,
        ),
        actions=(
            Note(
                key="note-no-finish-time",
                message=(
                    "Docker reports no time at which this container stopped, so the hold "
                    "rules cannot apply to it; remove it yourself when you no longer need it."
                ),
            ),
        ),
        assessment=None,
        idle=False,
        idle_deadline=None,
        runtime_deadline=None,
    )


def test_removing() -> None:
    """Docker is removing it: nothing to do, a fresh state for the run."""
    decision = decide(
        running(state=ContainerState.REMOVING),
        None,
        P,
        LifecycleState(),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=datetime(2025, 3, 3, 8, 59, tzinfo=UTC),
            idle_since=None,
            sent=frozenset(),
            keep_alive_seen=None,
            counters=None,
        ),
        actions=(),
        assessment=None,
        idle=False,
        idle_deadline=None,
        runtime_deadline=None,
    )


def test_live_idle_warn() -> None:
    """Quiet for 25 of 30 min: the 80 % warning, 5 minutes left."""
    decision = decide(
        running(started_at=T0 - HOUR),
        QUIET(T0 - MIN, T0),
        P,
        LifecycleState(run_started_at=T0 - HOUR, idle_since=T0 - 25 * MIN),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=datetime(2025, 3, 3, 8, 0, tzinfo=UTC),
            idle_since=datetime(2025, 3, 3, 8, 35, tzinfo=UTC),
            sent=frozenset({"idle-80"}),
            keep_alive_seen=None,
            counters=None,
        ),
        actions=(
            Warn(
                kind=LimitKind.IDLE,
                percent=80,
                deadline=datetime(2025, 3, 3, 9, 5, tzinfo=UTC),
                minutes_left=5,
                elapsed=timedelta(seconds=1500),
                limit=timedelta(seconds=1800),
                reason=(
                    "no GPU utilization, CPU use or network traffic above the idle "
                    "thresholds for 25 min"
                ),
                final=False,
                shortened_by_busy=False,
                keep_alive_until=None,
            ),
        ),
        assessment=Assessment(activity=Activity.QUIET, busy_signals=(), unreported=()),
        idle=True,
        idle_deadline=datetime(2025, 3, 3, 9, 5, tzinfo=UTC),
        runtime_deadline=datetime(2025, 3, 4, 8, 0, tzinfo=UTC),
    )


def test_keepalive_future() -> None:
    """A keep-alive dated in the future is recorded; the idle deadline is keep_alive_max away."""
    decision = decide(
        running(started_at=T0 - HOUR),
        replace(QUIET(T0 - MIN, T0), keep_alive_mtime=T0 + MIN),
        P,
        LifecycleState(run_started_at=T0 - HOUR),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=datetime(2025, 3, 3, 8, 0, tzinfo=UTC),
            idle_since=datetime(2025, 3, 3, 8, 59, tzinfo=UTC),
            sent=frozenset(),
            keep_alive_seen=datetime(2025, 3, 3, 9, 1, tzinfo=UTC),
            counters=None,
        ),
        actions=(),
        assessment=Assessment(activity=Activity.QUIET, busy_signals=(), unreported=()),
        idle=False,
        idle_deadline=datetime(2025, 3, 4, 9, 0, tzinfo=UTC),
        runtime_deadline=datetime(2025, 3, 4, 8, 0, tzinfo=UTC),
    )


def test_runtime_warn() -> None:
    """Busy, 19 h into a 24 h limit: the 75 % runtime warning, 300 minutes left."""
    decision = decide(
        running(started_at=T0 - 19 * HOUR),
        GPU_BUSY(T0 - MIN, T0),
        P,
        LifecycleState(run_started_at=T0 - 19 * HOUR),
        now=T0,
    )
    assert decision == Decision(
        state=LifecycleState(
            run_started_at=datetime(2025, 3, 2, 14, 0, tzinfo=UTC),
            idle_since=None,
            sent=frozenset({"runtime-75"}),
            keep_alive_seen=None,
            counters=None,
        ),
        actions=(
            Warn(
                kind=LimitKind.RUNTIME,
                percent=75,
                deadline=datetime(2025, 3, 3, 14, 0, tzinfo=UTC),
                minutes_left=300,
                elapsed=timedelta(seconds=68400),
                limit=timedelta(days=1),
                reason="running for 19 h of a 24 h limit",
                final=False,
                shortened_by_busy=False,
                keep_alive_until=None,
            ),
        ),
        assessment=Assessment(activity=Activity.BUSY, busy_signals=("gpu",), unreported=()),
        idle=False,
        idle_deadline=None,
        runtime_deadline=datetime(2025, 3, 3, 14, 0, tzinfo=UTC),
    )
