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
depend on who builds, so the layers above the user's own are shared by every user.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ds01.domain.containers import ContainerInfo
from ds01.errors import BuildError, EngineError, UsageError

if TYPE_CHECKING:
    from ds01.adapters.docker_engine import DockerEngine

__all__ = [
    "BuildOutcome",
    "BuildStep",
    "BuildStream",
    "ContextFile",
    "containers_using",
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


@dataclass(frozen=True)
class BuildStep:
    """One Dockerfile instruction as the builder announces it."""

    number: int
    total: int
    instruction: str


@dataclass(frozen=True)
class BuildOutcome:
    """A finished, tagged build."""

    image_id: str
    steps: int
    cached_steps: int
    seconds: float


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
    *,
    tag: str,
    dockerfile: str = "Dockerfile",
    buildargs: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    network_mode: str | None = None,
    timeout: float = 3600.0,
    nocache: bool = False,
    on_step: Callable[[BuildStep], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildOutcome:
    """Build the tar ``context`` (positioned at its start) and tag the result ``tag``.

    Raises :class:`BuildError` when a step fails (``details``: step, total, instruction,
    error, exit_code, last_lines) or the build runs past ``timeout`` seconds (checked at
    every output line; a step that prints nothing is cut off by the same limit on the
    connection); :class:`UsageError` when Docker rejects the Dockerfile itself;
    :class:`EngineError` when the engine fails.
    """
    import urllib3.exceptions

    stream = BuildStream(on_step=on_step, on_line=on_line)
    started = time.monotonic()
    deadline = started + timeout
    events: Iterator[Mapping[str, Any]] | None = None
    try:
        with engine.translate_errors(f"build {tag}"):
            events = engine.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=dockerfile,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=nocache,
                decode=True,
                buildargs=dict(buildargs or {}),
                labels=dict(labels or {}),
                network_mode=network_mode,
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
            code="engine_down",
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
        code="build_timeout",
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


def _directory_entries(root: Path) -> list[str]:
    """Paths under ``root`` not excluded by its ``.dockerignore``, as ``docker build``."""
    from docker.utils.build import exclude_paths

    patterns: list[str] = []
    ignore = root / ".dockerignore"
    if ignore.is_file():
        lines = ignore.read_text(encoding="utf-8", errors="replace").splitlines()
        patterns = [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    return sorted(exclude_paths(str(root), patterns, dockerfile=".dockerignore"))


def write_context(
    out: IO[bytes],
    files: Sequence[ContextFile],
    *,
    directory: Path | None = None,
    may_read: Callable[[Path, os.stat_result], bool] | None = None,
) -> int:
    """Write a build context tar to ``out``: ``directory``'s files (``.dockerignore``
    honoured), then ``files`` (which win over same-named files of the directory).

    ``may_read`` vets each regular file of ``directory``; a file it refuses stops the
    build with exit 2 (DS01 acting as root never packs a file the user could not read).
    Returns the number of bytes written; ``out`` is left at its start.
    """
    generated = {f.name for f in files}
    with tarfile.open(fileobj=out, mode="w") as tar:
        if directory is not None:
            for rel in _directory_entries(directory):
                if rel in generated:
                    continue
                full = directory / rel
                try:
                    info = tar.gettarinfo(str(full), arcname=rel)
                except OSError as exc:
                    raise _unreadable(full, exc.strerror or str(exc)) from exc
                if info is None:  # sockets and the like: docker build skips them too
                    continue
                info = _root_owned(info)
                if not info.isfile():
                    tar.addfile(info)
                    continue
                if may_read is not None and not may_read(full, full.lstat()):
                    raise _unreadable(full, "you may not read it")
                try:
                    with full.open("rb") as fh:
                        tar.addfile(info, fh)
                except OSError as exc:
                    raise _unreadable(full, exc.strerror or str(exc)) from exc
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
        code="context_unreadable",
    )


# ------------------------------------------------------------------ images in use


def containers_using(engine: DockerEngine, image_id: str) -> list[ContainerInfo]:
    """Containers in every state created from exactly the image ``image_id``."""
    with engine.translate_errors(f"list containers of image {image_id[:19]}"):
        rows = engine.api.containers(all=True, filters={"ancestor": image_id})
    # "ancestor" also matches images built on top of this one: keep exact matches only.
    ids = [str(r["Id"]) for r in rows if r.get("ImageID") == image_id]
    return [engine.inspect(i).info for i in ids]
