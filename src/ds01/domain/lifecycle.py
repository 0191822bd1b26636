"""Lifecycle enforcement, the pure decision: idle and runtime limits, cleanup, notices.

One enforcement pass is *load -> decide -> apply*. The service loads plain facts (Docker
state, counters, GPU utilization, the stored :class:`LifecycleState`), calls
:func:`decide` once per container with an injected ``now``, and applies the returned
actions (stop, release, remove, notify, record events) and stores the returned state.
Nothing here reads a clock, a file or Docker.

Idle timing:

* A container's *idle streak* starts at the beginning of its first quiet interval after
  any activity (``idle_since``); the idle clock runs from there. It is stopped in the
  first pass where ``now - idle_since >= effective timeout``, so it acts within one
  enforcement interval of the timeout, whatever the interval is.
* The *idle window* is a duration, not a count of samples: the quiet time after which a
  container counts as idle (status output), and the floor the busy-server rule cannot
  push the timeout below. A count of samples scales with the pass interval (hourly
  checks x 3 made a 30-minute timeout act after ~3 h); a duration does not.
* Warnings fire once each (their keys are persisted). A pass that reaches the stop sends
  only the stop notice: warnings the pass skipped past are not sent late, because a
  "stops in 6 min" arriving with "stopped now" only confuses. A pass that skips a lower
  warning level sends only the higher one.

There is deliberately no action that touches a workspace: ``/workspace`` is the user's
home directory tree on the host and outlives every container.

The text of the owner's notices is written by :mod:`ds01.domain.lifecycle_notices`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import ClassVar

from ds01.domain.containers import ContainerState
from ds01.domain.idle import (
    NOT_BUSY,
    Assessment,
    Busy,
    LifecycleState,
    Sample,
    assess_sample,
    describe_quiet,
    format_duration,
    idle_clock,
    keep_alive_until,
    level_reached,
    next_idle_since,
    unreported_notes,
)
from ds01.errors import ConfigError

__all__ = [
    "Action",
    "ContainerFacts",
    "ContainerPolicy",
    "ContainerState",
    "Decision",
    "Exempted",
    "Exemption",
    "HeldDevice",
    "LifecycleState",
    "LimitKind",
    "Note",
    "ReleaseGpu",
    "Remove",
    "RemoveReason",
    "Stop",
    "Warn",
    "decide",
]


class LimitKind(enum.StrEnum):
    """The two limits a running container is held to."""

    IDLE = "idle"
    RUNTIME = "runtime"


class RemoveReason(enum.StrEnum):
    NEVER_STARTED = "created_never_started"
    HOLD_EXPIRED = "hold_expired"


@dataclass(frozen=True)
class HeldDevice:
    """A device a container holds, by UUID; MIG instances report no utilization."""

    uuid: str
    is_mig: bool = False


@dataclass(frozen=True)
class Exemption:
    """An admin's exemption of a user from one limit, until ``until`` (None: forever)."""

    kind: LimitKind
    reason: str
    until: datetime | None = None

    def applies(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class ContainerFacts:
    """What the loader knows about one container at this pass (all datetimes aware UTC).

    ``name`` is the Docker name (``<name>._.<uid>``). ``started_at`` and ``finished_at``
    are ``None`` when Docker reports its zero time. ``devices`` are the devices its labels
    say it holds (empty once released). ``exemptions`` are the owner's, expired or not.
    """

    name: str
    owner: str
    state: ContainerState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    devices: tuple[HeldDevice, ...] = ()
    exemptions: tuple[Exemption, ...] = ()

    @property
    def holds_gpu(self) -> bool:
        return bool(self.devices)

    @property
    def has_mig(self) -> bool:
        return any(d.is_mig for d in self.devices)

    def exemption(self, kind: LimitKind, now: datetime) -> Exemption | None:
        """The exemption from ``kind`` in force now; expired ones are ignored."""
        return next((e for e in self.exemptions if e.kind is kind and e.applies(now)), None)


@dataclass(frozen=True)
class ContainerPolicy:
    """The lifecycle limits of one container (the service maps the policy file to it).

    ``None`` means never / keep forever. The busy-server rule is server-wide and comes in
    through :func:`decide`'s ``busy`` argument, not here.
    """

    idle_timeout: timedelta | None = timedelta(minutes=30)
    max_runtime: timedelta | None = timedelta(hours=24)
    gpu_idle_threshold: float = 5.0  # percent utilization of the busiest held device
    cpu_idle_threshold: float = 2.0  # percent of one CPU (docker stats scale)
    network_idle_threshold: int = 1 << 20  # bytes, both directions, per network_idle_per
    network_idle_per: timedelta = timedelta(minutes=1)
    idle_window: timedelta = timedelta(minutes=5)
    gpu_hold_after_stop: timedelta | None = timedelta(minutes=15)
    container_hold_after_stop: timedelta | None = timedelta(minutes=30)
    created_never_started: timedelta = timedelta(minutes=30)
    keep_alive_max: timedelta = timedelta(hours=24)
    idle_warn_at: tuple[int, ...] = (80, 95)
    runtime_warn_at: tuple[int, ...] = (75, 90)
    sigterm_grace: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "max_runtime", "idle_window", "network_idle_per"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ConfigError(
                    f"Lifecycle policy {name} must be positive, got {value}.",
                    hint="Use a duration such as 30m or 24h, or null for never.",
                )
        if self.idle_timeout is not None and self.idle_window > self.idle_timeout:
            raise ConfigError(
                f"The idle window ({self.idle_window}) is longer than the idle timeout "
                f"({self.idle_timeout}); a container could never be warned.",
                hint="Make the idle window a small part of the timeout, e.g. 5m for 30m.",
            )
        for name in ("idle_warn_at", "runtime_warn_at"):
            levels = getattr(self, name)
            if any(not 0 < p < 100 for p in levels) or len(set(levels)) != len(levels):
                raise ConfigError(
                    f"Lifecycle policy {name} must be distinct percentages between 0 and "
                    f"100, got {levels}.",
                    hint="For example (80, 95).",
                )


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Warn:
    """Tell the owner a limit is near. ``deadline`` is when the stop will happen if
    nothing changes; ``elapsed`` / ``limit`` are idle-or-running time and the limit in
    force (shortened on a busy server); ``final`` marks the last configured level.
    ``keep_alive_until`` is set when a keep-alive file is what the deadline waits for."""

    event: ClassVar[str] = "lifecycle.warn"

    kind: LimitKind
    percent: int
    deadline: datetime
    minutes_left: int
    elapsed: timedelta
    limit: timedelta
    reason: str
    final: bool = False
    shortened_by_busy: bool = False
    keep_alive_until: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.kind.value}-{self.percent}"


