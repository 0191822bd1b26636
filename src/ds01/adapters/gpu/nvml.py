"""GPU inventory through NVML (``nvidia-ml-py``, imported as ``pynvml``).

The first-choice backend: one in-process read costs about 0.4 ms on an H200, against
22 ms for spawning ``nvidia-smi --query-gpu`` (../shared/fixtures timing.txt). So this
path never starts a subprocess, imports ``pynvml`` only on the first ``read()`` (the
import alone costs about 40 ms, which commands without GPUs must not pay) and calls
``nvmlInit`` once per process (12 ms on that machine).

What is read per GPU: UUID, name, memory, utilization, compute capability, current MIG
mode, driver version, running compute and graphics processes (deduplicated by pid,
named through ``nvmlSystemGetProcessName``), and for MIG-capable GPUs the GPU-instance
profile table, whose largest profile gives the total slice count (7 on A100/H100/H200,
4 on A30). For a MIG-enabled GPU each existing MIG device is read through its own
handle: UUID, attributes (slice counts, memory), memory in use and processes. Its
profile name (``3g.20gb``) comes from matching the device attributes against the
profile table, which needs no privileges (``nvmlDeviceGetGpuInstanceById`` would, and
the CLI runs as an ordinary user). NVML reports no utilization for MIG devices, so
theirs stays ``None``.

Every ``pynvml.NVMLError`` becomes :class:`ds01.errors.GpuQueryError`; a missing library
or driver becomes :class:`~ds01.errors.GpuUnavailableError` so that
``auto`` can move on to the next source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ds01.domain.devices import (
    Device,
    Gpu,
    GpuProcess,
    Inventory,
    MigInstance,
    MigProfile,
    devices_for_gpu,
    merge_processes,
    total_slices_of,
)
from ds01.errors import GpuQueryError, GpuUnavailableError

__all__ = ["NvmlInventory"]

_MIB = 1 << 20

# nvmlInit is process-wide and costs ~12 ms: do it once per NVML module object. The
# dict holds the module itself so that its id() cannot be reused by another object.
_INIT_LOCK = threading.Lock()
_INITIALISED: dict[int, Any] = {}

_UNAVAILABLE_ERRORS = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")


class _NeverRaised(Exception):
    """Stands in for an NVML error class the module does not define."""


def _error_types(nvml: Any, *names: str) -> tuple[type[BaseException], ...]:
    found = tuple(getattr(nvml, name, None) for name in names)
    types = tuple(t for t in found if isinstance(t, type) and issubclass(t, BaseException))
    return types or (_NeverRaised,)


def _text(value: Any) -> str:
    """NVML strings arrive as ``str`` (recent bindings) or ``bytes`` (older ones)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip()


@dataclass(frozen=True)
class _Profile:
    """A GPU-instance profile plus the engine counts that tell ``1g.18gb`` from its
    ``+me`` twin (same slices and memory, more media engines)."""

    profile: MigProfile
    engines: tuple[int, int, int, int]


