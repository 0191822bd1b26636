"""Running one image build for a user: context, CA certificates, build log, the files.

The use cases in :mod:`ds01.services.images` decide *what* to build; this module builds
it. A build context is never the user's project directory for a Dockerfile DS01
rendered: it is a small tar holding the Dockerfile and the configured CA certificates
only, so nothing from the project leaks into the image and nothing large is sent to the
engine. A Dockerfile of the user's own (``--dockerfile``) gets its own directory as the
context, as ``docker build`` would.

Every build writes its full output to ``<state_dir>/build-logs/<user>/<image>-<time>.log``
(the directory is shared like the state directory; each user's subdirectory and logs
belong to that user), and a failure names the failing step, its last lines and that log.
"""

from __future__ import annotations

import contextlib
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
    containers_using,
    run_build,
    write_context,
)
from ds01.domain.dockerfile import BuildNetwork
from ds01.domain.labels import L
from ds01.domain.naming import docker_safe_component
from ds01.errors import BuildError, ConfigError, EngineError, UsageError

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import ImageInfo
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = [
    "CA_CONTEXT_DIR",
    "DOCKERFILE_IN_CONTEXT",
    "BuildPlan",
    "BuildProgress",
    "BuildReport",
    "ImageBuilder",
    "ProgressFn",
    "ProjectFiles",
    "readable_by",
]

#: Where the configured CA certificates sit in a build context (BuildNetwork names).
CA_CONTEXT_DIR = "ds01-ca"
#: The Dockerfile's name inside a context: never shadows a file of the user's directory.
DOCKERFILE_IN_CONTEXT = ".ds01.Dockerfile"
_MAX_CA_BYTES = 4 * 1024 * 1024
_MAX_TEXT_BYTES = 1024 * 1024
_STEP_HEADER = re.compile(r"Step \d+/\d+ : ")  # shown as the step itself, not as output


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


def readable_by(actor: Actor, st: os.stat_result, *, enter: bool = False) -> bool:
    """May ``actor`` read (and, with ``enter``, enter) a file with this ``stat``?

    Decided from the mode bits, not ``os.access``: DS01 may run as root on the user's
    behalf (sudo, the stage-2 daemon), where ``os.access`` would say yes to everything.
    """
    gids = {actor.gid}
    # An account the group database no longer knows keeps just its primary group.
    with contextlib.suppress(OSError):
        gids.update(os.getgrouplist(actor.name, actor.gid))
    if st.st_uid == actor.uid:
        read, execute = stat.S_IRUSR, stat.S_IXUSR
    elif st.st_gid in gids:
        read, execute = stat.S_IRGRP, stat.S_IXGRP
    else:
        read, execute = stat.S_IROTH, stat.S_IXOTH
    return bool(st.st_mode & read) and (not enter or bool(st.st_mode & execute))


