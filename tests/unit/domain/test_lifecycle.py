"""The lifecycle decision, driven by an injected clock (plain datetimes, no sleeping)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.domain.idle import NOT_BUSY, Activity, Busy, Sample
from ds01.domain.lifecycle import (
    Action,
    ContainerFacts,
    ContainerPolicy,
    ContainerState,
    Decision,
    Exempted,
    Exemption,
    HeldDevice,
    LifecycleState,
    LimitKind,
    Note,
    ReleaseGpu,
    Remove,
    RemoveReason,
    Stop,
    Warn,
    decide,
)
from ds01.domain.lifecycle_notices import KEEP_ALIVE_COMMAND, render_notice
from ds01.errors import ConfigError

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
MIB = 1 << 20

GPU = (HeldDevice("GPU-1111"),)
MIG = (HeldDevice("MIG-2222", is_mig=True),)
IDLE_ONLY = ContainerPolicy(max_runtime=None)


def running(devices: tuple[HeldDevice, ...] = GPU, **kw: object) -> ContainerFacts:
    base: dict[str, object] = {
        "name": "thesis._.1001",
        "owner": "alice",
        "state": ContainerState.RUNNING,
        "created_at": T0 - HOUR,
        "started_at": T0 - MIN,
        "devices": devices,
    }
    base.update(kw)
    return ContainerFacts(**base)  # type: ignore[arg-type]


def signals(
    gpu: float | None = 0.0, cpu: float | None = 0.5, net: int | None = 1000
) -> Callable[[datetime, datetime], Sample]:
    """A sample factory with fixed signals over any interval."""

    def make(start: datetime, end: datetime) -> Sample:
        return Sample(
            start=start, end=end, gpu_util_percent=gpu, cpu_percent=cpu, network_bytes=net
        )

    return make


QUIET = signals()
GPU_BUSY = signals(gpu=60.0)
CPU_BUSY = signals(cpu=95.0)
NET_BUSY = signals(net=20 * MIB)


@dataclass
class Pass:
    now: datetime
    decision: Decision

    @property
    def actions(self) -> tuple[Action, ...]:
        return self.decision.actions


@dataclass
class Enforcer:
    """Runs passes like the service would, keeping the state between them.

    ``restart_every`` round-trips the state through JSON before every pass, as a
    restarted ``ds01 enforce`` reading SQLite would.
    """

    container: ContainerFacts
    policy: ContainerPolicy = IDLE_ONLY
    state: LifecycleState = field(default_factory=LifecycleState)
    clock: datetime = T0
    busy: Busy = NOT_BUSY
    restart_every: bool = False
    keep_alive: datetime | None = None
    passes: list[Pass] = field(default_factory=list)

    def step(self, length: timedelta, make: Callable[[datetime, datetime], Sample]) -> Pass:
        start, self.clock = self.clock, self.clock + length
        sample = replace(make(start, self.clock), keep_alive_mtime=self.keep_alive)
        if self.restart_every:
            self.state = LifecycleState.from_json(json.loads(json.dumps(self.state.to_json())))
        decision = decide(
            self.container, sample, self.policy, self.state, now=self.clock, busy=self.busy
        )
        self.state = decision.state
        done = Pass(self.clock, decision)
        self.passes.append(done)
        return done

    def run(
        self, total: timedelta, make: Callable[[datetime, datetime], Sample], every: timedelta = MIN
    ) -> list[Pass]:
        out = []
        end = self.clock + total
        while self.clock < end:
            out.append(self.step(every, make))
        return out

    def actions(self, kind: type | None = None) -> Iterator[tuple[datetime, Action]]:
        for p in self.passes:
            for action in p.actions:
                if kind is None or isinstance(action, kind):
                    yield p.now, action


def warn_times(e: Enforcer) -> list[tuple[str, timedelta]]:
    return [(a.key, now - T0) for now, a in e.actions(Warn) if isinstance(a, Warn)]


def stop_times(e: Enforcer) -> list[timedelta]:
    return [now - T0 for now, _ in e.actions(Stop)]


# --------------------------------------------------------------------------- idle


@pytest.mark.parametrize("busy_signal", [GPU_BUSY, CPU_BUSY, NET_BUSY], ids=["gpu", "cpu", "net"])
def test_each_signal_alone_keeps_a_container_alive(
    busy_signal: Callable[[datetime, datetime], Sample],
) -> None:
    e = Enforcer(running())
    e.run(3 * HOUR, busy_signal)
    assert list(e.actions()) == []
    assert e.state.idle_since is None
    assert e.passes[-1].decision.assessment is not None
    assert e.passes[-1].decision.assessment.activity is Activity.BUSY


def test_quiet_for_the_timeout_warns_at_80_and_95_then_stops_at_100() -> None:
    e = Enforcer(running())
    e.run(40 * MIN, QUIET)
    # Idle since T0 (start of the first quiet interval); 30 min timeout, 1-min passes.
    assert warn_times(e) == [("idle-80", 24 * MIN), ("idle-95", 29 * MIN)]
    assert stop_times(e)[0] == 30 * MIN
    [(_, stop)] = list(e.actions(Stop))[:1]
    assert isinstance(stop, Stop)
    assert stop.kind is LimitKind.IDLE and stop.grace == timedelta(seconds=60) and stop.announce


def test_counts_as_idle_only_after_the_window() -> None:
    e = Enforcer(running())
    passes = e.run(6 * MIN, QUIET)
    flags = [p.decision.idle for p in passes]
    assert flags == [False, False, False, False, True, True]  # window 5 min from T0


def test_activity_resets_the_streak_and_a_later_idle_period_warns_again() -> None:
    e = Enforcer(running())
    e.run(25 * MIN, QUIET)  # warned at 80%
    e.step(MIN, CPU_BUSY)  # T0+26: activity
    assert e.state.idle_since is None
    assert "idle-80" not in e.state.sent
    e.run(40 * MIN, QUIET)
    assert [w for w, _ in warn_times(e)] == ["idle-80", "idle-80", "idle-95"]
    # The new streak starts at the end of the busy interval (T0+26), so it stops at +56.
    assert stop_times(e)[0] == 56 * MIN


def test_warnings_fire_once_each_across_many_passes() -> None:
    e = Enforcer(running(), policy=ContainerPolicy(max_runtime=None, idle_timeout=HOUR))
    e.run(59 * MIN, QUIET, every=timedelta(seconds=20))
    keys = [w for w, _ in warn_times(e)]
    assert keys == ["idle-80", "idle-95"]


def test_a_restarted_enforcer_repeats_no_warning() -> None:
    plain = Enforcer(running())
    plain.run(45 * MIN, QUIET)
    restarted = Enforcer(running(), restart_every=True)
    restarted.run(45 * MIN, QUIET)
    assert [p.actions for p in restarted.passes] == [p.actions for p in plain.passes]
    assert restarted.state == plain.state


def test_timeout_acts_within_one_interval_whatever_the_interval() -> None:
    e = Enforcer(running())
    e.run(60 * MIN, QUIET, every=7 * MIN)
    # Passes at 7, 14, 21, 28, 35: the first at or after 30 min stops it.
    assert stop_times(e)[0] == 35 * MIN


def test_a_pass_that_skips_past_warnings_sends_only_the_stop() -> None:
    state = LifecycleState(run_started_at=T0 - MIN, idle_since=T0)
    sample = QUIET(T0 + 30 * MIN, T0 + 31 * MIN)
    d = decide(running(), sample, IDLE_ONLY, state, now=T0 + 31 * MIN)
    assert [type(a) for a in d.actions] == [Stop]


def test_a_pass_that_skips_the_first_warning_sends_only_the_second() -> None:
    state = LifecycleState(run_started_at=T0 - MIN, idle_since=T0)
    d = decide(running(), QUIET(T0 + 28 * MIN, T0 + 29 * MIN), IDLE_ONLY, state, now=T0 + 29 * MIN)
    [warn] = d.actions
    assert isinstance(warn, Warn) and warn.key == "idle-95" and warn.final
    assert {"idle-80", "idle-95"} <= d.state.sent


def test_a_failed_stop_is_retried_without_a_second_notice() -> None:
    e = Enforcer(running())
    e.run(32 * MIN, QUIET)  # the container keeps running: the stop did not take
    stops = [a for _, a in e.actions(Stop) if isinstance(a, Stop)]
    assert [s.announce for s in stops] == [True, False, False]
    assert render_notice("thesis._.1001", stops[1]) is None


def test_unmeasured_interval_ends_the_streak() -> None:
    e = Enforcer(running())
    e.run(20 * MIN, QUIET)
    e.step(MIN, lambda s, t: Sample(end=t, gpu_util_percent=0.0))  # no baseline
    assert e.state.idle_since is None


def test_cpu_only_containers_are_not_idle_limited() -> None:
    e = Enforcer(running(devices=()), policy=ContainerPolicy())
    e.run(30 * HOUR, QUIET, every=30 * MIN)
    assert list(e.actions()) == []


def test_paused_containers_are_held_to_the_limits() -> None:
    e = Enforcer(running(state=ContainerState.PAUSED))
    e.run(31 * MIN, signals(gpu=0.0, cpu=0.0, net=0))
    assert stop_times(e) == [30 * MIN, 31 * MIN]


# --------------------------------------------------------------------------- MIG


def test_mig_falls_back_to_cpu_and_network_and_says_so_once() -> None:
    e = Enforcer(running(devices=MIG))
    e.run(31 * MIN, signals(gpu=None))
    notes = [a for _, a in e.actions(Note) if isinstance(a, Note)]
    assert len(notes) == 1
    assert notes[0].key == "note-gpu-unreported" and "MIG" in notes[0].message
    assert stop_times(e) == [30 * MIN, 31 * MIN]


def test_mig_container_busy_on_cpu_is_left_alone() -> None:
    e = Enforcer(running(devices=MIG))
    e.run(2 * HOUR, signals(gpu=None, cpu=150.0))
    assert [type(a) for _, a in e.actions()] == [Note]


# --------------------------------------------------------------------------- keep-alive


def test_keep_alive_defers_idle_action_for_at_most_24h_from_the_touch() -> None:
    e = Enforcer(running(), keep_alive=T0 + 10 * MIN)
    e.run(25 * HOUR, QUIET)
    deadline = 10 * MIN + 24 * HOUR
    # Warnings keep their lead time before the deferred deadline (6 and 1.5 min).
    assert warn_times(e) == [("idle-80", deadline - 6 * MIN), ("idle-95", deadline - MIN)]
    assert stop_times(e)[0] == deadline
    first_warn = next(a for _, a in e.actions(Warn) if isinstance(a, Warn))
    assert first_warn.keep_alive_until == T0 + deadline


def test_keep_alive_older_than_24h_is_ignored() -> None:
    e = Enforcer(running(), keep_alive=T0 - 25 * HOUR)
    e.run(31 * MIN, QUIET)
    assert stop_times(e)[0] == 30 * MIN


def test_a_fresh_touch_after_a_warning_means_warnings_come_again() -> None:
    e = Enforcer(running())
    e.run(25 * MIN, QUIET)  # idle-80 sent
    e.keep_alive = e.clock
    e.step(MIN, QUIET)
    assert "idle-80" not in e.state.sent
    e.run(25 * HOUR, QUIET)
    assert [w for w, _ in warn_times(e)] == ["idle-80", "idle-80", "idle-95"]
    assert stop_times(e)[0] == 25 * MIN + 24 * HOUR


def test_keep_alive_far_in_the_future_is_ignored_with_a_note() -> None:
    e = Enforcer(running(), keep_alive=T0 + 400 * 24 * HOUR)
    e.run(31 * MIN, QUIET)
    assert stop_times(e)[0] == 30 * MIN
    assert [a.key for _, a in e.actions(Note) if isinstance(a, Note)] == ["note-keep-alive-future"]


# --------------------------------------------------------------------------- exemptions


def test_idle_exemption_is_honoured_with_one_fyi() -> None:
    exempt = (Exemption(LimitKind.IDLE, "thesis deadline", until=T0 + 48 * HOUR),)
    e = Enforcer(running(exemptions=exempt))
    e.run(3 * HOUR, QUIET)
    assert [type(a) for _, a in e.actions()] == [Exempted]
    [(when, fyi)] = list(e.actions(Exempted))
    assert when - T0 == 24 * MIN  # when a warning would have gone out
    text = render_notice("thesis._.1001", fyi)
    assert text is not None and "thesis deadline" in text and "exempt" in text


def test_expired_exemption_is_ignored() -> None:
    expired = (Exemption(LimitKind.IDLE, "old", until=T0 - HOUR),)
    e = Enforcer(running(exemptions=expired))
    e.run(31 * MIN, QUIET)
    assert stop_times(e)[0] == 30 * MIN
    assert list(e.actions(Exempted)) == []


def test_exemption_that_ends_mid_streak_lets_the_limit_act() -> None:
    ends = (Exemption(LimitKind.IDLE, "until noon", until=T0 + HOUR),)
    e = Enforcer(running(exemptions=ends))
    e.run(61 * MIN, QUIET)
    # Exempt while it was due: no warnings; acted on as soon as the exemption ended.
    assert warn_times(e) == []
    assert stop_times(e)[0] == HOUR


def test_a_runtime_exemption_does_not_cover_idleness() -> None:
    runtime_only = (Exemption(LimitKind.RUNTIME, "long training", until=None),)
    e = Enforcer(running(exemptions=runtime_only))
    e.run(31 * MIN, QUIET)
    assert stop_times(e)[0] == 30 * MIN


# --------------------------------------------------------------------------- runtime


def test_runtime_warns_at_75_and_90_then_stops_at_100() -> None:
    policy = ContainerPolicy(idle_timeout=None, max_runtime=24 * HOUR)
    e = Enforcer(running(started_at=T0), policy=policy)
    e.run(25 * HOUR, GPU_BUSY, every=6 * MIN)
    assert warn_times(e) == [("runtime-75", 18 * HOUR), ("runtime-90", 21 * HOUR + 36 * MIN)]
    assert stop_times(e)[0] == 24 * HOUR
    stop = next(a for _, a in e.actions(Stop) if isinstance(a, Stop))
    assert stop.kind is LimitKind.RUNTIME


def test_runtime_exemption_keeps_it_running() -> None:
    policy = ContainerPolicy(idle_timeout=None, max_runtime=HOUR)
    exempt = (Exemption(LimitKind.RUNTIME, "benchmark", until=None),)
    e = Enforcer(running(started_at=T0, exemptions=exempt), policy=policy)
    e.run(3 * HOUR, GPU_BUSY, every=10 * MIN)
    assert [type(a) for _, a in e.actions()] == [Exempted]


def test_a_new_run_starts_from_a_blank_state() -> None:
    old = LifecycleState(run_started_at=T0 - 5 * HOUR, idle_since=T0, sent=frozenset({"idle-80"}))
    restarted = running(started_at=T0 + MIN)
    d = decide(restarted, GPU_BUSY(T0 + MIN, T0 + 2 * MIN), IDLE_ONLY, old, now=T0 + 2 * MIN)
    assert d.state.run_started_at == T0 + MIN
    assert d.state.sent == frozenset() and d.state.idle_since is None


def test_both_limits_due_gives_one_stop() -> None:
    policy = ContainerPolicy(idle_timeout=30 * MIN, max_runtime=HOUR)
    state = LifecycleState(run_started_at=T0 - HOUR, idle_since=T0 - 40 * MIN)
    d = decide(running(started_at=T0 - HOUR), QUIET(T0 - MIN, T0), policy, state, now=T0)
    stops = [a for a in d.actions if isinstance(a, Stop)]
    assert len(stops) == 1 and stops[0].kind is LimitKind.IDLE  # its deadline came first
    assert not any(isinstance(a, Warn) for a in d.actions)


# --------------------------------------------------------------------------- busy server


def test_busy_server_shortens_the_idle_timeout_and_says_so() -> None:
    e = Enforcer(running(), busy=Busy(0.5, True))
    e.run(16 * MIN, QUIET)
    # 95% of 15 min falls between two passes and the next one is the stop: not sent late.
    assert warn_times(e) == [("idle-80", 12 * MIN)]
    assert stop_times(e)[0] == 15 * MIN
    warn = next(a for _, a in e.actions(Warn) if isinstance(a, Warn))
    assert warn.shortened_by_busy and warn.limit == 15 * MIN
    text = render_notice("thesis._.1001", warn)
    assert text is not None and "busy" in text and "15 min" in text
    stop = next(a for _, a in e.actions(Stop) if isinstance(a, Stop))
    stop_text = render_notice("thesis._.1001", stop)
    assert stop.shortened_by_busy and stop_text is not None and "busy" in stop_text


def test_a_busy_server_never_pushes_the_timeout_below_the_window() -> None:
    e = Enforcer(running(), busy=Busy(0.01, True))
    e.run(6 * MIN, QUIET)
    assert stop_times(e)[0] == 5 * MIN


# --------------------------------------------------------------------------- cleanup


def _stopped(
    devices: tuple[HeldDevice, ...] = GPU, finished_at: datetime | None = T0
) -> ContainerFacts:
    return running(
        devices, state=ContainerState.EXITED, started_at=T0 - HOUR, finished_at=finished_at
    )


def _cleanup(container: ContainerFacts, after: timedelta, policy: ContainerPolicy) -> list[Action]:
    d = decide(container, None, policy, LifecycleState(), now=T0 + after)
    return list(d.actions)


def test_created_but_never_started_is_removed_after_30_min() -> None:
    created = running(state=ContainerState.CREATED, created_at=T0, started_at=None)
    assert _cleanup(created, 29 * MIN, ContainerPolicy()) == []
    [remove] = _cleanup(created, 30 * MIN, ContainerPolicy())
    assert isinstance(remove, Remove) and remove.reason is RemoveReason.NEVER_STARTED


def test_stopped_container_gpu_released_after_gpu_hold() -> None:
    policy = ContainerPolicy(gpu_hold_after_stop=15 * MIN, container_hold_after_stop=HOUR)
    assert _cleanup(_stopped(), 14 * MIN, policy) == []
    [release] = _cleanup(_stopped(), 15 * MIN, policy)
    assert isinstance(release, ReleaseGpu) and release.devices == ("GPU-1111",)
    # Already released (labels say no devices): nothing more until removal.
    assert _cleanup(_stopped(devices=()), 20 * MIN, policy) == []


def test_stopped_container_removed_after_container_hold_without_separate_release() -> None:
    policy = ContainerPolicy(gpu_hold_after_stop=15 * MIN, container_hold_after_stop=HOUR)
    [remove] = _cleanup(_stopped(), HOUR, policy)
    assert isinstance(remove, Remove) and remove.reason is RemoveReason.HOLD_EXPIRED


def test_none_holds_keep_forever() -> None:
    keep = ContainerPolicy(gpu_hold_after_stop=None, container_hold_after_stop=None)
    assert _cleanup(_stopped(), 400 * 24 * HOUR, keep) == []
    gpu_only = ContainerPolicy(gpu_hold_after_stop=MIN, container_hold_after_stop=None)
    assert [type(a) for a in _cleanup(_stopped(), 400 * 24 * HOUR, gpu_only)] == [ReleaseGpu]


def test_stopped_without_finish_time_gets_a_note_not_a_guess() -> None:
    [note] = _cleanup(_stopped(finished_at=None), 400 * 24 * HOUR, ContainerPolicy())
    assert isinstance(note, Note) and note.key == "note-no-finish-time"


def test_no_decision_ever_touches_a_workspace() -> None:
    # The action vocabulary has no workspace operation; Remove removes the container only.
    assert Action.__args__ == (Warn, Stop, ReleaseGpu, Remove, Note, Exempted)
    [remove] = _cleanup(_stopped(), 2 * HOUR, ContainerPolicy())
    text = render_notice("thesis._.1001", remove)
    assert text is not None and "untouched" in text


def test_removing_containers_are_left_to_docker() -> None:
    d = decide(
        running(state=ContainerState.REMOVING), None, ContainerPolicy(), LifecycleState(), now=T0
    )
    assert d.actions == ()


# --------------------------------------------------------------------------- notices


def test_idle_warning_text_says_what_when_and_how() -> None:
    e = Enforcer(running())
    e.run(25 * MIN, QUIET)
    [(_, warn)] = list(e.actions(Warn))
    text = render_notice("thesis._.1001", warn)
    assert text is not None
    assert "'thesis'" in text and "._." not in text
    assert "idle" in text and "6 min" in text and "2025-03-03 09:30 UTC" in text
    assert KEEP_ALIVE_COMMAND in text and "24 h" in text
    assert "ds01 container retire thesis" in text
    assert "FINAL" not in text


def test_runtime_warning_text_mentions_the_limit_and_that_keep_alive_does_not_help() -> None:
    policy = ContainerPolicy(idle_timeout=None, max_runtime=24 * HOUR)
    e = Enforcer(running(started_at=T0), policy=policy)
    e.run(22 * HOUR, GPU_BUSY, every=HOUR)
    warns = [a for _, a in e.actions(Warn) if isinstance(a, Warn)]
    text = render_notice("thesis._.1001", warns[-1])
    assert text is not None and "FINAL WARNING" in text
    assert "of a 24 h limit" in text and "does not extend the runtime limit" in text


def test_stop_notice_says_grace_and_gpu_hold() -> None:
    e = Enforcer(running())
    e.run(30 * MIN, QUIET)
    [(_, stop)] = list(e.actions(Stop))
    text = render_notice("thesis._.1001", stop)
    assert text is not None
    assert "being stopped now" in text and "1 min to exit after SIGTERM" in text
    assert "GPU is given back 15 min and the container is removed 30 min later" in text
    assert "ds01 container start thesis" in text


# --------------------------------------------------------------------------- policy


def test_policy_rejects_a_window_longer_than_the_timeout() -> None:
    with pytest.raises(
        ConfigError, match=r"idle window \(0:20:00\) is longer than the idle timeout \(0:10:00\)"
    ):
        ContainerPolicy(idle_timeout=10 * MIN, idle_window=20 * MIN)


@pytest.mark.parametrize("levels", [(0, 50), (80, 80), (80, 100)])
def test_policy_rejects_bad_warning_levels(levels: tuple[int, ...]) -> None:
    with pytest.raises(
        ConfigError, match=r"idle_warn_at must be distinct percentages between 0 and 100"
    ):
        ContainerPolicy(idle_warn_at=levels)


def test_policy_rejects_non_positive_durations() -> None:
    with pytest.raises(ConfigError, match=r"max_runtime must be positive, got 0:00:00"):
        ContainerPolicy(max_runtime=timedelta(0))


# --------------------------------------------------------------------------- properties

# A segment: quiet intervals of random lengths (seconds), then one interval in which one
# signal was active. Long quiet runs make most sequences reach warnings and the stop.
_SEGMENT = st.tuples(
    st.lists(st.integers(min_value=20, max_value=300), max_size=40),
    st.sampled_from(["gpu", "cpu", "net"]),
    st.integers(min_value=20, max_value=300),
)


@settings(max_examples=150, deadline=None)
@given(
    segments=st.lists(_SEGMENT, min_size=1, max_size=6),
    timeout_min=st.integers(min_value=5, max_value=45),
    restarts=st.booleans(),
)
def test_idle_enforcement_properties(
    segments: list[tuple[list[int], str, int]], timeout_min: int, restarts: bool
) -> None:
    timeout = timeout_min * MIN
    policy = ContainerPolicy(idle_timeout=timeout, idle_window=MIN, max_runtime=None)
    make = {None: QUIET, "gpu": GPU_BUSY, "cpu": CPU_BUSY, "net": NET_BUSY}
    intervals: list[tuple[int, str | None]] = []
    for quiet, signal, seconds in segments:
        intervals += [(q, None) for q in quiet] + [(seconds, signal)]
    e = Enforcer(running(started_at=T0), policy=policy, restart_every=restarts)
    last_activity = T0  # nothing can have happened before the container started
    warned_this_period: set[str] = set()
    for seconds, active in intervals:
        p = e.step(timedelta(seconds=seconds), make[active])
        if active is not None:
            last_activity = p.now
            warned_this_period.clear()
        stops = [a for a in p.actions if isinstance(a, Stop)]
        quiet_for = p.now - last_activity
        # Never stopped before the timeout has elapsed since the last activity.
        if stops:
            assert quiet_for >= timeout
        # Always stopped in the first pass at or after the timeout (within one interval).
        if quiet_for >= timeout:
            assert stops, f"quiet for {quiet_for} with a {timeout} timeout, not stopped"
            break
        # Never warned twice for the same level in one idle period.
        for a in p.actions:
            if isinstance(a, Warn):
                assert a.key not in warned_this_period
                warned_this_period.add(a.key)
                assert a.deadline > p.now
