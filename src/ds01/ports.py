"""The small contracts DS01's services depend on, one per external system.

Adapters in ``ds01.adapters`` implement them; services receive them through their
constructors (never through module-level globals), so tests can hand in a different
implementation without patching import paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import IO, Any, Protocol

from ds01.domain.actor import Actor
from ds01.domain.containers import ContainerInfo, ContainerSpec
from ds01.domain.devices import Inventory
from ds01.domain.engine_types import (
    BuildOutcome,
    BuildRequest,
    BuildStep,
    ContainerDetails,
    ContainerFile,
    ExecResult,
    ImageInfo,
)

__all__ = [
    "Accounts",
    "BuildEngine",
    "Clock",
    "ContainerEngine",
    "EventSink",
    "GpuInventory",
    "MountProbe",
    "Notifier",
]


class Clock(Protocol):
    """Where services get the time. Tests inject a controllable one."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class GpuInventory(Protocol):
    """A source of GPU facts: NVML, nvidia-smi, a JSON file, or nothing.

    ``read()`` returns a fresh snapshot each call; it raises
    :class:`ds01.errors.GpuQueryError` when the source exists but cannot be read.
    """

    name: str

    def read(self) -> Inventory:
        """A snapshot of the GPUs and allocatable devices."""
        ...


class Notifier(Protocol):
    """Tells a user something: their terminals first, a file as fallback."""

    def notify(self, user: str, message: str, *, fallback_dir: str | None = None) -> list[str]:
        """Deliver ``message``; return where it went (tty paths or file paths)."""
        ...


class EventSink(Protocol):
    """Append-only record of what DS01 did."""

    def record(
        self,
        *,
        actor: str,
        action: str,
        target: str | None,
        result: str,
        details: dict[str, Any] | None = None,
    ) -> None: ...

    def query(self, *, user: str | None = None, limit: int | None = None) -> Iterator[Any]: ...


class ContainerEngine(Protocol):
    """The container engine as DS01's services use it: Docker
    (:class:`ds01.adapters.docker_engine.DockerEngine`) or the in-memory engine
    (:class:`ds01.adapters.memory_engine.MemoryEngine`). ``tests/conformance`` runs the
    same tests against both.

    Errors, for every method: :class:`~ds01.errors.NotFoundError` when the named
    container does not exist; :class:`~ds01.errors.UsageError` with code ``conflict``
    when the engine refuses because of the object's state (a name in use, a running
    container removed without ``force``, ``exec``/``top`` in a container that is not
    running, an image in use); :class:`~ds01.errors.EngineError` when the engine fails
    (code ``engine_down`` when it cannot be reached). Nothing else leaves an engine.
    """

    # -- engine facts -----------------------------------------------------------------

    def info(self) -> Mapping[str, Any]:
        """``docker info``; DS01 reads ``CgroupDriver`` from it."""
        ...

    def cgroup_driver(self) -> str:
        """``systemd`` or ``cgroupfs``."""
        ...

    # -- containers -------------------------------------------------------------------

    def list_containers(self, labels: Sequence[str] = ()) -> list[ContainerInfo]:
        """Containers in every state whose labels match all of ``labels`` (``k`` or
        ``k=v``). ``status`` is Docker's list text (``Created``, ``Up 2 hours``),
        ``created`` is whole seconds."""
        ...

    def inspect(self, name_or_id: str) -> ContainerDetails:
        """One container by name or id; ``NotFoundError`` when there is none."""
        ...

    def exists(self, name: str) -> bool: ...

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; returns its id. A name in use: ``conflict``."""
        ...

    def start(self, name: str) -> None:
        """Start a created or stopped container; running already: success."""
        ...

    def stop(self, name: str, timeout: int = 10) -> None:
        """Stop (SIGTERM, then SIGKILL after ``timeout`` s); not running: success."""
        ...

    def remove(self, name: str, *, force: bool = False) -> None:
        """Remove a container (never its image); gone already: success. Running and not
        ``force``: ``conflict``."""
        ...

    def top(self, name: str) -> list[dict[str, str]]:
        """Processes of a running container, one dict per process (``PID``, ``PPID``,
        ``CMD``, ...); the first is the init (``details.pid``)."""
        ...

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        user: str,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: Callable[[bytes | None, bytes | None], None] | None = None,
    ) -> ExecResult:
        """Run ``argv`` in a running container without a terminal. With ``on_output``
        the streams are handed over as ``(stdout, None)`` / ``(None, stderr)`` chunks and
        not kept in the result."""
        ...

    def interactive_exec(
        self, name: str, argv: Sequence[str], *, user: str, workdir: str, env: Mapping[str, str]
    ) -> int:
        """Attach the caller's terminal to a new process; returns its exit code."""
        ...

    def read_tree(self, name: str, path: str) -> dict[str, ContainerFile | None]:
        """Every entry under ``path``: regular files with contents, directories as
        ``None``, keyed by archive path (``etc/passwd`` for ``/etc``). A missing path or
        container: ``{}``."""
        ...

    def put_archive(self, name: str, path: str, data: bytes) -> None:
        """Unpack the tar ``data`` into the container at ``path`` (which must exist)."""
        ...

    def stats(self, name: str) -> Mapping[str, Any]:
        """One ``docker stats`` sample (``cpu_stats``, ``precpu_stats``,
        ``memory_stats``, ``pids_stats``)."""
        ...

    def diff(self, name: str) -> list[Mapping[str, Any]]:
        """``docker diff``: ``{"Path": ..., "Kind": 0|1|2}`` (changed, added, deleted)."""
        ...

    # -- images -----------------------------------------------------------------------

    def image(self, ref: str) -> ImageInfo | None:
        """The local image ``ref`` (tag, ``repo`` meaning ``repo:latest``, id or id
        prefix), or ``None``."""
        ...

    def list_images(self, labels: Sequence[str] = ()) -> list[ImageInfo]:
        """Local top-level images whose labels match all of ``labels``."""
        ...

    def pull(
        self, ref: str, on_progress: Callable[[Mapping[str, Any]], None] | None = None
    ) -> None:
        """Pull ``ref`` from its registry."""
        ...

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Remove a tag, or an image by id; not present: success. In use: ``conflict``."""
        ...

    def containers_of_image(self, image_id: str) -> list[ContainerInfo]:
        """Containers in every state created from exactly ``image_id`` (not from an image
        built on it)."""
        ...

    def image_children(self, image_id: str) -> list[str]:
        """Ids of the images whose parent is ``image_id``."""
        ...

    def onbuild_triggers(self, ref: str) -> list[str]:
        """The local image's ``ONBUILD`` triggers; ``[]`` when none or not present."""
        ...