def _acting_for_someone(actor: Actor) -> bool:
    return os.geteuid() == 0 and actor.uid != 0


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

    # -- the build log ----------------------------------------------------------------

    def _log_dir(self, actor: Actor) -> Path:
        state = Path(self.ctx.settings.state_dir)
        logs = state / "build-logs"
        mine = logs / _segment(actor.name)
        try:
            if not logs.is_dir():
                state.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    logs.mkdir()
                    # Shared like the state directory (every DS01 user adds a subdirectory),
                    # sticky so nobody removes another user's.
                    logs.chmod(stat.S_IMODE(state.stat().st_mode) | stat.S_ISVTX)
            if not mine.is_dir():
                with contextlib.suppress(FileExistsError):
                    mine.mkdir(mode=0o700)
                    if _acting_for_someone(actor):
                        os.chown(mine, actor.uid, actor.gid)
        except OSError as exc:
            raise ConfigError(
                f"Cannot create the build log directory {mine}: {exc.strerror or exc}.",
                hint="Check that 'state_dir' in the DS01 configuration is writable by DS01 users.",
            ) from exc
        return mine

    def _open_log(self, actor: Actor, image: str) -> tuple[Path, IO[str]]:
        directory = self._log_dir(actor)
        stamp = self.ctx.clock.now().strftime("%Y%m%dT%H%M%SZ")
        repo = _segment(image.split(":", 1)[0])
        for attempt in range(100):
            suffix = f"-{attempt}" if attempt else ""
            path = directory / f"{repo}-{stamp}{suffix}.log"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise ConfigError(
                    f"Cannot write the build log {path}: {exc.strerror or exc}.",
                    hint="Check that the state directory is writable by DS01 users.",
                ) from exc
            if _acting_for_someone(actor):
                os.fchown(fd, actor.uid, actor.gid)
            return path, os.fdopen(fd, "w", encoding="utf-8", errors="replace", buffering=1)
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

        The ownership labels (custom image, maintainer, project) are set by the engine on
        the final image, overriding the Dockerfile's: ownership is DS01's to say. A build
        this one replaces is removed when nothing uses it any more. ``failure_hint``
        replaces the generic advice when a step fails.
        """
        previous = self.ctx.engine.image(plan.image)
        labels = {
            L.CUSTOM_IMAGE: plan.image,
            L.MAINTAINER: actor.name,
            L.IMAGE_PROJECT: plan.project,
        }
        image, dockerfile_text, context_dir = plan.image, plan.dockerfile_text, plan.context_dir
        network, ca_files = plan.network, plan.ca_files
        log_path, log = self._open_log(actor, image)
        current = BuildStep(0, 0, "preparing the build context")

        def step(s: BuildStep) -> None:
            nonlocal current
            current = s
            if on_progress is not None:
                on_progress(BuildProgress(s.number, s.total, s.instruction))

        def line(text: str) -> None:
            log.write(text + "\n")
            if on_progress is not None and not _STEP_HEADER.match(text):
                on_progress(BuildProgress(current.number, current.total, current.instruction, text))

        started = time.monotonic()
        with log:
            log.write(f"# ds01 build of {image} for {actor.name}\n")
            log.write(f"# started {self.ctx.clock.now().isoformat(timespec='seconds')}\n")
            log.write(f"# context: {context_dir or 'minimal (Dockerfile and CA certificates)'}\n")
            log.write("# ---- Dockerfile ----\n" + dockerfile_text.rstrip("\n") + "\n")
            log.write("# ---- build output ----\n")
            files = [ContextFile(DOCKERFILE_IN_CONTEXT, dockerfile_text.encode()), *ca_files]
            may_read = None
            if context_dir is not None and _acting_for_someone(actor):

                def may_read(_path: Path, st: os.stat_result) -> bool:
                    return readable_by(actor, st)

            try:
                with tempfile.TemporaryFile(prefix="ds01-context-") as context:
                    size = write_context(context, files, directory=context_dir, may_read=may_read)
                    log.write(f"# build context: {size} bytes\n")
                    outcome = run_build(
                        self.ctx.engine,
                        context,
                        tag=image,
                        dockerfile=DOCKERFILE_IN_CONTEXT,
                        buildargs=network.build_args(),
                        labels=labels,
                        network_mode=self.ctx.settings.build.network,
                        timeout=self.ctx.settings.build.timeout,
                        nocache=nocache,
                        on_step=step,
                        on_line=line,
                    )
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
            self._drop_replaced(previous)
        return BuildReport(
            image=image,
            image_id=outcome.image_id,
            seconds=outcome.seconds,
            steps=outcome.steps,
            cached_steps=outcome.cached_steps,
            log=log_path,
        )

    def _drop_replaced(self, previous: ImageInfo) -> None:
        """Remove the build a new one replaced, unless a container or a tag still uses it
        (its layers below the custom tier are shared with the new build and stay)."""
        engine = self.ctx.engine
        short = previous.id.removeprefix("sha256:")[:12]
        try:
            now = engine.image(previous.id)
            if now is None or now.tags or containers_using(engine, previous.id):
                return
            engine.remove_image(previous.id)
        except (EngineError, UsageError) as exc:
            # The new image is built and tagged; a leftover old one is only disk space.
            self.ctx.warnings.append(f"The previous build {short} was not removed: {exc}")


def _segment(text: str) -> str:
    """``text`` as one safe path component (log file and directory names)."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._@+-]*", text):
        return text
    return docker_safe_component(text)