class NvmlInventory:
    """The GPUs and devices as NVML reports them.

    ``nvml`` is the NVML module to use; tests pass a fake with the same function names.
    Without it ``pynvml`` is imported on the first :meth:`read`.
    """

    name = "nvml"

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml
        self._driver_version: str | None = None
        # Profile tables are fixed for a GPU while its MIG mode stays the same.
        self._profiles: dict[tuple[str, bool], tuple[_Profile, ...]] = {}

    def read(self) -> Inventory:
        """A fresh snapshot; raises GpuQueryError (GpuUnavailableError if NVML is absent)."""
        nvml = self._module()
        try:
            _ensure_initialised(nvml)
            return self._read_all(nvml)
        except _error_types(nvml, *_UNAVAILABLE_ERRORS) as exc:
            raise GpuUnavailableError(
                f"NVML is not usable on this host: {exc}",
                hint="Install the NVIDIA driver, or set gpu.inventory to none or file:PATH "
                "on a machine without NVIDIA GPUs.",
            ) from exc
        except _error_types(nvml, "NVMLError") as exc:
            raise GpuQueryError(
                f"NVML could not read the GPUs: {exc}",
                hint="Run `nvidia-smi` to see the driver's view; after a driver upgrade a "
                "version mismatch clears with a reboot.",
            ) from exc

    # -- module and initialisation -------------------------------------------------

    def _module(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise GpuUnavailableError(
                    "nvidia-ml-py (module pynvml) is not installed",
                    hint="Install DS01 with its dependencies, or set gpu.inventory to nvidia-smi.",
                ) from exc
            self._nvml = pynvml
        return self._nvml

    # -- reading ---------------------------------------------------------------------

    def _read_all(self, nvml: Any) -> Inventory:
        if self._driver_version is None:
            self._driver_version = _text(nvml.nvmlSystemGetDriverVersion())
        gpus: list[Gpu] = []
        devices: list[Device] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            gpu, instances = self._read_gpu(nvml, index)
            gpus.append(gpu)
            devices.extend(devices_for_gpu(gpu, instances))
        return Inventory(gpus=tuple(gpus), devices=tuple(devices), source=self.name)

    def _read_gpu(self, nvml: Any, index: int) -> tuple[Gpu, tuple[MigInstance, ...]]:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)

        not_supported = _error_types(nvml, "NVMLError_NotSupported")
        mig_mode = _optional(nvml.nvmlDeviceGetMigMode, handle, tolerate=not_supported)
        mig_capable = mig_mode is not None
        mig_enabled = mig_capable and int(mig_mode[0]) == int(nvml.NVML_DEVICE_MIG_ENABLE)
        # In MIG mode the parent GPU has no utilization counter of its own.
        rates = _optional(nvml.nvmlDeviceGetUtilizationRates, handle, tolerate=not_supported)

        profiles = self._profile_table(nvml, handle, uuid, mig_enabled) if mig_capable else ()
        instances = self._mig_instances(nvml, handle, profiles) if mig_enabled else ()
        # On a MIG-enabled GPU an unprivileged caller may not list the parent's
        # processes; the per-instance lists (read through MIG handles) still are.
        own = _processes(nvml, handle, tolerate_permission=mig_enabled)
        gpu = Gpu(
            index=index,
            uuid=uuid,
            name=_text(nvml.nvmlDeviceGetName(handle)),
            memory_mib=int(memory.total) // _MIB,
            compute_capability=(int(major), int(minor)),
            mig_enabled=mig_enabled,
            total_slices=total_slices_of(p.profile for p in profiles),
            utilization_gpu=None if rates is None else int(rates.gpu),
            memory_used_mib=(int(memory.total) - int(memory.free)) // _MIB,
            driver_version=self._driver_version,
            processes=merge_processes(own, *(inst.processes for inst in instances)),
        )
        return gpu, instances

    def _profile_table(
        self, nvml: Any, handle: Any, uuid: str, mig_enabled: bool
    ) -> tuple[_Profile, ...]:
        key = (uuid, mig_enabled)
        cached = self._profiles.get(key)
        if cached is not None:
            return cached
        # A profile constant the GPU does not offer answers NotSupported or
        # InvalidArgument depending on the driver; both just mean "not on this GPU".
        absent = _error_types(
            nvml, "NVMLError_NotSupported", "NVMLError_InvalidArgument", "NVMLError_NotFound"
        )
        table: list[_Profile] = []
        for constant in range(int(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT)):
            info = _optional(
                nvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, constant, tolerate=absent
            )
            if info is None or int(info.sliceCount) <= 0:
                continue
            slices = int(info.sliceCount)
            memory_mib = int(info.memorySizeMB)
            name = _text(getattr(info, "name", b"")).removeprefix("MIG ").strip()
            profile = MigProfile(
                name=name or _fallback_profile_name(slices, memory_mib),
                slices=slices,
                memory_mib=memory_mib,
                profile_id=int(info.id),
            )
            engines = (
                int(info.decoderCount),
                int(info.encoderCount),
                int(info.jpegCount),
                int(info.ofaCount),
            )
            table.append(_Profile(profile, engines))
        result = tuple(table)
        self._profiles[key] = result
        return result

    def _mig_instances(
        self, nvml: Any, handle: Any, profiles: tuple[_Profile, ...]
    ) -> tuple[MigInstance, ...]:
        not_found = _error_types(nvml, "NVMLError_NotFound")
        instances: list[MigInstance] = []
        for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            # Slots without a MIG device answer NotFound: instances need not be dense.
            mig = _optional(
                nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot, tolerate=not_found
            )
            if mig is None:
                continue
            attrs = nvml.nvmlDeviceGetAttributes(mig)
            memory = nvml.nvmlDeviceGetMemoryInfo(mig)
            gi_slices = int(attrs.gpuInstanceSliceCount)
            ci_slices = int(attrs.computeInstanceSliceCount) or gi_slices
            instances.append(
                MigInstance(
                    uuid=_text(nvml.nvmlDeviceGetUUID(mig)),
                    profile=_profile_name(attrs, profiles, gi_slices, ci_slices),
                    slices=ci_slices,
                    memory_mib=int(attrs.memorySizeMB),
                    utilization_gpu=None,
                    memory_used_mib=(int(memory.total) - int(memory.free)) // _MIB,
                    processes=_processes(nvml, mig, tolerate_permission=True),
                )
            )
        return tuple(instances)


