"""The one adapter to the Docker engine, over the Docker SDK for Python.

Contract, for every method: Docker's own exceptions never leave this module; they become
:class:`~ds01.errors.NotFoundError` (the object does not exist),
:class:`~ds01.errors.EngineError` (the engine refused or failed) or a
:class:`~ds01.errors.UsageError` when Docker rejected our input. ``remove`` and ``stop``
are idempotent: a container that is already gone or already stopped is success.

The SDK is imported on first use: importing it costs ~0.2 s (requests, urllib3, ssl),
which commands that never reach Docker should not pay.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ds01.domain.containers import ContainerInfo, ContainerSpec, ContainerState

# The value types live in the domain (no SDK needed to use them); re-exported here so
# that ``from ds01.adapters.docker_engine import ImageInfo`` keeps working.
from ds01.domain.engine_types import ContainerDetails, ContainerFile, ExecResult, ImageInfo
from ds01.errors import EngineError, ErrorCode, NotFoundError, UsageError

if TYPE_CHECKING:
    import docker

__all__ = [
    "ContainerDetails",
    "ContainerFile",
    "DockerEngine",
    "ExecResult",
    "ImageInfo",
    "parse_docker_time",
]

ENGINE_HINT = (
    "Check that the Docker engine is running ('systemctl status docker') and that you may "
    "use it (member of the 'docker' group, or DOCKER_HOST set)."
)


def parse_docker_time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, ``Z``); its zero time means 'never'."""
    if not text or text.startswith("0001-01-01"):
        return None
    text = text.replace("Z", "+00:00")
    # Python parses at most microseconds: cut the fraction to 6 digits.
    if "." in text:
        head, _, rest = text.partition(".")
        n = 0
        while n < len(rest) and rest[n].isdigit():
            n += 1
        text = f"{head}.{rest[:n][:6]}{rest[n:]}"
    parsed = datetime.fromisoformat(text)
    # Docker always answers in UTC; never hand out a naive time to compare with aware ones.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _info_from_list(row: Mapping[str, Any]) -> ContainerInfo:
    names = row.get("Names") or ["/" + row["Id"][:12]]
    return ContainerInfo(
        id=row["Id"],
        tag=names[0].lstrip("/"),
        image=row.get("Image", ""),
        state=ContainerState.parse(row.get("State", "")),
        status=row.get("Status", ""),
        labels=row.get("Labels") or {},
        created=datetime.fromtimestamp(int(row.get("Created", 0)), tz=UTC),
    )


