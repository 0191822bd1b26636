"""The orchestrators: ``container deploy`` and ``container retire``.

They chain the atomic use cases (image build, create, start/open, stop, remove) into the
two steps people actually take: "give me a container for this project" and "I am done,
give the GPU back". Each runs in three phases and tells its *narrator* (the CLI's
:class:`~ds01.cli.guided.Guide`, or :class:`Silent`) where it is, so ``--guided`` can
explain every step while it happens.

``retire`` first looks for pip packages installed in the container since its image was
built. It asks Docker for the container's changes against its image (``docker diff``):
a new ``*.dist-info`` (or ``*.egg-info``) directory under a ``site-packages`` or
``dist-packages`` directory is a package pip installed, with its name and version in the
directory name. That is one API call, needs no running container (starting a stopped one
could fail when its GPU went to someone else) and no throw-away container from the image,
and it sees exactly what would be lost: what lives in the container's own layer. Packages
installed from a path or URL (editable installs of the user's own code, VCS checkouts)
carry a ``direct_url.json`` and are listed but never offered for the image, since the
package index does not have them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from packaging.utils import canonicalize_name

from ds01.adapters.identity import require_non_root
from ds01.domain.labels import ImageLabels
from ds01.domain.naming import container_tag, project_image_name, validate_name
from ds01.errors import ErrorCode, NotFoundError, UsageError
from ds01.serialize import JSON_SKIP, json_key
from ds01.services.audit import audited
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.gpu.queue import process_queue_quietly
from ds01.services.image.service import ImageService, ImageUpdateRequest

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import ContainerDetails
    from ds01.domain.actor import Actor
    from ds01.domain.containers import ContainerInfo
    from ds01.services.container.create import ProgressFn as PullProgressFn
    from ds01.services.context import AppContext
    from ds01.services.image.build import ProgressFn as BuildProgressFn
    from ds01.services.image.service import ImageResult

__all__ = [
    "DeployRequest",
    "DeployResult",
    "Narrator",
    "Orchestrator",
    "PackageChanges",
    "RetireResult",
    "Silent",
    "packages_from_changes",
]

#: Packaging tools pip updates on its own; never worth adding to an image.
_TOOLING = frozenset({"pip", "setuptools", "wheel"})
_SITE = r"/(?:site|dist)-packages/"
_METADATA_DIR = re.compile(_SITE + r"([^/]+)\.(dist-info|egg-info)$")
_DIRECT_URL = re.compile(_SITE + r"([^/]+)\.dist-info/direct_url\.json$")
_ADDED = 1  # docker diff's Kind for an added path (0 changed, 2 deleted)


class Narrator(Protocol):
    """Told where an orchestrator is; the CLI's ``Guide`` prints (and explains) it."""

    def phase(self, number: int, total: int, title: str, topic: str | None = None) -> None: ...

    def explain(self, topic: str) -> None: ...

    def note(self, text: str) -> None: ...


class Silent:
    """A narrator that says nothing (services called without a CLI)."""

    def phase(self, number: int, total: int, title: str, topic: str | None = None) -> None:
        return None

    def explain(self, topic: str) -> None:
        return None

    def note(self, text: str) -> None:
        return None


# -- deploy -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployRequest(CreateRequest):
    """``container deploy`` / ``project launch`` flags: the create flags plus how to end."""

    interface: str = "deploy"
    background: bool = False  # start only; otherwise open a shell
    rebuild: bool = False  # build the project image even if it exists

    @property
    def chooses_image_or_gpu(self) -> bool:
        flags = (self.framework, self.version, self.image, self.gpus, self.gpu_profile)
        return any(f is not None for f in flags) or self.cpu_only

    def create_request(self) -> CreateRequest:
        """The create flags alone, as create (and a queued request) takes them."""
        return CreateRequest(**{f.name: getattr(self, f.name) for f in fields(CreateRequest)})


@dataclass(frozen=True)
class DeployResult:
    """What ``deploy`` did; ``to_json`` of it is its JSON form (events, tests)."""

    name: str
    container: str
    created: bool
    image: str | None
    built: bool
    gpus: tuple[str, ...]
    queued: int | None = None
    shell_exit: int | None = None


# -- retire -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageChanges:
    """pip packages in a container's own layer: ``added`` as ``name==version`` pins (from
    the package index), ``direct`` by name (installed from a path or URL)."""

    added: tuple[str, ...] = ()
    direct: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.added and not self.direct