def _ensure_initialised(nvml: Any) -> None:
    key = id(nvml)
    if key in _INITIALISED:
        return
    with _INIT_LOCK:
        if key not in _INITIALISED:
            nvml.nvmlInit()
            _INITIALISED[key] = nvml


def _optional(
    call: Callable[..., Any], *args: Any, tolerate: tuple[type[BaseException], ...]
) -> Any:
    """``call(*args)``, or ``None`` when NVML answers with one of the ``tolerate`` errors.

    Only for facts a GPU may legitimately lack (MIG mode on a GPU without MIG,
    utilization of a MIG-enabled GPU); every other error still propagates.
    """
    try:
        return call(*args)
    except tolerate:
        return None


def _processes(nvml: Any, handle: Any, *, tolerate_permission: bool) -> tuple[GpuProcess, ...]:
    """Compute and graphics processes on ``handle``, deduplicated by pid and named."""
    tolerated = ["NVMLError_NotSupported"]
    if tolerate_permission:
        tolerated.append("NVMLError_NoPermission")
    tolerate = _error_types(nvml, *tolerated)
    found: list[GpuProcess] = []
    for query in (
        nvml.nvmlDeviceGetComputeRunningProcesses,
        nvml.nvmlDeviceGetGraphicsRunningProcesses,
    ):
        for proc in _optional(query, handle, tolerate=tolerate) or ():
            used = getattr(proc, "usedGpuMemory", None)
            found.append(
                GpuProcess(
                    pid=int(proc.pid), used_memory_mib=None if used is None else int(used) // _MIB
                )
            )
    # A process that exited since it was listed, or belongs to another PID namespace,
    # has no name to give: it keeps an empty one rather than failing the whole read.
    name_missing = _error_types(nvml, "NVMLError_NotFound", "NVMLError_NoPermission")
    named = []
    for proc in merge_processes(found):
        name = _optional(nvml.nvmlSystemGetProcessName, proc.pid, tolerate=name_missing)
        named.append(
            GpuProcess(proc.pid, proc.used_memory_mib, "" if name is None else _text(name))
        )
    return tuple(named)


def _profile_name(
    attrs: Any, profiles: tuple[_Profile, ...], gi_slices: int, ci_slices: int
) -> str:
    """The nvidia-smi style profile name of a MIG device, from its attributes.

    The GPU-instance profile is the one with the device's slice count, the nearest
    memory size, then the closest engine counts (``1g.18gb`` vs ``1g.18gb+me``). A
    compute instance smaller than its GPU instance is named like nvidia-smi does:
    ``1c.3g.20gb``.
    """
    memory_mib = int(attrs.memorySizeMB)
    engines = (
        int(getattr(attrs, "sharedDecoderCount", 0)),
        int(getattr(attrs, "sharedEncoderCount", 0)),
        int(getattr(attrs, "sharedJpegCount", 0)),
        int(getattr(attrs, "sharedOfaCount", 0)),
    )
    candidates = [p for p in profiles if p.profile.slices == gi_slices]
    if candidates:
        best = min(
            candidates,
            key=lambda p: (
                abs(p.profile.memory_mib - memory_mib),
                sum(abs(a - b) for a, b in zip(p.engines, engines, strict=True)),
                p.profile.name,
            ),
        )
        gi_name = best.profile.name
    else:
        gi_name = _fallback_profile_name(gi_slices, memory_mib)
    return gi_name if ci_slices == gi_slices else f"{ci_slices}c.{gi_name}"


def _fallback_profile_name(slices: int, memory_mib: int) -> str:
    # Only when the driver gives no profile name: NVIDIA's names use rounded marketing
    # sizes (an H200's 16 GiB instance is "1g.18gb"), so this is an approximation.
    return f"{slices}g.{max(1, round(memory_mib / 1024))}gb"
