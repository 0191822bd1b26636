"""Idle signals: what one enforcement interval says about a container's activity.

Pure functions over plain data. The enforcement loader reads raw, cumulative counters
(cgroup CPU time, per-interface network bytes) once per pass into a
:class:`CounterReading`; :func:`sample_from_counters` turns two consecutive readings into
a :class:`Sample` of per-interval signals; :func:`assess_sample` says whether the
interval was quiet. :mod:`ds01.domain.lifecycle` turns a run of quiet intervals into
warnings and stops.

Three rules keep the decision honest:

* **Per interval, never cumulative.** Every CPU and network figure is a delta between two
  readings of the same container run. The existing DS01 compared a cumulative rx counter
  with 1 MiB, so any container that had ever downloaded a dataset looked busy forever.
* **Nothing is assumed quiet that was not measured.** A sample without a usable baseline
  (first reading of a run, a restart in between, a gap longer than ``max_span``) is
  :attr:`Activity.UNMEASURED`, which ends an idle streak like activity does.
* **A missing signal is dropped, not guessed.** MIG instances report no utilization
  through NVML and host-network containers have no per-container traffic counters; the
  remaining signals decide, and the decision says so.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple

from ds01.errors import ConfigError, DS01Error, ErrorCode, UsageError

__all__ = [
    "DEFAULT_MAX_SPAN",
    "KEEP_ALIVE_CLOCK_TOLERANCE",
    "NOT_BUSY",
    "SIGNALS",
    "Activity",
    "Assessment",
    "Busy",
    "CounterReading",
    "IdleClock",
    "LifecycleState",
    "Sample",
    "assess_sample",
    "busy_factor",
    "counter_delta",
    "counters_delta",
    "cpu_percent",
    "describe_quiet",
    "effective_idle_timeout",
    "format_duration",
    "idle_clock",
    "keep_alive_until",
    "level_reached",
    "next_idle_since",
    "sample_from_counters",
    "unreported_notes",
]

#: The signals, in the order messages name them.
SIGNALS = ("gpu", "cpu", "network")

#: A sample spanning more than this (enforcement was down, the timer stalled) averages
#: too much: a burst of work would vanish in the mean, so such a sample is UNMEASURED.
DEFAULT_MAX_SPAN = timedelta(minutes=15)

#: A keep-alive mtime this far ahead of ``now`` is read as "just touched" (the loader
#: stats the file a moment after taking ``now``); further ahead it is ignored, so that
#: ``touch -d 2099-01-01`` cannot buy an endless deferral.
KEEP_ALIVE_CLOCK_TOLERANCE = timedelta(minutes=5)

_NS_PER_S = 1_000_000_000


# --------------------------------------------------------------------------- counters


def counter_delta(previous: int | None, current: int) -> int | None:
    """Growth of a monotonically increasing counter between two readings.

    ``None`` without a previous reading. A current value below the previous one means the
    counter restarted from zero (container restart, interface re-created, a 32-bit wrap);
    the growth since the restart is then at least ``current``, which is returned: the
    same rule Prometheus' ``rate()`` applies to counter resets.
    """
    if previous is None:
        return None
    if current < previous:
        return current
    return current - previous


def counters_delta(previous: Mapping[str, int] | None, current: Mapping[str, int]) -> int | None:
    """Summed growth of several counters keyed by name (``"eth0:rx"``, ``"eth0:tx"``, ...).

    Each key is deltaed on its own, so one interface being re-created does not turn the
    whole sum negative. A key that appeared since the previous reading counts from zero;
    a key that vanished contributes nothing. ``None`` without a previous reading.
    """
    if previous is None:
        return None
    total = 0
    for key, value in current.items():
        delta = counter_delta(previous.get(key, 0), value)
        total += delta or 0
    return total


def cpu_percent(
    prev_usage_ns: int | None,
    cur_usage_ns: int,
    interval_s: float,
    ncpus: int | None = None,
) -> float | None:
    """CPU use over an interval from two readings of cumulative cgroup CPU time (ns).

    Without ``ncpus`` the result is a percentage of one CPU, as ``docker stats`` shows it
    (250.0 = two and a half cores busy); DS01's ``cpu_idle_threshold`` uses this scale.
    With ``ncpus`` it is the share of that many CPUs (0-100). ``None`` when there is no
    previous reading or the interval is not positive. Counter resets follow
    :func:`counter_delta`.
    """
    if ncpus is not None and ncpus < 1:
        raise UsageError(
            f"ncpus must be at least 1, got {ncpus}.",
            hint="Pass the number of CPUs the container may use, or None for one CPU.",
        )
    delta = counter_delta(prev_usage_ns, cur_usage_ns)
    if delta is None or interval_s <= 0:
        return None
    percent = delta / (interval_s * _NS_PER_S) * 100.0
    return percent / ncpus if ncpus else percent


@dataclass(frozen=True)
class CounterReading:
    """Raw cumulative counters of one container, read at one moment.

    ``cpu_usage_ns`` is the cgroup's total CPU time (cgroup v2 ``cpu.stat`` usage_usec
    x 1000, or v1 ``cpuacct.usage``); ``None`` when unreadable. ``network`` holds one
    cumulative byte counter per key (``"eth0:rx"``, ``"eth0:tx"``) from the container's
    own network namespace; ``None`` when the container has none of its own (host
    network), because host-wide counters say nothing about one container.
    """

    at: datetime
    cpu_usage_ns: int | None = None
    network: tuple[tuple[str, int], ...] | None = None

    @classmethod
    def of(
        cls, at: datetime, cpu_usage_ns: int | None, network: Mapping[str, int] | None
    ) -> CounterReading:
        """Build a reading from a plain mapping of network counters."""
        net = None if network is None else tuple(sorted(network.items()))
        return cls(at=at, cpu_usage_ns=cpu_usage_ns, network=net)

    def network_map(self) -> dict[str, int] | None:
        return None if self.network is None else dict(self.network)


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    """The signals of one container over one interval ``[start, end]``.

    ``start`` is ``None`` when there was no usable baseline: CPU and network were then
    not measured over any interval. ``gpu_util_percent`` is the busiest held device's
    utilization over the interval (the maximum of NVML's utilization samples since the
    previous pass where available, else the reading at ``end``); ``None`` when none of
    the held devices reports one (MIG instances). ``cpu_percent`` is in percent of one
    CPU; ``network_bytes`` is the traffic (both directions) within the interval.
    ``reading`` is the raw counters at ``end``: the baseline of the next pass.
    """

    end: datetime
    start: datetime | None = None
    gpu_util_percent: float | None = None
    cpu_percent: float | None = None
    network_bytes: int | None = None
    keep_alive_mtime: datetime | None = None
    reading: CounterReading | None = None

    @property
    def span(self) -> timedelta | None:
        return None if self.start is None else self.end - self.start


def sample_from_counters(
    previous: CounterReading | None,
    current: CounterReading,
    *,
    started_at: datetime | None,
    gpu_util_percent: float | None,
    keep_alive_mtime: datetime | None = None,
    max_span: timedelta = DEFAULT_MAX_SPAN,
) -> Sample:
    """The :class:`Sample` between the previous pass's reading and this one.

    ``previous`` is the reading stored in the container's lifecycle state. It is a usable
    baseline only if it was taken during the current run (at or after ``started_at``:
    a restart resets the counters), before ``current``, and at most ``max_span`` earlier.
    Otherwise the sample has ``start=None`` and only the instantaneous signals.
    """
    usable = (
        previous is not None
        and previous.at < current.at
        and (started_at is None or previous.at >= started_at)
        and current.at - previous.at <= max_span
    )
    if previous is None or not usable:
        return Sample(
            end=current.at,
            gpu_util_percent=gpu_util_percent,
            keep_alive_mtime=keep_alive_mtime,
            reading=current,
        )
    interval_s = (current.at - previous.at).total_seconds()
    cpu = None
    if current.cpu_usage_ns is not None:
        cpu = cpu_percent(previous.cpu_usage_ns, current.cpu_usage_ns, interval_s)
    net = None
    current_net = current.network_map()
    if current_net is not None:
        net = counters_delta(previous.network_map(), current_net)
    return Sample(
        start=previous.at,
        end=current.at,
        gpu_util_percent=gpu_util_percent,
        cpu_percent=cpu,
        network_bytes=net,
        keep_alive_mtime=keep_alive_mtime,
        reading=current,
    )


# --------------------------------------------------------------------------- memory


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class LifecycleState:
    """What enforcement remembers about one container between passes (persist it all).

    ``run_started_at`` is the ``started_at`` of the run these records belong to; a new
    run starts from a blank state. ``idle_since`` is the start of the current idle
    streak. ``sent`` holds the keys of warnings and one-time notices already delivered
    (``idle-80``, ``idle-95``, ``idle-stop``, ``runtime-75``, ``runtime-90``,
    ``runtime-stop``, ``exempt-idle``, ``exempt-runtime``, ``note-*``). ``keep_alive_seen``
    is the last keep-alive mtime observed, ``counters`` the baseline for the next deltas.
    """

    run_started_at: datetime | None = None
    idle_since: datetime | None = None
    sent: frozenset[str] = frozenset()
    keep_alive_seen: datetime | None = None
    counters: CounterReading | None = None

    FORMAT: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO-8601 times) for the state store."""
        counters = None
        if self.counters is not None:
            counters = {
                "at": _iso(self.counters.at),
                "cpu_usage_ns": self.counters.cpu_usage_ns,
                "network": self.counters.network_map(),
            }
        return {
            "format": self.FORMAT,
            "run_started_at": _iso(self.run_started_at),
            "idle_since": _iso(self.idle_since),
            "sent": sorted(self.sent),
            "keep_alive_seen": _iso(self.keep_alive_seen),
            "counters": counters,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LifecycleState:
        """Read back :meth:`to_json`'s output; unknown keys are ignored (newer writers)."""
        try:
            counters = None
            raw = data.get("counters")
            if raw is not None:
                at = _from_iso(raw["at"])
                if at is None:
                    raise ValueError("counters without a time")
                cpu = raw.get("cpu_usage_ns")
                counters = CounterReading.of(
                    at, None if cpu is None else int(cpu), raw.get("network")
                )
            return cls(
                run_started_at=_from_iso(data.get("run_started_at")),
                idle_since=_from_iso(data.get("idle_since")),
                sent=frozenset(str(k) for k in data.get("sent") or ()),
                keep_alive_seen=_from_iso(data.get("keep_alive_seen")),
                counters=counters,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DS01Error(
                f"Stored lifecycle state is unreadable: {exc}.",
                hint="Delete this container's row from the lifecycle table; enforcement "
                "starts its idle streak afresh (it never stops early because of this).",
                code=ErrorCode.BAD_LIFECYCLE_STATE,
            ) from exc


# --------------------------------------------------------------------------- assessment


class Activity(enum.StrEnum):
    """What one sample says about a container."""

    QUIET = "quiet"  # every reported signal under its threshold over the whole interval
    BUSY = "busy"  # at least one signal at or over its threshold
    UNMEASURED = "unmeasured"  # no interval measured: neither quiet nor proven busy

    def keeps_streak(self) -> bool:
        """Only a quiet interval extends an idle streak; anything else ends it."""
        return self is Activity.QUIET


@dataclass(frozen=True)
class Assessment:
    """The verdict on one sample, with the evidence for messages and status output.

    ``busy_signals`` names the signals at or over their threshold; ``unreported`` those
    the sample lacked and the verdict was reached without (``"gpu"`` on MIG).
    """

    activity: Activity
    busy_signals: tuple[str, ...] = ()
    unreported: tuple[str, ...] = ()


def assess_sample(
    sample: Sample | None,
    *,
    gpu_threshold: float,
    cpu_threshold: float,
    network_threshold_bytes: int,
    network_threshold_per: timedelta,
) -> Assessment:
    """Quiet when every reported signal is under its threshold; busy when any is not.

    The network threshold is ``network_threshold_bytes`` per ``network_threshold_per``
    and is compared as a rate, so a sample stretched by a late pass is judged fairly.
    """
    if sample is None:
        return Assessment(Activity.UNMEASURED, unreported=SIGNALS)
    busy: list[str] = []
    unreported: list[str] = []
    if sample.gpu_util_percent is None:
        unreported.append("gpu")
    elif sample.gpu_util_percent >= gpu_threshold:
        busy.append("gpu")
    span = sample.span
    if span is not None:
        if sample.cpu_percent is None:
            unreported.append("cpu")
        elif sample.cpu_percent >= cpu_threshold:
            busy.append("cpu")
        if sample.network_bytes is None:
            unreported.append("network")
        # Cross-multiplied so a zero-length span cannot divide by zero.
        elif (
            sample.network_bytes * network_threshold_per.total_seconds()
            >= network_threshold_bytes * span.total_seconds()
        ):
            busy.append("network")
    if busy:
        return Assessment(Activity.BUSY, tuple(busy), tuple(unreported))
    if span is None or len(unreported) == len(SIGNALS):
        return Assessment(Activity.UNMEASURED, unreported=tuple(unreported))
    return Assessment(Activity.QUIET, unreported=tuple(unreported))


# --------------------------------------------------------------------------- timing


def keep_alive_until(mtime: datetime | None, now: datetime, max_age: timedelta) -> datetime | None:
    """Until when a ``/workspace/.keep-alive`` touched at ``mtime`` defers idle action.

    ``None`` when there is no file, it expired (older than ``max_age``), or its time is
    implausibly far in the future (see :data:`KEEP_ALIVE_CLOCK_TOLERANCE`).
    """
    if mtime is None or mtime > now + KEEP_ALIVE_CLOCK_TOLERANCE:
        return None
    until = min(mtime, now) + max_age
    return until if until > now else None


class Busy(NamedTuple):
    """Whether the server is busy, and the factor idle timeouts are multiplied by."""

    multiplier: float
    is_busy: bool


NOT_BUSY = Busy(1.0, False)


def busy_factor(
    allocated_eq: float | Fraction,
    total_eq: float | Fraction,
    share: float,
    factor: float,
) -> Busy:
    """The busy-server rule: allocated / total GPU equivalents above ``share`` -> busy.

    On a busy server idle timeouts are multiplied by ``factor`` (0 < factor <= 1). A host
    with no GPU equivalents is never busy. Computed once per pass, for all containers.
    """
    if not 0 <= share <= 1:
        raise ConfigError(
            f"The busy-server share must be between 0 and 1, got {share}.",
            hint="Set enforcement.busy_share to e.g. 0.8 (80% of GPU equivalents allocated).",
        )
    if not 0 < factor <= 1:
        raise ConfigError(
            f"The busy-server factor must be above 0 and at most 1, got {factor}.",
            hint="Set enforcement.busy_factor to e.g. 0.5 (idle timeouts halved when busy).",
        )
    if total_eq <= 0:
        return NOT_BUSY
    # The share as written (0.7 is 7/10), not its binary float (a hair under 7/10, which
    # would make exactly 7 of 10 allocated count as "above" it).
    exact_share = share if isinstance(share, Fraction) else Fraction(repr(float(share)))
    if Fraction(allocated_eq) / Fraction(total_eq) > exact_share:
        return Busy(factor, True)
    return NOT_BUSY


def effective_idle_timeout(
    timeout: timedelta, window: timedelta, busy: Busy
) -> tuple[timedelta, bool]:
    """The idle timeout in force and whether the busy-server rule shortened it.

    The busy factor never pushes the timeout below the idle window: a container must at
    least count as idle before it can be stopped.
    """
    if not busy.is_busy:
        return timeout, False
    shortened = max(timeout * busy.multiplier, min(window, timeout))
    return shortened, shortened < timeout


def next_idle_since(
    idle_since: datetime | None,
    assessment: Assessment,
    sample: Sample | None,
    started_at: datetime | None,
) -> datetime | None:
    """The start of the idle streak after this sample; ``None`` when there is none.

    A quiet sample opens a streak at its own start: the end of the last interval that
    was not quiet, so the streak never begins before the last possible activity (nor
    before the container started). Anything but quiet ends the streak.
    """
    if not assessment.activity.keeps_streak():
        return None
    if idle_since is not None or sample is None or sample.start is None:
        return idle_since
    return sample.start if started_at is None else max(sample.start, started_at)


@dataclass(frozen=True)
class IdleClock:
    """Where an idle streak stands: when the idle stop is due, and why then.

    ``timeout`` is the timeout in force (shortened on a busy server). ``keep_alive_until``
    is set when a keep-alive file, not the timeout, decides the deadline.
    """

    idle_since: datetime
    timeout: timedelta
    deadline: datetime
    shortened_by_busy: bool = False
    keep_alive_until: datetime | None = None


def idle_clock(
    idle_since: datetime,
    *,
    timeout: timedelta,
    window: timedelta,
    busy: Busy,
    keep_until: datetime | None,
) -> IdleClock:
    """The idle deadline: ``idle_since + timeout``, deferred to a valid keep-alive's end."""
    in_force, shortened = effective_idle_timeout(timeout, window, busy)
    deadline = idle_since + in_force
    if keep_until is not None and keep_until > deadline:
        return IdleClock(idle_since, in_force, keep_until, shortened, keep_until)
    return IdleClock(idle_since, in_force, deadline, shortened)


def level_reached(
    now: datetime, deadline: datetime, span: timedelta, levels: tuple[int, ...]
) -> int | None:
    """100 at or after ``deadline``, else the highest warning level reached, else None.

    Level ``p`` is reached ``(100 - p)%`` of ``span`` before the deadline, so a warning
    keeps its lead time when a keep-alive moves the deadline.
    """
    if now >= deadline:
        return 100
    for percent in sorted(levels, reverse=True):
        if now >= deadline - span * ((100 - percent) / 100):
            return percent
    return None


# --------------------------------------------------------------------------- wording

_SIGNAL_WORDS = {"gpu": "GPU utilization", "cpu": "CPU use", "network": "network traffic"}


def unreported_notes(unreported: tuple[str, ...], *, has_mig: bool) -> list[tuple[str, str]]:
    """``(key, message)`` for each signal the verdict was reached without."""
    remaining = [word for s, word in _SIGNAL_WORDS.items() if s not in unreported]
    basis = (
        f"idleness is decided on {' and '.join(remaining)} only"
        if remaining
        else "nothing can be measured, so it is never counted as idle"
    )
    notes = []
    for signal in unreported:
        if signal == "gpu" and has_mig:
            what = "MIG instance: the driver reports no GPU utilization for MIG instances"
        elif signal == "network":
            what = "No per-container network counters (host network?)"
        else:
            what = f"{_SIGNAL_WORDS[signal]} is not reported for this container"
        notes.append((f"note-{signal}-unreported", f"{what}; {basis}."))
    return notes


def describe_quiet(assessment: Assessment, idle_for: timedelta) -> str:
    """``"no GPU utilization, CPU use and network traffic ... for 24 min"``."""
    watched = [word for s, word in _SIGNAL_WORDS.items() if s not in assessment.unreported]
    if len(watched) > 1:
        signals = ", ".join(watched[:-1]) + f" or {watched[-1]}"
    else:
        signals = watched[0] if watched else "activity"
    return f"no {signals} above the idle thresholds for {format_duration(idle_for)}"


def format_duration(value: timedelta) -> str:
    """A duration for people: ``45 s``, ``6 min``, ``1 h 30 min``, ``24 h``, ``2 d 3 h``.

    Minutes round up below an hour, so "stops in 6 min" is never later than said. Days
    start at 48 h: "24 h" reads better than "1 d" for the usual limits.
    """
    seconds = max(0, round(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60) if seconds < 3600 else seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
