"""``gpu status``: every device, who holds it, its use, and the free capacity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ds01.domain.allocation import capacity_summary
from ds01.domain.devices import format_equivalents
from ds01.services.gpu.holdings import HoldingsService

if TYPE_CHECKING:
    from ds01.services.context import AppContext

__all__ = ["GpuService"]


class GpuService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def status(self) -> dict[str, Any]:
        """``gpu status``: every device, who holds it, utilization, free capacity."""
        inventory = self.ctx.inventory.read()
        view = HoldingsService(self.ctx).holdings()
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
