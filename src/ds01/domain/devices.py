"""GPUs and the devices DS01 hands out.

A *device* is what one container can be given: a whole GPU whose MIG mode is off, or one
existing MIG instance of a MIG-enabled GPU. A MIG-enabled GPU is never handed out whole,
and with no instances created it offers nothing (CUDA cannot initialise on it).

*GPU equivalents* measure a device against a whole GPU: 1 for a full GPU, and for a MIG
instance its compute slices over the parent GPU's total slices (7 on A100/H100/H200, 4 on
A30: the backends read it from the profile data, not a constant). They are exact
fractions so that a quota sum such as seven 1/7 slices is exactly 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = [
    "DEVICE_UUID_PATTERN",
    "Device",
    "Gpu",
    "GpuProcess",
    "Inventory",
    "device_uuid_problem",
    "format_equivalents",
    "parse_equivalents",
    "profile_slices",
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


def format_equivalents(value: Fraction) -> float:
    """GPU equivalents for display and JSON: a float rounded to 4 places."""
    return round(float(value), 4)


def parse_equivalents(text: str) -> Fraction:
    """Read back an equivalents value written as ``3/7`` or ``0.4286`` (labels)."""
    text = text.strip()
    return Fraction(text).limit_denominator(64)