class BuildEngine(Protocol):
    """Builds an image from a tar context (the classic builder's semantics).

    Separate from :class:`ContainerEngine` because only a real engine can run a build:
    the in-memory engine has none, and services that never build need not care.
    """

    def build(
        self,
        context: IO[bytes],
        request: BuildRequest,
        *,
        on_step: Callable[[BuildStep], None] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> BuildOutcome:
        """Build ``context`` and tag the result ``request.tag``; raises BuildError on a
        failed step."""
        ...


class MountProbe(Protocol):
    """Looks at what a running container has mounted, from outside it: the host's
    ``/proc/<pid>/root`` (:class:`ds01.adapters.mounted.ProcMountProbe`), or, for the
    in-memory engine, its record (:class:`ds01.adapters.memory_engine.MemoryMountProbe`).

    Errors are ``OSError``: ``ESRCH``/``EACCES``/``EPERM`` mean the process cannot be
    looked into at all; any other (``ENOENT``, ``ELOOP``) that nothing the checked
    directory's identity is mounted at that target.
    """

    def open_process(self, pid: int) -> AbstractContextManager[int]:
        """Pin the process ``pid``; the handle stands for it in the calls below."""
        ...

    def wait_until_readable(self, handle: int) -> None:
        """Until the process's root can be looked into (bounded; raises when not)."""
        ...

    def identity_at(self, handle: int, target: str) -> tuple[int, int]:
        """``(st_dev, st_ino)`` of what is mounted at ``target``, no link followed."""
        ...


class Accounts(Protocol):
    """The host's user accounts: the system's passwd and group databases
    (:class:`ds01.adapters.identity.SystemAccounts`), or a table in tests
    (:class:`ds01.adapters.memory_accounts.MemoryAccounts`). Who is *calling* never comes
    from here but from the kernel (:func:`ds01.adapters.identity.resolve_actor`)."""

    def actor(
        self, user: str, *, admin_group: str | None = None, with_groups: bool = True
    ) -> Actor:
        """The account ``user`` (a name, or a uid in digits); exit 2 (``unknown_user``)
        when there is none. ``admin_group`` decides ``is_admin``."""
        ...

    def uid(self, user: str) -> int | None:
        """The uid of the account named ``user``; ``None`` when there is none."""
        ...