@dataclass(frozen=True)
class Stop:
    """Stop the container: SIGTERM, then SIGKILL after ``grace``. ``announce`` is False
    when this stop was already announced in an earlier pass (the apply failed and is
    retried): stop again, but do not notify again. The GPU is released and the container
    removed later, by the hold rules (``gpu_released_after``, ``removed_after``; None:
    never)."""

    event: ClassVar[str] = "lifecycle.stop"

    kind: LimitKind
    reason: str
    grace: timedelta
    elapsed: timedelta
    limit: timedelta
    announce: bool = True
    shortened_by_busy: bool = False
    gpu_released_after: timedelta | None = None
    removed_after: timedelta | None = None


@dataclass(frozen=True)
class ReleaseGpu:
    """Free the devices of a stopped container (relabel or remove: the service decides)."""

    event: ClassVar[str] = "lifecycle.release_gpu"

    reason: str
    devices: tuple[str, ...]
    stopped_for: timedelta


@dataclass(frozen=True)
class Remove:
    """Remove the container (never its workspace)."""

    event: ClassVar[str] = "lifecycle.remove"

    reason: RemoveReason
    detail: str


@dataclass(frozen=True)
class Note:
    """Something the owner should know once per run (e.g. MIG utilization is unseen)."""

    event: ClassVar[str] = "lifecycle.note"

    key: str
    message: str


