"""Running one image build for a user: context, CA certificates, build log, the files.

The use cases in :mod:`ds01.services.image.service` decide *what* to build; this module builds
it. A build context is never the user's project directory for a Dockerfile DS01
rendered: it is a small tar holding the Dockerfile and the configured CA certificates
only, so nothing from the project leaks into the image and nothing large is sent to the
engine. A Dockerfile of the user's own (``--dockerfile``) gets its own directory as the
context, as ``docker build`` would, packed through descriptors that never follow a link.

Image names join project and user (``<project>-<user>-image``), so two users can arrive
at one name (``a-b`` of ``c`` and ``a`` of ``b-c``). A build therefore never uses,
replaces or removes an image whose labels name another owner, and never builds on
another user's image (it may hold their files).

Every build writes its full output to
``<state_dir>/users/<uid>/build-logs/<image>-<time>.log`` (the directory and the logs
belong to that user; see :mod:`ds01.adapters.state_layout`), and a failure names the
failing step, its last lines and that log.

User files (``--requirements``, ``--dockerfile``, the project's Dockerfile) are found and
opened through :mod:`ds01.adapters.user_fs` only: DS01 may run as root for the user.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ds01.adapters.docker_build import (
    BuildStep,
    ContextFile,
    write_context,
)
from ds01.adapters.state_layout import USERS, open_user_dir

# The O_NOFOLLOW walk of user_fs, for directories DS01 writes into through a descriptor.
from ds01.adapters.user_fs import readable_by
from ds01.domain.dockerfile import BuildNetwork
from ds01.domain.dockerfile_labels import check_labels, ownership_labels
from ds01.domain.dockerfile_refs import DockerfileReading, read_dockerfile, read_triggers
from ds01.domain.engine_types import BuildRequest
from ds01.domain.labels import ImageLabels, L
from ds01.domain.naming import docker_safe_component
from ds01.errors import BuildError, ConfigError, EngineError, ErrorCode, RefusedError, UsageError
from ds01.services.project.files import NEW_FILE_FLAGS, acting_for_someone, os_reason

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import ImageInfo
    from ds01.domain.actor import Actor
    from ds01.domain.engine_types import BuildOutcome
    from ds01.services.context import AppContext

__all__ = [
    "CA_CONTEXT_DIR",
    "DOCKERFILE_IN_CONTEXT",
    "BuildPlan",
    "BuildProgress",
    "BuildReport",
    "ImageBuilder",
    "ProgressFn",
    "image_owner",
]

#: Where the configured CA certificates sit in a build context (BuildNetwork names).
CA_CONTEXT_DIR = "ds01-ca"
#: The Dockerfile's name inside a context: never shadows a file of the user's directory.
DOCKERFILE_IN_CONTEXT = ".ds01.Dockerfile"
_MAX_CA_BYTES = 4 * 1024 * 1024
_STEP_HEADER = re.compile(r"Step \d+/\d+ : ")  # shown as the step itself, not as output
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class BuildPlan:
    """One build of a project's image: the Dockerfile and what its context holds."""

    project: str
    image: str
    dockerfile_text: str
    network: BuildNetwork
    ca_files: tuple[ContextFile, ...]
    context_dir: Path | None = None  # the user's directory (--dockerfile); None: minimal


@dataclass(frozen=True)
class BuildProgress:
    """What a progress display shows: the current step, and a new output line if any."""

    step: int
    total: int
    instruction: str
    line: str | None = None


ProgressFn = Callable[[BuildProgress], None]


@dataclass(frozen=True)
class BuildReport:
    """A finished build."""

    image: str
    image_id: str
    seconds: float
    steps: int
    cached_steps: int
    log: Path


def ca_context_names(paths: Sequence[Path]) -> tuple[str, ...]:
    """Names of the configured CA files inside a context: ``ds01-ca/<stem>.crt``.

    ``update-ca-certificates`` reads only ``*.crt``, so a ``.pem`` is renamed; a name
    that repeats gets its position in front, so every basename is unique.
    """
    names: list[str] = []
    for index, path in enumerate(paths, start=1):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._") or "ca"
        name = f"{stem}.crt"
        if name in names:
            name = f"{index:02d}-{name}"
        names.append(name)
    return tuple(f"{CA_CONTEXT_DIR}/{name}" for name in names)


def image_owner(info: ImageInfo) -> str:
    """The user an image was built for by DS01 (its maintainer label); ``""`` if none."""
    labels = ImageLabels.decode(info.labels)
    return labels.maintainer if labels is not None else info.labels.get(L.MAINTAINER, "")


