"""Lifecycle enforcement: one pass over every DS01/AIME container, load -> decide -> apply.

A pass (``ds01 enforce``, run every minute by ``ds01-enforce.timer``):

1. **Load** plain facts: one Docker list call for all containers; one inspect for each
   container that needs a decision (live ones holding GPUs, stopped ones); the GPU
   inventory once; the stored :class:`~ds01.domain.idle.LifecycleState` of every
   container and every exemption in one query each; for each live GPU container its CPU
   and network counters straight from the kernel (:mod:`ds01.adapters.cgroup_stats`,
   never ``docker stats``) and the time of ``.keep-alive`` in its host workspace.
2. **Decide** with the pure :func:`ds01.domain.lifecycle.decide`, once per container,
   with the busy-server verdict computed once for the pass.
3. **Apply** the actions (:mod:`ds01.services.enforcement.apply`): notices to the owner,
   events in the log, stop, remove; store the new states; prune states of containers that
   are gone; run the GPU queue, since devices may have come free.

Scope: idle and runtime limits apply to running containers that hold GPUs; cleanup
(never started, hold after stop) applies to every DS01/AIME container. Live CPU-only
containers need no decision and cost nothing beyond the list call.

A failure on one container is recorded in the pass report and the pass goes on with the
others; the command exits 1 at the end when anything failed. When the GPU inventory
cannot be read, no live GPU container is judged in that pass (their streaks are neither
extended nor reset): a missing GPU signal must not make a busy GPU look idle.

Releasing a stopped container's GPU (``gpu_hold_after_stop`` ran out) does not remove
the container: Docker labels cannot change, and the allocator already treats an expired
hold as free (:class:`~ds01.services.gpu.holdings.HoldingsService`). Enforcement records
``gpu.release`` once, tells the owner and runs the queue so a waiting request gets the
device. The container itself goes when ``container_hold_after_stop`` runs out; starting
it before then takes its device back if it is still free (``container start`` checks).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ds01.adapters.cgroup_stats import CgroupStats, CounterTarget
from ds01.adapters.lifecycle_store import LifecycleStore
from ds01.adapters.locks import host_lock, watch_lock
from ds01.adapters.notifier import TerminalNotifier
from ds01.domain.allocation import Holding, capacity_summary, holdings_in_force
from ds01.domain.containers import ContainerState
from ds01.domain.idle import NOT_BUSY, Busy, LifecycleState, Sample, busy_factor
from ds01.domain.idle import sample_from_counters as _sample_from_counters
from ds01.domain.lifecycle import (
    ContainerFacts,
    ContainerPolicy,
    Exemption,
    HeldDevice,
    decide,
)
from ds01.errors import (
    ConfigError,
    DS01Error,
    ErrorCode,
    GpuQueryError,
    NotFoundError,
    RefusedError,
    UsageError,
)
from ds01.services.container.operations import ContainerService
from ds01.services.container.recovery import RecoveryService
from ds01.services.enforcement.apply import RELEASED_KEY, ActionApplier, PassReport, Subject
from ds01.services.gpu.holdings import HoldingsService
from ds01.services.gpu.queue import process_queue_quietly
from ds01.services.limits import apply_user_limits, limits_for_user

if TYPE_CHECKING:
    from ds01.adapters.cgroup_stats import CgroupStats
    from ds01.adapters.docker_engine import ContainerDetails
    from ds01.adapters.lifecycle_store import LifecycleStore, StoredState
    from ds01.config.settings import Settings
    from ds01.domain.actor import Actor
    from ds01.domain.containers import ContainerInfo
    from ds01.domain.devices import Device, Inventory
    from ds01.domain.policy import ResolvedLimits
    from ds01.ports import Notifier
    from ds01.services.context import AppContext

__all__ = [
    "KEEP_ALIVE_FILE",
    "EnforceService",
    "PassReport",
    "container_policy",
    "watch",
]

#: The file in a workspace whose modification time defers idle action.
KEEP_ALIVE_FILE = ".keep-alive"
#: How long a pass waits for another pass (a manual run next to the timer's) to finish.
PASS_LOCK_WAIT_S = 5.0


def container_policy(limits: ResolvedLimits, settings: Settings) -> tuple[ContainerPolicy, str]:
    """The lifecycle policy of one owner's containers, and a warning ('' if none).

    A policy file may give a group an idle window longer than its idle timeout (the
    window defaults to 5 minutes, a group may set ``idle_timeout: 2m``). The decision
    refuses that combination, so the window is cut to the timeout, with a warning: a
    configuration slip must not leave a whole group unenforced.
    """

    def seconds(value: int | float | None) -> timedelta | None:
        return None if value is None else timedelta(seconds=value)

    enforcement = settings.enforcement
    idle_timeout = seconds(limits.idle_timeout_s)
    window = timedelta(seconds=limits.idle.window_s)
    warning = ""
    if idle_timeout is not None and window > idle_timeout:
        warning = (
            f"The idle window of user {limits.user} (group {limits.group}, "
            f"{limits.display('idle.window')}) is longer than their idle timeout "
            f"({limits.display('idle_timeout')}); the timeout is used as the window."
        )
        window = idle_timeout
    policy = ContainerPolicy(
        idle_timeout=idle_timeout,
        max_runtime=seconds(limits.max_runtime_s),
        gpu_idle_threshold=limits.idle.gpu_threshold,
        cpu_idle_threshold=limits.idle.cpu_threshold,
        network_idle_threshold=limits.idle.network_threshold_bytes,
        network_idle_per=timedelta(minutes=1),
        idle_window=window,
        gpu_hold_after_stop=seconds(limits.gpu_hold_after_stop_s),
        container_hold_after_stop=seconds(limits.container_hold_after_stop_s),
        created_never_started=timedelta(seconds=enforcement.created_timeout),
        keep_alive_max=timedelta(seconds=enforcement.keep_alive_max),
        sigterm_grace=timedelta(seconds=enforcement.sigterm_grace),
    )
    return policy, warning


@dataclass
class _PassInputs:
    """What the pass loads once, for all containers."""

    now: datetime
    devices: dict[str, Device] | None  # None: the GPU inventory could not be read
    stored: dict[str, StoredState]
    exemptions: dict[str, tuple[Exemption, ...]]


class EnforceService:
    """One enforcement pass; adapters that tests replace come in through the constructor."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        counters: CgroupStats | None = None,
        notifier: Notifier | None = None,
        store: LifecycleStore | None = None,
    ) -> None:
        self.ctx = ctx
        self._counters = counters
        self._notifier = notifier
        self._store = store
        self._policies: dict[str, tuple[ContainerPolicy, str]] = {}

    @property
    def counters(self) -> CgroupStats:
        if self._counters is None:
            self._counters = CgroupStats()
        return self._counters

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            self._notifier = TerminalNotifier()
        return self._notifier

    @property
    def store(self) -> LifecycleStore:
        if self._store is None:
            self._store = LifecycleStore(self.ctx.state_db)
        return self._store

    # -- the pass ---------------------------------------------------------------------

    def run_pass(
        self, actor: Actor, *, dry_run: bool = False, owners: Collection[str] | None = None
    ) -> PassReport:
        """Enforce once. ``owners`` limits the pass to those users' containers (tests and
        benchmarks share an engine with others); ``dry_run`` decides without acting or
        storing anything."""
        if not actor.is_admin:
            raise RefusedError(
                "Only administrators may run lifecycle enforcement.",
                hint="It runs as root from ds01-enforce.timer; see 'systemctl status "
                "ds01-enforce.timer'.",
                code=ErrorCode.NOT_ADMIN,
            )
        if dry_run:
            return self._pass(dry_run=True, owners=owners)

        lock = Path(self.ctx.settings.state_dir) / "locks" / "enforce.lock"
        watch_lock(lock)  # root: a user holding it past its lease is ended (no-op otherwise)
        with host_lock(lock, timeout=PASS_LOCK_WAIT_S, what="enforcement"):
            return self._pass(dry_run=False, owners=owners)

    def _pass(self, *, dry_run: bool, owners: Collection[str] | None) -> PassReport:
        clock_start = time.monotonic()
        now = self.ctx.clock.now()
        report = PassReport(started_at=now, dry_run=dry_run)
        wanted = None if owners is None else set(owners)
        if not dry_run:
            self._recover(wanted, report)
        listing = ContainerService(self.ctx).all_containers()
        in_scope = [
            c for c in listing if c.decoded is not None and (wanted is None or c.owner in wanted)
        ]
        inputs = _PassInputs(
            now=now,
            devices=self._devices(report),
            stored=self.store.load_states(),
            exemptions=self.store.exemptions_by_user(),
        )

        subjects: list[Subject] = []
        for info in in_scope:
            try:
                subject = self._load(info, inputs, report)
            except Exception as exc:  # one container must not stop the pass
                report.fail(info.tag, info.owner, exc)
                continue
            if subject is not None:
                subjects.append(subject)

        busy = self._busy(listing, subjects, inputs, report)
        applier = ActionApplier(
            self.ctx, self.notifier, dry_run=dry_run, save_now=self._save_now(report)
        )
        to_save: list[Subject] = []
        for subject in subjects:
            try:
                decision = decide(
                    subject.facts, subject.sample, subject.policy, subject.state, now=now, busy=busy
                )
                outcome = applier.apply(subject, decision, report)
            except Exception as exc:  # one container must not stop the pass
                report.fail(subject.info.tag, subject.facts.owner, exc)
                continue
            report.containers.append(outcome)
            subject.new_state = outcome.new_state
            to_save.append(subject)

        if not dry_run:
            self._apply_limits(in_scope, report)
            self._finish(listing, to_save, report)
        report.warnings.extend(dict.fromkeys(self.ctx.warnings))
        self.ctx.warnings.clear()
        report.duration_s = time.monotonic() - clock_start
        return report

    def _recover(self, owners: set[str] | None, report: PassReport) -> None:
        """What interrupted creates left half-made goes before anything is judged (the
        messages reach the report's warnings through the context)."""
        try:
            RecoveryService(self.ctx).sweep_all(owners)
        except Exception as exc:  # the pass's own work must still be done and reported
            report.fail(None, None, exc, prefix="clean-up of interrupted creates")

    def _apply_limits(self, in_scope: list[ContainerInfo], report: PassReport) -> None:
        """Owners' aggregate limits (root only): a policy edit reaches them within a pass."""
        owners = sorted({c.owner for c in in_scope if c.owner})
        try:
            results = apply_user_limits(self.ctx, self.ctx.actor, owners)
        except Exception as exc:  # the pass's other work must still be done and reported
            report.fail(None, None, exc, prefix="aggregate limits")
            return
        for item in results:
            if not item.applied and item.reason not in ("no aggregate limit", ""):
                report.warnings.append(f"aggregate limit of {item.user}: {item.reason}")

    def _save_now(self, report: PassReport) -> Callable[[Subject, LifecycleState], None]:
        """Store one container's state right after its actions (see enforce_apply)."""

        def save(subject: Subject, state: LifecycleState) -> None:
            try:
                self.store.save_states(
                    [(subject.info.id, subject.info.tag, subject.facts.owner, state.to_json())],
                    now=report.started_at,
                )
            except DS01Error as exc:
                report.fail(subject.info.tag, subject.facts.owner, exc)
                return
            subject.saved = True

        return save

    def _finish(
        self, listing: list[ContainerInfo], to_save: list[Subject], report: PassReport
    ) -> None:
        """Store states, prune the gone, run the queue: each step on its own."""
        rows = [
            (s.info.id, s.info.tag, s.facts.owner, s.new_state.to_json())
            for s in to_save
            if s.new_state is not None and not s.saved and not s.removed
        ]
        try:
            self.store.save_states(rows, now=report.started_at)
        except DS01Error as exc:
            report.fail(None, None, exc)
        try:
            removed = {s.info.id for s in to_save if s.removed}
            report.pruned = self.store.prune({c.id for c in listing} - removed)
        except DS01Error as exc:
            report.fail(None, None, exc)

        # Every pass: holds also run out by time alone, and queued requests expire.
        try:
            outcomes = process_queue_quietly(self.ctx)
        except Exception as exc:  # the pass's other work is done and must be reported
            report.fail(None, None, exc, prefix="GPU queue")
            return
        report.queue = list(outcomes)

    # -- loading ----------------------------------------------------------------------

    def _devices(self, report: PassReport) -> dict[str, Device] | None:
        try:
            inventory: Inventory = self.ctx.inventory.read()
        except (GpuQueryError, ConfigError) as exc:
            report.fail(
                None,
                None,
                exc,
                prefix="GPU inventory unreadable; no running GPU container is judged idle "
                "or over its runtime in this pass",
            )
            return None
        report.inventory = inventory
        return {d.uuid: d for d in inventory.devices}

    def _policy(self, owner: str) -> tuple[ContainerPolicy, str]:
        if owner not in self._policies:
            try:
                limits = limits_for_user(self.ctx, owner)
            except ConfigError:
                raise
            except UsageError:
                # The account is gone (or never existed here): its containers are held
                # to the limits everybody without a rule gets.
                limits = self.ctx.policy.resolve(owner)
            self._policies[owner] = container_policy(limits, self.ctx.settings)
        return self._policies[owner]

    def _load(self, info: ContainerInfo, inputs: _PassInputs, report: PassReport) -> Subject | None:
        """One container's facts, policy, stored state and sample; None: nothing to decide."""
        labels = info.decoded
        if labels is None or info.state is ContainerState.REMOVING:
            return None
        live = info.state.is_active
        if live and not labels.gpu_uuids:
            return None  # CPU-only and running: no limit applies
        if live and inputs.devices is None:
            return None  # reported once by _devices
        details: ContainerDetails | None = None
        if info.state is not ContainerState.CREATED:
            try:
                details = self.ctx.engine.inspect(info.id)
            except NotFoundError:
                return None  # removed since the list call
        started_at = _utc(details.started_at) if details else None

        stored = inputs.stored.get(info.id)
        state = LifecycleState()
        if stored is not None:
            if stored.problem is not None:
                report.fail(info.tag, labels.user, DS01Error(stored.problem))
            else:
                try:
                    state = LifecycleState.from_json(stored.data)
                except DS01Error as exc:
                    report.fail(info.tag, labels.user, exc, prefix="starting from a blank state")
        # A release already recorded for this stop: the container no longer holds devices.
        released = state.run_started_at == started_at and RELEASED_KEY in state.sent
        devices: tuple[HeldDevice, ...] = ()
        if not released:
            known = inputs.devices or {}
            devices = tuple(
                HeldDevice(u, is_mig=known[u].is_mig if u in known else u.startswith("MIG-"))
                for u in labels.gpu_uuids
            )
        facts = ContainerFacts(
            name=info.tag,
            owner=labels.user,
            state=info.state,
            created_at=info.created,
            started_at=started_at,
            finished_at=_utc(details.finished_at) if details else None,
            devices=devices,
            exemptions=inputs.exemptions.get(labels.user, ()),
        )
        policy, warning = self._policy(labels.user)
        if warning:
            self.ctx.warnings.append(warning)
        sample = None
        if live and details is not None and devices:
            sample = self._sample(
                details,
                work_mount=labels.work_mount,
                devices=devices,
                state=state,
                inputs=inputs,
                report=report,
            )
        return Subject(info, labels, details, facts, policy, state, sample)

    def _sample(
        self,
        details: ContainerDetails,
        *,
        work_mount: str | None,
        devices: tuple[HeldDevice, ...],
        state: LifecycleState,
        inputs: _PassInputs,
        report: PassReport,
    ) -> Sample:
        host_config = details.host_config
        target = CounterTarget(
            container_id=details.info.id,
            cgroup_parent=str(host_config.get("CgroupParent") or ""),
            pid=details.pid,
            own_network=host_config.get("NetworkMode") != "host",
        )
        read = self.counters.read(target, self.ctx.clock.now())
        for problem in read.problems:
            report.warnings.append(f"{details.info.tag}: {problem}")
        known = inputs.devices or {}
        # MIG instances report no utilization through NVML: their devices give none, and
        # the decision says so to the owner (once per run).
        utils = [
            known[d.uuid].utilization_gpu
            for d in devices
            if d.uuid in known and not d.is_mig and known[d.uuid].utilization_gpu is not None
        ]
        return _sample_from_counters(
            state.counters,
            read.reading,
            started_at=_utc(details.started_at),
            gpu_util_percent=float(max(u for u in utils if u is not None)) if utils else None,
            keep_alive_mtime=keep_alive_mtime(work_mount),
        )

    def _busy(
        self,
        listing: list[ContainerInfo],
        subjects: list[Subject],
        inputs: _PassInputs,
        report: PassReport,
    ) -> Busy:
        """The busy-server verdict for this pass: allocated / total GPU equivalents."""
        if inputs.devices is None or report.inventory is None:
            return NOT_BUSY

        finished = {s.info.id: s.facts.finished_at for s in subjects}
        holdings: list[Holding] = []
        for info in listing:
            labels = info.decoded
            if labels is None or not labels.gpu_uuids:
                continue
            # A stopped container outside this pass's scope has no stop time here: its
            # hold counts as in force, which can only make the server look busier.
            holdings.append(
                Holding.from_labels(
                    info.tag, labels, state=info.state.value, finished_at=finished.get(info.id)
                )
            )
        gpus = HoldingsService(self.ctx)
        holds = {h.user: gpus.hold_after_stop(h.user) for h in holdings}
        summary = capacity_summary(report.inventory, holdings_in_force(holdings, inputs.now, holds))
        allocated = summary.total_equivalents - summary.free_equivalents
        enforcement = self.ctx.settings.enforcement
        busy = busy_factor(
            allocated, summary.total_equivalents, enforcement.busy_share, enforcement.busy_factor
        )
        report.allocated_equivalents = allocated
        report.total_equivalents = summary.total_equivalents
        report.busy = busy
        return busy


