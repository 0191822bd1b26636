"""What a container engine answers: the value types of :class:`ds01.ports.ContainerEngine`.

They live here, not beside the Docker adapter, so that services, the in-memory engine and
tests can use them without importing the Docker SDK. (``ContainerInfo`` and
``ContainerSpec``, the list row and the create request, live in
:mod:`ds01.domain.containers`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ds01.domain.containers import ContainerInfo

__all__ = [
    "BuildOutcome",
    "BuildRequest",
    "BuildStep",
    "ContainerDetails",
    "ContainerFile",
    "ExecResult",
    "ImageInfo",
]


@dataclass(frozen=True)
class ContainerDetails:
    """What ``docker inspect`` says about a container, the parts DS01 uses."""

    info: ContainerInfo
    image_id: str
    started_at: datetime | None
    finished_at: datetime | None
    pid: int | None
    exit_code: int | None
    user: str
    #: Docker's ``HostConfig`` object, keys as Docker spells them (``CgroupParent``,
    #: ``NetworkMode``, ``DeviceRequests``, ``Memory``, ...).
    host_config: Mapping[str, Any]
    env: Mapping[str, str]
    #: Docker's ``Mounts`` entries (``Type``, ``Source``, ``Destination``, ``RW``, ...).
    mounts: tuple[Mapping[str, Any], ...]

    @property
    def device_ids(self) -> tuple[str, ...]:
        """Device UUIDs the NVIDIA runtime was asked for."""
        out: list[str] = []
        for req in self.host_config.get("DeviceRequests") or ():
            out.extend(req.get("DeviceIDs") or ())
        return tuple(out)


@dataclass(frozen=True)
class ContainerFile:
    """A regular file read out of a container; ``mode`` includes the file-type bits, as
    Docker's archive reports it (``0o100644``)."""

    content: bytes
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class ImageInfo:
    """A local image. ``user`` (the image's ``USER``) is known only from a lookup by
    reference, not from a listing (``""`` there)."""

    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    size: int
    created: datetime | None
    user: str


@dataclass(frozen=True)
class ExecResult:
    """A finished ``exec``; the streams are empty when they were handed to a callback."""

    exit_code: int
    stdout: bytes
    stderr: bytes


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


@dataclass(frozen=True)
class BuildRequest:
    """One image build: what to tag, with which Dockerfile, arguments and labels.

    ``timeout`` is in seconds; ``network_mode`` ``None`` is the engine's default."""

    tag: str
    dockerfile: str = "Dockerfile"
    buildargs: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    network_mode: str | None = None
    timeout: float = 3600.0
    nocache: bool = False