class ImageBuilder:
    """Builds a Dockerfile text into a tagged image for one user."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    # -- build networking -------------------------------------------------------------

    def network(self) -> tuple[BuildNetwork, tuple[ContextFile, ...]]:
        """The configured build networking and the CA files for the context.

        Read before anything is written: an unreadable certificate is a configuration
        error (exit 2), not a failed build.
        """
        build = self.ctx.settings.build
        names = ca_context_names(build.ca_certificates)
        files: list[ContextFile] = []
        for path, name in zip(build.ca_certificates, names, strict=True):
            try:
                if path.stat().st_size > _MAX_CA_BYTES:
                    raise ConfigError(
                        f"build.ca_certificates: {path} is larger than 4 MiB; it is not a "
                        "certificate bundle.",
                        hint="Check 'build.ca_certificates' in the DS01 configuration.",
                    )
                content = path.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"build.ca_certificates: cannot read {path}: {exc.strerror or exc}.",
                    hint="Check 'build.ca_certificates' in the DS01 configuration and that "
                    "the file is readable by every DS01 user.",
                ) from exc
            if b"-----BEGIN CERTIFICATE-----" not in content:
                raise ConfigError(
                    f"build.ca_certificates: {path} holds no PEM certificate.",
                    hint="Give PEM files ('-----BEGIN CERTIFICATE-----').",
                )
            files.append(ContextFile(name, content))
        network = BuildNetwork(
            ca_certificates=names,
            pip_index_url=build.pip_index_url,
            http_proxy=build.http_proxy,
            https_proxy=build.https_proxy,
            no_proxy=build.no_proxy,
        )
        return network, tuple(files)

    # -- whose images a build touches ----------------------------------------------

    def check_target(self, actor: Actor, plan: BuildPlan) -> ImageInfo | None:
        """Refuse a build that would take another owner's image name or read another
        user's image (exit 3), or whose Dockerfile DS01 cannot read as the engine will or
        sets DS01's labels (exit 2); return the image of this name the build replaces.

        Every image the build reads is checked: each stage's ``FROM`` (build arguments
        resolved), ``COPY --from``, ``RUN --mount`` ``from=``, ONBUILD instructions, and
        what the ONBUILD triggers of each base image read and label.
        """
        reading = self.read_dockerfile(actor, plan)
        previous = self.own_image(actor, plan.image, plan.project)
        for ref in reading.refs():
            self.check_base(actor, ref)
        ownership = self.ownership_labels(actor, plan, reading)
        for base in dict.fromkeys(reading.bases):
            images, labels = read_triggers(self.ctx.engine.onbuild_triggers(base), base)
            check_labels(labels, ownership)
            for use in images:
                self.check_base(actor, use.ref, via=f"the ONBUILD triggers of {base}")
        return previous

    def read_dockerfile(self, actor: Actor, plan: BuildPlan) -> DockerfileReading:
        """The images and labels of ``plan``'s Dockerfile, as the engine will read them
        with DS01's build arguments; exit 2 for what cannot be resolved, or a label of
        DS01's that the Dockerfile may not set."""
        reading = read_dockerfile(plan.dockerfile_text, plan.network.build_args())
        check_labels(reading.labels, self.ownership_labels(actor, plan, reading))
        return reading

    def ownership_labels(
        self, actor: Actor, plan: BuildPlan, reading: DockerfileReading
    ) -> dict[str, str]:
        """The labels the engine sets on the image, overriding the Dockerfile's and the
        base's: who it is for and what it was really built on."""
        return ownership_labels(
            image=plan.image,
            project=plan.project,
            login=actor.name,
            uid=actor.uid,
            gid=actor.gid,
            base=reading.final_base,
        )

    def own_image(self, actor: Actor, image: str, project: str) -> ImageInfo | None:
        """The image ``image`` if it is this user's build of ``project``, ``None`` if there
        is none; refused (exit 3) if the name is held by anything else."""
        info = self.ctx.engine.image(image)
        if info is None:
            return None
        labels = ImageLabels.decode(info.labels)
        if labels is not None and labels.maintainer == actor.name and labels.project == project:
            return info
        owner = image_owner(info)
        if not owner:
            held = "an image DS01 did not build"
        elif owner == actor.name:
            held = f"your image of another project ({labels.project if labels else '?'})"
        else:
            held = f"an image of another user ({owner})"
        raise RefusedError(
            f"The image name {image} is already used by {held}; DS01 does not use, replace "
            "or delete it.",
            hint="Choose another project name: image names join the project and user "
            "names, so a project of yours can meet another user's under one name.",
            code=ErrorCode.IMAGE_NAME_TAKEN,
            details={"image": image, "owner": owner or None},
        )

    def check_base(self, actor: Actor, ref: str, *, via: str | None = None) -> None:
        """Refuse (exit 3) to build on (or copy from) an image DS01 built for another
        user: it may hold their files. Admins may; images without DS01's labels (the
        catalog's) are fine. ``via`` says how the build reaches ``ref``, for the message."""
        if actor.is_admin:
            return
        info = self.ctx.engine.image(ref)
        if info is None:
            return  # not on this host: what the build finds is no user's DS01 image
        owner = image_owner(info)
        if owner and owner != actor.name:
            reached = f" (through {via})" if via else ""
            raise RefusedError(
                f"{ref}{reached} is an image DS01 built for another user ({owner}); you may "
                "not build on it or copy from it, as it may hold their files.",
                hint="Build on a catalog image (--framework/--version) or on an image of your own.",
                code=ErrorCode.BASE_NOT_YOURS,
            )

    # -- the build log ----------------------------------------------------------------

    def _open_log(self, actor: Actor, image: str) -> tuple[Path, IO[str]]:
        """Create the build log in ``<state_dir>/users/<uid>/build-logs/``: a directory
        of the user's own under the root-owned, sticky ``users/`` (state_layout), opened
        through descriptors that never follow a link. A directory another user made
        under that name first is refused (exit 2), never written into."""
        state = Path(os.path.realpath(self.ctx.settings.state_dir))  # the admin's path
        mine = state / USERS / str(actor.uid) / "build-logs"
        try:
            mine_fd = open_user_dir(state, actor.uid, actor.gid, "build-logs", 0o700)
            try:
                return self._create_log(actor, mine_fd, mine, image)
            finally:
                os.close(mine_fd)
        except OSError as exc:
            raise ConfigError(
                f"Cannot write a build log under {mine}: {os_reason(exc)}.",
                hint="Check that 'state_dir' in the DS01 configuration is writable by DS01 users.",
            ) from exc

    def _create_log(
        self, actor: Actor, dir_fd: int, directory: Path, image: str
    ) -> tuple[Path, IO[str]]:
        stamp = self.ctx.clock.now().strftime("%Y%m%dT%H%M%SZ")
        repo = _segment(image.split(":", 1)[0])
        for attempt in range(100):
            suffix = f"-{attempt}" if attempt else ""
            name = f"{repo}-{stamp}{suffix}.log"
            try:
                fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue
            if acting_for_someone(actor):
                os.fchown(fd, actor.uid, actor.gid)
            log = os.fdopen(fd, "w", encoding="utf-8", errors="replace", buffering=1)
            return directory / name, log
        raise ConfigError(f"Too many build logs named {repo}-{stamp}*.log in {directory}.")

    # -- building ---------------------------------------------------------------------

    def build(
        self,
        actor: Actor,
        plan: BuildPlan,
        *,
        on_progress: ProgressFn | None = None,
        nocache: bool = False,
        failure_hint: str | None = None,
    ) -> BuildReport:
        """Build ``plan`` as its project's image; the log is kept whatever happens.

        The ownership labels (:func:`~ds01.domain.dockerfile_labels.ownership_labels`:
        custom image, maintainer, project, baked uid/gid/account, base image) are set by the
        engine on the final image, overriding the Dockerfile's and the base image's:
        ownership is DS01's to say. A build
        this one replaces is removed when nothing uses it any more. ``failure_hint``
        replaces the generic advice when a step fails.
        """
        previous = self.check_target(actor, plan)
        # Build labels override the Dockerfile's and the base image's: ownership is DS01's.
        labels = self.ownership_labels(actor, plan, self.read_dockerfile(actor, plan))
        log_path, log = self._open_log(actor, plan.image)
        relay = _ProgressRelay(log, on_progress)
        started = time.monotonic()
        with log:
            _write_log_header(log, actor, plan, self.ctx.clock.now().isoformat(timespec="seconds"))
            files = [
                ContextFile(DOCKERFILE_IN_CONTEXT, plan.dockerfile_text.encode()),
                *plan.ca_files,
            ]
            try:
                outcome = self._run_build(actor, plan, files, labels, relay, nocache=nocache)
            except BuildError as exc:
                log.write(f"# FAILED after {time.monotonic() - started:.1f} s: {exc.message}\n")
                raise BuildError(
                    exc.message + f"\nFull build log: {log_path}",
                    hint=exc.hint
                    or failure_hint
                    or "Fix the failing step (a package name, or your Dockerfile), then build "
                    "again.",
                    code=exc.code,
                    details={**exc.details, "log": str(log_path)},
                ) from exc
            except BaseException as exc:
                log.write(f"# STOPPED: {type(exc).__name__}: {exc}\n")
                raise
            log.write(
                f"# built {outcome.image_id} in {outcome.seconds:.1f} s "
                f"({outcome.cached_steps} of {outcome.steps} steps from the cache)\n"
            )
        if previous is not None and previous.id != outcome.image_id:
            self._drop_replaced(actor, previous)
        return BuildReport(
            image=plan.image,
            image_id=outcome.image_id,
            seconds=outcome.seconds,
            steps=outcome.steps,
            cached_steps=outcome.cached_steps,
            log=log_path,
        )

    def _run_build(
        self,
        actor: Actor,
        plan: BuildPlan,
        files: list[ContextFile],
        labels: dict[str, str],
        relay: _ProgressRelay,
        *,
        nocache: bool,
    ) -> BuildOutcome:
        """Send the context (the files, and the user's directory if any) to the engine and
        build it, with every output line going to the log and the progress display."""

        def may_read(_path: Path, st: os.stat_result) -> bool:
            # Decided from the user's rights, whoever DS01 runs as.
            return readable_by(actor, st, enter=stat.S_ISDIR(st.st_mode))

        with tempfile.TemporaryFile(prefix="ds01-context-") as context:
            size = write_context(context, files, directory=plan.context_dir, may_read=may_read)
            relay.log.write(f"# build context: {size} bytes\n")
            request = BuildRequest(
                tag=plan.image,
                dockerfile=DOCKERFILE_IN_CONTEXT,
                buildargs=plan.network.build_args(),
                labels=labels,
                network_mode=self.ctx.settings.build.network,
                timeout=self.ctx.settings.build.timeout,
                nocache=nocache,
            )
            return self.ctx.builder.build(context, request, on_step=relay.step, on_line=relay.line)

    def _drop_replaced(self, actor: Actor, previous: ImageInfo) -> None:
        """Remove the build a new one replaced: only an untagged DS01 image of this user
        that no container uses and no image is built on (its layers below the custom tier
        are shared with the new build and stay)."""
        engine = self.ctx.engine
        short = previous.id.removeprefix("sha256:")[:12]
        try:
            now = engine.image(previous.id)
            if now is None or now.tags:
                return
            if ImageLabels.decode(now.labels) is None or image_owner(now) != actor.name:
                return  # a base image, or someone else's: never removed for this user
            if engine.containers_of_image(now.id) or engine.image_children(now.id):
                return
            engine.remove_image(now.id)
        except (EngineError, UsageError) as exc:
            # The new image is built and tagged; a leftover old one is only disk space.
            self.ctx.warnings.append(f"The previous build {short} was not removed: {exc}")


