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
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ds01.adapters.create_journal import crash_point
from ds01.adapters.identity import require_non_root
from ds01.domain.allocation import Allocation, GpuRequest, NoFit
from ds01.domain.devices import format_equivalents
from ds01.domain.labels import ImageLabels
from ds01.domain.naming import container_tag, project_image_name, validate_name
from ds01.errors import ErrorCode, NoCapacityError, RefusedError, UsageError
from ds01.serialize import to_json
from ds01.services.audit import audited
from ds01.services.catalog import resolve_arch
from ds01.services.container.lookup import refuse_existing
from ds01.services.container.mounts import CreatedDirs, ensure_workspace, plan_mounts
from ds01.services.container.provisioning import (
    CreateRequest,
    Prepared,
    ResolvedImage,
    begin,
    finish,
    make_container,
    rollback,
)
from ds01.services.container.recovery import RecoveryService
from ds01.services.gpu.allocation import allocation_lock, check_and_decide, waiting_requests
from ds01.services.gpu.queue import QueueService
from ds01.services.limits import (
    AppliedLimits,
    ContainerLimits,
    apply_aggregate,
    plan_container_limits,
)

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import ImageInfo
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["CreateRequest", "CreateResult", "CreateService", "Prepared", "ResolvedImage"]

DEFAULT_FRAMEWORK = "Pytorch"


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
    limits: AppliedLimits
    queued: int | None = None


ProgressFn = Callable[[Mapping[str, Any]], None]


class CreateService:
    """``container create`` for one acting user."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    # -- image ------------------------------------------------------------------------

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
                    code=ErrorCode.NOT_OWNER,
                )
            arch = None
            if req.arch or self.ctx.environ.get("MLC_ARCH"):
                arch, _ = resolve_arch(self.ctx, req.arch, required=False)
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
        arch, reason = resolve_arch(self.ctx, req.arch, required=True)
        if arch is None:  # resolve_arch(required=True) already raised; this narrows the type
            raise UsageError(reason, code=ErrorCode.NO_ARCH)
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
        refuse_existing(self.ctx.engine, req.name, tag)
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
        check_and_decide(
            self.ctx, actor, request, limits.resolved, adding=1 + waiting_requests(self.ctx, actor)
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
        (:mod:`ds01.services.container.recovery`). ``on_result`` shows the result to the user
        before the record is cleared, so that "complete" means "reported" too.
        ``crash_point`` marks the steps tests kill at.
        """
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
                with allocation_lock(self.ctx):
                    allocation = self.allocate(prepared)
                    if allocation is None:
                        queued = QueueService(self.ctx).enqueue(prepared)
                    else:
                        crash_point("locked")
                        make_container(self.ctx, prepared, allocation)
                        crash_point("created")
                if allocation is not None:
                    finish(self.ctx, prepared)
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
                audit.add(
                    image=prepared.image.ref, gpus=list(result.gpus), limits=to_json(result.limits)
                )
        crash_point("recorded")
        if on_result is not None:
            on_result(result)
        if journal is not None:
            journal.commit()  # from here on the container is complete and reported
        return result

    def allocate(self, prepared: Prepared) -> Allocation | None:
        """Under the lock: container count, GPU policy and placement, queue fairness.

        Returns the allocation, or ``None`` when the request should wait (``--wait``);
        raises exit 3 (policy), 4 (no capacity, no --wait) or 2 (can never fit).
        """
        actor = prepared.actor
        waiting = 0 if prepared.queue_id else waiting_requests(self.ctx, actor)
        considered = check_and_decide(
            self.ctx, actor, prepared.request, prepared.limits.resolved, adding=1 + waiting
        )
        if considered is None:  # CPU-only: nothing to place
            return Allocation(devices=(), equivalents=Fraction(0))
        decision = considered.decision
        # Allowed, and maybe free: it still may not jump ahead of requests already waiting.
        granted = QueueService(self.ctx).fits_behind_queue(
            actor.name,
            prepared.request,
            considered.quota,
            considered.inventory,
            considered.holdings,
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
            code=ErrorCode.QUEUED_FIRST,
        )

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
            limits=prepared.limits.applied(),
            queued=queued,
        )
