"""Choosing a GPU inventory backend, and what every backend shares.

``gpu.inventory`` in the configuration names the source of GPU facts::

    auto          NVML, else nvidia-smi, else none (see below)
    nvml          NVML through nvidia-ml-py              -> ds01.adapters.gpu_nvml
    nvidia-smi    parse nvidia-smi's CSV and list output -> ds01.adapters.gpu_smi
    file:PATH     a JSON document (CI, laptops, tests)   -> ds01.adapters.gpu_file
    none          no GPUs at all

``auto`` falls through to the next source only when the previous one is *unavailable*
(:class:`GpuUnavailableError`: nvidia-ml-py or libnvidia-ml missing, no driver loaded,
no ``nvidia-smi`` on PATH). When a source exists but fails (a GPU fallen off the bus, a
driver/library version mismatch, a timeout) the error is raised, not hidden: silently
answering "no GPUs" from a broken host would make every device look free to the
allocator and hide the fault from the admin. The first source that answers is kept for
the life of the object.

Every backend builds its :class:`~ds01.domain.devices.Inventory` through
:func:`devices_for_gpu`, so the device rules are written once: a GPU with MIG off is
one device whose slices are the GPU's total slices (1/1 when it cannot do MIG); a
MIG-enabled GPU offers exactly its existing MIG instances, and nothing when none exist.

Memory conventions shared by the backends: MiB, truncated (``bytes // 2**20``, as
nvidia-smi prints). ``memory_used_mib`` of a GPU is total minus free, i.e. memory that
new work cannot have, including the driver's reservation (about 615 MiB on an H200):
that is the one definition NVML's basic memory query and nvidia-smi's ``memory.total``
and ``memory.free`` columns both give exactly. (nvidia-smi's own ``memory.used``
column leaves the reservation out.)

Importing this module is cheap on purpose: the backends, and with them nvidia-ml-py
(about 40 ms) and pydantic, are imported only by :func:`open_inventory` for the backend
asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ds01.domain.devices import Device, Gpu, GpuProcess, Inventory
from ds01.errors import ConfigError, GpuQueryError
from ds01.ports import GpuInventory

__all__ = [
    "INVENTORY_SPECS",
    "AutoInventory",
    "GpuUnavailableError",
    "MigInstance",
    "MigProfile",
    "NoneInventory",
    "devices_for_gpu",
    "merge_processes",
    "open_inventory",
    "total_slices_of",
]

INVENTORY_SPECS = ("auto", "nvml", "nvidia-smi", "none", "file:PATH")


class GpuUnavailableError(GpuQueryError):
    """The source does not exist on this host (no library, no driver, no nvidia-smi).

    Distinct from its parent so that ``auto`` can try the next source, while a source
    that exists but fails still stops the command.
    """

    default_code = "gpu_unavailable"


@dataclass(frozen=True)
class MigProfile:
    """One GPU-instance profile a MIG-capable GPU supports (a row of ``mig -lgip``)."""

    name: str
    slices: int
    memory_mib: int
    profile_id: int | None = None


@dataclass(frozen=True)
class MigInstance:
    """One existing MIG device of a GPU, as a backend found it."""

    uuid: str
    profile: str
    slices: int
    memory_mib: int
    utilization_gpu: int | None = None
    memory_used_mib: int | None = None
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)


def total_slices_of(profiles: Iterable[MigProfile]) -> int | None:
    """The GPU's total compute slices: the full-GPU profile's, i.e. the largest.

    7 on A100/H100/H200 (``7g.*``), 4 on A30 (``4g.24gb``); ``None`` without profiles.
    """
    return max((p.slices for p in profiles), default=None)


def merge_processes(*groups: Iterable[GpuProcess]) -> tuple[GpuProcess, ...]:
    """Processes deduplicated by pid (first report wins), sorted by pid.

    A process can be listed as both compute and graphics, or on a GPU and on its MIG
    device; it is one process. Sorting makes snapshots comparable across backends.
    """
    seen: dict[int, GpuProcess] = {}
    for group in groups:
        for proc in group:
            current = seen.get(proc.pid)
            if current is None:
                seen[proc.pid] = proc
            elif not current.name and proc.name:
                # Keep the memory figure first reported, but not an empty name.
                seen[proc.pid] = GpuProcess(proc.pid, current.used_memory_mib, proc.name)
    return tuple(seen[pid] for pid in sorted(seen))


def devices_for_gpu(gpu: Gpu, instances: Sequence[MigInstance] = ()) -> tuple[Device, ...]:
    """The devices one GPU offers: itself (MIG off) or its existing MIG instances.

    A MIG-enabled GPU is never offered whole; with no instances it offers nothing.
    Raises :class:`GpuQueryError` when a MIG-enabled GPU has no known total slice count
    (its equivalents could not be computed) or when instances are given for a GPU whose
    MIG mode is off (the backend's data contradicts itself).
    """
    if not gpu.mig_enabled:
        if instances:
            raise GpuQueryError(
                f"GPU {gpu.index} ({gpu.uuid}) reports MIG instances but MIG mode is off",
                hint="Check `nvidia-smi -L` and `nvidia-smi --query-gpu=mig.mode.current`.",
            )
        slices = gpu.total_slices or 1
        return (
            Device(
                uuid=gpu.uuid,
                gpu_index=gpu.index,
                name=gpu.name,
                memory_mib=gpu.memory_mib,
                slices=slices,
                total_slices=slices,
                utilization_gpu=gpu.utilization_gpu,
                memory_used_mib=gpu.memory_used_mib,
                processes=gpu.processes,
            ),
        )
    if gpu.total_slices is None:
        raise GpuQueryError(
            f"GPU {gpu.index} ({gpu.uuid}) has MIG enabled but its MIG profiles could not be "
            "read, so its slice count is unknown",
            hint="Check that `nvidia-smi mig -lgip` lists the GPU's profiles.",
        )
    return tuple(
        Device(
            uuid=inst.uuid,
            gpu_index=gpu.index,
            name=gpu.name,
            memory_mib=inst.memory_mib,
            slices=inst.slices,
            total_slices=gpu.total_slices,
            mig_profile=inst.profile,
            parent_uuid=gpu.uuid,
            utilization_gpu=inst.utilization_gpu,
            memory_used_mib=inst.memory_used_mib,
            processes=inst.processes,
        )
        for inst in instances
    )


class NoneInventory:
    """No GPUs: the inventory of a host without NVIDIA hardware (``gpu.inventory: none``)."""

    name = "none"

    def read(self) -> Inventory:
        """Always the empty inventory."""
        return Inventory(source="none")


class AutoInventory:
    """NVML, else nvidia-smi, else none; decided on the first :meth:`read`.

    ``name`` is ``"auto"`` until then and afterwards the name of the backend that
    answered (``nvml``, ``nvidia-smi`` or ``none``). ``candidates`` lets tests hand in
    their own chain.
    """

    def __init__(self, candidates: Sequence[GpuInventory] | None = None) -> None:
        self.name = "auto"
        self._candidates: Sequence[GpuInventory] | None = candidates
        self._chosen: GpuInventory | None = None
        #: Why each skipped source was unavailable, for ``gpu status`` and debugging.
        self.skipped: list[tuple[str, str]] = []

    @property
    def chosen(self) -> GpuInventory | None:
        """The backend that answered, once one has."""
        return self._chosen

    def read(self) -> Inventory:
        """Read from the chosen backend, choosing it first if needed."""
        if self._chosen is not None:
            return self._chosen.read()
        candidates = self._candidates if self._candidates is not None else _auto_chain()
        for backend in candidates:
            try:
                inventory = backend.read()
            except GpuUnavailableError as exc:
                self.skipped.append((backend.name, exc.message))
                continue
            self._chosen = backend
            self.name = backend.name
            return inventory
        self._chosen = NoneInventory()
        self.name = self._chosen.name
        return self._chosen.read()


def _auto_chain() -> list[GpuInventory]:
    from ds01.adapters.gpu_nvml import NvmlInventory
    from ds01.adapters.gpu_smi import SmiInventory

    return [NvmlInventory(), SmiInventory()]


def open_inventory(spec: str) -> GpuInventory:
    """The backend named by ``gpu.inventory``: ``auto|nvml|nvidia-smi|none|file:PATH``.

    Opening does no I/O; the source is first touched by ``read()``. An unknown spec
    raises :class:`ConfigError` listing the accepted ones.
    """
    text = spec.strip()
    if text == "auto":
        return AutoInventory()
    if text == "none":
        return NoneInventory()
    if text == "nvml":
        from ds01.adapters.gpu_nvml import NvmlInventory

        return NvmlInventory()
    if text == "nvidia-smi":
        from ds01.adapters.gpu_smi import SmiInventory

        return SmiInventory()
    if text.startswith("file:"):
        path = text.removeprefix("file:").strip()
        if not path:
            raise ConfigError(
                "gpu.inventory 'file:' needs a path",
                hint="Write it as file:/path/to/inventory.json.",
            )
        from ds01.adapters.gpu_file import FileInventory

        return FileInventory(path)
    raise ConfigError(
        f"unknown GPU inventory source {spec!r}",
        hint="Set gpu.inventory to one of: " + ", ".join(INVENTORY_SPECS) + ".",
    )
