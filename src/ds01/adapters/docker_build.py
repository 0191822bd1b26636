"""Building images with Docker's classic builder, its output streamed and parsed.

The engine on DS01 hosts is Docker 20.10 reached through the SDK, whose ``/build`` call
runs the classic builder. Its output is a stream of JSON objects: ``stream`` text (not
line-aligned: a step header and its newline may come in separate objects), ``status``
objects while a missing base image is pulled, ``aux`` with the final image id, and one
``error``/``errorDetail`` object when a step fails. :class:`BuildStream` turns that into
lines and steps (``Step N/M : INSTRUCTION``); :func:`run_build` drives a build.

What the classic builder guarantees, and DS01 relies on: the tag is applied only after
the last step succeeded (a failed build leaves the previous image, if any, under the
name); ``forcerm`` removes the intermediate container of a failed step as well; and a
client that disconnects cancels the build, so a timeout or Ctrl-C leaves nothing running.

Build contexts are written by :func:`write_context` with every entry owned by root and,
for generated files, a fixed mode and time: the cache key of a ``COPY`` then does not
depend on who builds, so the layers above the user's own are shared by every user. A
user's directory is packed through descriptors opened with ``O_NOFOLLOW`` and vetted on
their ``fstat``: DS01 may run as root, and a link swapped in mid-way must not make it pack
a file the user could not read.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import tarfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ds01.adapters.user_fs import open_real_dir as walk_real_directory
from ds01.domain.engine_types import BuildOutcome, BuildRequest, BuildStep
from ds01.errors import BuildError, EngineError, ErrorCode, UsageError

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import DockerEngine

__all__ = [
    "BuildOutcome",
    "BuildStep",
    "BuildStream",
    "ContextFile",
    "DockerBuildEngine",
    "MayRead",
    "run_build",
    "write_context",
]

_STEP = re.compile(r"Step (\d+)/(\d+) : (.*)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The builder's own bookkeeping lines: kept in the log, left out of the failure excerpt.
_NOISE = re.compile(r" ---> (?:Running in )?[0-9a-f]{12}|Removing intermediate container .*")
_CACHE_HIT = " ---> Using cache"
_EXITED = re.compile(r"The command .* returned a non-zero code: (\d+)", re.DOTALL)
TAIL_LINES = 20


def _clean(line: str) -> str:
    # Output may carry colour codes (the builder wraps stderr in red) and carriage returns
    # of progress bars; the last segment after a CR is what a terminal would show.
    return _ANSI.sub("", line).rstrip("\r").rsplit("\r", 1)[-1].rstrip()


class BuildStream:
    """The parsed state of one build's output; feed it Docker's decoded events in order.

    ``on_step`` is called when a step starts, ``on_line`` for every output line (the
    step headers included), so a caller can keep the full log and show progress.
    """

    def __init__(
        self,
        *,
        on_step: Callable[[BuildStep], None] | None = None,
        on_line: Callable[[str], None] | None = None,
        tail: int = TAIL_LINES,
    ) -> None:
        self._on_step = on_step
        self._on_line = on_line
        self._buffer = ""
        self.step: BuildStep | None = None
        self.steps_seen = 0
        self.cached_steps = 0
        self.image_id: str | None = None
        self.error: str | None = None
        self.error_code: int | None = None
        #: The last lines of the current step's own output (no builder bookkeeping).
        self.tail: deque[str] = deque(maxlen=tail)

    def feed(self, event: Mapping[str, Any]) -> None:
        """Take one decoded event."""
        if "stream" in event:
            self._buffer += str(event["stream"])
            *complete, self._buffer = self._buffer.split("\n")
            for raw in complete:
                self._line(_clean(raw))
        if "status" in event and "progressDetail" not in event:
            # Pull messages ("Pulling from ...", "Digest: ..."); per-layer byte counts skipped.
            ident = f"{event['id']}: " if event.get("id") else ""
            self._line(_clean(f"{ident}{event['status']}"))
        aux = event.get("aux")
        if isinstance(aux, Mapping) and aux.get("ID"):
            self.image_id = str(aux["ID"])
        if "error" in event or "errorDetail" in event:
            self.finish()
            detail = event.get("errorDetail") or {}
            message = str(detail.get("message") or event.get("error") or "unknown error")
            self.error = _clean(message)
            code = detail.get("code")
            self.error_code = int(code) if isinstance(code, int) else None
            self._emit(f"ERROR: {self.error}")

    def finish(self) -> None:
        """Flush an unterminated last line."""
        if self._buffer:
            line, self._buffer = _clean(self._buffer), ""
            self._line(line)

    def _line(self, line: str) -> None:
        match = _STEP.fullmatch(line)
        if match:
            self.step = BuildStep(int(match[1]), int(match[2]), match[3])
            self.steps_seen += 1
            self.tail.clear()
            self._emit(line)
            if self._on_step is not None:
                self._on_step(self.step)
            return
        if line == _CACHE_HIT:
            self.cached_steps += 1
        elif line and not _NOISE.fullmatch(line):
            self.tail.append(line)
        self._emit(line)

    def _emit(self, line: str) -> None:
        if self._on_line is not None:
            self._on_line(line)


def _shown(instruction: str, width: int = 120) -> str:
    text = " ".join(instruction.split())  # continuation lines leave runs of spaces
    return text if len(text) <= width else text[: width - 3] + "..."


def _failure(stream: BuildStream, tag: str) -> BuildError:
    step = stream.step
    where = f"step {step.number}/{step.total} ({_shown(step.instruction)})" if step else "the start"
    lines = list(stream.tail)
    excerpt = "\n".join(f"  | {line}" for line in lines)
    error = stream.error or "unknown error"
    exited = _EXITED.fullmatch(error)
    if exited:  # the builder repeats the whole command; the step line already shows it
        error = f"the command exited with code {exited[1]}"
    message = f"The build of {tag} failed at {where}: {error}"
    if excerpt:
        message += f"\nLast lines of that step:\n{excerpt}"
    return BuildError(
        message,
        details={
            "step": step.number if step else None,
            "total": step.total if step else None,
            "instruction": step.instruction if step else None,
            "error": stream.error,
            "exit_code": stream.error_code,
            "last_lines": lines,
        },
    )


def run_build(
    engine: DockerEngine,
    context: IO[bytes],
    request: BuildRequest,
    *,
    on_step: Callable[[BuildStep], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildOutcome:
    """Build the tar ``context`` (positioned at its start) and tag the result
    ``request.tag``.

    Raises :class:`BuildError` when a step fails (``details``: step, total, instruction,
    error, exit_code, last_lines) or the build runs past ``timeout`` seconds (checked at
    every output line; a step that prints nothing is cut off by the same limit on the
    connection); :class:`UsageError` when Docker rejects the Dockerfile itself;
    :class:`EngineError` when the engine fails.
    """
    import urllib3.exceptions

    tag, timeout = request.tag, request.timeout

    stream = BuildStream(on_step=on_step, on_line=on_line)
    started = time.monotonic()
    deadline = started + timeout
    events: Iterator[Mapping[str, Any]] | None = None
    try:
        with engine.translate_errors(f"build {tag}"):
            events = engine.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=request.dockerfile,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=request.nocache,
                decode=True,
                buildargs=dict(request.buildargs),
                labels=dict(request.labels),
                network_mode=request.network_mode,
                timeout=max(1, int(timeout)),
                # Proxies come from DS01's configuration only, never a user's ~/.docker.
                use_config_proxy=False,
            )
            for event in events:
                stream.feed(event)
                if stream.error is not None:
                    break
                if time.monotonic() > deadline:
                    raise _timeout(tag, timeout, stream)
    except (urllib3.exceptions.HTTPError, TimeoutError) as exc:
        if time.monotonic() >= deadline - 1:
            raise _timeout(tag, timeout, stream) from exc
        raise EngineError(
            f"The connection to the Docker engine broke during the build of {tag}: {exc}",
            hint="Check the engine ('systemctl status docker') and build again.",
            code=ErrorCode.ENGINE_DOWN,
        ) from exc
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            # Closing the response is what makes the engine cancel a build still running
            # (timeout, Ctrl-C); forcerm then removes its container.
            close()
    stream.finish()
    if stream.error is not None:
        raise _failure(stream, tag)
    image_id = stream.image_id or _tagged_id(engine, tag)
    return BuildOutcome(
        image_id=image_id,
        steps=stream.steps_seen,
        cached_steps=stream.cached_steps,
        seconds=time.monotonic() - started,
    )


def _timeout(tag: str, timeout: float, stream: BuildStream) -> BuildError:
    step = stream.step
    return BuildError(
        f"The build of {tag} took longer than {timeout:g} s and was stopped"
        + (f" at step {step.number}/{step.total} ({_shown(step.instruction)})." if step else "."),
        hint="Ask an administrator to raise 'build.timeout', or install fewer packages.",
        code=ErrorCode.BUILD_TIMEOUT,
        details={
            "step": step.number if step else None,
            "total": step.total if step else None,
            "instruction": step.instruction if step else None,
            "last_lines": list(stream.tail),
        },
    )


def _tagged_id(engine: DockerEngine, tag: str) -> str:
    info = engine.image(tag)
    if info is None:
        raise EngineError(f"The build of {tag} ended without error, but no image has that name.")
    return info.id


# ------------------------------------------------------------------------ build context


@dataclass(frozen=True)
class ContextFile:
    """A generated file placed in a build context (the Dockerfile, CA certificates)."""

    name: str  # relative path inside the context
    content: bytes
    mode: int = 0o644


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the lstat must not hang the open; on a regular file
# it changes nothing.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_DOCKERIGNORE = 1024 * 1024

#: Vets one entry of a user's directory: its path (for messages) and ``fstat`` of the
#: descriptor DS01 opened; a directory must also be enterable.
MayRead = Callable[[Path, os.stat_result], bool]


@dataclass
class _DirectoryPacker:
    """Packs a user's directory into a tar through descriptors, never through a path.

    Every file and directory is opened relative to its parent's descriptor with
    ``O_NOFOLLOW`` and vetted with ``fstat`` of that descriptor, so a symlink swapped in
    after the listing is refused rather than followed, and what ``may_read`` approved is
    exactly what gets packed. Symbolic links are packed as links (``docker build`` does
    the same); FIFOs, sockets and devices are left out.
    """

    tar: tarfile.TarFile
    root: Path
    matcher: Any  # docker.utils.build.PatternMatcher (the SDK has no type hints)
    generated: frozenset[str]
    may_read: MayRead | None

    def check(self, path: Path, st: os.stat_result) -> None:
        if self.may_read is not None and not self.may_read(path, st):
            raise _unreadable(path, "you may not read it")

    def pack(self, dir_fd: int, rel_dir: str) -> None:
        try:
            names = sorted(os.listdir(dir_fd))
        except OSError as exc:
            raise _unreadable(self.root / rel_dir, exc.strerror or str(exc)) from exc
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing: docker build would not see it either
            except OSError as exc:
                raise _unreadable(self.root / rel, exc.strerror or str(exc)) from exc
            if stat.S_ISDIR(st.st_mode):
                self._directory(dir_fd, name, rel)
            elif self.matcher.matches(rel) or self._shadowed(rel):
                continue
            elif stat.S_ISLNK(st.st_mode):
                self._symlink(dir_fd, name, rel, st)
            elif stat.S_ISREG(st.st_mode):
                self._file(dir_fd, name, rel)

    def _shadowed(self, rel: str) -> bool:
        """A generated file (or a directory holding one) takes this name in the context."""
        return any(g == rel or g.startswith(rel + "/") for g in self.generated)

    def _directory(self, dir_fd: int, name: str, rel: str) -> None:
        excluded = self.matcher.matches(rel)
        if excluded and not _reincluded_below(self.matcher, rel):
            return  # ignored as a whole: not even opened, as docker build does
        full = self.root / rel
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise _unreadable(full, _why(exc)) from exc
        try:
            st = os.fstat(fd)
            self.check(full, st)
            if not excluded:
                info = _root_owned(tarfile.TarInfo(rel))
                info.type, info.mode = tarfile.DIRTYPE, stat.S_IMODE(st.st_mode)
                info.mtime = int(st.st_mtime)
                self.tar.addfile(info)
            self.pack(fd, rel)
        finally:
            os.close(fd)

    def _symlink(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            raise _unreadable(self.root / rel, exc.strerror or str(exc)) from exc
        info = _root_owned(tarfile.TarInfo(rel))
        info.type, info.linkname = tarfile.SYMTYPE, target
        info.mode, info.mtime = 0o777, int(st.st_mtime)
        self.tar.addfile(info)

    def _file(self, dir_fd: int, name: str, rel: str) -> None:
        full = self.root / rel
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise _unreadable(full, _why(exc)) from exc
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise _unreadable(full, "it is no longer a regular file")
            self.check(full, st)
            info = _root_owned(tarfile.TarInfo(rel))
            info.size, info.mode = st.st_size, stat.S_IMODE(st.st_mode)
            info.mtime = int(st.st_mtime)
            try:
                self.tar.addfile(info, fh)
            except OSError as exc:  # e.g. the file shrank while it was packed
                raise _unreadable(full, exc.strerror or str(exc)) from exc


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "it was replaced by a symbolic link while the context was packed"
    return exc.strerror or str(exc)


def _reincluded_below(matcher: Any, rel: str) -> bool:
    """An ignored directory is still entered when a ``!pattern`` names something in it
    (``docker build``'s own rule)."""
    from docker.utils.build import normalize_slashes

    return any(
        p.exclusion and p.cleaned_pattern.startswith(normalize_slashes(rel))
        for p in matcher.patterns
    )


def _dockerignore(root_fd: int, root: Path, may_read: MayRead | None) -> list[str]:
    """The patterns of ``root/.dockerignore`` (read through the descriptor, no link)."""
    path = root / ".dockerignore"
    try:
        fd = os.open(".dockerignore", _FILE_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _unreadable(path, _why(exc)) from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _unreadable(path, "it is not a regular file")
        if may_read is not None and not may_read(path, st):
            raise _unreadable(path, "you may not read it")
        data = fh.read(_MAX_DOCKERIGNORE + 1)
    if len(data) > _MAX_DOCKERIGNORE:
        raise _unreadable(path, "it is larger than 1 MiB")
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def _pack_directory(
    tar: tarfile.TarFile, directory: Path, generated: frozenset[str], may_read: MayRead | None
) -> None:
    from docker.utils.build import PatternMatcher

    try:
        # The one O_NOFOLLOW walk of the tree, shared with every other user path DS01 opens.
        with walk_real_directory(directory) as root_fd:
            st = os.fstat(root_fd)
            if may_read is not None and not may_read(directory, st):
                raise _unreadable(directory, "you may not read it")
            matcher = PatternMatcher(_dockerignore(root_fd, directory, may_read))
            _DirectoryPacker(tar, directory, matcher, generated, may_read).pack(root_fd, "")
    except OSError as exc:  # only the walk to the directory itself raises it unwrapped
        raise _unreadable(directory, _why(exc)) from exc


def write_context(
    out: IO[bytes],
    files: Sequence[ContextFile],
    *,
    directory: Path | None = None,
    may_read: MayRead | None = None,
) -> int:
    """Write a build context tar to ``out``: ``directory``'s files (``.dockerignore``
    honoured), then ``files`` (which win over same-named files of the directory).

    ``directory`` must be a real path (no symbolic link in it, as
    :func:`ds01.adapters.user_fs.resolve_user_path` returns); it is walked through
    descriptors with ``O_NOFOLLOW`` from ``/`` down. ``may_read`` vets every directory
    and regular file packed (the ``.dockerignore`` included) on the ``fstat`` of the
    descriptor that is then read; one it refuses stops the build with exit 2, so DS01
    acting as root never packs what the user could not read. Returns the number of bytes
    written; ``out`` is left at its start.
    """
    generated = frozenset(f.name for f in files)
    with tarfile.open(fileobj=out, mode="w") as tar:
        if directory is not None:
            _pack_directory(tar, directory, generated, may_read)
        for item in files:
            info = _root_owned(tarfile.TarInfo(item.name))
            info.size, info.mode, info.mtime = len(item.content), item.mode, 0
            tar.addfile(info, io.BytesIO(item.content))
    size = out.tell()
    out.seek(0)
    return size


def _unreadable(path: Path, why: str) -> UsageError:
    return UsageError(
        f"Cannot put {path} into the build context: {why}.",
        hint="List files the build does not need in a .dockerignore next to your Dockerfile.",
        code=ErrorCode.CONTEXT_UNREADABLE,
    )


# ------------------------------------------------------------------ images in use


class DockerBuildEngine:
    """The :class:`ds01.ports.BuildEngine` of a Docker engine: :func:`run_build`."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine

    def build(
        self,
        context: IO[bytes],
        request: BuildRequest,
        *,
        on_step: Callable[[BuildStep], None] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> BuildOutcome:
        return run_build(self.engine, context, request, on_step=on_step, on_line=on_line)
