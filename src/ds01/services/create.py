"""Creating a container: image, mounts, limits, GPU, labels and user, or nothing at all.

The order matters. Everything that can be refused (name, image, mounts, policy, quota)
is decided before anything is made; the container is created under the host-wide GPU
lock with its device labels (so a concurrent create sees the holding); the user account
is copied in before the first start. Any failure after the container exists removes it
again, and a workspace directory made for it is removed if still empty: a failed create
leaves no orphan container, allocation or directory behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds01.adapters.create_journal import Creator, crash_point
from ds01.adapters.identity import require_non_root
from ds01.adapters.keepalive import keepalive_path
from ds01.adapters.locks import host_lock
from ds01.domain.allocation import (
    Allocation,
    GpuRequest,
    NoFit,
    NoFitReason,
    Refusal,
    RequestKind,
    decide,
)
from ds01.domain.containers import (
    KEEPALIVE_COMMAND,
    KEEPALIVE_TARGET,
    SLEEP_COMMAND,
    ContainerSpec,
    Mount,
)
from ds01.domain.devices import format_equivalents
from ds01.domain.labels import ContainerLabels, ImageLabels
from ds01.domain.naming import container_tag, project_image_name, validate_name
from ds01.errors import NoCapacityError, RefusedError, UsageError
from ds01.services.audit import audited
from ds01.services.container_user import container_user, install_user
from ds01.services.gpus import GpuService, quota_from_limits
from ds01.services.limits import (
    ContainerLimits,
    apply_aggregate,
    check_container_count,
    plan_container_limits,
)
from ds01.services.mount_verify import verify_mounted
from ds01.services.mounts import (
    CheckedMount,
    CreatedDirs,
    check_mounts,
    ensure_workspace,
    plan_mounts,
)
from ds01.services.provisioning import begin, rollback

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import ImageInfo
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["CreateRequest", "CreateResult", "CreateService", "Prepared", "ResolvedImage"]

DEFAULT_FRAMEWORK = "Pytorch"


@dataclass(frozen=True)
class CreateRequest:
    """What the user asked for (``ds01 container create`` flags)."""

    name: str
    framework: str | None = None
    version: str | None = None
    image: str | None = None
    workspace: str | None = None
    data: str | None = None
    models: str | None = None
    arch: str | None = None
    gpus: int | None = None
    gpu_profile: str | None = None
    cpu_only: bool = False
    wait: bool = False
    interface: str = "cli"
    cwd: Path = field(default_factory=Path.cwd)


@dataclass(frozen=True)
class ResolvedImage:
    ref: str
    framework_label: str  # AIME's "<Framework>-<version>"
    arch: str | None
    custom: bool
    info: ImageInfo | None  # None until present locally


@dataclass
class Prepared:
    """A create request with everything decided that can be decided without the lock."""

    actor: Actor
    req: CreateRequest
    tag: str
    request: GpuRequest
    image: ResolvedImage
    info: ImageInfo
    workspace: Path
    data: Path | None
    models: Path | None
    limits: ContainerLimits
    data_read_only: bool = False
    models_read_only: bool = False
    default_workspace: bool = False
    queue_id: int | None = None
    allocation: Allocation | None = None
    created: bool = False
    checked_mounts: tuple[CheckedMount, ...] = ()  # what finish() verifies was mounted
    creator: str | None = None  # the creating process, for the container's label
    journal: str | None = None  # the record of this create (adapters.create_journal)


@dataclass(frozen=True)
class CreateResult:
    name: str
    container: str
    image: str
    framework: str
    arch: str | None
    workspace: str
    gpus: tuple[str, ...]
    gpu_equivalents: float
    limits: Mapping[str, Any]
    queued: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "container": self.container,
            "image": self.image,
            "framework": self.framework,
            "arch": self.arch,
            "workspace": self.workspace,
            "gpus": list(self.gpus),
            "gpu_equivalents": self.gpu_equivalents,
            "limits": dict(self.limits),
            "queued": self.queued,
        }


ProgressFn = Callable[[Mapping[str, Any]], None]


class CreateService:
    """``container create`` for one acting user."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    # -- image ------------------------------------------------------------------------

    def resolve_arch(self, flag: str | None, *, required: bool) -> tuple[str | None, str]:
        """The catalog architecture: ``--arch``, then ``MLC_ARCH``, then the GPUs."""
        from ds01.domain.arch import host_arch

        catalog = self.ctx.catalog
        gpus: tuple[Any, ...] = ()
        if flag is None and not self.ctx.environ.get("MLC_ARCH"):
            gpus = self.ctx.inventory.read().gpus
        resolution = host_arch(
            gpus,
            flag=flag,
            env=self.ctx.environ.get("MLC_ARCH") or None,
            catalog_archs=catalog.archs,
        )
        if resolution.arch is None and required:
            raise UsageError(
                "No GPU was found to choose the image architecture from.",
                hint=f"Pass --arch, one of: {', '.join(sorted(catalog.archs))} "
                "(or set MLC_ARCH). " + resolution.reason,
                code="no_arch",
            )
        return resolution.arch, resolution.reason

    def resolve_image(self, actor: Actor, req: CreateRequest) -> ResolvedImage:
        engine = self.ctx.engine
        if req.image:
            info = engine.image(req.image)
            baked = ImageLabels.decode(info.labels) if info else None
            if baked and baked.maintainer and baked.maintainer != actor.name and not actor.is_admin:
                # Another user's build may hold their files (a COPY of their project).
                raise RefusedError(
                    f"The image {req.image} belongs to {baked.maintainer}.",
                    hint="Use a catalog framework or an image of your own.",
                    code="not_owner",
                )
            arch = None
            if req.arch or self.ctx.environ.get("MLC_ARCH"):
                arch, _ = self.resolve_arch(req.arch, required=False)
            framework = baked.framework if baked and baked.framework else "custom"
            return ResolvedImage(req.image, framework, arch, True, info)
        if req.framework is None:
            # The plan's "detect custom image": a project image built by `image create`.
            own = project_image_name(req.name, actor.name)
            info = engine.image(own)
            baked = ImageLabels.decode(info.labels) if info is not None else None
            # Image names can collide across users (project "a-b" of "c" and project "a"
            # of "b-c"): only an image labelled as this user's project is theirs.
            if (
                info is not None
                and baked
                and (baked.maintainer, baked.project) == (actor.name, req.name)
            ):
                framework = baked.framework if baked and baked.framework else "custom"
                return ResolvedImage(own, framework, None, True, info)
        arch, reason = self.resolve_arch(req.arch, required=True)
        if arch is None:  # resolve_arch(required=True) already raised; this narrows the type
            raise UsageError(reason, code="no_arch")
        entry = self.ctx.catalog.lookup(req.framework or DEFAULT_FRAMEWORK, req.version, arch)
        return ResolvedImage(
            entry.image, entry.framework_label, arch, False, engine.image(entry.image)
        )

    def ensure_image(self, image: ResolvedImage, on_progress: ProgressFn | None) -> ImageInfo:
        """Pull only when the image is not present locally."""
        if image.info is not None:
            return image.info
        self.ctx.engine.pull(image.ref, on_progress)
        info = self.ctx.engine.image(image.ref)
        if info is None:
            raise UsageError(f"The image {image.ref} is still missing after the pull.")
        return info

    # -- the use case -----------------------------------------------------------------

    def gpu_request(self, req: CreateRequest) -> GpuRequest:
        """``--gpus N``, ``--gpu-profile P`` or ``--cpu-only``; by default one device when
        the host has any (like AIME), else none."""
        chosen = sum(x for x in (req.gpus is not None, req.gpu_profile is not None, req.cpu_only))
        if chosen > 1:
            raise UsageError(
                "--gpus, --gpu-profile and --cpu-only exclude each other.",
                hint="Pick one way to ask for a GPU.",
            )
        if req.cpu_only:
            return GpuRequest.cpu_only()
        if req.gpu_profile is not None:
            return GpuRequest.mig(req.gpu_profile)
        if req.gpus is not None:
            return GpuRequest.gpus(req.gpus)
        if not self.ctx.inventory.read().devices:
            return GpuRequest.cpu_only()
        return GpuRequest.gpus(1)

    def prepare(self, actor: Actor, req: CreateRequest, on_progress: ProgressFn | None) -> Prepared:
        """Everything that can be refused, decided before anything is made or pulled."""
        tag = container_tag(req.name, actor.uid)
        self.refuse_existing(req.name, tag)
        request = self.gpu_request(req)
        image = self.resolve_image(actor, req)
        mounts = plan_mounts(
            self.ctx.settings,
            actor,
            name=req.name,
            workspace=req.workspace,
            data=req.data,
            models=req.models,
            cwd=req.cwd,
        )
        limits = plan_container_limits(self.ctx, actor)
        # Refusals first (exit 3 before a multi-GB pull); re-checked under the lock.
        self.precheck(actor, request, limits, wait=req.wait)
        info = self.ensure_image(image, on_progress)
        return Prepared(
            actor=actor,
            req=req,
            tag=tag,
            request=request,
            image=image,
            info=info,
            workspace=mounts.workspace,
            data=mounts.data,
            models=mounts.models,
            limits=apply_aggregate(self.ctx, limits),
            data_read_only=mounts.data_read_only,
            models_read_only=mounts.models_read_only,
            default_workspace=mounts.workspace_is_default,
        )

    def precheck(
        self, actor: Actor, request: GpuRequest, limits: ContainerLimits, *, wait: bool
    ) -> None:
        """The policy refusals (container count, GPU policy and quota), without the lock."""
        from ds01.services.containers import ContainerService

        existing = ContainerService(self.ctx).own_containers(actor)
        check_container_count(limits.resolved, existing, adding=1 + self._waiting(actor))
        if request.kind is RequestKind.CPU_ONLY:
            return
        quota = quota_from_limits(limits.resolved)
        inventory = self.ctx.inventory.read()
        holdings = GpuService(self.ctx).holdings().in_force
        decision = decide(request, actor.name, quota, inventory, holdings)
        if isinstance(decision, Refusal):
            raise decision.to_error()
        if isinstance(decision, NoFit) and decision.reason is NoFitReason.NEVER:
            raise decision.to_error()

    def _waiting(self, actor: Actor) -> int:
        """The actor's queued requests: each becomes a container when granted."""
        from ds01.services.queue import QueueService

        return sum(1 for r in QueueService(self.ctx).store.waiting() if r.entry.user == actor.name)

    def refuse_existing(self, name: str, tag: str) -> None:
        if self.ctx.engine.exists(tag):
            raise UsageError(
                f"You already have a container named {name!r} ({tag}).",
                hint=f"Open it with 'ds01 container open {name}', or remove it first.",
                code="container_exists",
            )

    def create(
        self,
        actor: Actor,
        req: CreateRequest,
        *,
        on_progress: ProgressFn | None = None,
        on_result: Callable[[CreateResult], None] | None = None,
    ) -> CreateResult:
        """Create a container, or queue the request (``--wait``) when no GPU fits now.

        The create is recorded (:mod:`ds01.adapters.create_journal`) before anything is
        made and the record cleared only when it is done or completely undone, so that
        whatever a kill or a lost engine leaves half-made is removed by the next command
        (:mod:`ds01.services.recovery`). ``on_result`` shows the result to the user
        before the record is cleared, so that "complete" means "reported" too.
        ``crash_point`` marks the steps tests kill at.
        """
        from ds01.services.recovery import RecoveryService

        require_non_root(actor)
        validate_name(req.name)
        tag = container_tag(req.name, actor.uid)
        # Earlier interrupted creates first: one may have left a container of this name.
        RecoveryService(self.ctx).sweep_user(actor)
        with audited(self.ctx, actor, "container.create", tag) as audit:
            prepared = self.prepare(actor, req, on_progress)
            journal = begin(self.ctx, prepared)
            crash_point("journal")
            made = CreatedDirs()
            queued: int | None = None
            try:
                if prepared.default_workspace:
                    made = ensure_workspace(actor, prepared.workspace, self.ctx.settings)
                crash_point("dirs")
                with self.lock():
                    allocation = self.allocate(prepared)
                    if allocation is None:
                        queued = self.enqueue(prepared)
                    else:
                        crash_point("locked")
                        self.make_container(prepared, allocation)
                        crash_point("created")
                if allocation is not None:
                    self.finish(prepared)
                    crash_point("started")
            except BaseException:
                # Ctrl-C, a lost connection, a failed start: no container, no directory.
                rollback(self.ctx, prepared, made, journal)
                raise
            if queued is not None:
                audit.result = "queued"
                audit.add(queue_id=queued)
                result = self.result(prepared, None, queued=queued)
            else:
                result = self.result(prepared, allocation)
                audit.add(image=prepared.image.ref, gpus=list(result.gpus), limits=result.limits)
        crash_point("recorded")
        if on_result is not None:
            on_result(result)
        if journal is not None:
            journal.commit()  # from here on the container is complete and reported
        return result

    def lock(self) -> AbstractContextManager[float]:
        """The host-wide lock around decide-and-create (never skipped; exit 4 on timeout)."""
        settings = self.ctx.settings
        return host_lock(
            Path(settings.state_dir) / "locks" / "allocation.lock",
            timeout=settings.gpu.lock_timeout,
        )

    def allocate(self, prepared: Prepared) -> Allocation | None:
        """Under the lock: container count, GPU policy and placement, queue fairness.

        Returns the allocation, or ``None`` when the request should wait (``--wait``);
        raises exit 3 (policy), 4 (no capacity, no --wait) or 2 (can never fit).
        """
        from ds01.services.containers import ContainerService
        from ds01.services.queue import QueueService

        actor = prepared.actor
        existing = ContainerService(self.ctx).own_containers(actor)
        waiting = 0 if prepared.queue_id else self._waiting(actor)
        check_container_count(prepared.limits.resolved, existing, adding=1 + waiting)
        if prepared.request.kind is RequestKind.CPU_ONLY:
            return Allocation(devices=(), equivalents=Fraction(0))
        quota = quota_from_limits(prepared.limits.resolved)
        inventory = self.ctx.inventory.read()
        holdings = GpuService(self.ctx).holdings().in_force
        decision = decide(prepared.request, actor.name, quota, inventory, holdings)
        if isinstance(decision, Refusal):
            raise decision.to_error()
        if isinstance(decision, NoFit) and decision.reason is NoFitReason.NEVER:
            raise decision.to_error()
        # Allowed, and maybe free: it still may not jump ahead of requests already waiting.
        granted = QueueService(self.ctx).fits_behind_queue(
            actor.name, prepared.request, quota, inventory, holdings
        )
        if granted is not None:
            return granted
        if prepared.req.wait:
            return None
        if isinstance(decision, NoFit):
            raise decision.to_error()
        raise NoCapacityError(
            f"The free GPUs are reserved for requests that were queued first "
            f"({prepared.request.describe()}).",
            hint="Add --wait to queue behind them, or try again later ('ds01 gpu queue').",
            code="queued_first",
        )

    def enqueue(self, prepared: Prepared) -> int:
        from ds01.services.queue import QueueService

        return QueueService(self.ctx).enqueue(prepared)

    def make_container(self, prepared: Prepared, allocation: Allocation) -> None:
        """Create the container with its device labels (called under the lock)."""
        actor, req, image = prepared.actor, prepared.req, prepared.image
        user = container_user(actor)
        now = self.ctx.clock.now().isoformat(timespec="seconds")
        uuids = allocation.uuids
        labels = ContainerLabels(
            name=req.name,
            user=actor.name,
            framework=image.framework_label,
            arch=image.arch,
            work_mount=str(prepared.workspace),
            data_mount=str(prepared.data) if prepared.data else None,
            models_mount=str(prepared.models) if prepared.models else None,
            gpus=allocation.gpus_label,
            uid=actor.uid,
            group=prepared.limits.resolved.group,
            custom_image=image.ref if image.custom else None,
            image=image.ref,
            created_at=now,
            gpu_uuids=uuids,
            gpu_equivalents=allocation.equivalents,
            gpu_profile=prepared.request.profile,
            gpu_allocated_at=now if uuids else None,
            queue_id=str(prepared.queue_id) if prepared.queue_id else None,
            interface=req.interface,
            creator=prepared.creator or Creator.me().encode(),
            journal=prepared.journal,
        )
        env = {"HOME": user.home, "USER": user.name}
        if uuids:
            env["CUDA_VISIBLE_DEVICES"] = allocation.cuda_visible_devices
            env["NVIDIA_VISIBLE_DEVICES"] = allocation.cuda_visible_devices
        else:
            # Images such as AIME's set NVIDIA_VISIBLE_DEVICES=all; with the NVIDIA runtime
            # as Docker's default that would hand a CPU-only container every GPU.
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
            env["CUDA_VISIBLE_DEVICES"] = ""
        mounts = [Mount(str(prepared.workspace), "/workspace")]
        if prepared.data:
            mounts.append(Mount(str(prepared.data), "/data", read_only=prepared.data_read_only))
        if prepared.models:
            mounts.append(
                Mount(str(prepared.models), "/models", read_only=prepared.models_read_only)
            )
        settings = self.ctx.settings
        # Checked again now, with the owner's rights (a queue grant may run as root), and
        # the directories' identities kept for finish() to compare with what is mounted.
        prepared.checked_mounts = check_mounts(settings, actor, mounts)
        mounts = [c.mount for c in prepared.checked_mounts]
        keepalive = keepalive_path()
        if keepalive is not None:
            # The main process comes from the host, not from the user's image (see
            # ds01.domain.keepalive); the image's entrypoint is dropped either way.
            mounts.append(Mount(str(keepalive), KEEPALIVE_TARGET, read_only=True))
        spec = ContainerSpec(
            tag=prepared.tag,
            image=image.ref,
            labels=labels.encode(),
            user=f"{actor.uid}:{actor.gid}",
            env=env,
            mounts=tuple(mounts),
            limits=prepared.limits.limits,
            device_ids=uuids if settings.gpu.runtime == "nvidia" else (),
            network=settings.container.network,
            hostname=_hostname(req.name),
            ulimits=settings.container.ulimits,
            command=KEEPALIVE_COMMAND if keepalive is not None else SLEEP_COMMAND,
            entrypoint=(),
        )
        prepared.created = True  # from here on, a failure must remove it (idempotent)
        self.ctx.engine.create(spec)
        prepared.allocation = allocation

    def finish(self, prepared: Prepared) -> None:
        """After the lock: copy the user in and start; a failure removes the container.

        Unlike AIME, the container is started at once: a container holding a GPU is then
        in use under the idle rules (warned, then stopped, its GPU released) rather than
        sitting unstarted until the created-never-started cleanup removes it unannounced.
        """
        try:
            install_user(
                self.ctx.engine, prepared.tag, container_user(prepared.actor), prepared.info
            )
            self.ctx.engine.start(prepared.tag)
            # Before anyone gets it: Docker mounted the very directories checked.
            verify_mounted(
                self.ctx.engine, prepared.tag, prepared.checked_mounts, what_next="removed"
            )
        except BaseException:
            self.ctx.engine.remove(prepared.tag, force=True)
            raise

    def result(
        self, prepared: Prepared, allocation: Allocation | None, *, queued: int | None = None
    ) -> CreateResult:
        return CreateResult(
            name=prepared.req.name,
            container=prepared.tag,
            image=prepared.image.ref,
            framework=prepared.image.framework_label,
            arch=prepared.image.arch,
            workspace=str(prepared.workspace),
            gpus=allocation.uuids if allocation else (),
            gpu_equivalents=format_equivalents(allocation.equivalents) if allocation else 0.0,
            limits=prepared.limits.to_dict(),
            queued=queued,
        )


def _hostname(name: str) -> str:
    """A valid hostname from the container name (the shell prompt shows it)."""
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return (cleaned or "ds01")[:63]
