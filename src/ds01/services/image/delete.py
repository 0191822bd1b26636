"""``ds01 image delete NAME``: removing a user's project image, and its containers on request.

Only an image DS01 built for the acting user is removed: whose it is comes from its
maintainer label, never from its name, since two users' projects can share an image name
(see :mod:`ds01.services.image.service`). Everything that could stop the removal (another tag on
the image, images built on it, containers of other users, the user's own containers
without ``--force``) is checked before anything goes, so a refusal changes nothing. The
project's Dockerfile is kept, so ``image update NAME`` builds the image again.

:class:`~ds01.services.image.service.ImageService` delegates its ``delete`` here; callers use
that.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.adapters.identity import require_non_root
from ds01.domain.labels import ImageLabels
from ds01.domain.naming import project_image_name, split_tag, validate_name
from ds01.errors import DS01Error, EngineError, ErrorCode, NotFoundError, RefusedError, UsageError
from ds01.serialize import json_key
from ds01.services.audit import audited
from ds01.services.container.operations import ContainerService
from ds01.services.gpu.queue import process_queue_quietly
from ds01.services.image.build import image_owner
from ds01.services.project.files import ProjectFiles

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.domain.containers import ContainerInfo
    from ds01.domain.engine_types import ImageInfo
    from ds01.services.context import AppContext

__all__ = ["DeleteResult", "ImageDeleter"]


@dataclass(frozen=True)
class DeleteResult:
    """What ``image delete`` removed, and the Dockerfile it kept; ``to_json`` of it is the
    ``--json`` object (fields in the order the CLI has always printed them)."""

    name: str
    image: str
    removed_containers: tuple[str, ...]
    stopped_containers: tuple[str, ...]
    image_id: str = field(metadata=json_key("id"))
    dockerfile: str | None = field(metadata=json_key("dockerfile_kept"))


class ImageDeleter:
    """The delete use case for one acting user."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.files = ProjectFiles(ctx)

    def delete(self, actor: Actor, name: str, *, force: bool = False) -> DeleteResult:
        """Remove the project's image; its containers too with ``force``, else refuse.

        Only an image DS01 built for this user (its maintainer label, not its name) is
        removed. Everything that could stop the removal is checked before any container
        goes: another tag on the image, images built on it (a base is never removed),
        containers of other users. The Dockerfile stays, so ``image update NAME`` builds
        the image again.
        """
        require_non_root(actor)
        validate_name(name, what="project name")
        image = project_image_name(name, actor.name)
        # Refusals are recorded too: who tried to delete what, and why it was refused.
        with audited(self.ctx, actor, "image.delete", image) as audit:
            info = self._own_image(actor, name, image)
            users = self._check_removable(actor, name, image, info, force=force)
            removed: list[str] = []
            try:
                self._remove_containers(actor, users, removed)
                self.ctx.engine.remove_image(image)
            except DS01Error as exc:
                audit.add(id=info.id, removed_containers=removed)
                if not users:
                    raise  # nothing else was done: the engine's own error says it all
                raise _partial_delete(name, image, users, removed, exc) from exc
            audit.add(id=info.id, removed_containers=removed)
        dockerfile = self.files.project_path(actor, name) / "Dockerfile"
        return DeleteResult(
            name=name,
            image=image,
            image_id=info.id,
            removed_containers=tuple(removed),
            stopped_containers=tuple(c.tag for c in users if c.state.is_active),
            dockerfile=str(dockerfile) if _is_plain_file(dockerfile) else None,
        )

    def _own_image(self, actor: Actor, name: str, image: str) -> ImageInfo:
        """The project's image, if DS01 built it for this actor (its maintainer label says
        whose it is, not its name); refused otherwise."""
        engine = self.ctx.engine
        info = engine.image(image)
        if info is None:
            raise NotFoundError(
                f"You have no image for the project {name!r} ({image}).",
                hint="See your images with 'ds01 image list'.",
                code=ErrorCode.UNKNOWN_IMAGE,
            )
        owner = image_owner(info)
        if ImageLabels.decode(info.labels) is None or not owner:
            raise RefusedError(
                f"{image} was not built by DS01, so DS01 does not delete it.",
                hint="Remove it with Docker if it is yours.",
                code=ErrorCode.NOT_DS01_IMAGE,
            )
        if owner != actor.name:
            # The name is yours, the image is not: another user's project met yours.
            raise RefusedError(
                f"{image} belongs to {owner}, not you; DS01 does not delete it.",
                hint="Image names join project and user names; this one is another user's project.",
                code=ErrorCode.NOT_OWNER,
            )
        return info

    def _check_removable(
        self, actor: Actor, name: str, image: str, info: ImageInfo, *, force: bool
    ) -> list[ContainerInfo]:
        """Everything that could stop the removal, checked before anything goes, so a
        refusal changes nothing; the actor's containers of the image come back."""
        engine = self.ctx.engine
        other_tags = [t for t in info.tags if t != image]
        if other_tags:
            raise RefusedError(
                f"{image} is also tagged {', '.join(other_tags)}; removing the name would "
                "not remove the image, and nothing was removed.",
                hint="Remove the other tags first ('docker rmi TAG'), if they are yours.",
                code=ErrorCode.IMAGE_HAS_OTHER_TAGS,
            )
        if engine.image_children(info.id):
            raise RefusedError(
                f"Other images are built on {image}; DS01 does not remove a base image, "
                "and nothing was removed.",
                hint="Delete the images built on it first (see 'ds01 image list').",
                code=ErrorCode.IMAGE_IS_BASE,
            )
        users = engine.containers_of_image(info.id)
        others = [c for c in users if not actor.may_manage(c.owner, c.owner_uid)]
        if others:
            raise RefusedError(
                f"{image} is used by containers that are not yours: {_listed(others)}.",
                hint="Ask their owners (or an admin) to remove them first.",
                code=ErrorCode.IMAGE_IN_USE,
            )
        if users and not force:
            raise UsageError(
                f"{image} is used by your containers {_listed(users)}; nothing was removed.",
                hint=f"Remove them first ('ds01 container remove NAME'), or run 'ds01 image "
                f"delete {name} --force' to stop and remove them together with the image.",
                code=ErrorCode.IMAGE_IN_USE,
            )
        return users

    def _remove_containers(
        self, actor: Actor, containers: Sequence[ContainerInfo], removed: list[str]
    ) -> None:
        """Stop and remove ``containers``, adding each to ``removed`` once it is gone;
        then the GPU queue runs once if any of them held devices."""
        service = ContainerService(self.ctx)
        engine = self.ctx.engine
        freed = False
        try:
            for info in containers:
                if info.decoded is None and split_tag(info.tag)[1] is None:
                    # Not an AIME/DS01 container (only an admin gets here): plain Docker.
                    engine.remove(info.id, force=True)
                else:
                    if info.state.is_active:
                        service.stop(actor, info.tag)
                    freed = bool(service.remove(actor, info.tag).freed_devices) or freed
                removed.append(info.tag)
        finally:
            if freed:
                process_queue_quietly(self.ctx)  # their devices may be what the queue waits for