@dataclass(frozen=True)
class Exempted:
    """FYI, once per run: a limit was reached but the owner is exempt from it."""

    event: ClassVar[str] = "lifecycle.exempted"

    kind: LimitKind
    reason: str
    until: datetime | None


Action = Warn | Stop | ReleaseGpu | Remove | Note | Exempted


@dataclass(frozen=True)
class Decision:
    """The outcome of one pass for one container: actions to apply and state to store.

    The other fields are for status output and the event log: ``idle`` is True once the
    container has been quiet for the idle window; deadlines are ``None`` where no limit
    runs.
    """

    state: LifecycleState
    actions: tuple[Action, ...] = ()
    assessment: Assessment | None = None
    idle: bool = False
    idle_deadline: datetime | None = None
    runtime_deadline: datetime | None = None


# --------------------------------------------------------------------------- decide


def decide(
    container: ContainerFacts,
    sample: Sample | None,
    policy: ContainerPolicy,
    state: LifecycleState,
    *,
    now: datetime,
    busy: Busy = NOT_BUSY,
) -> Decision:
    """Decide one container's lifecycle actions for the pass at ``now``.

    ``sample`` covers the interval since the previous pass (``None`` for containers that
    are not live, or when nothing could be read). ``busy`` is :func:`busy_factor`'s
    verdict for the whole server at this pass.
    """
    if state.run_started_at != container.started_at:
        # A new run (first sight, or restarted since): counters, streak and warnings start
        # afresh, and the runtime limit counts from the new start.
        state = LifecycleState(run_started_at=container.started_at)
    if container.state.is_active:
        return _decide_live(container, sample, policy, state, now=now, busy=busy)
    if container.state is ContainerState.CREATED:
        return _decide_created(container, policy, state, now)
    if container.state in (ContainerState.EXITED, ContainerState.DEAD):
        return _decide_stopped(container, policy, state, now)
    return Decision(state=state)  # removing: Docker is already on it


def _without_idle_keys(sent: set[str]) -> set[str]:
    return {key for key in sent if not key.startswith(f"{LimitKind.IDLE.value}-")}


@dataclass(frozen=True)
class _Limit:
    """One limit's position at this pass, before warnings and stops are chosen."""

    kind: LimitKind
    deadline: datetime
    elapsed: timedelta
    limit: timedelta
    levels: tuple[int, ...]
    reason: str
    shortened: bool = False
    keep_alive_until: datetime | None = None


def _decide_live(
    container: ContainerFacts,
    sample: Sample | None,
    policy: ContainerPolicy,
    state: LifecycleState,
    *,
    now: datetime,
    busy: Busy,
) -> Decision:
    counters = sample.reading if sample is not None and sample.reading else state.counters
    sent = set(state.sent)
    if not container.holds_gpu:
        # Idle and runtime limits exist to free GPUs; a CPU-only container is subject
        # only to the cleanup rules, once stopped.
        sent = _without_idle_keys(sent)
        return Decision(replace(state, idle_since=None, sent=frozenset(sent), counters=counters))

    actions: list[Action] = []
    assessment = assess_sample(
        sample,
        gpu_threshold=policy.gpu_idle_threshold,
        cpu_threshold=policy.cpu_idle_threshold,
        network_threshold_bytes=policy.network_idle_threshold,
        network_threshold_per=policy.network_idle_per,
    )
    if sample is not None:
        for key, message in unreported_notes(assessment.unreported, has_mig=container.has_mig):
            _note_once(key, message, sent, actions)
    idle_since = next_idle_since(state.idle_since, assessment, sample, container.started_at)
    if idle_since is None:
        # The streak ended (or never began): the next idle period warns again.
        sent = _without_idle_keys(sent)

    mtime = sample.keep_alive_mtime if sample is not None else None
    keep_until = _keep_alive(mtime, state, policy, now=now, sent=sent, actions=actions)

    limits = [
        limit
        for limit in (
            _idle_limit(idle_since, assessment, policy, busy=busy, keep_until=keep_until, now=now),
            _runtime_limit(container, policy, now),
        )
        if limit is not None
    ]
    actions.extend(_limit_actions(container, limits, policy, sent, now))
    new_state = LifecycleState(
        run_started_at=container.started_at,
        idle_since=idle_since,
        sent=frozenset(sent),
        keep_alive_seen=mtime if mtime is not None else state.keep_alive_seen,
        counters=counters,
    )
    deadlines = {limit.kind: limit.deadline for limit in limits}
    return Decision(
        state=new_state,
        actions=tuple(actions),
        assessment=assessment,
        idle=idle_since is not None and now - idle_since >= policy.idle_window,
        idle_deadline=deadlines.get(LimitKind.IDLE),
        runtime_deadline=deadlines.get(LimitKind.RUNTIME),
    )


