"""Custom images (issue 5): create, update and list a user's project images.

The project's Dockerfile, ``~/workspace/NAME/Dockerfile``, is the source of truth: it is
exactly what gets built, the user may read and edit it, and ``image update`` edits only
its custom tier. Every input (name, packages, paths, the catalog choice, the build
configuration) is checked before anything is written or built; a bad one exits 2 and
leaves no file, directory or image behind.

The image is ``<project>-<user>-image:latest`` (:func:`~ds01.domain.naming.project_image_name`),
the name ``container create NAME`` looks for. Its ownership labels (custom image, maintainer,
project, the baked uid/gid/account, the base) are set by the engine at build time, and a
Dockerfile that sets a label of DS01's is refused (:mod:`ds01.domain.dockerfile_labels`), so
an edited Dockerfile cannot make an image look like someone else's. Those labels, not the
name, decide whose an image is: two users' projects can share a name (``a-b`` of ``c``,
``a`` of ``b-c``), and DS01 never builds over, lists, builds on or deletes an image whose
labels name another user.

Building itself is :mod:`ds01.services.image.build`; deleting is
:mod:`ds01.services.image.delete`, reached through :meth:`ImageService.delete`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.adapters.identity import require_non_root
from ds01.domain.dockerfile import ImageSpec, ImageUser, render_dockerfile
from ds01.domain.dockerfile_edit import (
    USER_BLOCK_BEGIN,
    dockerfile_base_image,
    read_custom_tier,
    replace_custom_tier,
    wrap_user_dockerfile,
)
from ds01.domain.labels import ImageLabels, L
from ds01.domain.naming import project_image_name, split_tag, validate_name
from ds01.domain.packages import (
    PackagePlan,
    UseCase,
    parse_use_case,
    plan_packages,
    split_package_list,
)
from ds01.errors import DS01Error, ErrorCode, NotFoundError, RefusedError, UsageError
from ds01.serialize import json_key, json_round
from ds01.services.audit import audited
from ds01.services.catalog import resolve_arch
from ds01.services.container.mounts import CreatedDirs
from ds01.services.image.build import (
    BuildPlan,
    BuildReport,
    ImageBuilder,
    ProgressFn,
)
from ds01.services.image.delete import DeleteResult, ImageDeleter
from ds01.services.project.files import ProjectFiles

if TYPE_CHECKING:
    from ds01.adapters.docker_build import ContextFile
    from ds01.domain.actor import Actor
    from ds01.domain.dockerfile import BuildNetwork
    from ds01.services.context import AppContext

__all__ = [
    "CONTEXT_COMMENT",
    "DeleteResult",
    "ImageCreateRequest",
    "ImageResult",
    "ImageService",
    "ImageUpdateRequest",
    "ImageView",
]

DEFAULT_FRAMEWORK = "Pytorch"
#: Last line of a wrapped Dockerfile whose build context is not the project directory.
CONTEXT_COMMENT = "# ds01 build context: "


@dataclass(frozen=True)
class ImageCreateRequest:
    """``ds01 image create`` flags. ``pip``/``apt`` hold flag values ("a b" each)."""

    name: str
    framework: str | None = None
    version: str | None = None
    arch: str | None = None
    base: str | None = None
    use_case: str | None = None  # None: "none"
    jupyter: bool | None = None  # None: on, except with --dockerfile
    datascience: bool | None = None
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    requirements: str | None = None
    dockerfile: str | None = None
    build: bool = True
    force: bool = False
    nocache: bool = False
    cwd: Path = field(default_factory=Path.cwd)


@dataclass(frozen=True)
class ImageUpdateRequest:
    """``ds01 image update`` flags; with none of the edit flags it rebuilds as is."""

    name: str
    add_pip: tuple[str, ...] = ()
    add_apt: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    build: bool = True
    nocache: bool = False


@dataclass(frozen=True)
class ImageResult:
    """What ``image create`` / ``image update`` did; ``to_json`` of it is the ``--json``
    object (``image_id`` last, as ``id``: the order the CLI has always printed)."""

    name: str
    image: str
    dockerfile: str
    base: str
    framework: str
    tiers: tuple[str, ...]
    written: bool
    built: bool
    log: str | None = None
    seconds: float | None = field(default=None, metadata=json_round(1))
    steps: int | None = None
    cached_steps: int | None = None
    notes: tuple[str, ...] = ()
    image_id: str | None = field(default=None, metadata=json_key("id"))


@dataclass(frozen=True)
class ImageView:
    """One row of ``image list``."""

    name: str
    image: str
    user: str
    base: str
    framework: str
    tiers: tuple[str, ...]
    size_bytes: int
    created: str | None
    id: str


@dataclass(frozen=True)
class _Draft:
    """A validated ``image create``: the text to write and how to build it."""

    text: str
    spec: ImageSpec
    network: BuildNetwork
    ca_files: tuple[ContextFile, ...]
    context_dir: Path | None
    source: Path | None  # the user's --dockerfile, resolved

    @property
    def tiers(self) -> tuple[str, ...]:
        """The tiers label: a wrapped Dockerfile of the user's own stands for the framework."""
        tiers = self.spec.plan.tier_labels()
        return tiers if self.source is None else ("dockerfile", *tiers[1:])

    def build_plan(self, project: str, image: str) -> BuildPlan:
        return BuildPlan(project, image, self.text, self.network, self.ca_files, self.context_dir)


