"""A container engine in memory, shipped for tests (as httpx ships ``MockTransport``).

:class:`MemoryEngine` implements :class:`ds01.ports.ContainerEngine` without Docker:
containers with names, deterministic ids, labels and the states created / running /
exited; images with tags, ids, parents and labels (:mod:`ds01.adapters.memory_images`);
a filesystem per container for ``read_tree``/``put_archive``; programmable ``exec``
results, ``stats`` and ``diff``; times from an injected :class:`~ds01.ports.Clock`. It
raises the same error classes and codes as the Docker adapter: ``tests/conformance``
runs the same tests against both, so the two cannot drift apart.

What it does not model, and services must not expect from it: processes really running
(``exec`` answers from a table, nothing runs); ``/proc/<pid>`` of a container (its pids
are above any host's ``pid_max``, so the host's probe finds no process and answers
``mount_unverified``, never another process's mounts; :class:`MemoryMountProbe` answers
from what each bind source resolved to at start instead); cgroups; an NVIDIA runtime
refusing a device (``start`` of a container with device requests succeeds); a registry
(``pull`` copies an image seeded with ``add_image(..., local=False)``); builds.

Seeding, for tests::

    engine = MemoryEngine(clock)
    engine.add_image("ds01-test/bookworm-base:latest", labels={...})
    engine.respond(["id", "-u"], stdout=b"1000\\n")
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ds01.adapters.clock import FixedClock
from ds01.adapters.memory_images import ImageRecord, ImageStore, epoch, matches_labels
from ds01.adapters.memory_status import list_status, stats_sample, top_rows
from ds01.domain.containers import ContainerInfo, ContainerSpec, ContainerState
from ds01.domain.engine_types import ContainerDetails, ContainerFile, ExecResult, ImageInfo
from ds01.errors import DS01Error, ErrorCode, NotFoundError, UsageError
from ds01.ports import Clock

__all__ = ["ExecCall", "MemoryEngine", "MemoryMountProbe"]

_FILE_TYPE = 0o100000  # S_IFREG, as Docker's archive reports a regular file's mode
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class ExecCall:
    """One ``exec`` (or ``interactive_exec``) as the engine received it."""

    container: str
    argv: tuple[str, ...]
    user: str
    workdir: str | None
    env: Mapping[str, str]
    interactive: bool = False


ExecHandler = Callable[[ExecCall], ExecResult | None]


@dataclass
class _Container:
    id: str
    name: str
    spec: ContainerSpec
    image_id: str
    created: datetime
    files: dict[str, ContainerFile | None]
    env: dict[str, str]
    entrypoint: tuple[str, ...]
    state: ContainerState = ContainerState.CREATED
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None
    exit_code: int = 0
    sessions: list[tuple[int, str]] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)  # path -> docker diff kind
    # What each bind target resolved to at the last start, as Docker resolves a source
    # path then (following links): (st_dev, st_ino). Read by MemoryMountProbe.
    mounted: dict[str, tuple[int, int]] = field(default_factory=dict)


class MemoryEngine:
    """Docker as DS01's services see it, in memory. Not thread-safe by design: tests drive
    it from one thread (the services' thread pools only read)."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        cgroup_driver: str = "cgroupfs",
        host_memory: int = 64 * 1024**3,
    ) -> None:
        self.clock: Clock = clock or FixedClock(epoch())
        self._driver = cgroup_driver
        self._host_memory = host_memory
        self._containers: dict[str, _Container] = {}
        self._count = 0
        # Above Linux's largest pid_max (2**22): no host process has these pids, so code that
        # looks into /proc/<pid> (mount verification) finds nothing rather than a stranger.
        self._next_pid = 5_000_000
        self.images = ImageStore(self._image_in_use)
        self._responses: dict[tuple[str, ...], ExecResult] = {}
        self.exec_handler: ExecHandler | None = None
        #: Every exec received, in order (for assertions).
        self.exec_calls: list[ExecCall] = []
        self._stats: dict[str, Mapping[str, Any]] = {}
        self._failures: dict[str, list[DS01Error]] = {}

    # -- seeding (tests) --------------------------------------------------------------

    def add_image(
        self,
        *tags: str,
        labels: Mapping[str, str] | None = None,
        parent: str | None = None,
        size: int = 0,
        user: str = "",
        created: datetime | None = None,
        env: Mapping[str, str] | None = None,
        entrypoint: Sequence[str] = (),
        onbuild: Sequence[str] = (),
        files: Mapping[str, ContainerFile | None] | None = None,
        local: bool = True,
    ) -> ImageInfo:
        """An image, as a build or pull would leave it. A ``parent`` (a local reference)
        passes on its labels, env, user and files, as ``FROM`` does; ``local=False`` puts
        it in the registry only, for ``pull``. ``files`` are keyed ``etc/passwd``."""
        base = self.images.find(parent) if parent else None
        if parent and base is None:
            raise NotFoundError(f"add_image: the parent {parent!r} is not a local image.")
        record = ImageRecord(
            id=self.images.new_id(",".join(tags)),
            tags=list(dict.fromkeys(tags)),
            labels={**(base.labels if base else {}), **(labels or {})},
            size=size or (base.size if base else 0),
            created=created or self.clock.now(),
            user=user or (base.user if base else ""),
            parent=base.id if base else None,
            env={**(base.env if base else {}), **(env or {})},
            entrypoint=tuple(entrypoint) or (base.entrypoint if base else ()),
            onbuild=tuple(onbuild),
            files={**(base.files if base else {}), **dict(files or {})},
        )
        self.images.add(record, local=local)
        return record.info()

    def respond(
        self, argv: Sequence[str], *, exit_code: int = 0, stdout: bytes = b"", stderr: bytes = b""
    ) -> None:
        """What ``exec`` of exactly ``argv`` answers (in any container)."""
        self._responses[tuple(argv)] = ExecResult(exit_code, stdout, stderr)

    def add_session(self, name: str, command: str) -> int:
        """A process beside the main one in a running container (``top`` shows it until
        the container stops); returns its pid."""
        box = self._running(name, "add a session to")
        pid = self._new_pid()
        box.sessions.append((pid, command))
        return pid

    def set_stats(self, name: str, sample: Mapping[str, Any]) -> None:
        """What ``stats`` answers for the container ``name`` (default: zeros)."""
        self._stats[self._get(name, "stats of").id] = sample

    def set_state(self, name: str, state: ContainerState, *, exit_code: int = 0) -> None:
        """Move a container to ``state`` behind DS01's back (its process died, an admin
        paused it), stamping the time as Docker would."""
        box = self._get(name, "set the state of")
        now = self.clock.now()
        if state.is_active and not box.state.is_active:
            box.started_at, box.pid = now, self._new_pid()
            box.mounted = _resolve_mounts(box.spec)
        if not state.is_active and box.state.is_active:
            box.finished_at, box.pid, box.sessions = now, None, []
        box.state, box.exit_code = state, exit_code

    def fail_next(self, operation: str, error: DS01Error) -> None:
        """The next call of the method ``operation`` (``"start"``) raises ``error``."""
        self._failures.setdefault(operation, []).append(error)

    def mounted_at(self, pid: int, target: str) -> tuple[int, int] | None:
        """What the running container whose main process is ``pid`` has mounted at
        ``target`` (``(st_dev, st_ino)`` as resolved at its start); ``None``: nothing.
        Raises ``ProcessLookupError`` when no running container has that pid."""
        for box in self._containers.values():
            if box.pid == pid and box.state.is_active:
                return box.mounted.get(target)
        raise ProcessLookupError(pid, "no such process")

    # -- engine facts -----------------------------------------------------------------

    def info(self) -> Mapping[str, Any]:
        self._maybe_fail("info")
        return {
            "CgroupDriver": self._driver,
            "ServerVersion": "memory",
            "Containers": len(self._containers),
            "MemTotal": self._host_memory,
        }

    def cgroup_driver(self) -> str:
        return str(self.info().get("CgroupDriver", "cgroupfs"))

    # -- containers -------------------------------------------------------------------

    def list_containers(self, labels: Sequence[str] = ()) -> list[ContainerInfo]:
        self._maybe_fail("list_containers")
        now = self.clock.now()
        boxes = sorted(self._containers.values(), key=lambda b: b.created, reverse=True)
        return [self._info(b, now) for b in boxes if matches_labels(b.spec.labels, labels)]

    def inspect(self, name_or_id: str) -> ContainerDetails:
        self._maybe_fail("inspect")
        box = self._get(name_or_id, "inspect container")
        spec = box.spec
        return ContainerDetails(
            info=ContainerInfo(
                id=box.id,
                tag=box.name,
                image=spec.image,
                state=box.state,
                status=box.state.value,
                labels=dict(spec.labels),
                created=box.created,
            ),
            image_id=box.image_id,
            started_at=box.started_at,
            finished_at=box.finished_at,
            pid=box.pid,
            exit_code=box.exit_code,
            user=spec.user,
            host_config=_host_config(spec),
            env=dict(box.env),
            mounts=tuple(_mount(m.source, m.target, m.read_only) for m in spec.mounts),
        )

    def exists(self, name: str) -> bool:
        return self._find(name) is not None

    def create(self, spec: ContainerSpec) -> str:
        self._maybe_fail("create")
        what = f"create container {spec.tag!r}"
        if len(spec.tag) < 2 or not set(spec.tag) <= _NAME_CHARS or not spec.tag[0].isalnum():
            raise UsageError(f"{what}: Docker rejected the request: Invalid container name")
        if self._find(spec.tag) is not None:
            raise UsageError(
                f"{what}: Conflict. The container name is already in use.", code=ErrorCode.CONFLICT
            )
        image = self.images.find(spec.image)
        if image is None:
            raise NotFoundError(f"{what}: not found (No such image: {spec.image}).")
        for m in spec.mounts:
            if not _host_path_exists(m.source):
                raise UsageError(
                    f"{what}: Docker rejected the request: invalid mount config "
                    f'for type "bind": bind source path does not exist: {m.source}'
                )
        self._count += 1
        box = _Container(
            id=_container_id(self._count, spec.tag),
            name=spec.tag,
            spec=spec,
            image_id=image.id,
            created=self.clock.now(),
            files=dict(image.files),
            env={**image.env, **spec.env},
            entrypoint=image.entrypoint if spec.entrypoint is None else spec.entrypoint,
        )
        self._containers[box.id] = box
        return box.id

    def start(self, name: str) -> None:
        self._maybe_fail("start")
        box = self._get(name, "start container")
        if box.state is not ContainerState.RUNNING:
            self.set_state(box.id, ContainerState.RUNNING)

    def stop(self, name: str, timeout: int = 10) -> None:
        self._maybe_fail("stop")
        box = self._get(name, "stop container")
        if box.state.is_active:
            # The main process (under docker-init) ends on SIGTERM: 128 + 15.
            self.set_state(box.id, ContainerState.EXITED, exit_code=143)

    def remove(self, name: str, *, force: bool = False) -> None:
        self._maybe_fail("remove")
        box = self._find(name)
        if box is None:
            return
        if box.state.is_active and not force:
            raise UsageError(
                f"remove container {name!r}: You cannot remove a running container {box.id}. "
                "Stop the container before attempting removal or force remove",
                code=ErrorCode.CONFLICT,
            )
        del self._containers[box.id]
        self._stats.pop(box.id, None)

    def top(self, name: str) -> list[dict[str, str]]:
        self._maybe_fail("top")
        box = self._running(name, "list processes of")
        main = " ".join((*box.entrypoint, *box.spec.command))
        started = box.started_at or self.clock.now()  # set for every running container
        return top_rows(box.spec.user, box.pid or 0, started, main, box.sessions)

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
        self._maybe_fail("exec")
        box = self._running(name, "exec in")
        result = self._answer(ExecCall(box.name, tuple(argv), user, workdir, dict(env or {})))
        if on_output is None:
            return result
        if result.stdout:
            on_output(result.stdout, None)
        if result.stderr:
            on_output(None, result.stderr)
        return ExecResult(result.exit_code, b"", b"")

    def interactive_exec(
        self, name: str, argv: Sequence[str], *, user: str, workdir: str, env: Mapping[str, str]
    ) -> int:
        """As the docker CLI does: an unknown or stopped container is exit code 1 (its
        message goes to the terminal), not an exception."""
        self._maybe_fail("interactive_exec")
        box = self._find(name)
        if box is None or box.state is not ContainerState.RUNNING:
            return 1
        call = ExecCall(box.name, tuple(argv), user, workdir, dict(env), interactive=True)
        return self._answer(call).exit_code

    def read_tree(self, name: str, path: str) -> dict[str, ContainerFile | None]:
        self._maybe_fail("read_tree")
        box = self._find(name)
        root = path.strip("/")
        if box is None or (root and root not in box.files):
            return {}
        base = root.rsplit("/", 1)[-1]
        out: dict[str, ContainerFile | None] = {}
        for key, entry in sorted(box.files.items()):
            if root and key != root and not key.startswith(root + "/"):
                continue
            out[base + key[len(root) :] if root else key] = entry
        return out

    def put_archive(self, name: str, path: str, data: bytes) -> None:
        self._maybe_fail("put_archive")
        box = self._get(name, "copy files into")
        root = path.strip("/")
        if root and box.files.get(root, 0) is not None:
            raise NotFoundError(
                f"copy files into {name!r}: not found (Could not find the file {path} in "
                f"container {name})."
            )
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                key = "/".join(p for p in (root, member.name.strip("/")) if p)
                if member.isdir():
                    self._write(box, key, None)
                elif member.isfile():
                    fh = tar.extractfile(member)
                    content = fh.read() if fh else b""
                    mode = _FILE_TYPE | (member.mode & 0o7777)
                    self._write(box, key, ContainerFile(content, mode, member.uid, member.gid))

    def stats(self, name: str) -> Mapping[str, Any]:
        self._maybe_fail("stats")
        box = self._get(name, "stats of")
        if box.id in self._stats:
            return dict(self._stats[box.id])
        limit = box.spec.limits.memory or self._host_memory
        procs = 2 + len(box.sessions) if box.state is ContainerState.RUNNING else None
        return stats_sample(box.id, box.name, self.clock.now(), limit, procs)

    def diff(self, name: str) -> list[Mapping[str, Any]]:
        """Paths ``put_archive`` wrote: added (1) or changed (0), and their directories."""
        self._maybe_fail("diff")
        box = self._get(name, "list the changes in")
        return [{"Path": "/" + p, "Kind": kind} for p, kind in sorted(box.written.items())]

    # -- images -----------------------------------------------------------------------

    def image(self, ref: str) -> ImageInfo | None:
        self._maybe_fail("image")
        record = self.images.find(ref)
        return record.info() if record else None

    def list_images(self, labels: Sequence[str] = ()) -> list[ImageInfo]:
        self._maybe_fail("list_images")
        return self.images.listed(labels)

    def pull(
        self, ref: str, on_progress: Callable[[Mapping[str, Any]], None] | None = None
    ) -> None:
        self._maybe_fail("pull")
        record = self.images.from_registry(ref)
        self.images.add(replace(record, tags=list(record.tags), files=dict(record.files)))
        if on_progress is not None:
            on_progress({"status": f"Pulling from {ref}", "id": "latest"})
            on_progress({"status": f"Status: Downloaded newer image for {ref}"})

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        self._maybe_fail("remove_image")
        record = self.images.find(ref)
        users = [b.id for b in self._containers.values() if record and b.image_id == record.id]
        self.images.remove(ref, force=force, users=users)

    def containers_of_image(self, image_id: str) -> list[ContainerInfo]:
        return [c for c in self.list_containers() if self._get(c.id, "").image_id == image_id]

    def image_children(self, image_id: str) -> list[str]:
        return self.images.children(image_id)

    def onbuild_triggers(self, ref: str) -> list[str]:
        record = self.images.find(ref)
        return list(record.onbuild) if record else []

    # -- internals --------------------------------------------------------------------

    def _find(self, name_or_id: str) -> _Container | None:
        """Docker's order: a full id, then a name, then a unique id prefix."""
        key = name_or_id.removeprefix("/")
        if key in self._containers:
            return self._containers[key]
        for box in self._containers.values():
            if box.name == key:
                return box
        hits = [b for b in self._containers.values() if key and b.id.startswith(key)]
        return hits[0] if len(hits) == 1 else None

    def _get(self, name: str, what: str) -> _Container:
        box = self._find(name)
        if box is None:
            raise NotFoundError(f"{what} {name!r}: not found (No such container: {name}).")
        return box

    def _running(self, name: str, what: str) -> _Container:
        box = self._get(name, what)
        if box.state is not ContainerState.RUNNING:
            raise UsageError(
                f"{what} {name!r}: Container {box.id} is not running", code=ErrorCode.CONFLICT
            )
        return box

    def _info(self, box: _Container, now: datetime) -> ContainerInfo:
        # Docker lists the image by the name it was created from while that name still
        # means the same image, else by id.
        named = self.images.find(box.spec.image)
        image = box.spec.image if named is not None and named.id == box.image_id else box.image_id
        return ContainerInfo(
            id=box.id,
            tag=box.name,
            image=image,
            state=box.state,
            status=list_status(box.state, box.exit_code, box.started_at, box.finished_at, now),
            labels=dict(box.spec.labels),
            created=box.created.replace(microsecond=0),
        )

    def _image_in_use(self, image_id: str) -> bool | None:
        users = [b for b in self._containers.values() if b.image_id == image_id]
        if not users:
            return None
        return any(b.state.is_active for b in users)

    def _answer(self, call: ExecCall) -> ExecResult:
        self.exec_calls.append(call)
        if self.exec_handler is not None:
            handled = self.exec_handler(call)
            if handled is not None:
                return handled
        return self._responses.get(call.argv, ExecResult(0, b"", b""))

    def _write(self, box: _Container, key: str, entry: ContainerFile | None) -> None:
        parts = key.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in box.files:
                box.files[parent] = None
                box.written[parent] = 1
            else:
                box.written.setdefault(parent, 0)
        box.written[key] = 0 if key in box.files and box.written.get(key) != 1 else 1
        box.files[key] = entry

    def _new_pid(self) -> int:
        self._next_pid += 100
        return self._next_pid

    def _maybe_fail(self, operation: str) -> None:
        pending = self._failures.get(operation)
        if pending:
            raise pending.pop(0)