class ProjectFiles:
    """The files a build reads and writes for a user, checked before they are touched.

    Paths the user names (``--dockerfile``, ``--requirements``) follow the mount rules
    (under the allowed roots after resolving links, readable by the user) but refuse with
    exit 2; the project directory must be the user's own; the Dockerfile is replaced
    atomically and never followed through a link, which matters when DS01 acts as root.
    """

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def roots(self, actor: Actor) -> list[Path]:
        settings = self.ctx.settings
        out: list[Path] = []
        for root in settings.container.allowed_mount_roots:
            text = root.replace("{user}", actor.name)
            if text == "~" or text.startswith("~/"):
                text = actor.home + text[1:]
            out.append(Path(os.path.realpath(text)))
        out.append(Path(os.path.realpath(settings.workspace_base(actor.name, actor.home))))
        return out

    def user_path(
        self, actor: Actor, raw: str, *, what: str, cwd: Path, directory: bool = False
    ) -> Path:
        """A path the user named, resolved and checked like a mount source, but exit 2.

        It must exist, lie (after symlinks) under the places the user may mount, and be
        readable by the user: DS01 never reads a file for a build that its user could not.
        """
        if any(c in raw for c in "\x00\n\r"):
            raise UsageError(f"The {what} path contains control characters.", code="bad_path")
        if raw.startswith("~"):
            if raw != "~" and not raw.startswith("~/"):
                raise UsageError(
                    f"The {what} path {raw!r} names another user's home.", code="bad_path"
                )
            given = Path(actor.home + raw[1:])
        else:
            given = Path(raw)
        absolute = given if given.is_absolute() else cwd / given
        real = Path(os.path.realpath(absolute))
        kind = "directory" if directory else "file"
        try:
            st = real.stat()
        except OSError as exc:
            raise UsageError(
                f"The {what} {absolute} does not exist or cannot be read ({exc.strerror or exc}).",
                code="no_such_file",
            ) from exc
        if stat.S_ISDIR(st.st_mode) != directory or not (directory or stat.S_ISREG(st.st_mode)):
            raise UsageError(f"The {what} {absolute} is not a {kind}.", code="bad_path")
        roots = self.roots(actor)
        if not any(real == root or root in real.parents for root in roots):
            shown = ", ".join(str(r) for r in roots)
            raise UsageError(
                f"The {what} {real} is outside the places DS01 may read for you ({shown}).",
                hint="Put it under your home or workspace directory.",
                code="path_not_allowed",
            )
        parent_ok = readable_by(actor, real.parent.stat(), enter=True)
        if not parent_ok or not readable_by(actor, st, enter=directory):
            raise UsageError(f"You cannot read the {what} {real}.", code="path_not_readable")
        return real

    def read_text(self, path: Path, what: str) -> str:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"Cannot read the {what} {path}: {exc.strerror or exc}.") from exc
        if len(data) > _MAX_TEXT_BYTES:
            raise UsageError(f"The {what} {path} is larger than 1 MiB.", code="file_too_large")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"The {what} {path} is not UTF-8 text.", code="bad_encoding") from exc

    def project_dir(self, actor: Actor, name: str) -> Path:
        """``<workspace base>/NAME``; if it exists, it must be the user's own directory."""
        base = self.ctx.settings.workspace_base(actor.name, actor.home)
        project = base / name
        if not project.exists() and not project.is_symlink():
            return project
        real = Path(os.path.realpath(project))
        roots = self.roots(actor)
        inside = any(real == root or root in real.parents for root in roots)
        if not real.is_dir() or not inside:
            raise UsageError(
                f"{project} is not a directory under your home or workspace.",
                hint="Rename or remove it, or pick another project name.",
                code="bad_project_dir",
            )
        if os.geteuid() == 0 and real.stat().st_uid != actor.uid:
            # Acting as root for the user: never write into a directory that isn't theirs.
            raise UsageError(f"{project} does not belong to {actor.name}.", code="bad_project_dir")
        return project

    def read_dockerfile(self, actor: Actor, path: Path) -> str | None:
        """The project Dockerfile's text, or ``None`` when there is none."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(
                f"{path} is not a regular file (a link or a directory).",
                hint="Replace it with the Dockerfile itself.",
                code="bad_dockerfile",
            )
        if not readable_by(actor, st):
            raise UsageError(f"You cannot read {path}.", code="path_not_readable")
        return self.read_text(path, "Dockerfile")

    def write(self, actor: Actor, path: Path, text: str) -> None:
        """Replace ``path`` atomically (a link there is replaced, never followed)."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                os.fchmod(fh.fileno(), 0o644)
                if os.geteuid() == 0 and actor.uid != 0:
                    os.fchown(fh.fileno(), actor.uid, actor.gid)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