class _ProgressRelay:
    """Build output to the log (every line) and to the progress display (the current
    step, and each line that is not a step header, since the display shows the step)."""

    def __init__(self, log: IO[str], on_progress: ProgressFn | None) -> None:
        self.log = log
        self.on_progress = on_progress
        self.current = BuildStep(0, 0, "preparing the build context")

    def step(self, step: BuildStep) -> None:
        self.current = step
        if self.on_progress is not None:
            self.on_progress(BuildProgress(step.number, step.total, step.instruction))

    def line(self, text: str) -> None:
        self.log.write(text + "\n")
        if self.on_progress is not None and not _STEP_HEADER.match(text):
            current = self.current
            self.on_progress(
                BuildProgress(current.number, current.total, current.instruction, text)
            )


def _write_log_header(log: IO[str], actor: Actor, plan: BuildPlan, now: str) -> None:
    """What was built, for whom, when, from what: the log stands alone when read later."""
    log.write(f"# ds01 build of {plan.image} for {actor.name}\n")
    log.write(f"# started {now}\n")
    log.write(f"# context: {plan.context_dir or 'minimal (Dockerfile and CA certificates)'}\n")
    log.write("# ---- Dockerfile ----\n" + plan.dockerfile_text.rstrip("\n") + "\n")
    log.write("# ---- build output ----\n")


def _segment(text: str) -> str:
    """``text`` as one safe path component (log file and directory names)."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._@+-]*", text):
        return text
    return docker_safe_component(text)
