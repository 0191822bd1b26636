"""GPU inventory from a JSON file (``gpu.inventory: file:PATH``).

For machines without NVIDIA GPUs: CI, laptops, simulations. The format is documented,
with a full example, in docs/gpu-inventory-file.md. In short, a document holds
``gpus`` (GPUs written out, with their MIG instances, load and processes) and/or
``generate`` (compact blocks such as "8 × A100-40GB, each split into 7 × 1g.5gb") whose
UUIDs are derived deterministically from ``seed`` and the GPU index.

The file is read again on every :meth:`FileInventory.read`, so a test can rewrite it to
simulate load or a changed MIG layout. It is validated with pydantic (unknown keys are
errors); any problem raises :class:`ds01.errors.ConfigError` naming the file and the
offending key, such as ``gpus[0].mig[1].slices``.
"""

from __future__ import annotations

import json
import re
import uuid as uuidlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ds01.domain.devices import (
    Device,
    Gpu,
    GpuProcess,
    Inventory,
    MigInstance,
    device_uuid_problem,
    devices_for_gpu,
    merge_processes,
)
from ds01.errors import ConfigError

__all__ = ["FileInventory", "load_inventory_file", "simulated_uuid"]

# A MIG profile as nvidia-smi names it, optionally for a smaller compute instance:
# "1g.5gb", "1g.18gb+me", "1g.24gb+me.all", "1c.3g.20gb". Bounded digit runs and
# suffixes, matched whole (fullmatch): nothing else (a newline, a comma) rides into a label.
_PROFILE = re.compile(
    r"(?:(?P<ci>\d{1,2})c\.)?(?P<gi>\d{1,2})g\.(?P<gb>\d{1,5})gb"
    r"(?:\+[a-z]{1,8}(?:\.[a-z]{1,8})?)?"
)
_CC = r"^\d{1,3}\.\d{1,3}$"
# Fixed namespace so that generated UUIDs are the same on every machine and run.
_UUID_NAMESPACE = uuidlib.uuid5(uuidlib.NAMESPACE_URL, "urn:ds01:simulated-gpu")

#: Limits that keep every number a 64-bit integer (SQLite, Docker, JSON consumers).
_MAX_INT = 2**63 - 1
Percent = Annotated[int, Field(ge=0, le=100)]
Mib = Annotated[int, Field(ge=0, le=_MAX_INT)]
#: JSON nested deeper than this is refused before parsing: the format is at most ~6
#: levels deep, and Python's JSON parser recurses (a file nested 100,000 deep would
#: raise RecursionError, a crash instead of a located error).
_MAX_NESTING = 64