def _plan_notes(plan: PackagePlan) -> list[str]:
    # Summarised in the domain: repeated entries are one note, and the notes are bounded.
    return plan.notes()


def _entries(values: Sequence[str]) -> list[str]:
    return [entry for value in values for entry in split_package_list(value)]


class ImageService:
    """The image use cases for one acting user."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.builder = ImageBuilder(ctx)
        self.files = ProjectFiles(ctx)

    # -- create -----------------------------------------------------------------------

    def _base(self, req: ImageCreateRequest) -> tuple[str, str]:
        """(base image, framework label) from ``--base`` or the catalog."""
        if req.base:
            if req.framework or req.version or req.arch:
                raise UsageError(
                    "--base names the image itself; --framework, --version and --arch "
                    "choose one from the catalog. Give one or the other.",
                    code=ErrorCode.CONFLICTING_FLAGS,
                )
            return req.base, "custom"
        arch, reason = resolve_arch(self.ctx, req.arch, required=True)
        if arch is None:  # required=True raised already; this narrows the type
            raise UsageError(reason, code=ErrorCode.NO_ARCH)
        entry = self.ctx.catalog.lookup(req.framework or DEFAULT_FRAMEWORK, req.version, arch)
        return entry.image, entry.framework_label

    def _draft(self, actor: Actor, req: ImageCreateRequest, project: Path) -> _Draft:
        requirements: str | None = None
        requirements_name = "requirements.txt"
        if req.requirements:
            path = self.files.user_path(
                actor, req.requirements, what="requirements file", cwd=req.cwd
            )
            requirements = self.files.read_text(actor, path, "requirements file")
            requirements_name = path.name
        own_text: str | None = None
        source: Path | None = None
        if req.dockerfile:
            if req.base or req.framework or req.version or req.arch:
                raise UsageError(
                    "--dockerfile builds on your Dockerfile's own FROM image; --base, "
                    "--framework, --version and --arch can't be used with it.",
                    code=ErrorCode.CONFLICTING_FLAGS,
                )
            source = self.files.user_path(actor, req.dockerfile, what="Dockerfile", cwd=req.cwd)
            # Its directory is the build context: the user must be able to read all of it.
            self.files.user_path(
                actor, str(source.parent), what="build context", cwd=req.cwd, directory=True
            )
            own_text = self.files.read_text(actor, source, "Dockerfile")
        use_case = parse_use_case(req.use_case) if req.use_case else UseCase.NONE
        # Your own Dockerfile decides its packages: tier 2 only when asked for.
        tier2_default = own_text is None
        # A refused requirements line is shown by its number and a short excerpt only.
        plan = plan_packages(
            use_case=use_case,
            jupyter=tier2_default if req.jupyter is None else req.jupyter,
            datascience=tier2_default if req.datascience is None else req.datascience,
            pip=_entries(req.pip),
            apt=_entries(req.apt),
            requirements=requirements,
            requirements_name=requirements_name,
        )
        network, ca_files = self.builder.network()
        if own_text is not None:
            # Build arguments resolved as the engine will; a file that can't be resolved
            # is refused (exit 2) when the wrapped text is read, before anything is written.
            base = dockerfile_base_image(own_text, network.build_args()) or "unknown"
            framework = "custom"
        else:
            base, framework = self._base(req)
        spec = ImageSpec(
            base_image=base,
            project=req.name,
            framework=framework,
            plan=plan,
            user=ImageUser(uid=actor.uid, gid=actor.gid, login=actor.name),
            network=network,
        )
        if req.base:  # validated as an image reference by ImageSpec: now ask whose it is
            self.builder.check_base(actor, spec.base_image)
        if own_text is None or source is None:
            return _Draft(render_dockerfile(spec), spec, network, ca_files, None, None)
        lines = [ln for ln in own_text.splitlines(keepends=True) if not _is_context_line(ln)]
        text = wrap_user_dockerfile("".join(lines), spec)
        if source.parent != project:  # both real paths
            text += f"{CONTEXT_COMMENT}{source.parent}\n"
        return _Draft(text, spec, network, ca_files, source.parent, source)

    def create(
        self, actor: Actor, req: ImageCreateRequest, *, on_progress: ProgressFn | None = None
    ) -> ImageResult:
        """Write ``~/workspace/NAME/Dockerfile`` and build it (``req.build``)."""
        require_non_root(actor)
        validate_name(req.name, what="project name")
        image = project_image_name(req.name, actor.name)
        with audited(self.ctx, actor, "image.create", image) as audit:
            project = self.files.project_dir(actor, req.name)
            draft = self._draft(actor, req, project)
            dockerfile = project / "Dockerfile"
            existing = self.files.read_dockerfile(actor, dockerfile)
            # Both are real paths: the project's through project_dir, the source resolved.
            in_place = draft.source is not None and draft.source == dockerfile
            notes = _plan_notes(draft.spec.plan)
            if existing is not None and existing != draft.text and not in_place:
                if not req.force:
                    raise UsageError(
                        f"{dockerfile} exists and differs from the Dockerfile this command "
                        "would write; it was left as it is and nothing was built.",
                        hint=f"Build it as it is with 'ds01 image update {req.name}', add "
                        f"packages with 'ds01 image update {req.name} --add-pip ...', or "
                        "replace it with --force (the old file is kept as Dockerfile.bak).",
                        code=ErrorCode.DOCKERFILE_EXISTS,
                    )
                notes.append(f"Your previous Dockerfile is kept as {dockerfile}.bak.")
            audit.add(
                base=draft.spec.base_image,
                framework=draft.spec.framework,
                tiers=list(draft.tiers),
                dockerfile=str(dockerfile),
            )
            plan = draft.build_plan(req.name, image)
            if req.build:  # before anything is written: the name and the bases are usable
                self.builder.check_target(actor, plan)
            else:  # even unbuilt, a Dockerfile DS01 cannot read or that sets its labels
                self.builder.read_dockerfile(actor, plan)
            made = CreatedDirs([])
            try:
                made = self.files.ensure_project_dir(actor, project)
                written = existing != draft.text
                if written:
                    if existing is not None and not in_place:
                        self.files.write(actor, dockerfile.with_name("Dockerfile.bak"), existing)
                    self.files.write(actor, dockerfile, draft.text)
            except BaseException:
                made.rollback()
                raise
            result = ImageResult(
                name=req.name,
                image=image,
                dockerfile=str(dockerfile),
                base=draft.spec.base_image,
                framework=draft.spec.framework,
                tiers=draft.tiers,
                written=written,
                built=False,
                notes=tuple(notes),
            )
            if not req.build:
                audit.add(built=False)
                return result
            report = self.builder.build(
                actor,
                plan,
                on_progress=on_progress,
                nocache=req.nocache,
                failure_hint=f"The Dockerfile stays at {dockerfile}: fix it (or the package "
                f"names), then build it with 'ds01 image update {req.name}'.",
            )
            audit.add(built=True, id=report.image_id, seconds=round(report.seconds, 1))
            return self._built(result, report)

    # -- update -----------------------------------------------------------------------

    def _context_of(self, actor: Actor, text: str, project: Path) -> Path | None:
        """Where a project Dockerfile is built: a wrapped one of the user's own in its
        recorded directory (default: the project's), one DS01 rendered in a minimal context."""
        if not any(line.strip() == USER_BLOCK_BEGIN for line in text.splitlines()):
            return None
        recorded = [ln for ln in text.splitlines() if _is_context_line(ln)]
        raw = recorded[-1].strip()[len(CONTEXT_COMMENT.strip()) :].strip() if recorded else ""
        return self.files.user_path(
            actor, raw or str(project), what="build context", cwd=project, directory=True
        )

    def update(
        self, actor: Actor, req: ImageUpdateRequest, *, on_progress: ProgressFn | None = None
    ) -> ImageResult:
        """Edit the custom tier of the project's Dockerfile (if asked), then rebuild it.

        A build that does not finish (failed, refused, interrupted) puts the Dockerfile
        back as it was, so a mistyped package does not stay in it.
        """
        require_non_root(actor)
        validate_name(req.name, what="project name")
        image = project_image_name(req.name, actor.name)
        with audited(self.ctx, actor, "image.update", image) as audit:
            add_pip, add_apt = _entries(req.add_pip), _entries(req.add_apt)
            remove = _entries(req.remove)
            project = self.files.project_dir(actor, req.name)
            dockerfile = project / "Dockerfile"
            text = self.files.read_dockerfile(actor, dockerfile)
            if text is None:
                raise NotFoundError(
                    f"There is no Dockerfile for the project {req.name!r} ({dockerfile}).",
                    hint=f"Create the image first: 'ds01 image create {req.name}'.",
                    code=ErrorCode.NO_DOCKERFILE,
                )
            new_text = text
            if add_pip or add_apt or remove:
                custom = read_custom_tier(text)
                if add_pip or add_apt:
                    custom = custom.added(pip=add_pip, apt=add_apt)
                if remove:
                    custom = custom.removed(remove)
                new_text = replace_custom_tier(text, custom)
                audit.add(add_pip=add_pip, add_apt=add_apt, remove=remove)
            context_dir = self._context_of(actor, new_text, project)
            network, ca_files = self.builder.network()
            plan = BuildPlan(req.name, image, new_text, network, ca_files, context_dir)
            if req.build:  # before anything is written: the name and the bases are usable
                self.builder.check_target(actor, plan)
            written = new_text != text
            if written:
                self.files.write(actor, dockerfile, new_text)
            base = dockerfile_base_image(new_text) or "unknown"
            result = ImageResult(
                name=req.name,
                image=image,
                dockerfile=str(dockerfile),
                base=base,
                framework="",
                tiers=(),
                written=written,
                built=False,
            )
            if not req.build:
                return result
            try:
                report = self.builder.build(
                    actor,
                    plan,
                    on_progress=on_progress,
                    nocache=req.nocache,
                    failure_hint=f"Fix the failing step, then run 'ds01 image update {req.name}' "
                    "again.",
                )
            except BaseException as exc:
                if written:
                    self._put_back(actor, dockerfile, text, exc)
                raise
            audit.add(id=report.image_id, seconds=round(report.seconds, 1))
            return self._built(result, report)

    def _put_back(self, actor: Actor, dockerfile: Path, text: str, exc: BaseException) -> None:
        """Restore the Dockerfile an update edited, and say so in the error on its way."""
        try:
            self.files.write(actor, dockerfile, text)
        except DS01Error as failed:
            note = f" Your Dockerfile could not be put back ({failed.message}): check it."
        else:
            note = " Your Dockerfile was put back as it was before this update."
        if isinstance(exc, DS01Error):
            exc.hint = (exc.hint or "").rstrip() + note

    def _built(self, result: ImageResult, report: BuildReport) -> ImageResult:
        info = self.ctx.engine.image(report.image_id)
        labels = ImageLabels.decode(info.labels) if info else None
        return ImageResult(
            name=result.name,
            image=result.image,
            dockerfile=result.dockerfile,
            base=labels.base_image if labels and labels.base_image else result.base,
            framework=labels.framework if labels and labels.framework else result.framework,
            tiers=labels.tiers if labels and labels.tiers else result.tiers,
            written=result.written,
            built=True,
            image_id=report.image_id,
            log=str(report.log),
            seconds=report.seconds,
            steps=report.steps,
            cached_steps=report.cached_steps,
            notes=result.notes,
        )

    # -- list -------------------------------------------------------------------------

    def list_views(self, actor: Actor, *, all_users: bool = False) -> list[ImageView]:
        """The actor's images (admins with ``all_users``: everyone's), by user and name.

        Builds replaced by a newer one (no tag left) are not shown, nor (without
        ``all_users``) any image whose maintainer label is not the actor, whatever its name.
        """
        if all_users and not actor.is_admin:
            raise RefusedError(
                "Only administrators may list every user's images.",
                hint="Drop --all to list your own.",
                code=ErrorCode.NOT_ADMIN,
            )
        wanted = [L.MAINTAINER] if all_users else [f"{L.MAINTAINER}={actor.name}"]
        views: list[ImageView] = []
        for info in self.ctx.engine.list_images(wanted):
            labels = ImageLabels.decode(info.labels)
            if labels is None or not info.tags:
                continue
            if not all_users and labels.maintainer != actor.name:
                continue
            image = labels.custom_image if labels.custom_image in info.tags else info.tags[0]
            views.append(
                ImageView(
                    name=labels.project or split_tag(image)[0],
                    image=image,
                    user=labels.maintainer,
                    base=labels.base_image,
                    framework=labels.framework,
                    tiers=labels.tiers,
                    size_bytes=info.size,
                    created=info.created.isoformat() if info.created else None,
                    id=info.id,
                )
            )
        return sorted(views, key=lambda v: (v.user, v.name, v.image))

    # -- delete -----------------------------------------------------------------------

    def delete(self, actor: Actor, name: str, *, force: bool = False) -> DeleteResult:
        """Remove the project's image; its containers too with ``force``, else refuse.
        See :meth:`ds01.services.image.delete.ImageDeleter.delete`."""
        return ImageDeleter(self.ctx).delete(actor, name, force=force)


def _is_context_line(line: str) -> bool:
    return line.startswith(CONTEXT_COMMENT.rstrip())
