"""A fake NVML module: the ``pynvml`` functions NvmlInventory calls, served from data.

The error classes and constants are the real ones from ``pynvml`` (importing it loads
no library), so the backend's error handling is exercised against what nvidia-ml-py
really raises. Every function the fake offers exists under the same name in ``pynvml``
(a test checks it), and anything it does not offer fails loudly with AttributeError.

Scenarios are plain :class:`FakeGpu` objects, built from the recorded H200 values
(:func:`from_recorded`) or synthetically (:func:`a100_40gb`, :func:`a30`), so that the
nvidia-smi side of a test can render the same scenario as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

MIB = 1 << 20

#: The pynvml function names this fake serves (checked against the real module).
SERVED = (
    "nvmlInit",
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetProcessName",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceGetAttributes",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses",
)


@dataclass(frozen=True)
class FakeProfile:
    """A GPU-instance profile as NVML's profile info reports it."""

    id: int
    name: str  # without the "MIG " prefix NVML puts in front
    slice_count: int
    memory_mb: int
    instance_count: int
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    multiprocessors: int = 0
    copy_engines: int = 1


@dataclass(frozen=True)
class FakeProcess:
    pid: int
    used_bytes: int | None


@dataclass
class FakeMig:
    """One MIG device; ``ci_slices`` is set when the compute instance is smaller."""

    uuid: str
    profile: FakeProfile
    ci_slices: int | None = None
    used_bytes: int = 0
    processes: list[FakeProcess] = field(default_factory=list)


@dataclass
class FakeGpu:
    """One physical GPU. ``mig_mode`` None = no MIG support; ``mig_slots`` entries that
    are None are empty slots (NotFound), as NVML leaves holes after instances go."""

    name: str
    uuid: str
    total_bytes: int
    free_bytes: int
    compute_capability: tuple[int, int]
    utilization_gpu: int | None = 0
    utilization_memory: int = 0
    mig_mode: tuple[int, int] | None = None
    profiles: list[FakeProfile] = field(default_factory=list)
    mig_slots: list[FakeMig | None] = field(default_factory=list)
    compute: list[FakeProcess] = field(default_factory=list)
    graphics: list[FakeProcess] = field(default_factory=list)
    #: In MIG mode an unprivileged caller gets NoPermission for the parent's processes.
    parent_processes_privileged: bool = True

    @property
    def mig_enabled(self) -> bool:
        return self.mig_mode is not None and self.mig_mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE

    @property
    def migs(self) -> list[FakeMig]:
        return [m for m in self.mig_slots if m is not None]


@dataclass(frozen=True)
class _Handle:
    gpu: int
    slot: int | None = None


