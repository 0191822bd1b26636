"""Who holds which GPU devices, read back from Docker, and whether each hold is in force.

Docker is the truth about holdings: a container's ``aime.mlc.GPU_UUIDS`` and
``aime.mlc.GPU_EQUIVALENTS`` labels say what it holds, and its state and stop time say
whether the hold is still in force (``gpu_hold_after_stop``). Nothing here keeps a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING

from ds01.domain.aime_devices import aime_devices
from ds01.domain.allocation import Holding, holdings_in_force
from ds01.domain.containers import ContainerState
from ds01.domain.labels import LEGACY, L
from ds01.errors import NotFoundError, UsageError
from ds01.services.limits import limits_for_user

if TYPE_CHECKING:
    from ds01.domain.containers import ContainerInfo
    from ds01.domain.devices import Inventory
    from ds01.services.context import AppContext

__all__ = ["HoldingsService", "HoldingsView"]


@dataclass(frozen=True)
class HoldingsView:
    """Holdings at one moment: those in force and those whose hold after stop ran out."""

    in_force: list[Holding]
    expired: list[Holding]
    containers: dict[str, ContainerInfo]


class HoldingsService:
    """Who holds which devices now, read from the containers' labels."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._hold_cache: dict[str, timedelta | None] = {}

    def gpu_containers(self) -> list[ContainerInfo]:
        """Every container that holds GPUs by its labels: DS01's (``GPU_UUIDS``), earlier
        DS01's (``ds01.gpu.uuids``), and AIME's own (``aime.mlc.GPUS``, see below)."""
        # One list call for all of them (label filters would take one call per key).
        keys = (L.GPU_UUIDS, L.GPUS, LEGACY.GPU_UUIDS, LEGACY.GPU_UUID)
        return [
            c
            for c in self.ctx.engine.list_containers()
            if any(k in c.labels for k in keys) and c.decoded is not None
        ]

    def _holding(
        self, info: ContainerInfo, finished: datetime | None, inventory: Inventory | None
    ) -> Holding | None:
        labels = info.decoded
        if labels is None:
            return None
        if labels.gpu_uuids:
            return Holding.from_labels(
                info.tag, labels, state=info.state.value, finished_at=finished
            )
        if labels.ds01_managed or inventory is None:
            return None  # a DS01 CPU-only container
        uuids = aime_devices(labels.gpus, inventory)
        if not uuids:
            return None
        weight = sum((d.equivalents for d in inventory.devices if d.uuid in uuids), Fraction(0))
        return Holding(
            info.tag, labels.user, uuids, weight, state=info.state.value, finished_at=finished
        )

    def hold_after_stop(self, user: str) -> timedelta | None:
        if user not in self._hold_cache:
            try:
                seconds = limits_for_user(self.ctx, user).gpu_hold_after_stop_s
            except UsageError:
                # An owner who no longer exists: their holds run out at the default.
                seconds = self.ctx.policy.resolve(user).gpu_hold_after_stop_s
            self._hold_cache[user] = None if seconds is None else timedelta(seconds=seconds)
        return self._hold_cache[user]

    def holdings(self, now: datetime | None = None) -> HoldingsView:
        now = now or self.ctx.clock.now()
        engine = self.ctx.engine
        holdings: list[Holding] = []
        containers: dict[str, ContainerInfo] = {}
        infos = self.gpu_containers()
        # AIME's containers name no UUIDs: the inventory says what "all" or "2" means.
        aime_only = any(
            c.decoded and not c.decoded.gpu_uuids and not c.decoded.ds01_managed for c in infos
        )
        inventory = self.ctx.inventory.read() if aime_only else None
        for info in infos:
            finished = None
            if info.state in (ContainerState.EXITED, ContainerState.DEAD):
                # Only stopped containers need their stop time (one inspect each).
                try:
                    finished = engine.inspect(info.id).finished_at
                except NotFoundError:
                    continue  # removed since the list call: it holds nothing any more
            holding = self._holding(info, finished, inventory)
            if holding is not None:
                holdings.append(holding)
                containers[info.tag] = info
        users = {h.user for h in holdings}
        holds = {u: self.hold_after_stop(u) for u in users}
        in_force = holdings_in_force(holdings, now, holds)
        kept = {h.container for h in in_force}
        expired = [h for h in holdings if h.container not in kept]
        return HoldingsView(in_force, expired, containers)