def _utc(value: datetime | None) -> datetime | None:
    """An engine timestamp as an aware UTC datetime (Docker's times are UTC; a naive
    one here must not make every comparison with ``now`` fail)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def keep_alive_mtime(work_mount: str | None) -> datetime | None:
    """When ``.keep-alive`` in the host workspace was last touched; None without one."""
    if not work_mount:
        return None
    try:
        stamp = (Path(work_mount) / KEEP_ALIVE_FILE).stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise DS01Error(
            f"Cannot read {Path(work_mount) / KEEP_ALIVE_FILE}: {exc.strerror}.",
            hint="Enforcement runs as root and must be able to stat files in workspaces.",
        ) from exc
    return datetime.fromtimestamp(stamp, tz=UTC)


# --------------------------------------------------------------------------- watching


class _Wake(Exception):
    """Raised by the signal handler to cut a sleep between passes short."""


def watch(
    run_once: Callable[[], PassReport | None],
    *,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    max_passes: int | None = None,
    handle_signals: bool = True,
) -> int:
    """Run passes every ``interval`` seconds until SIGTERM/SIGINT (or ``max_passes``).

    ``run_once`` runs and reports one pass (its own errors included: a pass that fails as
    a whole, the engine being down, must not end the loop). A signal during a pass lets
    the pass finish; a signal during the sleep ends it at once. Returns the number of
    passes run. ``sleep`` and ``monotonic`` (the clock a pass is timed by) are injectable
    so tests neither wait nor depend on how long a pass took on the real clock.
    """
    stopping = False
    sleeping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if sleeping:
            raise _Wake

    previous = {}
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    passes = 0
    try:
        while not stopping:
            started = monotonic()
            run_once()
            passes += 1
            if max_passes is not None and passes >= max_passes:
                break
            pause = max(0.0, interval - (monotonic() - started))
            sleeping = True
            try:
                if not stopping:
                    sleep(pause)
            except _Wake:
                break
            finally:
                sleeping = False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return passes