def _name_and_version(stem: str, kind: str) -> tuple[str, str] | None:
    # Wheel metadata directories escape '-' in names to '_', so the first '-' ends the name;
    # egg-info may add '-pyX.Y' after the version.
    name, sep, rest = stem.partition("-")
    if not sep or not name or not rest:
        return None
    version = rest.split("-", 1)[0] if kind == "egg-info" else rest
    return str(canonicalize_name(name)), version


def packages_from_changes(changes: Iterable[Mapping[str, Any]]) -> PackageChanges:
    """Packages pip added, from ``docker diff`` entries (``{"Path": ..., "Kind": ...}``)."""
    added: dict[str, str] = {}
    direct: set[str] = set()
    for change in changes:
        if change.get("Kind") != _ADDED:
            continue
        path = str(change.get("Path") or "")
        direct_match = _DIRECT_URL.search(path)
        if direct_match:
            parsed = _name_and_version(direct_match.group(1), "dist-info")
            if parsed:
                direct.add(parsed[0])
            continue
        match = _METADATA_DIR.search(path)
        if match:
            parsed = _name_and_version(match.group(1), match.group(2))
            if parsed and parsed[0] not in _TOOLING:
                added[parsed[0]] = parsed[1]
    pins = tuple(f"{name}=={added[name]}" for name in sorted(added) if name not in direct)
    return PackageChanges(added=pins, direct=tuple(sorted(direct)))


@dataclass(frozen=True)
class RetireResult:
    """What ``retire`` did; ``to_json`` of it is the ``--json`` object."""

    name: str
    container: str
    #: What pip added; the JSON has it as the two lists below.
    packages: PackageChanges = field(metadata=JSON_SKIP)
    installed_packages: tuple[str, ...] = field(init=False)
    installed_from_paths: tuple[str, ...] = field(init=False)
    saved: tuple[str, ...] = field(metadata=json_key("saved_packages"))
    dockerfile: str | None
    stopped: bool
    released_gpus: tuple[str, ...]

    def __post_init__(self) -> None:
        # Frozen: the derived fields are set once, here.
        object.__setattr__(self, "installed_packages", self.packages.added)
        object.__setattr__(self, "installed_from_paths", self.packages.direct)


#: Asked (on a terminal) whether to add the packages to the project's Dockerfile.
DecideFn = Callable[[PackageChanges, Path], bool]


