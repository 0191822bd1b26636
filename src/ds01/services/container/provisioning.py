"""The provisioner: making and starting one container that was decided, and undoing it.

Shared by ``container create`` and a queue grant, which decide differently (a user's
flags; a stored request re-checked) but make the container the same way:
:func:`make_container` under the allocation lock (its device labels are the holding a
concurrent create sees), :func:`finish` after it (the user copied in, the start, and
the check that Docker mounted the very directories checked).

Before a create makes anything it writes its journal record
(:mod:`ds01.adapters.create_journal`): the container tag and every directory it may
make. On failure :func:`rollback` undoes what it made; when the engine cannot remove the
container now (the engine stopped), the directories still go and the record stays, so
that the next command of the user or the next enforcement pass removes the container
(:mod:`ds01.services.container.recovery`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.adapters.create_journal import Creator, Journal
from ds01.adapters.keepalive import keepalive_path
from ds01.domain.allocation import Allocation, GpuRequest
from ds01.domain.containers import (
    KEEPALIVE_COMMAND,
    KEEPALIVE_TARGET,
    SLEEP_COMMAND,
    ContainerSpec,
    Mount,
)
from ds01.domain.labels import ContainerLabels, L
from ds01.errors import NotFoundError
from ds01.services.container.account import container_user, install_user
from ds01.services.container.mount_verify import verify_mounted
from ds01.services.container.mounts import CheckedMount, check_mounts
from ds01.services.limits import ContainerLimits

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import ImageInfo
    from ds01.adapters.user_fs import CreatedDirs
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = [
    "CreateRequest",
    "Prepared",
    "ResolvedImage",
    "begin",
    "finish",
    "make_container",
    "missing_dirs",
    "remove_own",
    "rollback",
]


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


def missing_dirs(path: Path) -> list[Path]:
    """The directories above and including ``path`` that do not exist yet, top first."""
    missing: list[Path] = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def begin(ctx: AppContext, prepared: Prepared) -> Journal | None:
    """Record the create before anything is made: its tag and every directory it may
    make (so that even a kill -9 right after a mkdir leaves nothing behind)."""
    actor = prepared.actor
    dirs = missing_dirs(prepared.workspace) if prepared.default_workspace else []
    creator = Creator.me()
    prepared.creator = creator.encode()
    state_dir = Path(ctx.settings.state_dir)
    try:
        journal = Journal.begin(
            state_dir,
            uid=actor.uid,
            gid=actor.gid,
            user=actor.name,
            tag=prepared.tag,
            dirs=dirs,
            creator=creator,
            now=ctx.clock.now().isoformat(timespec="seconds"),
        )
    except OSError as exc:
        # Not fatal: the container still carries its creator, so a never-started one is
        # found; only a kill after its start would go unnoticed.
        ctx.warnings.append(
            f"This create could not be recorded under {state_dir}/users "
            f"({exc.strerror or exc}); if it is interrupted after the container started, "
            "remove the container yourself. Ask an admin to fix the state directory's "
            "permissions."
        )
        return None
    prepared.journal = str(journal.path)
    return journal


def rollback(
    ctx: AppContext, prepared: Prepared, made: CreatedDirs, journal: Journal | None
) -> None:
    """Undo what the create made. The directories go even when the engine cannot remove
    the container now; the record then stays for the next sweep."""
    undone = True
    try:
        if prepared.created:
            remove_own(ctx, prepared)
    except Exception as exc:
        undone = False
        why = getattr(exc, "message", None) or str(exc)
        ctx.warnings.append(
            f"The half-made container {prepared.tag} could not be removed now ({why}); "
            "your next ds01 command or the next enforcement pass removes it."
        )
    finally:
        made.rollback()
        if journal is not None:
            if undone:
                journal.commit()
            else:
                journal.close()


def remove_own(ctx: AppContext, prepared: Prepared) -> None:
    """Remove the container under this tag only if this create made it: a concurrent
    create of the same name may own it (and the engine answered 409 to ours)."""
    try:
        info = ctx.engine.inspect(prepared.tag).info
    except NotFoundError:
        return
    if info.labels.get(L.CREATOR) != prepared.creator:
        return
    ctx.engine.remove(info.id, force=True)


def make_container(ctx: AppContext, prepared: Prepared, allocation: Allocation) -> None:
    """Create the container with its device labels (called under the lock)."""
    actor, req, image = prepared.actor, prepared.req, prepared.image
    user = container_user(actor)
    now = ctx.clock.now().isoformat(timespec="seconds")
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
        mounts.append(Mount(str(prepared.models), "/models", read_only=prepared.models_read_only))
    settings = ctx.settings
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
    ctx.engine.create(spec)
    prepared.allocation = allocation


def finish(ctx: AppContext, prepared: Prepared) -> None:
    """After the lock: copy the user in and start; a failure removes the container.

    Unlike AIME, the container is started at once: a container holding a GPU is then
    in use under the idle rules (warned, then stopped, its GPU released) rather than
    sitting unstarted until the created-never-started cleanup removes it unannounced.
    """
    try:
        install_user(ctx.engine, prepared.tag, container_user(prepared.actor), prepared.info)
        ctx.engine.start(prepared.tag)
        # Before anyone gets it: Docker mounted the very directories checked.
        verify_mounted(
            ctx.engine, ctx.mount_probe, prepared.tag, prepared.checked_mounts, what_next="removed"
        )
    except BaseException:
        ctx.engine.remove(prepared.tag, force=True)
        raise


def _hostname(name: str) -> str:
    """A valid hostname from the container name (the shell prompt shows it)."""
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return (cleaned or "ds01")[:63]
