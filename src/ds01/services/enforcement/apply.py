"""Applying one enforcement pass's decisions, and the report of the pass.

:class:`ActionApplier` turns each action of a :class:`~ds01.domain.lifecycle.Decision`
into effects, in an order that keeps the owner's picture true:

* ``Warn``, ``Note``, ``Exempted``: a notice to the owner (terminals, else the
  ``.ds01-alerts`` file in the workspace), then an event.
* ``Stop``: the stop notice first ("is being stopped now"), then ``docker stop`` with
  the SIGTERM grace, recorded as ``lifecycle.stop`` whatever the outcome. A stop that
  fails is retried by the next pass without a second notice (the decision says so).
* ``ReleaseGpu``: the event ``gpu.release`` and a notice, once per stop: the key
  :data:`RELEASED_KEY` in the stored state keeps later passes from repeating it.
* ``Remove``: ``docker remove`` (never the workspace), recorded as ``lifecycle.remove``,
  then the notice, so nobody is told about a removal that failed.

Every event is attributed to the container's owner with ``by: enforcement``. The state
of a container that had actions is stored at once, so a crash later in the pass repeats
no notice; the quiet majority is stored in one transaction at the end of the pass.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ds01.domain.actor import Actor
from ds01.domain.idle import NOT_BUSY, Busy, LifecycleState, Sample
from ds01.domain.lifecycle import (
    Action,
    ContainerFacts,
    ContainerPolicy,
    Decision,
    Exempted,
    Note,
    ReleaseGpu,
    Remove,
    Stop,
    Warn,
)
from ds01.domain.lifecycle_notices import render_notice
from ds01.errors import DS01Error
from ds01.serialize import JSON_OMIT_EMPTY, JSON_SKIP, json_round
from ds01.services.audit import audited

if TYPE_CHECKING:
    from ds01.domain.containers import ContainerInfo
    from ds01.domain.devices import Inventory
    from ds01.domain.engine_types import ContainerDetails
    from ds01.domain.labels import ContainerLabels
    from ds01.ports import Notifier
    from ds01.services.context import AppContext
    from ds01.services.gpu.queue import QueueOutcome

__all__ = [
    "BY",
    "RELEASED_KEY",
    "ActionApplier",
    "BusyLoad",
    "ContainerOutcome",
    "PassError",
    "PassReport",
    "PassResult",
    "Subject",
    "action_details",
]

#: Who the event log names as having acted.
BY = "enforcement"
#: Stored in ``LifecycleState.sent`` once a stop's GPU release was recorded.
RELEASED_KEY = "gpu-released"

_EVENTS: dict[type, str] = {ReleaseGpu: "gpu.release"}


def _event_name(action: Action) -> str:
    return _EVENTS.get(type(action), action.event)


def _short_name(action: Action) -> str:
    return action.event.rpartition(".")[2]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list | frozenset | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, Fraction):
        return round(float(value), 4)
    return value


def action_details(action: Action) -> dict[str, Any]:
    """An action's fields as JSON-ready values (times ISO-8601, durations in seconds)."""
    return {f.name: _jsonable(getattr(action, f.name)) for f in fields(action)}


# --------------------------------------------------------------------------- report


@dataclass
class Subject:
    """One container of the pass: what was loaded for it, and what became of its state."""

    info: ContainerInfo
    labels: ContainerLabels
    details: ContainerDetails | None
    facts: ContainerFacts
    policy: ContainerPolicy
    state: LifecycleState
    sample: Sample | None
    new_state: LifecycleState | None = None
    saved: bool = False
    removed: bool = False  # by this pass: its state is not kept


@dataclass(frozen=True)
class ContainerOutcome:
    """One container's line in the pass report (``ds01 enforce --json``: ``containers``)."""

    container: str
    owner: str
    state: str
    holds_gpu: bool
    activity: str | None
    idle: bool
    idle_since: datetime | None
    idle_deadline: datetime | None
    runtime_deadline: datetime | None
    signals: dict[str, Any]
    actions: tuple[dict[str, Any], ...]
    #: What the pass stores for the container; internal, not in the report.
    new_state: LifecycleState = field(
        repr=False, compare=False, default=LifecycleState(), metadata=JSON_SKIP
    )


