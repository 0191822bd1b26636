"""Container use cases after creation: find, list, open, exec, start, stop, remove, stats.

Every operation takes the acting user and checks that the container is theirs (or that
they are an admin) before touching it: users cannot reach each other's containers
through DS01. Containers created by AIME's own ``mlc create`` (its labels, no DS01 ones)
are found, listed and managed the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ds01.adapters.keepalive import keepalive_path
from ds01.domain.allocation import user_equivalents, validate_before_start
from ds01.domain.containers import MAIN_COMMANDS, ContainerInfo, ContainerState
from ds01.domain.devices import format_equivalents
from ds01.domain.naming import TAG_SEPARATOR, container_tag, split_tag
from ds01.errors import (
    DS01Error,
    ErrorCode,
    NoCapacityError,
    NotFoundError,
    RefusedError,
    UsageError,
)
from ds01.services.audit import audited
from ds01.services.container.lookup import all_containers, own_containers
from ds01.services.container.mount_verify import (
    checked_before_start,
    keepalive_source,
    may_verify,
    verify_mounted,
)
from ds01.services.container.recovery import Recovered, RecoveryService
from ds01.services.gpu.allocation import allocation_lock
from ds01.services.gpu.holdings import HoldingsService
from ds01.services.limits import limits_for_user

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import ContainerDetails
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["ContainerService", "ContainerView", "Removal", "StatsView"]

#: Login shell for ``open``: bash when the image has it, else sh. A fixed string.
LOGIN_SHELL = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"


@dataclass(frozen=True)
class ContainerView:
    """One row of ``container list``; ``to_json`` gives the stable ``--json`` object."""

    name: str
    container: str
    user: str | None
    status: str
    state: str
    image: str
    framework: str
    arch: str | None
    gpus: tuple[str, ...]
    gpu_equivalents: float
    created: str
    workspace: str | None
    managed_by: str

    @classmethod
    def of(cls, info: ContainerInfo) -> ContainerView:
        labels = info.decoded
        return cls(
            name=info.display_name,
            container=info.tag,
            user=info.owner,
            status=info.status,
            state=info.state.value,
            image=info.image,
            framework=labels.framework if labels else "",
            arch=labels.arch if labels else None,
            gpus=labels.gpu_uuids if labels else (),
            gpu_equivalents=format_equivalents(labels.gpu_equivalents) if labels else 0.0,
            created=info.created.isoformat(),
            workspace=labels.work_mount if labels else None,
            managed_by="ds01" if labels and labels.ds01_managed else "aime",
        )


@dataclass(frozen=True)
class StatsView:
    """One row of ``container stats``."""

    name: str
    container: str
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    pids: int | None
    gpus: tuple[str, ...]


@dataclass(frozen=True)
class Removal:
    """A removed container and the GPU devices it held (now free for the queue)."""

    details: ContainerDetails
    freed_devices: tuple[str, ...]


def _is_main_process(
    proc: dict[str, str], main_pid: int | None, commands: Sequence[Sequence[str]]
) -> bool:
    """The container's own init and keep-alive process, which do not count as sessions."""
    if main_pid is None:
        return False
    pid, ppid = proc.get("PID"), proc.get("PPID")
    if pid == str(main_pid):
        return True
    cmd = (proc.get("CMD") or proc.get("COMMAND") or "").strip()
    return ppid == str(main_pid) and any(c and cmd == " ".join(c) for c in commands)