def _check_uuid(value: str) -> str:
    problem = device_uuid_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _nesting_depth(text: str) -> int:
    """How deep ``[``/``{`` nest in JSON text, outside strings (a linear scan)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def simulated_uuid(seed: str, gpu_index: int, mig_index: int | None = None) -> str:
    """The deterministic UUID of a generated GPU (``GPU-…``) or MIG device (``MIG-…``)."""
    if mig_index is None:
        return "GPU-" + str(uuidlib.uuid5(_UUID_NAMESPACE, f"{seed}/gpu/{gpu_index}"))
    return "MIG-" + str(uuidlib.uuid5(_UUID_NAMESPACE, f"{seed}/gpu/{gpu_index}/mig/{mig_index}"))


def _as_list(value: Any) -> Any:
    """Let a single block be written without the surrounding list."""
    return [value] if isinstance(value, dict) else value


def _profile_defaults(profile: str, slices: int | None, memory_mib: int | None) -> tuple[int, int]:
    match = _PROFILE.fullmatch(profile)
    if match is None:
        raise ValueError(
            f"profile {profile!r} is not a MIG profile name such as '1g.5gb' or '3g.20gb'"
        )
    default_slices = int(match["ci"] or match["gi"])
    default_memory = int(match["gb"]) * 1024
    return (
        default_slices if slices is None else slices,
        default_memory if memory_mib is None else memory_mib,
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ProcessSpec(_Strict):
    """A process using a device."""

    pid: int = Field(ge=0, le=_MAX_INT)
    name: str = ""
    used_memory_mib: Mib | None = None


class _Load(_Strict):
    """Simulated load of a device: utilization, memory in use, processes."""

    utilization_gpu: Percent | None = None
    memory_used_mib: Mib | None = None
    processes: list[ProcessSpec] = Field(default_factory=list)

    def process_tuple(self) -> tuple[GpuProcess, ...]:
        return merge_processes(GpuProcess(p.pid, p.used_memory_mib, p.name) for p in self.processes)


class MigSpec(_Load):
    """One existing MIG instance. ``slices`` and ``memory_mib`` default from the
    profile name (``3g.20gb`` -> 3 slices, 20 × 1024 MiB)."""

    uuid: str = Field(min_length=1)
    profile: str
    slices: int | None = Field(default=None, ge=1, le=1024)
    memory_mib: Mib | None = None

    _uuid = field_validator("uuid")(_check_uuid)

    @model_validator(mode="after")
    def _check_profile(self) -> MigSpec:
        _profile_defaults(self.profile, self.slices, self.memory_mib)
        return self

    def to_instance(self) -> MigInstance:
        slices, memory_mib = _profile_defaults(self.profile, self.slices, self.memory_mib)
        return MigInstance(
            uuid=self.uuid,
            profile=self.profile,
            slices=slices,
            memory_mib=memory_mib,
            utilization_gpu=self.utilization_gpu,
            memory_used_mib=self.memory_used_mib,
            processes=self.process_tuple(),
        )


class GpuSpec(_Load):
    """A physical GPU written out in full."""

    index: int = Field(ge=0, le=65535)
    uuid: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=256)
    memory_mib: int = Field(gt=0, le=_MAX_INT)
    compute_capability: str | None = Field(default=None, pattern=_CC)
    mig_enabled: bool = False
    total_slices: int | None = Field(default=None, ge=1, le=1024)
    driver_version: str | None = Field(default=None, max_length=64)
    vendor: Literal["nvidia", "amd"] = "nvidia"
    gfx: str | None = Field(default=None, max_length=64)
    mig: list[MigSpec] = Field(default_factory=list)

    _uuid = field_validator("uuid")(_check_uuid)

    @model_validator(mode="after")
    def _check_mig(self) -> GpuSpec:
        if self.mig and not self.mig_enabled:
            raise ValueError("mig: instances are listed but mig_enabled is false")
        if self.mig_enabled and self.total_slices is None:
            raise ValueError("total_slices is required when mig_enabled is true")
        if self.total_slices is not None:
            used = 0
            for inst in self.mig:
                slices, _ = _profile_defaults(inst.profile, inst.slices, inst.memory_mib)
                used += slices
            if used > self.total_slices:
                raise ValueError(
                    f"mig: the instances use {used} slices but total_slices is {self.total_slices}"
                )
        return self

    def to_gpu(self) -> tuple[Gpu, tuple[MigInstance, ...]]:
        instances = tuple(m.to_instance() for m in self.mig)
        gpu = Gpu(
            index=self.index,
            uuid=self.uuid,
            name=self.name,
            memory_mib=self.memory_mib,
            compute_capability=_cc(self.compute_capability),
            mig_enabled=self.mig_enabled,
            total_slices=self.total_slices,
            utilization_gpu=self.utilization_gpu,
            memory_used_mib=self.memory_used_mib,
            driver_version=self.driver_version,
            vendor=self.vendor,
            gfx=self.gfx,
            processes=merge_processes(
                self.process_tuple(), *(inst.processes for inst in instances)
            ),
        )
        return gpu, instances


class GenerateMig(_Strict):
    """``count`` MIG instances of one profile on every generated GPU."""

    profile: str
    count: int = Field(ge=0, le=1024)
    slices: int | None = Field(default=None, ge=1, le=1024)
    memory_mib: Mib | None = None

    @model_validator(mode="after")
    def _check_profile(self) -> GenerateMig:
        _profile_defaults(self.profile, self.slices, self.memory_mib)
        return self


class GenerateSpec(_Strict):
    """``count`` identical GPUs. With ``mig`` (even ``"count": 0``) they are MIG-enabled."""

    count: int = Field(ge=1, le=4096)
    name: str = Field(min_length=1, max_length=256)
    memory_mib: int = Field(gt=0, le=_MAX_INT)
    compute_capability: str | None = Field(default=None, pattern=_CC)
    total_slices: int | None = Field(default=None, ge=1, le=1024)
    driver_version: str | None = Field(default=None, max_length=64)
    mig: list[GenerateMig] | None = None
    seed: str = Field(default="ds01-sim", max_length=256)

    _wrap_mig = field_validator("mig", mode="before")(_as_list)

    @model_validator(mode="after")
    def _check_mig(self) -> GenerateSpec:
        # Checked here so that expand() can only build valid GPUs.
        if self.mig is None:
            return self
        if self.total_slices is None:
            raise ValueError("total_slices is required when mig is given")
        used = 0
        for block in self.mig:
            slices, _ = _profile_defaults(block.profile, block.slices, block.memory_mib)
            used += slices * block.count
        if used > self.total_slices:
            raise ValueError(
                f"mig: each GPU's instances use {used} slices but total_slices is "
                f"{self.total_slices}"
            )
        return self

    def expand(self, first_index: int) -> list[GpuSpec]:
        specs: list[GpuSpec] = []
        for offset in range(self.count):
            index = first_index + offset
            mig: list[MigSpec] = []
            for block in self.mig or ():
                for _ in range(block.count):
                    mig.append(
                        MigSpec(
                            uuid=simulated_uuid(self.seed, index, len(mig)),
                            profile=block.profile,
                            slices=block.slices,
                            memory_mib=block.memory_mib,
                        )
                    )
            specs.append(
                GpuSpec(
                    index=index,
                    uuid=simulated_uuid(self.seed, index),
                    name=self.name,
                    memory_mib=self.memory_mib,
                    compute_capability=self.compute_capability,
                    mig_enabled=self.mig is not None,
                    total_slices=self.total_slices,
                    driver_version=self.driver_version,
                    mig=mig,
                )
            )
        return specs


class InventoryDocument(_Strict):
    """The whole file: GPUs written out, generated ones, or both."""

    gpus: list[GpuSpec] = Field(default_factory=list)
    generate: list[GenerateSpec] = Field(default_factory=list)

    _wrap_generate = field_validator("generate", mode="before")(_as_list)

    @model_validator(mode="after")
    def _check_unique(self) -> InventoryDocument:
        all_gpus = self.all_gpus()
        indices = [g.index for g in all_gpus]
        if len(set(indices)) != len(indices):
            dup = sorted({i for i in indices if indices.count(i) > 1})
            raise ValueError(f"gpus: index {dup[0]} is used more than once")
        uuids = [g.uuid for g in all_gpus] + [m.uuid for g in all_gpus for m in g.mig]
        seen: set[str] = set()
        for value in uuids:
            if value in seen:
                raise ValueError(f"uuid {value!r} is used more than once")
            seen.add(value)
        return self

    def all_gpus(self) -> list[GpuSpec]:
        """Written-out GPUs, then generated ones numbered after the highest index."""
        result = list(self.gpus)
        next_index = max((g.index for g in self.gpus), default=-1) + 1
        for block in self.generate:
            result.extend(block.expand(next_index))
            next_index += block.count
        return result

    def to_inventory(self) -> Inventory:
        gpus: list[Gpu] = []
        devices: list[Device] = []
        for spec in sorted(self.all_gpus(), key=lambda g: g.index):
            gpu, instances = spec.to_gpu()
            gpus.append(gpu)
            devices.extend(devices_for_gpu(gpu, instances))
        return Inventory(gpus=tuple(gpus), devices=tuple(devices), source="file")


def _cc(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    major, minor = text.split(".")
    return int(major), int(minor)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_inventory_file(path: str | Path) -> Inventory:
    """Read, validate and convert one inventory file; ConfigError on any problem."""
    path = Path(path)
    hint = "See docs/gpu-inventory-file.md for the format."
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read GPU inventory file {path}: {exc.strerror or exc}",
            hint="Check gpu.inventory in the configuration (file:PATH).",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); an inventory file is JSON", hint=hint
        ) from exc
    if _nesting_depth(text) > _MAX_NESTING:
        raise ConfigError(
            f"{path}: JSON nested more than {_MAX_NESTING} levels deep; an inventory file "
            "is a few levels deep",
            hint=hint,
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})",
            hint=hint,
        ) from exc
    try:
        document = InventoryDocument.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_location(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        ]
        raise ConfigError(
            f"{path}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint=hint,
            details={"file": str(path), "problems": problems},
        ) from exc
    return document.to_inventory()


class FileInventory:
    """GPUs described by a JSON file, re-read on every :meth:`read`."""

    name = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> Inventory:
        """The file's GPUs and devices now; ConfigError if it is missing or invalid."""
        return load_inventory_file(self.path)