def _keep_alive(
    mtime: datetime | None,
    state: LifecycleState,
    policy: ContainerPolicy,
    *,
    now: datetime,
    sent: set[str],
    actions: list[Action],
) -> datetime | None:
    """Until when ``/workspace/.keep-alive`` (touched at ``mtime``) holds off the idle
    stop, or ``None``; notes a time in the future once, and lets a fresh touch re-arm the
    idle warnings (``sent`` and ``actions`` are updated in place)."""
    keep_until = keep_alive_until(mtime, now, policy.keep_alive_max)
    if mtime is not None and keep_until is None and mtime > now:
        _note_once(
            "note-keep-alive-future",
            "The time of /workspace/.keep-alive is in the future, so it is ignored. "
            "Run `touch /workspace/.keep-alive` again to set it to now.",
            sent,
            actions,
        )
    if keep_until is not None and mtime != state.keep_alive_seen:
        # A fresh touch is the owner's answer to a warning: the next approach warns again.
        sent.intersection_update(_without_idle_keys(sent))
    return keep_until


def _idle_limit(
    idle_since: datetime | None,
    assessment: Assessment,
    policy: ContainerPolicy,
    *,
    busy: Busy,
    keep_until: datetime | None,
    now: datetime,
) -> _Limit | None:
    """The idle limit's position, while a quiet streak runs and the policy has one."""
    if policy.idle_timeout is None or idle_since is None:
        return None
    clock = idle_clock(
        idle_since,
        timeout=policy.idle_timeout,
        window=policy.idle_window,
        busy=busy,
        keep_until=keep_until,
    )
    idle_for = now - idle_since
    return _Limit(
        LimitKind.IDLE,
        clock.deadline,
        idle_for,
        clock.timeout,
        policy.idle_warn_at,
        describe_quiet(assessment, idle_for),
        clock.shortened_by_busy,
        clock.keep_alive_until,
    )


def _runtime_limit(
    container: ContainerFacts, policy: ContainerPolicy, now: datetime
) -> _Limit | None:
    """The runtime limit's position, counted from the start of this run."""
    if policy.max_runtime is None or container.started_at is None:
        return None
    ran_for = now - container.started_at
    limit = policy.max_runtime
    reason = f"running for {format_duration(ran_for)} of a {format_duration(limit)} limit"
    return _Limit(
        LimitKind.RUNTIME,
        container.started_at + limit,
        ran_for,
        limit,
        policy.runtime_warn_at,
        reason,
    )