class ContainerService:
    """Operations on existing containers, for one acting user."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    # -- finding ----------------------------------------------------------------------

    def own_containers(self, actor: Actor) -> list[ContainerInfo]:
        """The actor's containers in every state: AIME's and DS01's, plus legacy DS01's."""
        return own_containers(self.ctx.engine, actor)

    def all_containers(self) -> list[ContainerInfo]:
        """Every AIME or DS01 container on the host."""
        return all_containers(self.ctx.engine)

    def resolve(self, actor: Actor, name: str) -> ContainerDetails:
        """The container ``name`` means for ``actor``; exit 2 if unknown, 3 if not theirs.

        ``name`` is the display name (``my-project``) or the full tag (``my-project._.1000``;
        admins use it for other users' containers).
        """
        engine = self.ctx.engine
        tag = name if TAG_SEPARATOR in name else container_tag(name, actor.uid)
        try:
            details = engine.inspect(tag)
        except NotFoundError:
            details = self._find_by_label(actor, name)
        info = details.info
        if info.decoded is None and split_tag(info.tag)[1] is None:
            raise NotFoundError(
                f"{name!r} is not an AIME or DS01 container.",
                hint="DS01 manages only containers it or AIME MLC created.",
            )
        owner, owner_uid = info.owner, info.owner_uid
        if not actor.may_manage(owner, owner_uid):
            raise RefusedError(
                f"The container {info.tag!r} belongs to {owner or f'uid {owner_uid}'}, not you.",
                hint="You can only manage your own containers ('ds01 container list').",
                code=ErrorCode.NOT_OWNER,
            )
        return details

    def _find_by_label(self, actor: Actor, name: str) -> ContainerDetails:
        engine = self.ctx.engine
        for info in self.own_containers(actor):
            if name in (info.display_name, info.tag):
                return engine.inspect(info.id)
        mine = ", ".join(sorted({c.display_name for c in self.own_containers(actor)})) or "none"
        raise NotFoundError(
            f"You have no container named {name!r} (yours: {mine}).",
            hint=f"Create it with 'ds01 container create {split_tag(name)[0]} FRAMEWORK'.",
            code=ErrorCode.UNKNOWN_CONTAINER,
        )

    # -- reading ----------------------------------------------------------------------

    def list_views(self, actor: Actor, *, all_users: bool = False) -> list[ContainerView]:
        if all_users and not actor.is_admin:
            raise RefusedError(
                "Only administrators may list every user's containers.",
                hint="Drop --all to list your own.",
                code=ErrorCode.NOT_ADMIN,
            )
        infos = self.all_containers() if all_users else self.own_containers(actor)
        if not all_users:
            recovered = self.recover(actor, infos, journals=False)
            gone = {r.tag for r in recovered if r.container_removed}
            infos = [c for c in infos if c.tag not in gone]
        return [ContainerView.of(c) for c in infos]

    def recover(
        self, actor: Actor, listing: list[ContainerInfo] | None = None, *, journals: bool = True
    ) -> list[Recovered]:
        """Remove what the actor's interrupted creates left half-made (never fails)."""
        return RecoveryService(self.ctx).sweep_user(actor, listing, journals=journals)

    def stats(self, actor: Actor) -> list[StatsView]:

        running = [c for c in self.own_containers(actor) if c.state is ContainerState.RUNNING]
        engine = self.ctx.engine

        def sample(info: ContainerInfo) -> StatsView:
            raw = engine.stats(info.id)
            return _stats_view(info, raw)

        if not running:
            return []
        # Docker needs ~1 s per sample (two readings); take them side by side.
        with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
            return list(pool.map(sample, running))

    # -- acting -----------------------------------------------------------------------

    def _exec_user(self, actor: Actor, details: ContainerDetails) -> str:
        return details.user or f"{actor.uid}:{actor.gid}"

    def _ensure_running(self, actor: Actor, details: ContainerDetails) -> None:
        if details.info.state is ContainerState.RUNNING:
            return
        if details.info.state is ContainerState.PAUSED:
            raise UsageError(
                f"The container {details.info.display_name!r} is paused.",
                hint="Unpause it with 'docker unpause' or ask an admin.",
            )
        self.start(actor, details.info.tag)

    def start(self, actor: Actor, name: str) -> ContainerDetails:
        self.recover(actor)
        details = self.resolve(actor, name)
        info = details.info
        with audited(self.ctx, actor, "container.start", info.tag, owner=info.owner):
            if info.state is ContainerState.RUNNING:
                return details
            checked = self._mounts_before_start(actor, details)
            labels = info.decoded
            if labels is None or not labels.gpu_uuids:
                self.ctx.engine.start(info.tag)
            else:
                # Its hold may have run out while it was stopped: take the devices back
                # under the allocation lock, so no concurrent create is handed them meanwhile.
                with allocation_lock(self.ctx):
                    self._check_devices(details)
                    self._check_still_ours(details)
                    self.ctx.engine.start(info.tag)
            self._verify_started(info.tag, checked)
        return details

    def _mounts_before_start(self, actor: Actor, details: ContainerDetails) -> tuple[Any, ...]:
        """The bind sources as they are now (a link on the way: exit 2), walked with the
        owner's rights; and a keep-alive only from DS01's own installation."""
        source = keepalive_source(details)
        if source is not None and source != str(keepalive_path()):
            raise UsageError(
                f"The container {details.info.display_name!r} runs a keep-alive from "
                f"{source}, which is not this DS01 installation's; DS01 does not start it.",
                hint="Remove the container and create it again (your workspace is kept).",
                code=ErrorCode.CONTAINER_OUTDATED,
            )
        owner = self._owner(actor, details.info)
        if not may_verify(owner.uid):
            raise RefusedError(
                f"Only {owner.name} or root can start {details.info.display_name!r}: DS01 "
                "checks what Docker mounted by looking into the container from the host, "
                "which the kernel allows only its owner and root.",
                hint="Run the command as the owner, or with sudo.",
                code=ErrorCode.MOUNT_UNVERIFIED,
            )
        return checked_before_start(owner, details)

    def _owner(self, actor: Actor, info: ContainerInfo) -> Actor:
        """The owner's identity, for their rights on the host (an admin may be acting)."""
        if info.owner is None or info.owner == actor.name:
            return actor
        try:
            return self.ctx.accounts.actor(info.owner, with_groups=False)
        except DS01Error:
            return actor

    def _verify_started(self, tag: str, checked: Sequence[Any]) -> None:
        """Before the container is handed over: Docker mounted what was checked, else it
        is stopped again (``mount_changed``, exit 2)."""
        try:
            verify_mounted(
                self.ctx.engine, self.ctx.mount_probe, tag, checked, what_next="stopped again"
            )
        except BaseException:
            self.ctx.engine.stop(tag, timeout=0)
            raise

    def _check_still_ours(self, details: ContainerDetails) -> None:
        """Under the lock: its devices are nobody else's now, and the owner's quota still
        has room for them (its hold may have run out, and the owner may have used the
        room since)."""
        labels = details.info.decoded
        if labels is None:
            return
        mine = set(labels.gpu_uuids)
        view = HoldingsService(self.ctx).holdings()
        if any(h.container == details.info.tag for h in view.in_force):
            return  # still within its hold after stop: nothing was released
        quota = limits_for_user(self.ctx, labels.user).gpu_quota()
        held = user_equivalents(view.in_force, labels.user)
        limit = quota.max_gpu_equivalents
        if limit is not None and held + labels.gpu_equivalents > limit:
            raise RefusedError(
                f"Starting {details.info.display_name!r} would take its GPU back "
                f"({format_equivalents(labels.gpu_equivalents)} equivalents), but "
                f"{labels.user} holds {format_equivalents(held)} of "
                f"{format_equivalents(limit)} now.",
                hint="Stop or remove another GPU container first.",
                code=ErrorCode.QUOTA,
                details={
                    "held": float(held),
                    "asked": float(labels.gpu_equivalents),
                    "allowed": float(limit),
                },
            )
        for holding in view.in_force:
            if holding.container == details.info.tag:
                continue
            taken = mine & set(holding.device_uuids)
            if taken:
                raise NoCapacityError(
                    f"The GPU of {details.info.display_name!r} ({', '.join(sorted(taken))}) "
                    f"was released while it was stopped and is now used by {holding.user}.",
                    hint="Remove this container and create it again to get a free GPU; "
                    "your workspace is kept.",
                    code=ErrorCode.DEVICE_REASSIGNED,
                )

    def _check_devices(self, details: ContainerDetails) -> None:
        """Before start: the devices a container was given must still exist."""
        labels = details.info.decoded
        if labels is None or not labels.gpu_uuids:
            return
        # A GPU switched to MIG since counts as missing: handing it out whole is wrong.
        missing = validate_before_start(labels.gpu_uuids, self.ctx.inventory.read())
        if missing:
            raise UsageError(
                f"The GPU device(s) {', '.join(missing)} given to "
                f"{details.info.display_name!r} no longer exist on this host "
                "(MIG layout changed or GPU removed).",
                hint="Remove the container and create it again to get a current device.",
                code=ErrorCode.DEVICE_GONE,
            )

    def stop(self, actor: Actor, name: str, *, timeout: int | None = None) -> ContainerDetails:
        self.recover(actor)
        details = self.resolve(actor, name)
        info = details.info
        grace = self.ctx.settings.container.stop_timeout if timeout is None else timeout
        with audited(self.ctx, actor, "container.stop", info.tag, owner=info.owner) as audit:
            audit.add(grace=grace)
            self.ctx.engine.stop(info.tag, timeout=grace)
        return details

    def remove(self, actor: Actor, name: str, *, force: bool = False) -> Removal:
        """Remove the container (never its image: base images are shared).

        The result names the devices it held: the caller runs the GPU queue when there
        are any (:func:`ds01.services.gpu.queue.process_queue_quietly`), since they may be
        what a waiting request needs."""
        self.recover(actor)
        details = self.resolve(actor, name)
        info = details.info
        if info.state.is_active and not force:
            raise UsageError(
                f"The container {info.display_name!r} is running.",
                hint=f"Stop it first ('ds01 container stop {info.display_name}') or use --force.",
                code=ErrorCode.CONTAINER_RUNNING,
            )
        labels = info.decoded
        freed = labels.gpu_uuids if labels else ()
        with audited(self.ctx, actor, "container.remove", info.tag, owner=info.owner) as audit:
            if freed:
                audit.add(released_gpus=list(freed))
            self.ctx.engine.remove(info.tag, force=force)
        return Removal(details, freed)

    def exec(
        self,
        actor: Actor,
        name: str,
        argv: Sequence[str],
        *,
        on_output: Callable[[bytes | None, bytes | None], None] | None = None,
    ) -> int:
        """Run a command in /workspace as the container's user; its exit code comes back."""
        if not argv:
            raise UsageError("No command given.", hint="Example: ds01 container exec NAME -- id -u")
        details = self.resolve(actor, name)
        self._ensure_running(actor, details)
        result = self.ctx.engine.exec(
            details.info.tag,
            argv,
            user=self._exec_user(actor, details),
            workdir="/workspace",
            env=_session_env(details),
            on_output=on_output,
        )
        return result.exit_code

    def open(self, actor: Actor, name: str, *, keep_running: bool = False) -> int:
        """An interactive login shell in /workspace.

        Like AIME, the container stops when the last shell exits, unless ``keep_running``
        or other processes (a training job in the background) are still there.
        """
        details = self.resolve(actor, name)
        self._ensure_running(actor, details)
        engine = self.ctx.engine
        code = engine.interactive_exec(
            details.info.tag,
            ["/bin/sh", "-c", LOGIN_SHELL],
            user=self._exec_user(actor, details),
            workdir="/workspace",
            env=_session_env(details),
        )
        if not keep_running and not self.has_sessions(details.info.tag):
            self.stop(actor, details.info.tag)
        return code

    def has_sessions(self, tag: str) -> bool:
        """True when processes other than the container's init/keep-alive run in it."""
        engine = self.ctx.engine
        try:
            details = engine.inspect(tag)
        except NotFoundError:
            return False
        if details.info.state is not ContainerState.RUNNING:
            return False
        procs = engine.top(tag)
        # Ours run docker-init + DS01's keep-alive (older ones "sleep infinity"); AIME's
        # run bash directly as the main pid.
        return any(not _is_main_process(p, details.pid, MAIN_COMMANDS) for p in procs)


def _session_env(details: ContainerDetails) -> dict[str, str]:
    env = {}
    for key in ("HOME", "USER", "CUDA_VISIBLE_DEVICES"):
        if key in details.env:
            env[key] = details.env[key]
    return env


def _stats_view(info: ContainerInfo, raw: dict[str, Any] | Any) -> StatsView:
    cpu = raw.get("cpu_stats") or {}
    pre = raw.get("precpu_stats") or {}
    cpu_percent: float | None = None
    try:
        delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
        ncpu = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])
        if system > 0:
            cpu_percent = round(delta / system * ncpu * 100.0, 2)
    except (KeyError, TypeError):
        cpu_percent = None
    mem = raw.get("memory_stats") or {}
    usage = mem.get("usage")
    cache = (mem.get("stats") or {}).get("inactive_file") or (mem.get("stats") or {}).get("cache")
    if usage is not None and cache:
        usage = max(0, usage - cache)
    labels = info.decoded
    return StatsView(
        name=info.display_name,
        container=info.tag,
        cpu_percent=cpu_percent,
        memory_bytes=usage,
        memory_limit_bytes=mem.get("limit"),
        pids=(raw.get("pids_stats") or {}).get("current"),
        gpus=labels.gpu_uuids if labels else (),
    )
