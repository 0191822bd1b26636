"""GPU use cases: what the inventory offers, who holds what, allocation and release."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ds01.services.context import AppContext

__all__ = ["missing_devices"]


def missing_devices(ctx: AppContext, uuids: Sequence[str]) -> list[str]:
    """The device UUIDs among ``uuids`` that the current inventory no longer offers."""
    inventory = ctx.inventory.read()
    present = {d.uuid for d in inventory.devices}
    return [u for u in uuids if u not in present]
