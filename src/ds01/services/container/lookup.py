"""Finding containers by their labels: one user's, everyone's, a name already taken.

The lowest service: it only reads the engine, so every other service (limits, holdings,
the provisioner, create, the queue, container operations) can ask it without importing
each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ds01.domain.labels import AIME, LEGACY, L
from ds01.errors import ErrorCode, UsageError

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.domain.containers import ContainerInfo
    from ds01.ports import ContainerEngine

__all__ = ["all_containers", "own_containers", "refuse_existing"]


def own_containers(engine: ContainerEngine, actor: Actor) -> list[ContainerInfo]:
    """The actor's containers in every state: AIME's and DS01's, plus legacy DS01's."""
    found = {c.id: c for c in engine.list_containers([f"{L.USER}={actor.name}"])}
    for c in engine.list_containers([f"{LEGACY.USER}={actor.name}"]):
        found.setdefault(c.id, c)
    return sorted(found.values(), key=lambda c: (c.display_name, c.tag))


def all_containers(engine: ContainerEngine) -> list[ContainerInfo]:
    """Every AIME or DS01 container on the host, by owner then name."""
    found = {c.id: c for c in engine.list_containers([AIME])}
    for c in engine.list_containers([LEGACY.USER]):
        found.setdefault(c.id, c)
    return sorted(found.values(), key=lambda c: (c.owner or "", c.display_name, c.tag))


def refuse_existing(engine: ContainerEngine, name: str, tag: str) -> None:
    """Exit 2 when the user already has a container of this name."""
    if engine.exists(tag):
        raise UsageError(
            f"You already have a container named {name!r} ({tag}).",
            hint=f"Open it with 'ds01 container open {name}', or remove it first.",
            code=ErrorCode.CONTAINER_EXISTS,
        )