def _info_from_inspect(data: Mapping[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    return ContainerInfo(
        id=data["Id"],
        tag=data.get("Name", "").lstrip("/"),
        image=config.get("Image", ""),
        state=ContainerState.parse(state.get("Status", "")),
        status=state.get("Status", ""),
        labels=config.get("Labels") or {},
        created=parse_docker_time(data.get("Created")) or datetime.fromtimestamp(0, tz=UTC),
    )


class DockerEngine:
    """Docker, as DS01's services need it. One lazily built client per instance."""

    def __init__(self, base_url: str | None = None, timeout: int = 120) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None

    # -- plumbing ---------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            import docker

            try:
                if self._base_url:
                    self._client = docker.DockerClient(
                        base_url=self._base_url, timeout=self._timeout, version="auto"
                    )
                else:
                    self._client = docker.from_env(timeout=self._timeout)
            except docker.errors.DockerException as exc:
                raise EngineError(
                    f"Cannot reach the Docker engine: {exc}",
                    hint=ENGINE_HINT,
                    code=ErrorCode.ENGINE_DOWN,
                ) from exc
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    @contextmanager
    def translate_errors(self, what: str) -> Iterator[None]:
        """Translate the SDK's exceptions into DS01's, naming the operation."""
        import docker.errors
        import requests.exceptions

        try:
            yield
        except docker.errors.NotFound as exc:
            raise NotFoundError(f"{what}: not found ({_explain(exc)}).") from exc
        except docker.errors.ImageNotFound as exc:  # pragma: no cover - subclass of NotFound
            raise NotFoundError(f"{what}: image not found ({_explain(exc)}).") from exc
        except docker.errors.APIError as exc:
            status = getattr(exc, "status_code", None)
            if status == 400:
                raise UsageError(f"{what}: Docker rejected the request: {_explain(exc)}") from exc
            if status == 409:
                # A name taken between our check and the call (a concurrent create).
                raise UsageError(f"{what}: {_explain(exc)}", code=ErrorCode.CONFLICT) from exc
            # The engine answered: its explanation is the message; no "is it running" hint.
            raise EngineError(f"{what}: {_explain(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(
                f"{what}: {exc}", hint=ENGINE_HINT, code=ErrorCode.ENGINE_DOWN
            ) from exc

    # -- engine facts -----------------------------------------------------------------

    def info(self) -> Mapping[str, Any]:
        with self.translate_errors("docker info"):
            return dict(self.api.info())

    def cgroup_driver(self) -> str:
        """``systemd`` or ``cgroupfs``, as the engine reports it."""
        return str(self.info().get("CgroupDriver", "cgroupfs"))

    # -- containers -------------------------------------------------------------------

    def list_containers(self, labels: Sequence[str] = ()) -> list[ContainerInfo]:
        """Containers in every state whose labels match all of ``labels`` (``k`` or ``k=v``).

        One list call, no per-container inspect (the SDK's high-level ``list`` inspects
        each one, which is N extra round trips).
        """
        filters = {"label": list(labels)} if labels else None
        with self.translate_errors("list containers"):
            rows = self.api.containers(all=True, filters=filters)
        return [_info_from_list(r) for r in rows]

    def inspect(self, name_or_id: str) -> ContainerDetails:
        with self.translate_errors(f"inspect container {name_or_id!r}"):
            data = self.api.inspect_container(name_or_id)
        state = data.get("State") or {}
        config = data.get("Config") or {}
        env: dict[str, str] = {}
        for item in config.get("Env") or ():
            key, _, value = item.partition("=")
            env[key] = value
        pid = state.get("Pid") or None
        return ContainerDetails(
            info=_info_from_inspect(data),
            image_id=data.get("Image", ""),
            started_at=parse_docker_time(state.get("StartedAt")),
            finished_at=parse_docker_time(state.get("FinishedAt")),
            pid=int(pid) if pid else None,
            exit_code=state.get("ExitCode"),
            user=config.get("User", ""),
            host_config=data.get("HostConfig") or {},
            env=env,
            mounts=tuple(data.get("Mounts") or ()),
        )

    def exists(self, name: str) -> bool:
        try:
            self.inspect(name)
        except NotFoundError:
            return False
        return True

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; returns its id."""
        from docker.types import DeviceRequest, Mount, Ulimit

        lim = spec.limits
        kwargs: dict[str, Any] = {
            "image": spec.image,
            "command": list(spec.command),
            "name": spec.tag,
            "labels": dict(spec.labels),
            "user": spec.user,
            "working_dir": spec.workdir,
            "environment": dict(spec.env),
            "mounts": [
                Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                for m in spec.mounts
            ],
            "network_mode": spec.network,
            "init": True,
            "detach": True,
            "ulimits": [Ulimit(name=k, soft=v, hard=v) for k, v in spec.ulimits.items()],
        }
        if spec.hostname:
            kwargs["hostname"] = spec.hostname
        if spec.entrypoint is not None:
            # [""] is how the docker CLI says "no entrypoint" (--entrypoint ""): the
            # image's is dropped, not merged in front of the command.
            kwargs["entrypoint"] = list(spec.entrypoint) or [""]
        optional = {
            "nano_cpus": lim.nano_cpus,
            "mem_limit": lim.memory,
            "memswap_limit": lim.memory_swap,
            "shm_size": lim.shm_size,
            "pids_limit": lim.pids_limit,
            "cgroup_parent": lim.cgroup_parent,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if spec.device_ids:
            kwargs["device_requests"] = [
                DeviceRequest(device_ids=list(spec.device_ids), capabilities=[["gpu"]])
            ]
        with self.translate_errors(f"create container {spec.tag!r}"):
            result = self.api.create_container(
                **_split_create_kwargs(self.api, kwargs),
            )
        return str(result["Id"])

    def start(self, name: str) -> None:
        with self.translate_errors(f"start container {name!r}"):
            self.api.start(name)

    def stop(self, name: str, timeout: int = 10) -> None:
        """Stop (SIGTERM, then SIGKILL after ``timeout`` s). Stopped already: success."""
        with self.translate_errors(f"stop container {name!r}"):
            self.api.stop(name, timeout=timeout)

    def remove(self, name: str, *, force: bool = False) -> None:
        """Remove a container (never its image). Already gone: success."""
        try:
            with self.translate_errors(f"remove container {name!r}"):
                self.api.remove_container(name, force=force, v=False)
        except NotFoundError:
            return

    def top(self, name: str) -> list[dict[str, str]]:
        """Processes in a running container, one dict per process (ps column -> value)."""
        with self.translate_errors(f"list processes of {name!r}"):
            data = self.api.top(name)
        titles = data.get("Titles") or []
        return [dict(zip(titles, row, strict=False)) for row in data.get("Processes") or []]

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
        """Run ``argv`` in a running container without a terminal; returns the exit code.

        With ``on_output`` the streams are handed over as they arrive (and not kept).
        """
        out: list[bytes] = []
        err: list[bytes] = []
        with self.translate_errors(f"exec in {name!r}"):
            exec_id = self.api.exec_create(
                name,
                list(argv),
                user=user,
                workdir=workdir,
                environment=dict(env or {}),
                stdout=True,
                stderr=True,
                tty=False,
            )["Id"]
            for chunk_out, chunk_err in self.api.exec_start(exec_id, stream=True, demux=True):
                if on_output is not None:
                    on_output(chunk_out, chunk_err)
                    continue
                if chunk_out:
                    out.append(chunk_out)
                if chunk_err:
                    err.append(chunk_err)
            code = self.api.exec_inspect(exec_id).get("ExitCode")
        return ExecResult(
            exit_code=int(code if code is not None else 1),
            stdout=b"".join(out),
            stderr=b"".join(err),
        )

    def interactive_exec(
        self, name: str, argv: Sequence[str], *, user: str, workdir: str, env: Mapping[str, str]
    ) -> int:
        """Attach the caller's terminal to a new process in the container.

        The SDK has no terminal handling (raw mode, resize, signals), so this one operation
        uses the docker CLI, with an argument list and the caller's stdio.
        """
        argv_full = [
            "docker",
            "exec",
            "--interactive",
            "--tty",
            "--user",
            user,
            "--workdir",
            workdir,
        ]
        for key, value in env.items():
            argv_full += ["--env", f"{key}={value}"]
        argv_full += [name, *argv]
        try:
            return subprocess.call(argv_full)
        except FileNotFoundError as exc:
            raise EngineError(
                "The 'docker' command is not installed, and opening a shell needs it.",
                hint="Install the Docker CLI (Debian/Ubuntu: apt install docker.io).",
            ) from exc

    def read_tree(self, name: str, path: str) -> dict[str, ContainerFile | None]:
        """Every entry under ``path`` in one archive call: regular files with contents,
        directories as ``None``. Keys are archive paths (``etc/passwd``). Each archive
        call mounts the container's filesystem, so one call beats one per file."""
        try:
            with self.translate_errors(f"read {path} in {name!r}"):
                stream, _stat = self.api.get_archive(name, path)
                data = b"".join(stream)
        except NotFoundError:
            return {}
        out: dict[str, ContainerFile | None] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.isdir():
                    out[member.name.rstrip("/")] = None
                elif member.isfile():
                    fh = tar.extractfile(member)
                    out[member.name] = ContainerFile(
                        fh.read() if fh else b"", member.mode, member.uid, member.gid
                    )
        return out

    def put_archive(self, name: str, path: str, data: bytes) -> None:
        """Unpack a tar archive into a (created or running) container at ``path``."""
        with self.translate_errors(f"copy files into {name!r}"):
            ok = self.api.put_archive(name, path, data)
        if not ok:
            raise EngineError(f"Docker refused to copy files into {name!r} at {path}.")

    def stats(self, name: str) -> Mapping[str, Any]:
        """One stats sample (Docker waits for a second reading to compute CPU %)."""
        with self.translate_errors(f"stats of {name!r}"):
            return dict(self.api.stats(name, stream=False))

    # -- images -----------------------------------------------------------------------

    def image(self, ref: str) -> ImageInfo | None:
        """The local image ``ref``, or ``None`` when it is not present locally."""
        try:
            with self.translate_errors(f"inspect image {ref!r}"):
                data = self.api.inspect_image(ref)
        except NotFoundError:
            return None
        config = data.get("Config") or {}
        return ImageInfo(
            id=data["Id"],
            tags=tuple(data.get("RepoTags") or ()),
            labels=config.get("Labels") or {},
            size=int(data.get("Size") or 0),
            created=parse_docker_time(data.get("Created")),
            user=config.get("User") or "",
        )

    def list_images(self, labels: Sequence[str] = ()) -> list[ImageInfo]:
        filters = {"label": list(labels)} if labels else None
        with self.translate_errors("list images"):
            rows = self.api.images(filters=filters)
        return [
            ImageInfo(
                id=r["Id"],
                tags=tuple(r.get("RepoTags") or ()),
                labels=r.get("Labels") or {},
                size=int(r.get("Size") or 0),
                created=datetime.fromtimestamp(int(r.get("Created", 0)), tz=UTC),
                user="",
            )
            for r in rows
        ]

    def pull(
        self, ref: str, on_progress: Callable[[Mapping[str, Any]], None] | None = None
    ) -> None:
        """Pull ``ref`` from its registry, reporting Docker's progress events."""
        repo, tag = _split_ref(ref)
        with self.translate_errors(f"pull {ref!r}"):
            for event in self.api.pull(repo, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise EngineError(
                        f"Pulling {ref} failed: {event['error']}",
                        hint="Check the image name and that this host can reach the registry.",
                        code=ErrorCode.PULL_FAILED,
                    )
                if on_progress is not None:
                    on_progress(event)

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        try:
            with self.translate_errors(f"remove image {ref!r}"):
                self.api.remove_image(ref, force=force, noprune=False)
        except NotFoundError:
            return

    def containers_of_image(self, image_id: str) -> list[ContainerInfo]:
        """Containers in every state created from exactly the image ``image_id``."""
        with self.translate_errors(f"list containers of image {image_id[:19]}"):
            rows = self.api.containers(all=True, filters={"ancestor": image_id})
        # "ancestor" also matches images built on top of this one: keep exact matches only.
        return [_info_from_list(r) for r in rows if r.get("ImageID") == image_id]

    def image_children(self, image_id: str) -> list[str]:
        """Ids of the images (intermediate ones included) whose parent is ``image_id``."""
        with self.translate_errors(f"list images built on {image_id[:19]}"):
            rows = self.api.images(all=True)
        return [str(r["Id"]) for r in rows if r.get("ParentId") == image_id]

    def onbuild_triggers(self, ref: str) -> list[str]:
        """The ONBUILD triggers of the local image ``ref``; ``[]`` when it has none or is
        not on this host."""
        try:
            with self.translate_errors(f"inspect image {ref!r}"):
                data = self.api.inspect_image(ref)
        except NotFoundError:
            return []
        config = data.get("Config") or {}
        return [str(t) for t in config.get("OnBuild") or ()]

    def diff(self, name: str) -> list[Mapping[str, Any]]:
        """``docker diff``: the container's own layer, ``{"Path": ..., "Kind": 0|1|2}``
        (changed, added, deleted) per entry, in any state."""
        with self.translate_errors(f"list the changes in {name!r}"):
            return list(self.api.diff(name) or [])

    def image_history(self, ref: str) -> list[Mapping[str, Any]]:
        with self.translate_errors(f"history of {ref!r}"):
            return list(self.api.history(ref))


def _split_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag); a ``:`` in a registry host:port is not a tag."""
    if "@" in ref:
        return ref, ""
    head, sep, tail = ref.rpartition(":")
    if sep and "/" not in tail:
        return head, tail
    return ref, "latest"


def _split_create_kwargs(api: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Build the low-level ``create_container`` call from high-level style keywords."""
    host_keys = {
        "mounts",
        "network_mode",
        "init",
        "ulimits",
        "nano_cpus",
        "mem_limit",
        "memswap_limit",
        "shm_size",
        "pids_limit",
        "cgroup_parent",
        "device_requests",
    }
    host = {k: kwargs.pop(k) for k in list(kwargs) if k in host_keys}
    kwargs.pop("detach", None)
    kwargs["host_config"] = api.create_host_config(**host)
    return kwargs


def _explain(exc: Any) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(exc)
