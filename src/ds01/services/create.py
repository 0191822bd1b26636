"""Creating a container: image, mounts, limits, GPU, labels and user, or nothing at all.

The order matters. Everything that can be refused (name, image, mounts, policy, quota)
is decided before anything is made; the container is created under the host-wide GPU
lock with its device labels (so a concurrent create sees the holding); the user account
is copied in before the first start. Any failure after the container exists removes it
again, and a workspace directory made for it is removed if still empty: a failed create
leaves no orphan container, allocation or directory behind.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds01.adapters.identity import require_non_root
from ds01.domain.containers import ContainerSpec, Limits, Mount
from ds01.domain.labels import ContainerLabels, ImageLabels
from ds01.domain.naming import container_tag, project_image_name, validate_name
from ds01.domain.user_setup import (
    ContainerUser,
    account_name,
    bashrc,
    merge_group,
    merge_passwd,
    merge_shadow,
    profile,
    sudoers,
)
from ds01.errors import UsageError
from ds01.services.audit import audited
from ds01.services.mounts import CreatedDirs, check_mount_source, ensure_workspace

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import ImageInfo
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["CreateRequest", "CreateResult", "CreateService", "ResolvedImage"]

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
    queued: str | None = None

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
            arch = None
            if req.arch or self.ctx.environ.get("MLC_ARCH"):
                arch, _ = self.resolve_arch(req.arch, required=False)
            framework = baked.framework if baked and baked.framework else "custom"
            return ResolvedImage(req.image, framework, arch, True, info)
        if req.framework is None:
            # The plan's "detect custom image": a project image built by `image create`.
            own = project_image_name(req.name, actor.name)
            info = engine.image(own)
            if info is not None:
                baked = ImageLabels.decode(info.labels)
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

    def create(
        self, actor: Actor, req: CreateRequest, *, on_progress: ProgressFn | None = None
    ) -> CreateResult:
        require_non_root(actor)
        validate_name(req.name)
        tag = container_tag(req.name, actor.uid)
        with audited(self.ctx, actor, "container.create", tag) as audit:
            if self.ctx.engine.exists(tag):
                raise UsageError(
                    f"You already have a container named {req.name!r} ({tag}).",
                    hint=f"Open it with 'ds01 container open {req.name}', or remove it first.",
                    code="container_exists",
                )
            image = self.resolve_image(actor, req)
            settings = self.ctx.settings
            base = settings.workspace_base(actor.name, actor.home)
            roots = list(settings.container.allowed_mount_roots)
            mounts_kw = {"roots": roots, "extra_roots": [base], "cwd": req.cwd}
            data = (
                check_mount_source(actor, req.data, what="data", **mounts_kw)  # type: ignore[arg-type]
                if req.data
                else None
            )
            models = (
                check_mount_source(actor, req.models, what="models", **mounts_kw)  # type: ignore[arg-type]
                if req.models
                else None
            )
            made = CreatedDirs([])
            if req.workspace:
                workspace = check_mount_source(
                    actor,
                    req.workspace,
                    what="workspace",
                    **mounts_kw,  # type: ignore[arg-type]
                )
            else:
                workspace = base / req.name
            plan = self.plan_limits(actor)
            try:
                if not req.workspace:
                    made = ensure_workspace(actor, workspace)
                info = self.ensure_image(image, on_progress)
                result = self._create_locked(
                    actor, req, tag, image, info, workspace, data, models, plan
                )
            except BaseException:
                made.rollback()
                raise
            audit.add(image=image.ref, gpus=list(result.gpus), limits=dict(result.limits))
            return result

    # -- hooks filled in by the policy and GPU layers -----------------------------------

    def plan_limits(self, actor: Actor) -> Any:
        """Per-container limits from the policy; ``None`` means no policy applies."""
        return None

    def _create_locked(
        self,
        actor: Actor,
        req: CreateRequest,
        tag: str,
        image: ResolvedImage,
        info: ImageInfo,
        workspace: Path,
        data: Path | None,
        models: Path | None,
        plan: Any,
    ) -> CreateResult:
        user = self.container_user(actor, info)
        labels = ContainerLabels(
            name=req.name,
            user=actor.name,
            framework=image.framework_label,
            arch=image.arch,
            work_mount=str(workspace),
            data_mount=str(data) if data else None,
            models_mount=str(models) if models else None,
            gpus="0",
            uid=actor.uid,
            custom_image=image.ref if image.custom else None,
            image=image.ref,
            created_at=self.ctx.clock.now().isoformat(timespec="seconds"),
            interface=req.interface,
        )
        mounts = [Mount(str(workspace), "/workspace")]
        if data:
            mounts.append(Mount(str(data), "/data"))
        if models:
            mounts.append(Mount(str(models), "/models"))
        spec = ContainerSpec(
            tag=tag,
            image=image.ref,
            labels=labels.encode(),
            user=f"{actor.uid}:{actor.gid}",
            env={"HOME": user.home, "USER": user.name},
            mounts=tuple(mounts),
            limits=Limits(),
            network=self.ctx.settings.container.network,
            ulimits=self.ctx.settings.container.ulimits,
            hostname=_hostname(req.name),
        )
        self.ctx.engine.create(spec)
        try:
            self.install_user(tag, user, info)
        except BaseException:
            self.ctx.engine.remove(tag, force=True)
            raise
        return CreateResult(
            name=req.name,
            container=tag,
            image=image.ref,
            framework=image.framework_label,
            arch=image.arch,
            workspace=str(workspace),
            gpus=(),
            gpu_equivalents=0.0,
            limits={},
        )

    # -- the user inside ----------------------------------------------------------------

    def container_user(self, actor: Actor, info: ImageInfo) -> ContainerUser:
        import grp

        try:
            group = grp.getgrgid(actor.gid).gr_name
        except KeyError:
            group = actor.name
        return ContainerUser(
            name=account_name(actor.name),
            uid=actor.uid,
            gid=actor.gid,
            group=account_name(group),
        )

    def install_user(self, tag: str, user: ContainerUser, info: ImageInfo) -> None:
        """Give the created container a passwd entry, a home and sudo — no commit."""
        baked = ImageLabels.decode(info.labels)
        if baked and baked.uid == user.uid and baked.gid == user.gid:
            return  # built for this user by `image create`: nothing to add
        engine = self.ctx.engine
        shell = "/bin/bash" if engine.path_exists(tag, "/bin/bash") else "/bin/sh"
        user = ContainerUser(user.name, user.uid, user.gid, user.group, shell)
        files: list[tuple[str, bytes, int, int, int]] = []
        for path, merge, fallback_mode in (
            ("/etc/passwd", merge_passwd, 0o644),
            ("/etc/group", merge_group, 0o644),
            ("/etc/shadow", merge_shadow, 0o640),
        ):
            current = engine.read_file(tag, path)
            if current is None and path == "/etc/shadow":
                continue  # an image without shadow passwords needs no entry there
            text = current.content.decode() if current else ""
            mode, uid, gid = (
                (current.mode, current.uid, current.gid) if current else (fallback_mode, 0, 0)
            )
            files.append((path.lstrip("/"), merge(text, user).encode(), mode, uid, gid))
        dirs: list[tuple[str, int, int, int]] = []
        if not engine.path_exists(tag, "/home"):
            dirs.append(("home", 0o755, 0, 0))
        if not engine.path_exists(tag, user.home):
            home = user.home.lstrip("/")
            dirs.append((home, 0o755, user.uid, user.gid))
            files.append((f"{home}/.bashrc", bashrc(user.name).encode(), 0o644, user.uid, user.gid))
            files.append((f"{home}/.profile", profile().encode(), 0o644, user.uid, user.gid))
            dirs.append((f"{home}/.local", 0o755, user.uid, user.gid))
            dirs.append((f"{home}/.local/bin", 0o755, user.uid, user.gid))
        if engine.path_exists(tag, "/etc/sudoers.d"):
            files.append((f"etc/sudoers.d/ds01-{user.uid}", sudoers(user).encode(), 0o440, 0, 0))
        engine.put_archive(tag, "/", _tar(dirs, files))


def _tar(
    dirs: list[tuple[str, int, int, int]], files: list[tuple[str, bytes, int, int, int]]
) -> bytes:
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode, uid, gid in dirs:
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode, entry.uid, entry.gid, entry.mtime = (
                tarfile.DIRTYPE,
                mode,
                uid,
                gid,
                now,
            )
            tar.addfile(entry)
        for name, content, mode, uid, gid in files:
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode, entry.uid, entry.gid, entry.mtime = (
                len(content),
                mode,
                uid,
                gid,
                now,
            )
            tar.addfile(entry, io.BytesIO(content))
    return buf.getvalue()


def _hostname(name: str) -> str:
    """A valid hostname from the container name (the shell prompt shows it)."""
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return (cleaned or "ds01")[:63]