def _limit_actions(
    container: ContainerFacts,
    limits: list[_Limit],
    policy: ContainerPolicy,
    sent: set[str],
    now: datetime,
) -> list[Action]:
    """Exemption notices, then one stop, or else the warnings not yet sent.

    ``sent`` is updated in place with the keys of what is decided here.
    """
    actions: list[Action] = []
    due: list[tuple[_Limit, int]] = []
    for limit in limits:
        level = level_reached(now, limit.deadline, limit.limit, limit.levels)
        exemption = container.exemption(limit.kind, now)
        key = f"exempt-{limit.kind.value}"
        if exemption is None:
            sent.discard(key)  # a later exemption gets its own FYI
            if level is not None:
                due.append((limit, level))
        elif level is not None and key not in sent:
            sent.add(key)
            actions.append(Exempted(limit.kind, exemption.reason, exemption.until))

    stops = [limit for limit, level in due if level == 100]
    if stops:
        # Only the stop notice in this pass: warnings it skipped past would arrive
        # together with "stopped now" and say something false.
        first = min(stops, key=lambda limit: limit.deadline)
        key = f"{first.kind.value}-stop"
        actions.append(
            Stop(
                kind=first.kind,
                reason=first.reason,
                grace=policy.sigterm_grace,
                elapsed=first.elapsed,
                limit=first.limit,
                announce=key not in sent,
                shortened_by_busy=first.shortened,
                gpu_released_after=policy.gpu_hold_after_stop,
                removed_after=policy.container_hold_after_stop,
            )
        )
        sent.add(key)
        return actions
    for limit, level in due:
        if f"{limit.kind.value}-{level}" in sent:
            continue
        # Lower levels skipped past count as sent: a late lower warning would contradict
        # the higher one the owner already has.
        sent.update(f"{limit.kind.value}-{p}" for p in limit.levels if p <= level)
        actions.append(
            Warn(
                kind=limit.kind,
                percent=level,
                deadline=limit.deadline,
                minutes_left=max(1, math.ceil((limit.deadline - now).total_seconds() / 60)),
                elapsed=limit.elapsed,
                limit=limit.limit,
                reason=limit.reason,
                final=level == max(limit.levels),
                shortened_by_busy=limit.shortened,
                keep_alive_until=limit.keep_alive_until,
            )
        )
    return actions


def _decide_created(
    container: ContainerFacts, policy: ContainerPolicy, state: LifecycleState, now: datetime
) -> Decision:
    age = now - container.created_at
    if age < policy.created_never_started:
        return Decision(state=state)
    detail = f"created {format_duration(age)} ago and never started"
    return Decision(state=state, actions=(Remove(RemoveReason.NEVER_STARTED, detail),))


def _decide_stopped(
    container: ContainerFacts, policy: ContainerPolicy, state: LifecycleState, now: datetime
) -> Decision:
    sent = _without_idle_keys(set(state.sent))
    actions: list[Action] = []
    hold, gpu_hold = policy.container_hold_after_stop, policy.gpu_hold_after_stop
    if container.finished_at is None:
        _note_once(
            "note-no-finish-time",
            "Docker reports no time at which this container stopped, so the hold rules "
            "cannot apply to it; remove it yourself when you no longer need it.",
            sent,
            actions,
        )
    elif hold is not None and now - container.finished_at >= hold:
        # Removal frees the GPU as well: no separate release.
        ago = format_duration(now - container.finished_at)
        detail = f"stopped {ago} ago; stopped containers are kept {format_duration(hold)}"
        actions.append(Remove(RemoveReason.HOLD_EXPIRED, detail))
    elif container.holds_gpu and gpu_hold is not None and now - container.finished_at >= gpu_hold:
        ago = format_duration(now - container.finished_at)
        reason = f"stopped {ago} ago; GPUs are held {format_duration(gpu_hold)} after a stop"
        devices = tuple(d.uuid for d in container.devices)
        actions.append(ReleaseGpu(reason, devices, now - container.finished_at))
    new_state = replace(state, idle_since=None, sent=frozenset(sent), counters=None)
    return Decision(state=new_state, actions=tuple(actions))


def _note_once(key: str, message: str, sent: set[str], actions: list[Action]) -> None:
    if key not in sent:
        sent.add(key)
        actions.append(Note(key, message))
