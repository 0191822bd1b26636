"""Idle signals: counter deltas, samples, the quiet/busy verdict, keep-alive, busy server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from ds01.domain.idle import (
    DEFAULT_MAX_SPAN,
    NOT_BUSY,
    Activity,
    Assessment,
    Busy,
    CounterReading,
    LifecycleState,
    Sample,
    assess_sample,
    busy_factor,
    counter_delta,
    counters_delta,
    cpu_percent,
    describe_quiet,
    effective_idle_timeout,
    format_duration,
    idle_clock,
    keep_alive_until,
    level_reached,
    next_idle_since,
    sample_from_counters,
    unreported_notes,
)
from ds01.errors import ConfigError, DS01Error, UsageError

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
MIB = 1 << 20
MIN = timedelta(minutes=1)


def _assess(sample: Sample | None) -> Assessment:
    """The verdict under the default thresholds: 5% GPU, 2% CPU, 1 MiB per minute."""
    return assess_sample(
        sample,
        gpu_threshold=5.0,
        cpu_threshold=2.0,
        network_threshold_bytes=MIB,
        network_threshold_per=MIN,
    )


def _sample(**kw: object) -> Sample:
    base: dict[str, object] = {
        "start": T0,
        "end": T0 + MIN,
        "gpu_util_percent": 0.0,
        "cpu_percent": 0.5,
        "network_bytes": 1000,
    }
    base.update(kw)
    return Sample(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- counters


def test_counter_delta_is_the_growth_between_readings() -> None:
    assert counter_delta(100, 250) == 150
    assert counter_delta(100, 100) == 0


def test_counter_delta_without_previous_reading_is_unknown() -> None:
    assert counter_delta(None, 250) is None


def test_counter_reset_counts_from_zero() -> None:
    # The counter restarted (container restart, interface re-created): at least the
    # current value accrued since, never a negative delta.
    assert counter_delta(10_000, 300) == 300


def test_counters_delta_handles_each_key_on_its_own() -> None:
    previous = {"eth0:rx": 1000, "eth0:tx": 500}
    current = {"eth0:rx": 1500, "eth0:tx": 40}  # tx was reset to 0 and grew to 40
    assert counters_delta(previous, current) == 500 + 40


def test_counters_delta_new_key_counts_from_zero_vanished_key_ignored() -> None:
    previous = {"eth0:rx": 1000, "eth1:rx": 9999}
    current = {"eth0:rx": 1100, "eth2:rx": 70}
    assert counters_delta(previous, current) == 100 + 70
    assert counters_delta(None, current) is None


def test_cpu_percent_is_in_percent_of_one_cpu_by_default() -> None:
    one_core_for_a_minute = 60 * 1_000_000_000
    assert cpu_percent(0, one_core_for_a_minute, 60.0) == pytest.approx(100.0)
    assert cpu_percent(0, 2 * one_core_for_a_minute, 60.0) == pytest.approx(200.0)


def test_cpu_percent_with_ncpus_is_a_share_of_those_cpus() -> None:
    assert cpu_percent(0, 60 * 1_000_000_000, 60.0, ncpus=4) == pytest.approx(25.0)


def test_cpu_percent_unknown_without_baseline_or_interval() -> None:
    assert cpu_percent(None, 5, 60.0) is None
    assert cpu_percent(0, 5, 0.0) is None


def test_cpu_percent_after_counter_reset_uses_the_new_count() -> None:
    assert cpu_percent(10**12, 30 * 10**9, 60.0) == pytest.approx(50.0)


def test_cpu_percent_rejects_nonsense_cpu_count() -> None:
    with pytest.raises(UsageError, match=r"^ncpus must be at least 1, got 0\.$"):
        cpu_percent(0, 1, 60.0, ncpus=0)


# --------------------------------------------------------------------------- samples


def test_sample_from_consecutive_readings() -> None:
    prev = CounterReading.of(T0, 0, {"eth0:rx": 0, "eth0:tx": 0})
    cur = CounterReading.of(T0 + MIN, 30 * 10**9, {"eth0:rx": 700, "eth0:tx": 300})
    s = sample_from_counters(prev, cur, started_at=T0 - MIN, gpu_util_percent=12.0)
    assert s.start == T0 and s.end == T0 + MIN
    assert s.cpu_percent == pytest.approx(50.0)
    assert s.network_bytes == 1000
    assert s.gpu_util_percent == 12.0
    assert s.reading == cur  # the baseline for the next pass


def test_sample_without_baseline_has_no_interval() -> None:
    cur = CounterReading.of(T0, 10, {"eth0:rx": 5})
    s = sample_from_counters(None, cur, started_at=T0 - MIN, gpu_util_percent=0.0)
    assert s.start is None and s.cpu_percent is None and s.network_bytes is None
    assert s.reading == cur


def test_reading_from_before_a_restart_is_not_a_baseline() -> None:
    prev = CounterReading.of(T0, 10**15, {"eth0:rx": 10**9})
    cur = CounterReading.of(T0 + 2 * MIN, 10**6, {"eth0:rx": 10})
    s = sample_from_counters(prev, cur, started_at=T0 + MIN, gpu_util_percent=None)
    assert s.start is None


def test_long_gap_is_not_averaged_over() -> None:
    prev = CounterReading.of(T0, 0, {})
    cur = CounterReading.of(T0 + DEFAULT_MAX_SPAN + MIN, 0, {})
    s = sample_from_counters(prev, cur, started_at=None, gpu_util_percent=0.0)
    assert s.start is None
    s = sample_from_counters(prev, cur, started_at=None, gpu_util_percent=0.0, max_span=MIN * 60)
    assert s.start == T0


def test_host_network_and_unreadable_cpu_give_missing_signals() -> None:
    prev = CounterReading.of(T0, None, None)
    cur = CounterReading.of(T0 + MIN, None, None)
    s = sample_from_counters(prev, cur, started_at=None, gpu_util_percent=0.0)
    assert s.start == T0
    assert s.cpu_percent is None and s.network_bytes is None


# --------------------------------------------------------------------------- assessment


def test_all_signals_quiet_is_quiet() -> None:
    a = _assess(_sample())
    assert a == Assessment(Activity.QUIET)


@pytest.mark.parametrize(
    ("override", "signal"),
    [
        ({"gpu_util_percent": 40.0}, "gpu"),
        ({"cpu_percent": 80.0}, "cpu"),
        ({"network_bytes": 5 * MIB}, "network"),
    ],
)
def test_each_signal_alone_makes_the_interval_busy(
    override: dict[str, object], signal: str
) -> None:
    a = _assess(_sample(**override))
    assert a.activity is Activity.BUSY
    assert a.busy_signals == (signal,)


def test_threshold_is_exclusive_at_the_limit() -> None:
    # "Under the threshold" is quiet; exactly at it is activity.
    assert _assess(_sample(gpu_util_percent=5.0)).activity is Activity.BUSY
    assert _assess(_sample(gpu_util_percent=4.9)).activity is Activity.QUIET


def test_network_threshold_is_a_rate() -> None:
    two_minutes = _sample(end=T0 + 2 * MIN, network_bytes=int(1.5 * MIB))
    assert _assess(two_minutes).activity is Activity.QUIET
    one_minute = _sample(network_bytes=int(1.5 * MIB))
    assert _assess(one_minute).activity is Activity.BUSY


def test_mig_without_utilization_falls_back_to_cpu_and_network() -> None:
    a = _assess(_sample(gpu_util_percent=None))
    assert a.activity is Activity.QUIET
    assert a.unreported == ("gpu",)
    a = _assess(_sample(gpu_util_percent=None, cpu_percent=50.0))
    assert a.activity is Activity.BUSY


def test_no_interval_is_unmeasured_unless_the_gpu_is_busy() -> None:
    no_interval = Sample(end=T0, gpu_util_percent=0.0)
    assert _assess(no_interval).activity is Activity.UNMEASURED
    busy_gpu = Sample(end=T0, gpu_util_percent=90.0)
    assert _assess(busy_gpu).activity is Activity.BUSY
    assert _assess(None).activity is Activity.UNMEASURED


def test_nothing_reported_is_unmeasured() -> None:
    s = _sample(gpu_util_percent=None, cpu_percent=None, network_bytes=None)
    a = _assess(s)
    assert a.activity is Activity.UNMEASURED
    assert set(a.unreported) == {"gpu", "cpu", "network"}


def test_only_quiet_keeps_a_streak() -> None:
    assert Activity.QUIET.keeps_streak()
    assert not Activity.BUSY.keeps_streak()
    assert not Activity.UNMEASURED.keeps_streak()


# --------------------------------------------------------------------------- timing


def test_streak_starts_at_the_first_quiet_interval() -> None:
    quiet = Assessment(Activity.QUIET)
    s = _sample(start=T0, end=T0 + MIN)
    assert next_idle_since(None, quiet, s, started_at=T0 - MIN) == T0
    assert next_idle_since(T0 - 5 * MIN, quiet, s, started_at=None) == T0 - 5 * MIN
    assert next_idle_since(T0, Assessment(Activity.BUSY, ("cpu",)), s, None) is None
    # Never before the container started.
    started = T0 + timedelta(seconds=20)
    assert next_idle_since(None, quiet, s, started_at=started) == started


def test_keep_alive_defers_for_at_most_its_maximum_age() -> None:
    day = timedelta(hours=24)
    assert keep_alive_until(None, T0, day) is None
    assert keep_alive_until(T0 - timedelta(hours=2), T0, day) == T0 + timedelta(hours=22)
    assert keep_alive_until(T0 - timedelta(hours=25), T0, day) is None


def test_keep_alive_in_the_future_cannot_buy_endless_time() -> None:
    day = timedelta(hours=24)
    # A moment ahead (stat after `now` was taken) counts as now...
    assert keep_alive_until(T0 + timedelta(seconds=2), T0, day) == T0 + day
    # ...far ahead is ignored.
    assert keep_alive_until(T0 + timedelta(days=365), T0, day) is None


def test_busy_factor_above_share() -> None:
    assert busy_factor(7, 8, 0.8, 0.5) == Busy(0.5, True)
    assert busy_factor(6, 8, 0.8, 0.5) == NOT_BUSY
    # Exactly the share is not "above" it.
    assert busy_factor(Fraction(4), Fraction(5), 0.8, 0.5) == NOT_BUSY
    assert busy_factor(0, 0, 0.8, 0.5) == NOT_BUSY


def test_busy_factor_counts_mig_fractions_exactly() -> None:
    allocated = sum((Fraction(1, 7) for _ in range(7)), Fraction(0))
    assert busy_factor(allocated, Fraction(1), 0.99, 0.5).is_busy


@pytest.mark.parametrize(("share", "factor"), [(1.5, 0.5), (-0.1, 0.5), (0.8, 0.0), (0.8, 1.2)])
def test_busy_factor_rejects_nonsense_configuration(share: float, factor: float) -> None:
    with pytest.raises(
        ConfigError,
        match=(
            r"^The busy-server (share must be between 0 and 1|factor must be above 0 and at "
            r"most 1), got"
        ),
    ):
        busy_factor(1, 2, share, factor)


def test_effective_timeout_is_shortened_but_not_below_the_window() -> None:
    half = Busy(0.5, True)
    assert effective_idle_timeout(30 * MIN, 5 * MIN, NOT_BUSY) == (30 * MIN, False)
    assert effective_idle_timeout(30 * MIN, 5 * MIN, half) == (15 * MIN, True)
    assert effective_idle_timeout(30 * MIN, 5 * MIN, Busy(0.1, True)) == (5 * MIN, True)
    assert effective_idle_timeout(5 * MIN, 5 * MIN, half) == (5 * MIN, False)


def test_idle_clock_defers_to_a_valid_keep_alive() -> None:
    clock = idle_clock(T0, timeout=30 * MIN, window=5 * MIN, busy=NOT_BUSY, keep_until=None)
    assert clock.deadline == T0 + 30 * MIN and clock.keep_alive_until is None
    later = T0 + timedelta(hours=3)
    clock = idle_clock(T0, timeout=30 * MIN, window=5 * MIN, busy=NOT_BUSY, keep_until=later)
    assert clock.deadline == later and clock.keep_alive_until == later
    early = T0 + 10 * MIN  # ends before the timeout would: no effect
    clock = idle_clock(T0, timeout=30 * MIN, window=5 * MIN, busy=NOT_BUSY, keep_until=early)
    assert clock.deadline == T0 + 30 * MIN


def test_level_reached() -> None:
    deadline, span, levels = T0 + 30 * MIN, 30 * MIN, (80, 95)
    assert level_reached(T0 + 23 * MIN, deadline, span, levels) is None
    assert level_reached(T0 + 24 * MIN, deadline, span, levels) == 80
    assert level_reached(T0 + 28 * MIN + timedelta(seconds=30), deadline, span, levels) == 95
    assert level_reached(T0 + 30 * MIN, deadline, span, levels) == 100


# --------------------------------------------------------------------------- wording


def test_format_duration() -> None:
    assert format_duration(timedelta(seconds=45)) == "45 s"
    assert format_duration(timedelta(seconds=61)) == "2 min"  # rounds up under an hour
    assert format_duration(timedelta(hours=1, minutes=30)) == "1 h 30 min"
    assert format_duration(timedelta(hours=24)) == "24 h"
    assert format_duration(timedelta(days=2, hours=3)) == "2 d 3 h"


def test_notes_name_mig_and_the_signals_still_used() -> None:
    [(key, message)] = unreported_notes(("gpu",), has_mig=True)
    assert key == "note-gpu-unreported"
    assert "MIG" in message and "CPU use and network traffic" in message
    [(_, message)] = unreported_notes(("network",), has_mig=False)
    assert "host network" in message


def test_describe_quiet_lists_the_watched_signals() -> None:
    text = describe_quiet(Assessment(Activity.QUIET, unreported=("gpu",)), 24 * MIN)
    assert text == "no CPU use or network traffic above the idle thresholds for 24 min"


# --------------------------------------------------------------------------- memory


def test_state_round_trips_through_json() -> None:
    state = LifecycleState(
        run_started_at=T0,
        idle_since=T0 + MIN,
        sent=frozenset({"idle-80", "note-gpu-unreported"}),
        keep_alive_seen=T0 - MIN,
        counters=CounterReading.of(T0 + 2 * MIN, 123, {"eth0:rx": 5, "eth0:tx": 6}),
    )
    text = json.dumps(state.to_json())
    assert LifecycleState.from_json(json.loads(text)) == state
    assert LifecycleState.from_json(LifecycleState().to_json()) == LifecycleState()


def test_state_from_newer_writer_ignores_unknown_keys() -> None:
    data = LifecycleState(idle_since=T0).to_json() | {"added_later": 1}
    assert LifecycleState.from_json(data).idle_since == T0


def test_unreadable_state_is_reported_not_guessed() -> None:
    with pytest.raises(DS01Error) as info:
        LifecycleState.from_json({"idle_since": "yesterday"})
    assert info.value.code == "bad_lifecycle_state"
    assert info.value.hint
