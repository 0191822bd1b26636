"""The idle rules' boundaries, each on, just below and just above: CPU counts and
intervals, when a stored reading is a usable baseline, keep-alive times against the
clock tolerance and their expiry, a keep-alive ending exactly at the idle deadline,
the busy share given as an exact fraction, and the words and durations users read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from ds01.domain.idle import (
    KEEP_ALIVE_CLOCK_TOLERANCE,
    NOT_BUSY,
    Activity,
    Assessment,
    Busy,
    CounterReading,
    IdleClock,
    LifecycleState,
    Sample,
    busy_factor,
    cpu_percent,
    describe_quiet,
    format_duration,
    idle_clock,
    keep_alive_until,
    next_idle_since,
    sample_from_counters,
    unreported_notes,
)
from ds01.errors import ConfigError, DS01Error, UsageError

T = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
MIN = timedelta(minutes=1)
QUIET = Assessment(Activity.QUIET)


def test_cpu_percent_counts_and_intervals() -> None:
    assert cpu_percent(0, 10**9, 1.0, ncpus=1) == 100.0  # exactly one CPU is allowed
    assert cpu_percent(0, 10**9, 0.5) == 200.0  # a short interval still measures
    assert cpu_percent(0, 10**9, 0.0) is None  # no interval
    assert cpu_percent(0, 10**9, 2.0, ncpus=4) == 12.5
    with pytest.raises(UsageError) as info:
        cpu_percent(0, 1, 1.0, ncpus=0)
    assert (str(info.value), info.value.hint) == (
        "ncpus must be at least 1, got 0.",
        "Pass the number of CPUs the container may use, or None for one CPU.",
    )


def _reading(at: datetime, cpu: int = 0) -> CounterReading:
    return CounterReading(at, cpu, (("eth0:rx", 0),))


def test_a_baseline_needs_a_later_reading_within_the_span() -> None:
    current = CounterReading(T, 6 * 10**9, (("eth0:rx", 500),))
    keep = T - MIN
    same_time = sample_from_counters(
        _reading(T), current, started_at=None, gpu_util_percent=3.0, keep_alive_mtime=keep
    )
    assert same_time == Sample(
        end=T, gpu_util_percent=3.0, keep_alive_mtime=keep, reading=current
    )  # not usable: no interval
    span = timedelta(minutes=10)
    on_span = sample_from_counters(
        _reading(T - span), current, started_at=None, gpu_util_percent=3.0,
        keep_alive_mtime=keep, max_span=span,
    )  # fmt: skip
    assert on_span == Sample(
        start=T - span, end=T, gpu_util_percent=3.0, cpu_percent=1.0, network_bytes=500,
        keep_alive_mtime=keep, reading=current,
    )  # fmt: skip
    past_span = sample_from_counters(
        _reading(T - span - US), current, started_at=None, gpu_util_percent=None,
        max_span=span,
    )  # fmt: skip
    assert past_span.start is None and past_span.cpu_percent is None
    before_start = sample_from_counters(
        _reading(T - MIN), current, started_at=T - MIN + US, gpu_util_percent=None
    )
    assert before_start.start is None
    at_start = sample_from_counters(
        _reading(T - MIN), current, started_at=T - MIN, gpu_util_percent=None
    )
    assert at_start.start == T - MIN


def test_keep_alive_against_the_clock_tolerance_and_expiry() -> None:
    day = timedelta(hours=24)
    edge = T + KEEP_ALIVE_CLOCK_TOLERANCE
    assert timedelta(minutes=5) == KEEP_ALIVE_CLOCK_TOLERANCE
    assert keep_alive_until(edge, T, day) == T + day  # a future time counts as now
    assert keep_alive_until(edge + US, T, day) is None  # implausibly far ahead
    assert keep_alive_until(T - day, T, day) is None  # expires exactly now
    assert keep_alive_until(T - day + US, T, day) == T + US
    assert keep_alive_until(None, T, day) is None


def test_a_keep_alive_ending_at_the_deadline_does_not_move_it() -> None:
    kw = {"timeout": 30 * MIN, "window": 5 * MIN, "busy": NOT_BUSY}
    at_deadline = idle_clock(T, keep_until=T + 30 * MIN, **kw)  # type: ignore[arg-type]
    assert at_deadline == IdleClock(T, 30 * MIN, T + 30 * MIN, False, None)
    later = idle_clock(T, keep_until=T + 30 * MIN + US, **kw)  # type: ignore[arg-type]
    assert later == IdleClock(T, 30 * MIN, T + 30 * MIN + US, False, T + 30 * MIN + US)
    busy = idle_clock(T, timeout=30 * MIN, window=5 * MIN, busy=Busy(0.5, True),
                      keep_until=T + 20 * MIN)  # fmt: skip
    assert busy == IdleClock(T, 15 * MIN, T + 20 * MIN, True, T + 20 * MIN)


def test_next_idle_since_without_a_sample_or_a_start() -> None:
    assert next_idle_since(None, QUIET, None, T) is None
    sample = Sample(start=T - MIN, end=T)
    assert next_idle_since(None, QUIET, sample, None) == T - MIN
    assert next_idle_since(None, QUIET, sample, T - 2 * MIN) == T - MIN
    assert next_idle_since(None, QUIET, sample, T - MIN + US) == T - MIN + US
    assert next_idle_since(T - 9 * MIN, QUIET, sample, None) == T - 9 * MIN
    assert next_idle_since(T - 9 * MIN, Assessment(Activity.BUSY, ("gpu",)), sample, None) is None


def test_the_busy_share_as_an_exact_fraction() -> None:
    # busy_factor takes the share as a Fraction too (annotated float): 1/3 has no decimal.
    third: float = Fraction(1, 3)  # type: ignore[assignment]
    assert busy_factor(1, 3, third, 0.5) == NOT_BUSY  # exactly the share: not above it
    assert busy_factor(Fraction(1, 3) + Fraction(1, 300), 1, third, 0.5) == Busy(0.5, True)
    for share, factor, message, hint in (
        (1.5, 0.5, "The busy-server share must be between 0 and 1, got 1.5.",
         "Set enforcement.busy_share to e.g. 0.8 (80% of GPU equivalents allocated)."),
        (0.8, 0.0, "The busy-server factor must be above 0 and at most 1, got 0.0.",
         "Set enforcement.busy_factor to e.g. 0.5 (idle timeouts halved when busy)."),
    ):  # fmt: skip
        with pytest.raises(ConfigError) as info:
            busy_factor(1, 2, share, factor)
        assert (str(info.value), info.value.hint) == (message, hint)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0 s"), (0, "0 s"), (59, "59 s"), (60, "1 min"), (61, "2 min"),
        (3599, "1 h"), (3540, "59 min"), (3600, "1 h"), (3660, "1 h 1 min"), (3661, "1 h 1 min"),
        (3719, "1 h 1 min"), (47 * 3600 + 59 * 60, "47 h 59 min"), (48 * 3600, "2 d"),
        (49 * 3600, "2 d 1 h"), (24 * 3600, "24 h"),
    ],
)  # fmt: skip
def test_format_duration_boundaries(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


def test_describe_quiet_names_what_was_watched() -> None:
    d = 25 * MIN
    three = "no GPU utilization, CPU use or network traffic above the idle thresholds for 25 min"
    assert describe_quiet(QUIET, d) == three
    two = Assessment(Activity.QUIET, unreported=("gpu",))
    assert describe_quiet(two, d) == (
        "no CPU use or network traffic above the idle thresholds for 25 min"
    )
    one = Assessment(Activity.QUIET, unreported=("gpu", "network"))
    assert describe_quiet(one, d) == "no CPU use above the idle thresholds for 25 min"
    none = Assessment(Activity.QUIET, unreported=("gpu", "cpu", "network"))
    assert describe_quiet(none, d) == "no activity above the idle thresholds for 25 min"


def test_unreported_notes_words() -> None:
    assert unreported_notes(("gpu",), has_mig=True) == [
        ("note-gpu-unreported", "MIG instance: the driver reports no GPU utilization for MIG "
         "instances; idleness is decided on CPU use and network traffic only."),
    ]  # fmt: skip
    assert unreported_notes(("gpu", "network"), has_mig=False) == [
        ("note-gpu-unreported", "GPU utilization is not reported for this container; "
         "idleness is decided on CPU use only."),
        ("note-network-unreported", "No per-container network counters (host network?); "
         "idleness is decided on CPU use only."),
    ]  # fmt: skip
    assert unreported_notes(("cpu", "gpu", "network"), has_mig=False)[0] == (
        "note-cpu-unreported",
        "CPU use is not reported for this container; nothing can be measured, so it is "
        "never counted as idle.",
    )


def test_lifecycle_state_json_exactly() -> None:
    state = LifecycleState(
        run_started_at=T, idle_since=T + MIN, sent=frozenset({"idle-80", "a"}),
        keep_alive_seen=None, counters=CounterReading(T, 5, (("eth0:rx", 7),)),
    )  # fmt: skip
    data = state.to_json()
    assert data == {
        "format": 1,
        "run_started_at": "2025-03-03T09:00:00+00:00",
        "idle_since": "2025-03-03T09:01:00+00:00",
        "sent": ["a", "idle-80"],
        "keep_alive_seen": None,
        "counters": {"at": "2025-03-03T09:00:00+00:00", "cpu_usage_ns": 5,
                     "network": {"eth0:rx": 7}},
    }  # fmt: skip
    assert LifecycleState.from_json(data) == state
    no_cpu = {**data, "counters": {"at": "2025-03-03T09:00:00+00:00", "cpu_usage_ns": None}}
    assert LifecycleState.from_json(no_cpu).counters == CounterReading(T, None, None)
    with pytest.raises(DS01Error) as info:
        LifecycleState.from_json({"counters": {"at": None}})
    assert (str(info.value), info.value.hint, info.value.code) == (
        "Stored lifecycle state is unreadable: counters without a time.",
        "Delete this container's row from the lifecycle table; enforcement starts its idle "
        "streak afresh (it never stops early because of this).",
        "bad_lifecycle_state",
    )
