"""Containers as DS01 sees them: what to create, and what Docker reports back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property

from ds01.domain.labels import ContainerLabels
from ds01.domain.naming import split_tag

__all__ = [
    "KEEPALIVE_COMMAND",
    "KEEPALIVE_TARGET",
    "MAIN_COMMANDS",
    "SLEEP_COMMAND",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerState",
    "Limits",
    "Mount",
]


#: Where DS01's keep-alive (:mod:`ds01.domain.keepalive`) is mounted, read-only, and run.
KEEPALIVE_TARGET = "/sbin/ds01-keepalive"

#: What DS01 containers run as their main process (under docker-init): nothing, forever.
#: Sessions are ``docker exec`` processes next to it, so ending a shell ends nothing else.
#: A program from the host, not the container's own files: it runs before DS01 has
#: checked the container's mounts (see :mod:`ds01.services.container.mounts`).
KEEPALIVE_COMMAND: tuple[str, ...] = (KEEPALIVE_TARGET,)

#: The image's ``sleep``: containers made before the keep-alive, and machines DS01 ships
#: no keep-alive for.
SLEEP_COMMAND: tuple[str, ...] = ("sleep", "infinity")

#: Main processes that are DS01's own, not a user's session.
MAIN_COMMANDS: tuple[tuple[str, ...], ...] = (KEEPALIVE_COMMAND, SLEEP_COMMAND)


class ContainerState(StrEnum):
    """Docker's container states, with the questions DS01 asks of them."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"

    @classmethod
    def parse(cls, text: str) -> ContainerState:
        try:
            return cls(text.lower())
        except ValueError:
            return cls.DEAD

    @property
    def is_active(self) -> bool:
        """Processes exist (or are about to): the container is using its limits."""
        return self in (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)


@dataclass(frozen=True)
class Mount:
    """A host directory bind-mounted into a container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Limits:
    """Per-container resource limits, in Docker's units; ``None`` means unlimited."""

    nano_cpus: int | None = None
    memory: int | None = None
    memory_swap: int | None = None
    shm_size: int | None = None
    pids_limit: int | None = None
    cgroup_parent: str | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container; the Docker adapter maps it 1:1."""

    tag: str
    image: str
    labels: Mapping[str, str]
    user: str  # "uid:gid"
    command: tuple[str, ...] = SLEEP_COMMAND
    #: ``None``: the image's entrypoint; ``()``: none, so the command is all that runs.
    entrypoint: tuple[str, ...] | None = None
    workdir: str = "/workspace"
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    limits: Limits = field(default_factory=Limits)
    device_ids: tuple[str, ...] = ()  # GPU/MIG UUIDs requested from the NVIDIA runtime
    network: str = "bridge"
    hostname: str | None = None
    ulimits: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerInfo:
    """A container as one Docker list call reports it."""

    id: str
    tag: str
    image: str
    state: ContainerState
    status: str
    labels: Mapping[str, str]
    created: datetime

    @cached_property
    def decoded(self) -> ContainerLabels | None:
        """The labels decoded, once per object (listing paths ask for it many times)."""
        return ContainerLabels.decode(self.labels)

    @property
    def display_name(self) -> str:
        """The name users type: the label, else the part of the tag before ``._.``."""
        decoded = self.decoded
        if decoded is not None and decoded.name:
            return decoded.name
        return split_tag(self.tag)[0]

    @property
    def owner(self) -> str | None:
        decoded = self.decoded
        return decoded.user if decoded else None

    @property
    def owner_uid(self) -> int | None:
        decoded = self.decoded
        if decoded is not None and decoded.uid is not None:
            return decoded.uid
        return split_tag(self.tag)[1]
