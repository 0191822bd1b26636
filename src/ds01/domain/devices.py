"""GPUs and the devices DS01 hands out.

A *device* is what one container can be given: a whole GPU whose MIG mode is off, or one
existing MIG instance of a MIG-enabled GPU. A MIG-enabled GPU is never handed out whole,
and with no instances created it offers nothing (CUDA cannot initialise on it).

*GPU equivalents* measure a device against a whole GPU: 1 for a full GPU, and for a MIG
instance its compute slices over the parent GPU's total slices (7 on A100/H100/H200, 4 on
A30: the backends read it from the profile data, not a constant). They are exact
fractions so that a quota sum such as seven 1/7 slices is exactly 1.

Every GPU inventory backend (``ds01.adapters.gpu``: NVML, nvidia-smi, the JSON file)
reports what it read as :class:`Gpu`, :class:`MigProfile` and :class:`MigInstance` values
and builds its :class:`Inventory` through :func:`devices_for_gpu`, so the device rules
are written once, here: a GPU with MIG off is one device whose slices are the GPU's
total slices (1/1 when it cannot do MIG); a MIG-enabled GPU offers exactly its existing
MIG instances, and nothing when none exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from ds01.errors import GpuQueryError

__all__ = [
    "DEVICE_UUID_PATTERN",
    "Device",
    "Gpu",
    "GpuProcess",
    "Inventory",
    "MigInstance",
    "MigProfile",
    "device_uuid_problem",
    "devices_for_gpu",
    "format_equivalents",
    "merge_processes",
    "parse_equivalents",
    "profile_slices",
    "total_slices_of",
]

_PROFILE = re.compile(r"^(?P<slices>\d+)g\.(?P<mem>\d+)gb(?:\+\w+)?$")

#: What a device UUID may look like: NVIDIA's ``GPU-<uuid>`` and ``MIG-<uuid>``, the old
#: ``MIG-GPU-<uuid>/<gi>/<ci>`` form, AMD's hex ids. UUIDs travel in labels that AIME reads
#: as comma-separated lists (``device=UUID,UUID``) and in ``CUDA_VISIBLE_DEVICES``, so a
#: comma, ``=``, a space or a control character inside one would split or forge entries.
DEVICE_UUID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
_DEVICE_UUID = re.compile(DEVICE_UUID_PATTERN)


def device_uuid_problem(uuid: str) -> str | None:
    """Why ``uuid`` cannot be a device UUID, or ``None`` when it can."""
    if _DEVICE_UUID.fullmatch(uuid):
        return None
    return (
        "a device UUID holds only letters, digits and '_', '.', ':', '/', '-' (at most 128 "
        "characters, starting with a letter or digit), e.g. GPU-4336be95-7b17-b1da-7b70-"
        "0352e1d3655d"
    )


def profile_slices(profile: str) -> int | None:
    """Compute slices named by a MIG profile: ``3g.20gb`` -> 3; ``None`` if malformed."""
    m = _PROFILE.match(profile.strip())
    return int(m.group("slices")) if m else None


@dataclass(frozen=True)
class GpuProcess:
    """A process using a device, as the driver reports it."""

    pid: int
    used_memory_mib: int | None = None
    name: str = ""


@dataclass(frozen=True)
class Gpu:
    """A physical GPU.

    ``total_slices`` is the number of compute slices the GPU splits into under MIG
    (``None`` when the GPU does not support MIG). ``compute_capability`` is
    ``(major, minor)`` for NVIDIA GPUs; AMD GPUs set ``vendor="amd"`` and ``gfx`` instead.
    """

    index: int
    uuid: str
    name: str
    memory_mib: int
    compute_capability: tuple[int, int] | None = None
    mig_enabled: bool = False
    total_slices: int | None = None
    utilization_gpu: int | None = None
    memory_used_mib: int | None = None
    driver_version: str | None = None
    vendor: str = "nvidia"
    gfx: str | None = None
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Device:
    """Something one container can hold exclusively: a full GPU or a MIG instance.

    For a full GPU ``mig_profile`` and ``parent_uuid`` are ``None``. For a MIG instance
    ``slices`` is its compute slice count and ``total_slices`` the parent GPU's.
    ``utilization_gpu`` is ``None`` when the driver does not report it (MIG instances
    through NVML report none).
    """

    uuid: str
    gpu_index: int
    name: str
    memory_mib: int
    slices: int
    total_slices: int
    mig_profile: str | None = None
    parent_uuid: str | None = None
    utilization_gpu: int | None = None
    memory_used_mib: int | None = None
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)

    @property
    def is_mig(self) -> bool:
        return self.mig_profile is not None

    @property
    def equivalents(self) -> Fraction:
        """1 for a full GPU; slices / total slices for a MIG instance."""
        if not self.is_mig:
            return Fraction(1)
        return Fraction(self.slices, self.total_slices)

    @property
    def label(self) -> str:
        """Short human name: ``GPU 0`` or ``GPU 0 MIG 3g.20gb``."""
        if self.is_mig:
            return f"GPU {self.gpu_index} MIG {self.mig_profile}"
        return f"GPU {self.gpu_index}"


@dataclass(frozen=True)
class Inventory:
    """Everything the host offers, read from one backend at one moment."""

    gpus: tuple[Gpu, ...] = ()
    devices: tuple[Device, ...] = ()
    source: str = "none"

    def device(self, uuid: str) -> Device | None:
        for d in self.devices:
            if d.uuid == uuid:
                return d
        return None

    @property
    def total_equivalents(self) -> Fraction:
        return sum((d.equivalents for d in self.devices), Fraction(0))


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


def format_equivalents(value: Fraction) -> float:
    """GPU equivalents for display and JSON: a float rounded to 4 places."""
    return round(float(value), 4)


def parse_equivalents(text: str) -> Fraction:
    """Read back an equivalents value written as ``3/7`` or ``0.4286`` (labels)."""
    text = text.strip()
    return Fraction(text).limit_denominator(64)