class Orchestrator:
    """``deploy`` and ``retire`` for one acting user."""

    def __init__(
        self,
        ctx: AppContext,
        narrator: Narrator | None = None,
        *,
        on_build: BuildProgressFn | None = None,
        on_pull: PullProgressFn | None = None,
    ) -> None:
        self.ctx = ctx
        self.say: Narrator = narrator or Silent()
        self.on_build = on_build
        self.on_pull = on_pull

    # -- deploy -----------------------------------------------------------------------

    def deploy(self, actor: Actor, req: DeployRequest) -> DeployResult:
        """Phases 1-2: the image (built if the project has a Dockerfile and no image) and
        the container (limits, GPU); an existing container of that name is used as it is.
        With ``background`` also phase 3, the start; otherwise the caller opens the shell
        with :meth:`open_shell` (after closing its progress displays)."""
        require_non_root(actor)
        validate_name(req.name)
        tag = container_tag(req.name, actor.uid)
        say = self.say
        with audited(self.ctx, actor, "container.deploy", tag) as audit:
            say.phase(1, 3, "Image", "image")
            if self.ctx.engine.exists(tag):
                result = self._existing(actor, tag, req)
            else:
                result = self._create(actor, req)
                if result.queued is not None:
                    audit.result = "queued"
                    audit.add(queue_id=result.queued)
                    return result
            if req.background:
                say.phase(3, 3, "Start", "background")
                ContainerService(self.ctx).start(actor, tag)
                say.note(f"{req.name} runs in the background.")
            audit.add(created=result.created, built=result.built, background=req.background)
        return result

    def open_shell(
        self, actor: Actor, result: DeployResult, *, keep_running: bool = False
    ) -> DeployResult:
        """Phase 3: a shell in the container (started if needed); its exit code comes back.

        Not audited as a whole: the start is (``container.start``), and a shell session
        can last for days."""
        self.say.phase(3, 3, "Shell", "shell")
        code = ContainerService(self.ctx).open(actor, result.container, keep_running=keep_running)
        return replace(result, shell_exit=code)

    def _existing(self, actor: Actor, tag: str, req: DeployRequest) -> DeployResult:
        details = ContainerService(self.ctx).resolve(actor, tag)
        say = self.say
        say.note(f"You have the container {tag} already; it is used as it is.")
        if req.chooses_image_or_gpu or req.rebuild:
            say.note(
                "The image and GPU options apply only to a new container: retire this one "
                f"first ('ds01 container retire {req.name}') to change them."
            )
        say.phase(2, 3, "Container: limits and GPU", "limits")
        labels = details.info.decoded
        gpus = labels.gpu_uuids if labels else ()
        say.explain("gpu")
        say.note(f"{details.info.state.value}; GPUs: {', '.join(gpus) or 'none'}")
        return DeployResult(req.name, tag, False, details.info.image, False, gpus)

    def _create(self, actor: Actor, req: DeployRequest) -> DeployResult:
        built = self._image(actor, req)
        say = self.say
        say.phase(2, 3, "Container: limits and GPU", "limits")
        say.explain("gpu")
        created = CreateService(self.ctx).create(
            actor,
            req.create_request(),
            on_progress=self.on_pull,
        )
        for message in dict.fromkeys(self.ctx.warnings):
            say.note(f"warning: {message}")
        self.ctx.warnings.clear()
        if created.queued is not None:
            say.note(
                f"No GPU fits now: queued as request {created.queued}. The container is "
                "created when one is free ('ds01 gpu queue')."
            )
            return DeployResult(
                req.name, created.container, False, created.image, built, (), created.queued
            )
        limits = created.limits
        cpus = (limits.nano_cpus or 0) / 1e9
        memory = limits.memory
        say.note(f"Created {created.container} from {created.image}.")
        say.note(
            f"Limits: {cpus:g} CPU{'' if cpus == 1 else 's'}, "
            + (f"{memory / 2**30:g} GiB memory" if memory else "no memory limit")
            + f" (group {limits.group}); workspace {created.workspace} -> /workspace"
        )
        say.note("GPU: " + (", ".join(created.gpus) or "none (CPU only)"))
        return DeployResult(req.name, created.container, True, created.image, built, created.gpus)

    def _image(self, actor: Actor, req: DeployRequest) -> bool:
        """Phase 1: which image; builds the project image when needed. True if built."""
        say = self.say
        if req.image or req.framework:
            say.note(f"Using {req.image or req.framework} (as asked).")
            return False
        image = project_image_name(req.name, actor.name)
        dockerfile = self.ctx.settings.workspace_base(actor.name, actor.home) / req.name
        dockerfile = dockerfile / "Dockerfile"
        have = self.ctx.engine.image(image) is not None
        if dockerfile.is_file() and (req.rebuild or not have):
            say.note(f"Building {image} from {dockerfile} (the first build takes minutes).")
            result: ImageResult = ImageService(self.ctx).update(
                actor, ImageUpdateRequest(name=req.name), on_progress=self.on_build
            )
            say.note(
                f"Built {result.image} in {result.seconds or 0:.0f} s "
                f"({result.cached_steps} of {result.steps} steps from the cache)."
            )
            return True
        if req.rebuild:
            raise NotFoundError(
                f"There is no Dockerfile at {dockerfile} to rebuild.",
                hint=f"Create the project first: ds01 project-init {req.name}",
                code=ErrorCode.NO_DOCKERFILE,
            )
        if have:
            say.note(f"Using your image {image}.")
        else:
            say.note(
                "No project image or Dockerfile: using the catalog's default framework "
                f"(create one with 'ds01 project-init {req.name}')."
            )
        return False

    # -- retire -----------------------------------------------------------------------

    def package_changes(self, tag: str) -> PackageChanges:
        """pip packages in the container's own layer (``docker diff``; any state)."""
        return packages_from_changes(self.ctx.engine.diff(tag))

    def project_dockerfile(self, actor: Actor, details: ContainerDetails) -> Path | None:
        """The Dockerfile the container's image was built from, if it is the actor's."""
        info = self.ctx.engine.image(details.image_id)
        labels = ImageLabels.decode(info.labels) if info else None
        if labels is None or not labels.project or labels.maintainer != actor.name:
            return None
        base = self.ctx.settings.workspace_base(actor.name, actor.home)
        dockerfile = base / labels.project / "Dockerfile"
        return dockerfile if dockerfile.is_file() else None

    def retire(
        self,
        actor: Actor,
        name: str,
        *,
        save_packages: bool | None = None,
        decide: DecideFn | None = None,
    ) -> RetireResult:
        """Keep (or list) the packages installed in the container, stop it, remove it and
        release its GPU.

        ``save_packages`` True adds them to the project's custom tier, False does not;
        ``None`` asks ``decide`` (the CLI's question on a terminal) or, without one, does
        not save. A save is done, and checked, before anything is stopped: if it cannot
        be done, nothing is retired.
        """
        containers = ContainerService(self.ctx)
        details = containers.resolve(actor, name)
        info = details.info
        tag = info.tag
        with audited(self.ctx, actor, "container.retire", tag, owner=info.owner) as audit:
            self.say.phase(1, 3, "Packages installed in the container", "packages")
            changes = self.package_changes(tag)
            dockerfile = self.project_dockerfile(actor, details) if changes.added else None
            # Saved (or refused) before anything stops: a save that fails retires nothing.
            saved = self._keep_packages(
                actor,
                info.display_name,
                changes,
                dockerfile,
                save_packages=save_packages,
                decide=decide,
            )
            stopped, released = self._stop_and_remove(actor, containers, info)
            audit.add(
                installed=list(changes.added),
                saved=list(saved),
                released_gpus=list(released),
            )
        return RetireResult(
            name=info.display_name,
            container=tag,
            packages=changes,
            saved=saved,
            dockerfile=str(dockerfile) if dockerfile else None,
            stopped=stopped,
            released_gpus=released,
        )

    def _keep_packages(
        self,
        actor: Actor,
        display: str,
        changes: PackageChanges,
        dockerfile: Path | None,
        *,
        save_packages: bool | None,
        decide: DecideFn | None,
    ) -> tuple[str, ...]:
        """Phase 1: tell what was installed and save it to the project's Dockerfile when
        asked (or when ``decide`` says so); the packages saved come back."""
        say = self.say
        if changes.direct:
            say.note(
                "Installed from a path or URL (not offered for the image): "
                + ", ".join(changes.direct)
            )
        if not changes.added:
            say.note("No pip packages were installed in the container since its image.")
            return ()
        say.note(f"Installed since the image: {' '.join(changes.added)}")
        if dockerfile is None:
            if save_packages:
                raise UsageError(
                    f"{display} was not made from one of your project images, so there "
                    "is no Dockerfile to add the packages to; nothing was retired.",
                    hint="Run again with --no-save-packages, or make a project image "
                    f"with them: ds01 image create {display} --pip "
                    f'"{" ".join(changes.added)}"',
                    code=ErrorCode.NO_PROJECT_DOCKERFILE,
                )
            say.note(
                "They go with the container (it was not made from a project image). "
                f"To have them in an image: ds01 image create {display} --pip "
                f'"{" ".join(changes.added)}"'
            )
            return ()
        wanted = save_packages
        if wanted is None:
            wanted = decide(changes, dockerfile) if decide is not None else False
        return self._save_packages(actor, changes, dockerfile, wanted=wanted)

    def _save_packages(
        self, actor: Actor, changes: PackageChanges, dockerfile: Path, *, wanted: bool
    ) -> tuple[str, ...]:
        """Add the packages to the custom tier of the project's Dockerfile (not built
        now: the next build has them), or say how to do it later."""
        project = dockerfile.parent.name
        if not wanted:
            self.say.note(
                "Not saved. To add them to the image later: ds01 image update "
                f'{project} --add-pip "{" ".join(changes.added)}" (or retire '
                "with --save-packages)."
            )
            return ()
        ImageService(self.ctx).update(
            actor,
            ImageUpdateRequest(name=project, add_pip=changes.added, build=False),
        )
        them = "it" if len(changes.added) == 1 else "them"
        self.say.note(
            f"Added to the custom tier of {dockerfile}; the next build has "
            f"{them} (ds01 image update {project})."
        )
        return changes.added

    def _stop_and_remove(
        self, actor: Actor, containers: ContainerService, info: ContainerInfo
    ) -> tuple[bool, tuple[str, ...]]:
        """Phases 2 and 3: stop the container if it runs, remove it, and let the queue
        have its devices; whether it was stopped and the devices released come back."""
        say = self.say
        tag, display = info.tag, info.display_name
        say.phase(2, 3, "Stop", None)
        stopped = info.state.is_active
        if stopped:
            containers.stop(actor, tag)
            say.note(f"Stopped {display}.")
        else:
            say.note(f"{display} was not running.")
        say.phase(3, 3, "Remove and release the GPU", "retire")
        released = containers.remove(actor, tag).freed_devices
        if released:
            process_queue_quietly(self.ctx)  # its devices may be what the queue waits for
        say.note(
            f"Removed {tag}"
            + (f"; released {', '.join(released)}." if released else ".")
            + " Your workspace and the image stay."
        )
        return stopped, released