def _container_id(count: int, name: str) -> str:
    return hashlib.sha256(f"container:{count}:{name}".encode()).hexdigest()


def _resolve_mounts(spec: ContainerSpec) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for m in spec.mounts:
        try:
            st = os.stat(m.source)  # follows links, as Docker does at start
        except OSError:
            continue
        out[m.target] = (st.st_dev, st.st_ino)
    return out


def _host_path_exists(path: str) -> bool:
    # Docker resolves bind sources on the host at create; so does this engine.
    return os.path.exists(path)


def _mount(source: str, target: str, read_only: bool) -> dict[str, Any]:
    return {
        "Type": "bind",
        "Source": source,
        "Destination": target,
        "Mode": "",
        "RW": not read_only,
        "Propagation": "rprivate",
    }


def _host_config(spec: ContainerSpec) -> dict[str, Any]:
    """The parts of Docker's ``HostConfig`` DS01 sets, with Docker's defaults."""
    lim = spec.limits
    swap = lim.memory_swap
    if swap is None and lim.memory:
        swap = 2 * lim.memory  # Docker's default: as much swap as memory
    requests = []
    if spec.device_ids:
        requests.append(
            {
                "Driver": "",
                "Count": 0,
                "DeviceIDs": list(spec.device_ids),
                "Capabilities": [["gpu"]],
                "Options": {},
            }
        )
    return {
        "NetworkMode": spec.network,
        "CgroupParent": lim.cgroup_parent or "",
        "Memory": lim.memory or 0,
        "MemorySwap": swap or 0,
        "NanoCpus": lim.nano_cpus or 0,
        "PidsLimit": lim.pids_limit,
        "ShmSize": lim.shm_size or 64 * 1024**2,
        "DeviceRequests": requests or None,
        "Init": True,
        "Ulimits": [{"Name": k, "Soft": v, "Hard": v} for k, v in spec.ulimits.items()] or None,
    }


class MemoryMountProbe:
    """The :class:`ds01.ports.MountProbe` of a :class:`MemoryEngine`: what a container
    "has mounted" is what its bind sources resolved to when it started."""

    def __init__(self, engine: MemoryEngine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def open_process(self, pid: int) -> Iterator[int]:
        self.engine.mounted_at(pid, "/")  # raises ProcessLookupError (an OSError) if none
        yield pid

    def wait_until_readable(self, handle: int) -> None:
        return None  # no exec of runc's init to wait for

    def identity_at(self, handle: int, target: str) -> tuple[int, int]:
        seen = self.engine.mounted_at(handle, target)
        if seen is None:
            raise FileNotFoundError(2, "nothing mounted there", target)
        return seen