class FakeNvml:
    """Module-like object with pynvml's names. ``init_error`` makes nvmlInit fail."""

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        driver: str = "580.159.04",
        process_names: dict[int, str] | None = None,
        init_error: int | None = None,
    ) -> None:
        self.gpus = gpus
        self.driver = driver
        self.process_names = dict(process_names or {})
        self.init_error = init_error
        self.init_calls = 0
        # The real module's error classes and the constants the backend reads.
        for attr in dir(pynvml):
            if attr.startswith(("NVMLError", "NVML_")):
                setattr(self, attr, getattr(pynvml, attr))

    # -- helpers -----------------------------------------------------------------

    def _gpu(self, handle: _Handle) -> FakeGpu:
        return self.gpus[handle.gpu]

    def _mig(self, handle: _Handle) -> FakeMig:
        assert handle.slot is not None
        mig = self._gpu(handle).mig_slots[handle.slot]
        assert mig is not None
        return mig

    # -- the pynvml API ------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        if pid not in self.process_names:
            raise pynvml.NVMLError_NotFound()
        return self.process_names[pid]

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError_InvalidArgument()
        return _Handle(index)

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        return self._gpu(handle).uuid if handle.slot is None else self._mig(handle).uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        gpu = self._gpu(handle)
        if handle.slot is None:
            return gpu.name
        return f"{gpu.name} MIG {self._mig(handle).profile.name}"

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        if handle.slot is None:
            gpu = self._gpu(handle)
            total, free = gpu.total_bytes, gpu.free_bytes
        else:
            mig = self._mig(handle)
            total = mig.profile.memory_mb * MIB
            free = total - mig.used_bytes
        return SimpleNamespace(total=total, free=free, used=total - free)

    def nvmlDeviceGetCudaComputeCapability(self, handle: _Handle) -> tuple[int, int]:
        return self._gpu(handle).compute_capability

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu = self._gpu(handle)
        if gpu.mig_mode is None:
            raise pynvml.NVMLError_NotSupported()
        return list(gpu.mig_mode)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu = self._gpu(handle)
        if handle.slot is not None or gpu.mig_enabled or gpu.utilization_gpu is None:
            raise pynvml.NVMLError_NotSupported()
        return SimpleNamespace(gpu=gpu.utilization_gpu, memory=gpu.utilization_memory)

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, handle: _Handle, profile: int, version: int = 2
    ) -> Any:
        gpu = self._gpu(handle)
        if gpu.mig_mode is None:
            raise pynvml.NVMLError_NotSupported()
        if not 0 <= profile < len(gpu.profiles):
            raise pynvml.NVMLError_InvalidArgument()
        p = gpu.profiles[profile]
        return SimpleNamespace(
            version=version,
            id=p.id,
            isP2pSupported=0,
            sliceCount=p.slice_count,
            instanceCount=p.instance_count,
            multiprocessorCount=p.multiprocessors,
            copyEngineCount=p.copy_engines,
            decoderCount=p.decoders,
            encoderCount=p.encoders,
            jpegCount=p.jpegs,
            ofaCount=p.ofas,
            memorySizeMB=p.memory_mb,
            name=f"MIG {p.name}".encode(),  # a c_char array reads back as bytes
        )

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        return len(gpu.mig_slots) if gpu.mig_enabled else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        gpu = self._gpu(handle)
        if not gpu.mig_enabled or not 0 <= index < len(gpu.mig_slots):
            raise pynvml.NVMLError_InvalidArgument()
        if gpu.mig_slots[index] is None:
            raise pynvml.NVMLError_NotFound()
        return _Handle(handle.gpu, index)

    def nvmlDeviceGetAttributes(self, handle: _Handle) -> Any:
        if handle.slot is None:
            raise pynvml.NVMLError_NotSupported()
        mig = self._mig(handle)
        p = mig.profile
        return SimpleNamespace(
            multiprocessorCount=p.multiprocessors,
            sharedCopyEngineCount=p.copy_engines,
            sharedDecoderCount=p.decoders,
            sharedEncoderCount=p.encoders,
            sharedJpegCount=p.jpegs,
            sharedOfaCount=p.ofas,
            gpuInstanceSliceCount=p.slice_count,
            computeInstanceSliceCount=mig.ci_slices or p.slice_count,
            memorySizeMB=p.memory_mb,
        )

    def _process_list(self, handle: _Handle, kind: str) -> list[Any]:
        gpu = self._gpu(handle)
        if handle.slot is not None:
            procs = self._mig(handle).processes if kind == "compute" else []
        else:
            if gpu.mig_enabled and not gpu.parent_processes_privileged:
                raise pynvml.NVMLError_NoPermission()
            procs = list(gpu.compute if kind == "compute" else gpu.graphics)
            if gpu.mig_enabled:  # the privileged aggregate view includes the instances
                procs += [p for m in gpu.migs for p in m.processes] if kind == "compute" else []
        return [
            SimpleNamespace(
                pid=p.pid,
                usedGpuMemory=p.used_bytes,
                gpuInstanceId=0xFFFFFFFF,
                computeInstanceId=0xFFFFFFFF,
            )
            for p in procs
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        return self._process_list(handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[Any]:
        return self._process_list(handle, "graphics")


# -- scenarios ---------------------------------------------------------------------------

_LGIP_ROW = re.compile(
    r"^\|\s*(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)/(\d+)\s+([\d.]+)\s+\w+\s+(\d+)\s+(\d+)\s+(\d+)"
)
_LGIP_ROW2 = re.compile(r"^\|\s+(\d+)\s+(\d+)\s+(\d+)\s+\|$")


def profiles_from_lgip(text: str) -> list[FakeProfile]:
    """NVML profile info for GPU 0, transcribed from a real ``nvidia-smi mig -lgip``.

    Deliberately independent of the parser under test: this is what NVML itself would
    have answered on the machine the table was captured on.
    """
    profiles: list[FakeProfile] = []
    pending: tuple[str, ...] | None = None
    for line in text.splitlines():
        row = _LGIP_ROW.match(line)
        if row:
            pending = row.groups()
            continue
        row2 = _LGIP_ROW2.match(line.strip())
        if row2 and pending is not None:
            _gpu, name, pid, _free, total, gib, sm, dec, enc = pending
            ce, jpeg, ofa = row2.groups()
            profiles.append(
                FakeProfile(
                    id=int(pid),
                    name=name,
                    slice_count=int(name.split("g.", 1)[0]),
                    memory_mb=round(float(gib) * 1024),
                    instance_count=int(total),
                    decoders=int(dec),
                    encoders=int(enc),
                    jpegs=int(jpeg),
                    ofas=int(ofa),
                    multiprocessors=int(sm),
                    copy_engines=int(ce),
                )
            )
            pending = None
    return profiles


def from_recorded(
    nvml_json: Path, *, profiles: list[FakeProfile], process_names: dict[int, str]
) -> FakeNvml:
    """A fake serving the values recorded through NVML in ``busy-nvml.json``.

    The recording holds no profile table and no process names; the caller supplies
    them from the same machine's ``mig -lgip`` capture and the fixtures README.
    """
    data = json.loads(nvml_json.read_text())
    gpus = []
    for g in data["gpus"]:
        gpus.append(
            FakeGpu(
                name=g["name"],
                uuid=g["uuid"],
                total_bytes=g["memory"]["total"],
                free_bytes=g["memory"]["free"],
                compute_capability=(g["compute_capability"][0], g["compute_capability"][1]),
                utilization_gpu=g["util"]["gpu"],
                utilization_memory=g["util"]["memory"],
                mig_mode=(g["mig_mode"][0], g["mig_mode"][1]),
                profiles=profiles,
                mig_slots=[None] * g["max_mig"],
                compute=[FakeProcess(p["pid"], p["used"]) for p in g["procs"]],
            )
        )
    return FakeNvml(gpus, driver=data["driver"], process_names=process_names)


# Synthetic profile tables in the shape of real A100-40GB and A30 tables. Memory sizes
# are multiples of 256 MiB so that nvidia-smi's two-decimal GiB column round-trips.
A100_40GB_PROFILES = [
    FakeProfile(19, "1g.5gb", 1, 4864, 7, multiprocessors=14),
    FakeProfile(20, "1g.5gb+me", 1, 4864, 1, decoders=1, jpegs=1, ofas=1, multiprocessors=14),
    FakeProfile(15, "1g.10gb", 1, 9984, 4, decoders=1, jpegs=0, multiprocessors=14),
    FakeProfile(14, "2g.10gb", 2, 9984, 3, decoders=1, multiprocessors=28),
    FakeProfile(9, "3g.20gb", 3, 19968, 2, decoders=2, multiprocessors=42),
    FakeProfile(5, "4g.20gb", 4, 19968, 1, decoders=2, multiprocessors=56),
    FakeProfile(0, "7g.40gb", 7, 40192, 1, decoders=5, jpegs=1, ofas=1, multiprocessors=98),
]
A30_PROFILES = [
    FakeProfile(14, "1g.6gb", 1, 5888, 4, decoders=1, multiprocessors=14),
    FakeProfile(21, "1g.6gb+me", 1, 5888, 1, decoders=1, jpegs=1, ofas=1, multiprocessors=14),
    FakeProfile(5, "2g.12gb", 2, 12032, 2, decoders=2, multiprocessors=28),
    FakeProfile(6, "2g.12gb+me", 2, 12032, 1, decoders=2, jpegs=1, ofas=1, multiprocessors=28),
    FakeProfile(0, "4g.24gb", 4, 24064, 1, decoders=4, jpegs=1, ofas=1, multiprocessors=56),
]


def profile(table: list[FakeProfile], name: str) -> FakeProfile:
    return next(p for p in table if p.name == name)


def mig_uuid(gpu: int, slot: int) -> str:
    return f"MIG-{gpu:08x}-0000-5000-8000-{slot:012x}"


def a100_40gb(
    index: int,
    layout: list[str],
    *,
    slots: int = 7,
    holes: tuple[int, ...] = (),
) -> FakeGpu:
    """An MIG-enabled A100-SXM4-40GB with instances of the named profiles, in order.

    ``holes`` are slot numbers left empty (instances skip them).
    """
    mig_slots: list[FakeMig | None] = [None] * slots
    free = [s for s in range(slots) if s not in holes]
    for slot, name in zip(free, layout, strict=False):
        mig_slots[slot] = FakeMig(mig_uuid(index, slot), profile(A100_40GB_PROFILES, name))
    return FakeGpu(
        name="NVIDIA A100-SXM4-40GB",
        uuid=f"GPU-a100{index:04x}-0000-4000-8000-000000000000",
        total_bytes=40960 * MIB,
        free_bytes=(40960 - 600) * MIB,
        compute_capability=(8, 0),
        utilization_gpu=None,
        mig_mode=(1, 1),
        profiles=list(A100_40GB_PROFILES),
        mig_slots=mig_slots,
        parent_processes_privileged=False,
    )


def a30(index: int, layout: list[str]) -> FakeGpu:
    """An MIG-enabled A30 (4 slices) with instances of the named profiles."""
    mig_slots: list[FakeMig | None] = [
        FakeMig(mig_uuid(index, slot), profile(A30_PROFILES, name))
        for slot, name in enumerate(layout)
    ]
    mig_slots += [None] * (4 - len(mig_slots))
    return FakeGpu(
        name="NVIDIA A30",
        uuid=f"GPU-a30a{index:04x}-0000-4000-8000-000000000000",
        total_bytes=24576 * MIB,
        free_bytes=(24576 - 400) * MIB,
        compute_capability=(8, 0),
        utilization_gpu=None,
        mig_mode=(1, 1),
        profiles=list(A30_PROFILES),
        mig_slots=mig_slots,
    )
