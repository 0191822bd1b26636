"""GPU inventory: where DS01 learns which GPUs and MIG devices the host has.

One module per source, each a :class:`ds01.ports.GpuInventory`:

    nvml      NVML through nvidia-ml-py (first choice: in-process, no subprocess)
    smi       parsing ``nvidia-smi`` output (when NVML cannot be loaded)
    file      a JSON document (CI, laptops, tests; docs/gpu-inventory-file.md)
    factory   ``open_inventory(spec)`` for ``gpu.inventory``, the ``auto`` chain, none

The device rules every backend applies (what a GPU offers with MIG on or off, process
merging, slice counts) are in :mod:`ds01.domain.devices`; the errors in
:mod:`ds01.errors` (``GpuQueryError``, ``GpuUnavailableError``).

Memory conventions shared by the backends: MiB, truncated (``bytes // 2**20``, as
nvidia-smi prints). ``memory_used_mib`` of a GPU is total minus free, i.e. memory that
new work cannot have, including the driver's reservation (about 615 MiB on an H200):
that is the one definition NVML's basic memory query and nvidia-smi's ``memory.total``
and ``memory.free`` columns both give exactly. (nvidia-smi's own ``memory.used``
column leaves the reservation out.)

Importing this package is cheap (no nvidia-ml-py, no pydantic); see ``factory``.
"""

from __future__ import annotations

from ds01.adapters.gpu.factory import INVENTORY_SPECS, open_inventory

__all__ = ["INVENTORY_SPECS", "open_inventory"]
