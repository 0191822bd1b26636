"""Which devices a container made by AIME's own ``mlc create`` holds.

AIME's containers name no device UUIDs: their ``aime.mlc.GPUS`` label keeps what
``mlc create -g`` passed to ``docker --gpus``. Read against the inventory, that is the
set of devices DS01 must treat as taken while the container holds them.
"""

from __future__ import annotations

from ds01.domain.devices import Inventory

__all__ = ["aime_devices"]


def aime_devices(gpus_label: str, inventory: Inventory) -> tuple[str, ...]:
    """The devices an AIME-created container can use, from its ``aime.mlc.GPUS`` label:
    ``all``, a count (Docker takes the first N GPUs), or ``device=`` indices/UUIDs. A GPU
    in MIG mode stands for its instances."""
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