def _partial_delete(
    name: str,
    image: str,
    containers: Sequence[ContainerInfo],
    removed: Sequence[str],
    exc: DS01Error,
) -> EngineError:
    """What a delete that failed half-way did, precisely. The checks before it passed, so
    this is the engine failing, or something changing, in the middle."""
    pending = [c.tag for c in containers if c.tag not in removed]
    if pending:
        failed = f"removing the container {pending[0]} failed: {exc.message}"
        left = f"{image} and the containers {', '.join(pending)} are still there"
    else:
        failed = f"the image {image} could not be removed: {exc.message}"
        left = f"{image} is still there"
    if removed:
        failed = f"Removed the containers {', '.join(removed)}, but then {failed}"
    return EngineError(
        f"{failed[0].upper()}{failed[1:]}. {left}.",
        hint=f"Fix the cause, then run 'ds01 image delete {name} --force' again.",
        code=ErrorCode.DELETE_INCOMPLETE,
        details={
            "image": image,
            "removed_containers": list(removed),
            "remaining_containers": pending,
            "cause": exc.code,
        },
    )


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False  # gone or unreachable: not kept, as far as the user can tell


def _listed(containers: Sequence[ContainerInfo]) -> str:
    return ", ".join(f"{c.tag} ({c.state.value})" for c in containers)
