"""GPU use cases: what the host offers, who holds what (read back from Docker), quotas.

Docker is the truth about holdings: a container's ``aime.mlc.GPU_UUIDS`` and
``aime.mlc.GPU_EQUIVALENTS`` labels say what it holds, and its state and stop time say
whether the hold is still in force (``gpu_hold_after_stop``). Nothing here keeps a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ds01.domain.allocation import (
    GpuQuota,
    Holding,
    capacity_summary,
    holdings_in_force,
)
from ds01.domain.containers import ContainerState
from ds01.domain.devices import Inventory, format_equivalents
from ds01.domain.labels import LEGACY, L
from ds01.errors import NotFoundError

if TYPE_CHECKING:
    from ds01.domain.containers import ContainerInfo
    from ds01.domain.policy import ResolvedLimits
    from ds01.services.context import AppContext

__all__ = ["GpuService", "HoldingsView", "aime_devices", "quota_from_limits"]


def quota_from_limits(limits: ResolvedLimits) -> GpuQuota:
    return GpuQuota(
        max_gpu_equivalents=limits.max_gpu_equivalents,
        max_gpus_per_container=limits.max_gpus_per_container,
        allow_full_gpu=limits.allow_full_gpu,
        allowed_mig_profiles=limits.allowed_mig_profiles,
        priority=limits.priority,
    )


def aime_devices(gpus_label: str, inventory: Inventory) -> tuple[str, ...]:
    """The devices an AIME-created container can use, from its ``aime.mlc.GPUS`` label
    (what ``mlc create -g`` passed to ``docker --gpus``): ``all``, a count (Docker takes
    the first N GPUs), or ``device=`` indices/UUIDs. A GPU in MIG mode stands for its
    instances. Those devices are not free for DS01 while the container holds them."""
    value = gpus_label.strip().strip('"')
    by_gpu: dict[str, list[str]] = {}
    for d in inventory.devices:
        by_gpu.setdefault(d.parent_uuid or d.uuid, []).append(d.uuid)
    gpus = sorted(inventory.gpus, key=lambda g: g.index)
    chosen: list[str] = []
    if value == "all":
        chosen = [u for g in gpus for u in by_gpu.get(g.uuid, ())]
    elif value.isdigit():
        chosen = [u for g in gpus[: int(value)] for u in by_gpu.get(g.uuid, ())]
    elif value.startswith("device="):
        for raw in value.removeprefix("device=").replace(";", ",").split(","):
            item = raw.strip()
            gpu = next((g for g in gpus if item in (str(g.index), g.uuid)), None)
            if gpu is not None:
                chosen.extend(by_gpu.get(gpu.uuid, ()))
            elif any(d.uuid == item for d in inventory.devices):
                chosen.append(item)
    return tuple(dict.fromkeys(chosen))


@dataclass(frozen=True)
class HoldingsView:
    """Holdings at one moment: those in force and those whose hold after stop ran out."""

    in_force: list[Holding]
    expired: list[Holding]
    containers: dict[str, ContainerInfo]


class GpuService:
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
            from ds01.errors import UsageError
            from ds01.services.limits import limits_for_user

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

    def status(self) -> dict[str, Any]:
        """``gpu status``: every device, who holds it, utilization, free capacity."""
        inventory = self.ctx.inventory.read()
        view = self.holdings()
        summary = capacity_summary(inventory, view.in_force)
        devices = []
        for use in summary.devices:
            d = use.device
            holder = use.holder
            devices.append(
                {
                    "uuid": d.uuid,
                    "gpu_index": d.gpu_index,
                    "name": d.name,
                    "mig_profile": d.mig_profile,
                    "equivalents": format_equivalents(d.equivalents),
                    "memory_mib": d.memory_mib,
                    "utilization_gpu": d.utilization_gpu,
                    "processes": len(d.processes),
                    "user": holder.user if holder else None,
                    "container": holder.container if holder else None,
                    "since": holder.since.isoformat() if holder and holder.since else None,
                    "state": holder.state if holder else None,
                }
            )
        return {
            "source": inventory.source,
            "devices": devices,
            "total_equivalents": format_equivalents(summary.total_equivalents),
            "free_equivalents": format_equivalents(summary.free_equivalents),
            "held_by_user": {u: format_equivalents(q) for u, q in summary.charged_by_user},
            "released_after_stop": [h.container for h in view.expired],
        }

    def user_equivalents(self, user: str, view: HoldingsView) -> Fraction:
        return sum((h.equivalents for h in view.in_force if h.user == user), Fraction(0))

    def read_inventory(self) -> Inventory:
        return self.ctx.inventory.read()