@dataclass(frozen=True)
class PassError:
    """Something that failed in a pass; ``container`` is None for pass-wide failures."""

    container: str | None
    owner: str | None
    message: str
    #: For internal errors (bugs) only; the key is left out otherwise.
    traceback: str | None = field(default=None, metadata=JSON_OMIT_EMPTY)


@dataclass(frozen=True)
class BusyLoad:
    """How loaded the GPUs were, and the idle-timeout factor that followed from it."""

    is_busy: bool
    idle_timeout_factor: float
    allocated_equivalents: Fraction | None
    total_equivalents: Fraction | None


@dataclass(frozen=True)
class PassResult:
    """The ``ds01 enforce --json`` document: a finished :class:`PassReport`, frozen."""

    started_at: datetime
    duration_s: float = field(metadata=json_round(3))
    dry_run: bool
    busy: BusyLoad
    counts: Mapping[str, int]
    containers: tuple[ContainerOutcome, ...]
    errors: tuple[PassError, ...]
    warnings: tuple[str, ...]
    queue: tuple[QueueOutcome, ...]
    pruned: int


@dataclass
class PassReport:
    """What one pass saw and did, filled in as the pass goes; :meth:`result` is the
    document ``ds01 enforce --json`` prints."""

    started_at: datetime
    dry_run: bool = False
    duration_s: float = 0.0
    busy: Busy = NOT_BUSY
    allocated_equivalents: Fraction | None = None
    total_equivalents: Fraction | None = None
    containers: list[ContainerOutcome] = field(default_factory=list)
    errors: list[PassError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    queue: list[QueueOutcome] = field(default_factory=list)
    pruned: int = 0
    inventory: Inventory | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.errors

    def fail(
        self,
        container: str | None,
        owner: str | None,
        exc: BaseException,
        *,
        prefix: str | None = None,
    ) -> None:
        """Record a failure; DS01 errors by their message, anything else as a bug."""
        trace = None
        if isinstance(exc, DS01Error):
            message = exc.message
        else:
            import traceback

            message = f"internal error ({type(exc).__name__}: {exc}); this is a DS01 bug"
            trace = "".join(traceback.format_exception(exc))
        if prefix:
            message = f"{prefix}: {message}"
        self.errors.append(PassError(container, owner, message, trace))

    def counts(self) -> dict[str, int]:
        """How many actions of each kind the pass took (or planned, on a dry run)."""
        out = {"checked": len(self.containers)}
        for name in ("warn", "stop", "release_gpu", "remove", "note", "exempted"):
            out[name] = sum(1 for c in self.containers for a in c.actions if a["action"] == name)
        return out

    def result(self) -> PassResult:
        """The report as it stands, frozen (``to_json`` of it is the ``--json`` document)."""
        return PassResult(
            started_at=self.started_at,
            duration_s=self.duration_s,
            dry_run=self.dry_run,
            busy=BusyLoad(
                is_busy=self.busy.is_busy,
                idle_timeout_factor=self.busy.multiplier,
                allocated_equivalents=self.allocated_equivalents,
                total_equivalents=self.total_equivalents,
            ),
            counts=self.counts(),
            containers=tuple(self.containers),
            errors=tuple(self.errors),
            warnings=tuple(self.warnings),
            queue=tuple(self.queue),
            pruned=self.pruned,
        )


# --------------------------------------------------------------------------- applying


class ActionApplier:
    """Carries out decisions for one pass (or only lists them, on a dry run)."""

    def __init__(
        self,
        ctx: AppContext,
        notifier: Notifier,
        *,
        dry_run: bool = False,
        save_now: Callable[[Subject, LifecycleState], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.notifier = notifier
        self.dry_run = dry_run
        #: Stores one container's state at once (after its actions), when given.
        self.save_now = save_now

    def apply(self, subject: Subject, decision: Decision, report: PassReport) -> ContainerOutcome:
        """Apply every action of ``decision``; failures go to ``report``, not up."""
        state = decision.state
        applied: list[dict[str, Any]] = []
        for action in decision.actions:
            entry: dict[str, Any] = {"action": _short_name(action), **action_details(action)}
            if self.dry_run:
                entry["result"] = "planned"
                applied.append(entry)
                continue
            try:
                entry["notified"] = self._apply(subject, action)
            except DS01Error as exc:
                entry.update(result="failed", error=exc.message)
                report.fail(subject.info.tag, subject.facts.owner, exc, prefix=entry["action"])
            else:
                entry["result"] = "ok"
                if isinstance(action, ReleaseGpu):
                    state = replace(state, sent=state.sent | {RELEASED_KEY})
                subject.removed = subject.removed or isinstance(action, Remove)
            applied.append(entry)
        if applied and not self.dry_run and not subject.removed and self.save_now is not None:
            self.save_now(subject, state)
        return _outcome(subject, decision, state, applied)

    def _apply(self, subject: Subject, action: Action) -> list[str]:
        """One action's effects; returns where the owner's notice went."""
        tag = subject.info.tag
        owner = subject.facts.owner
        details = action_details(action)
        if isinstance(action, Stop):
            notified = self._tell(subject, action)
            grace = max(0, round(action.grace.total_seconds()))
            with audited(
                self.ctx, _owner_actor(subject), _event_name(action), tag, owner=owner, by=BY
            ) as audit:
                audit.add(**details, notified=notified)
                self.ctx.engine.stop(tag, timeout=grace)
            return notified
        if isinstance(action, Remove):
            with audited(
                self.ctx, _owner_actor(subject), _event_name(action), tag, owner=owner, by=BY
            ) as audit:
                audit.add(**details)
                if subject.labels.gpu_uuids:
                    audit.add(released_gpus=list(subject.labels.gpu_uuids))
                self.ctx.engine.remove(tag)
                notified = self._tell(subject, action)
                audit.add(notified=notified)
            return notified
        if isinstance(action, Warn | Note | Exempted | ReleaseGpu):
            notified = self._tell(subject, action)
            self.ctx.events.record(
                actor=owner,
                action=_event_name(action),
                target=tag,
                result="ok",
                owner=owner,
                details={**details, "notified": notified, "by": BY},
            )
            return notified
        raise DS01Error(f"Enforcement does not know how to apply {type(action).__name__}.")

    def _tell(self, subject: Subject, action: Action) -> list[str]:
        text = render_notice(subject.info.tag, action, keep_alive_max=subject.policy.keep_alive_max)
        if text is None:
            return []
        return self.notifier.notify(
            subject.facts.owner, text, fallback_dir=subject.labels.work_mount
        )


def _owner_actor(subject: Subject) -> Actor:
    """The owner as the event log's actor (only the name is recorded; the account may be
    gone, so it is not looked up)."""
    uid = subject.info.owner_uid
    return Actor(uid=-1 if uid is None else uid, gid=-1, name=subject.facts.owner, home="")


def _outcome(
    subject: Subject, decision: Decision, state: LifecycleState, applied: list[dict[str, Any]]
) -> ContainerOutcome:
    sample = subject.sample
    signals: dict[str, Any] = {}
    if sample is not None:
        span = sample.span
        signals = {
            "gpu_percent": sample.gpu_util_percent,
            "cpu_percent": None if sample.cpu_percent is None else round(sample.cpu_percent, 2),
            "network_bytes": sample.network_bytes,
            "interval_s": None if span is None else round(span.total_seconds(), 3),
            "keep_alive": None
            if sample.keep_alive_mtime is None
            else sample.keep_alive_mtime.isoformat(),
        }
    assessment = decision.assessment
    return ContainerOutcome(
        container=subject.info.tag,
        owner=subject.facts.owner,
        state=subject.info.state.value,
        holds_gpu=subject.facts.holds_gpu,
        activity=None if assessment is None else assessment.activity.value,
        idle=decision.idle,
        idle_since=state.idle_since,
        idle_deadline=decision.idle_deadline,
        runtime_deadline=decision.runtime_deadline,
        signals=signals,
        actions=tuple(applied),
        new_state=state,
    )
