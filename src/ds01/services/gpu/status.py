"""``gpu status``: every device, who holds it, its use, and the free capacity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import TYPE_CHECKING

from ds01.domain.allocation import DeviceUse, capacity_summary
from ds01.services.gpu.holdings import HoldingsService

if TYPE_CHECKING:
    from ds01.services.context import AppContext

__all__ = ["DeviceStatus", "GpuService", "GpuStatus"]


@dataclass(frozen=True)
class DeviceStatus:
    """One device of ``gpu status``: what it is, its use, and who holds it (``None``s
    when free). ``processes`` is how many GPU processes the driver reports on it."""

    uuid: str
    gpu_index: int
    name: str
    mig_profile: str | None
    equivalents: Fraction
    memory_mib: int
    utilization_gpu: int | None
    processes: int
    user: str | None
    container: str | None
    since: datetime | None
    state: str | None

    @classmethod
    def of(cls, use: DeviceUse) -> DeviceStatus:
        d, holder = use.device, use.holder
        return cls(
            uuid=d.uuid,
            gpu_index=d.gpu_index,
            name=d.name,
            mig_profile=d.mig_profile,
            equivalents=d.equivalents,
            memory_mib=d.memory_mib,
            utilization_gpu=d.utilization_gpu,
            processes=len(d.processes),
            user=holder.user if holder else None,
            container=holder.container if holder else None,
            since=holder.since if holder else None,
            state=holder.state if holder else None,
        )


@dataclass(frozen=True)
class GpuStatus:
    """``gpu status --json``: the devices, the capacity, and each user's charge.
    ``released_after_stop`` names stopped containers whose hold has run out."""

    source: str
    devices: tuple[DeviceStatus, ...]
    total_equivalents: Fraction
    free_equivalents: Fraction
    held_by_user: Mapping[str, Fraction]
    released_after_stop: tuple[str, ...]


class GpuService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def status(self) -> GpuStatus:
        """``gpu status``: every device, who holds it, utilization, free capacity."""
        inventory = self.ctx.inventory.read()
        view = HoldingsService(self.ctx).holdings()
        summary = capacity_summary(inventory, view.in_force)
        return GpuStatus(
            source=inventory.source,
            devices=tuple(DeviceStatus.of(use) for use in summary.devices),
            total_equivalents=summary.total_equivalents,
            free_equivalents=summary.free_equivalents,
            held_by_user=dict(summary.charged_by_user),
            released_after_stop=tuple(h.container for h in view.expired),
        )
