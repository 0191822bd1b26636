"""GPU inventory by parsing ``nvidia-smi`` (the fallback when NVML cannot be loaded).

Commands run, always as argument lists (no shell), with a timeout:

- ``nvidia-smi --query-gpu=<QUERY_GPU_FIELDS> --format=csv,noheader,nounits`` — every
  read: index, UUID, name, memory, utilization, MIG mode, driver version.
- ``nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid
  --format=csv,noheader,nounits`` — every read: the processes. A process listed under
  a MIG device's UUID belongs to that device; under the GPU's UUID, to the GPU only.
- ``nvidia-smi mig -lgip`` — once per object, only when some GPU can do MIG: the
  GPU-instance profiles, whose largest gives the total slice count (7 on H200, 4 on
  A30) and whose memory column gives a MIG device's memory (to 0.01 GiB).
- ``nvidia-smi -L`` — only when some GPU has MIG enabled: MIG device UUIDs and profiles.
- ``nvidia-smi --query-gpu=uuid,compute_cap --format=csv,noheader,nounits`` — once per
  object. Drivers before ~510 do not know the field; then the compute capability comes
  from the product name when it is a known one, else stays ``None``.

nvidia-smi writes unavailable values as ``[N/A]``, ``[Not Supported]``, ``N/A`` and the
like; they all read as ``None``. Exit codes 9 (driver not loaded) and 12 (NVML library
not found), and a missing ``nvidia-smi``, make the source *unavailable*.

Conventions shared with the NVML backend (see ds01.adapters.gpu): memory in
MiB; a GPU's ``memory_used_mib`` is ``memory.total - memory.free``; MIG devices report
no utilization; the MIG device's ``name`` is its GPU's name.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from ds01.domain.devices import (
    Device,
    Gpu,
    GpuProcess,
    Inventory,
    MigInstance,
    MigProfile,
    devices_for_gpu,
    merge_processes,
    profile_slices,
    total_slices_of,
)
from ds01.errors import GpuQueryError, GpuUnavailableError

__all__ = [
    "QUERY_GPU_FIELDS",
    "ListedGpu",
    "Runner",
    "SmiGpuRow",
    "SmiInventory",
    "compute_capability_from_name",
    "parse_compute_apps",
    "parse_compute_caps",
    "parse_gpu_list",
    "parse_instance_profiles",
    "parse_query_gpu",
    "run_command",
]

#: ``run(argv) -> (exit code, output)``; output is stdout, plus stderr on failure.
Runner = Callable[[list[str]], tuple[int, str]]

QUERY_GPU_FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "memory.total",
    "memory.used",
    "memory.free",
    "utilization.gpu",
    "utilization.memory",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "mig.mode.current",
    "mig.mode.pending",
    "compute_mode",
    "driver_version",
    "persistence_mode",
)
_CSV = "--format=csv,noheader,nounits"
_QUERY_GPU = ["nvidia-smi", "--query-gpu=" + ",".join(QUERY_GPU_FIELDS), _CSV]
_QUERY_APPS = ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory,gpu_uuid", _CSV]
_QUERY_CC = ["nvidia-smi", "--query-gpu=uuid,compute_cap", _CSV]
_LIST_GPUS = ["nvidia-smi", "-L"]
_LIST_PROFILES = ["nvidia-smi", "mig", "-lgip"]

# nvidia-smi exit codes that mean "no driver / no NVML here", not "something broke".
_RC_UNAVAILABLE = {9: "the NVIDIA driver is not loaded", 12: "the NVML library was not found"}
_RC_NO_DEVICES = 6


def run_command(argv: list[str], *, timeout_s: float = 10.0) -> tuple[int, str]:
    """Run ``argv`` without a shell; a missing program raises GpuUnavailableError."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise GpuUnavailableError(
            f"{argv[0]} was not found on PATH",
            hint="Install the NVIDIA driver utilities, or set gpu.inventory to none or "
            "file:PATH on a machine without NVIDIA GPUs.",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise GpuQueryError(
            f"`{' '.join(argv)}` did not answer within {timeout_s:g} s",
            hint="The driver may be hung; check `nvidia-smi` and the kernel log.",
        ) from exc
    except OSError as exc:
        raise GpuQueryError(f"could not run {argv[0]}: {exc}") from exc
    output = done.stdout if done.returncode == 0 else done.stdout + done.stderr
    return done.returncode, output


# -- parsing ---------------------------------------------------------------------------


def _value(text: str) -> str | None:
    """A CSV cell, or ``None`` for nvidia-smi's spellings of "no value"."""
    text = text.strip()
    if not text or text in {"N/A", "Not Supported"}:
        return None
    if text.startswith("[") and text.endswith("]"):
        return None
    return text


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


@dataclass(frozen=True)
class SmiGpuRow:
    """One line of ``--query-gpu`` output, typed."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_free_mib: int | None
    utilization_gpu: int | None
    mig_mode: str | None  # "Enabled", "Disabled", or None when MIG is unsupported
    driver_version: str | None

    @property
    def mig_capable(self) -> bool:
        return self.mig_mode is not None

    @property
    def mig_enabled(self) -> bool:
        return self.mig_mode == "Enabled"


def parse_query_gpu(text: str) -> list[SmiGpuRow]:
    """Rows of ``--query-gpu=<QUERY_GPU_FIELDS> --format=csv,noheader,nounits``."""
    rows: list[SmiGpuRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(QUERY_GPU_FIELDS):
            raise GpuQueryError(
                f"nvidia-smi --query-gpu gave {len(cells)} fields, expected "
                f"{len(QUERY_GPU_FIELDS)}: {line!r}"
            )
        cell = dict(zip(QUERY_GPU_FIELDS, cells, strict=True))
        index = _int(_value(cell["index"]))
        uuid = _value(cell["uuid"])
        total = _int(_value(cell["memory.total"]))
        if index is None or uuid is None or total is None:
            raise GpuQueryError(
                f"nvidia-smi --query-gpu line lacks index, UUID or memory: {line!r}"
            )
        rows.append(
            SmiGpuRow(
                index=index,
                uuid=uuid,
                name=_value(cell["name"]) or "",
                memory_total_mib=total,
                memory_free_mib=_int(_value(cell["memory.free"])),
                utilization_gpu=_int(_value(cell["utilization.gpu"])),
                mig_mode=_value(cell["mig.mode.current"]),
                driver_version=_value(cell["driver_version"]),
            )
        )
    return rows


def parse_compute_apps(text: str) -> list[tuple[str, GpuProcess]]:
    """``(device uuid, process)`` pairs from ``--query-compute-apps=pid,process_name,
    used_memory,gpu_uuid --format=csv,noheader,nounits``."""
    found: list[tuple[str, GpuProcess]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        pid = _int(_value(cells[0])) if len(cells) >= 4 else None
        if pid is None:
            raise GpuQueryError(f"unexpected nvidia-smi --query-compute-apps line: {line!r}")
        # A process name may itself contain commas: it is everything between pid and
        # the last two cells.
        name = ", ".join(cells[1:-2])
        found.append((cells[-1], GpuProcess(pid, _int(_value(cells[-2])), _value(name) or "")))
    return found


def parse_compute_caps(text: str) -> dict[str, tuple[int, int]]:
    """``uuid -> (major, minor)`` from ``--query-gpu=uuid,compute_cap``; unknowns left out."""
    caps: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 2:
            continue
        match = re.fullmatch(r"(\d+)\.(\d+)", cells[1])
        if match:
            caps[cells[0]] = (int(match.group(1)), int(match.group(2)))
    return caps


@dataclass(frozen=True)
class ListedGpu:
    """A GPU line of ``nvidia-smi -L`` and the MIG device lines under it."""

    index: int
    name: str
    uuid: str
    mig_devices: tuple[tuple[str, str], ...] = ()  # (profile, MIG device UUID)


_GPU_LINE = re.compile(
    r"^GPU\s+(?P<index>\d+):\s+(?P<name>.*?)\s+\(UUID:\s*(?P<uuid>[^)\s]+)\)\s*$"
)
_MIG_LINE = re.compile(
    r"^\s+MIG\s+(?P<profile>\S+)\s+Device\s+(?P<dev>\d+):\s+\(UUID:\s*(?P<uuid>[^)\s]+)\)\s*$"
)


def parse_gpu_list(text: str) -> list[ListedGpu]:
    """``nvidia-smi -L``: ``GPU 0: NAME (UUID: GPU-…)`` lines, each followed by its
    ``  MIG 1g.5gb     Device  0: (UUID: MIG-…)`` lines."""
    gpus: list[ListedGpu] = []
    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            gpus.append(ListedGpu(int(gpu["index"]), gpu["name"], gpu["uuid"]))
            continue
        mig = _MIG_LINE.match(line)
        if mig and gpus:
            last = gpus[-1]
            gpus[-1] = ListedGpu(
                last.index, last.name, last.uuid, (*last.mig_devices, (mig["profile"], mig["uuid"]))
            )
    return gpus


_PROFILE_ROW = re.compile(
    r"^\|\s*(?P<gpu>\d+)\s+MIG\s+(?P<name>\S+)\s+(?P<id>\d+)\s+\d+/\d+\s+(?P<gib>[\d.]+)\s"
)


def parse_instance_profiles(text: str) -> dict[int, tuple[MigProfile, ...]]:
    """GPU index -> its GPU-instance profiles, from the ``nvidia-smi mig -lgip`` table.

    Each profile takes two table lines; only the first names it. Memory is printed in
    GiB with two decimals, so it comes back to within about 5 MiB. Output such as
    "No MIG-supported devices found." yields an empty mapping.
    """
    table: dict[int, list[MigProfile]] = {}
    for line in text.splitlines():
        row = _PROFILE_ROW.match(line)
        if not row:
            continue
        slices = profile_slices(row["name"])
        if slices is None:
            raise GpuQueryError(f"unrecognised MIG profile in `nvidia-smi mig -lgip`: {line!r}")
        table.setdefault(int(row["gpu"]), []).append(
            MigProfile(
                name=row["name"],
                slices=slices,
                memory_mib=round(float(row["gib"]) * 1024),
                profile_id=int(row["id"]),
            )
        )
    return {gpu: tuple(profiles) for gpu, profiles in table.items()}


# Product name -> compute capability, only for drivers whose nvidia-smi lacks the
# compute_cap field. Most specific patterns first.
_CC_BY_NAME: tuple[tuple[re.Pattern[str], tuple[int, int]], ...] = tuple(
    (re.compile(pattern), cc)
    for pattern, cc in (
        (r"\b(GB300|B300)\b", (10, 3)),
        (r"\b(GB200|B200|B100)\b", (10, 0)),
        (r"\bRTX PRO \d+ Blackwell\b|\bRTX 50\d0\b", (12, 0)),
        (r"\b(GH200|H200|H100|H800|H20)\b", (9, 0)),
        (r"\b(L40S|L40|L20|L4)\b|\bRTX \d+ Ada\b|\bRTX 40\d0\b", (8, 9)),
        (r"\b(A100|A800|A30)\b", (8, 0)),
        (r"\b(A40|A10G|A10|A16|A2)\b|\bRTX A\d{4}\b|\bRTX 30\d0\b", (8, 6)),
        (r"\b(T4|TITAN RTX)\b|\bQuadro RTX\b|\bRTX 20\d0\b", (7, 5)),
        (r"\b(V100|TITAN V)\b", (7, 0)),
        (r"\bP100\b", (6, 0)),
        (r"\b(P40|P4)\b", (6, 1)),
    )
)


def compute_capability_from_name(name: str) -> tuple[int, int] | None:
    """The compute capability of a known NVIDIA product name, else ``None``."""
    for pattern, cc in _CC_BY_NAME:
        if pattern.search(name):
            return cc
    return None


def _split_profile(profile: str) -> tuple[int | None, str]:
    """``1c.3g.20gb`` -> (1, ``3g.20gb``); ``3g.20gb`` -> (None, ``3g.20gb``)."""
    match = re.fullmatch(r"(?:(\d+)c\.)?(.+)", profile)
    if match is None:  # pragma: no cover - the pattern matches any non-empty text
        return None, profile
    return (int(match.group(1)) if match.group(1) else None), match.group(2)


# -- the backend -----------------------------------------------------------------------


class SmiInventory:
    """The GPUs and devices as ``nvidia-smi`` reports them.

    ``run`` executes an argument list and returns ``(exit code, output)``; the default
    runs the real program with ``timeout_s``. ``executable`` replaces ``nvidia-smi``
    (an absolute path, for hosts where it is not on PATH).
    """

    name = "nvidia-smi"

    def __init__(
        self,
        run: Runner | None = None,
        *,
        executable: str = "nvidia-smi",
        timeout_s: float = 10.0,
    ) -> None:
        self._run: Runner = run or partial(run_command, timeout_s=timeout_s)
        self._executable = executable
        # Facts that cannot change while the driver stays loaded, read once.
        self._profiles: dict[int, tuple[MigProfile, ...]] | None = None
        self._compute_caps: dict[str, tuple[int, int]] | None = None

    def read(self) -> Inventory:
        """A fresh snapshot; raises GpuQueryError (GpuUnavailableError without nvidia-smi)."""
        rc, output = self._call(_QUERY_GPU, allow_rc=(_RC_NO_DEVICES,))
        rows = parse_query_gpu(output) if rc == 0 else []
        if not rows:
            return Inventory(source=self.name)
        processes = self._processes()
        profiles = self._profile_tables() if any(r.mig_capable for r in rows) else {}
        listed = {g.uuid: g for g in self._gpu_list()} if any(r.mig_enabled for r in rows) else {}
        caps = self._caps()

        gpus: list[Gpu] = []
        devices: list[Device] = []
        for row in sorted(rows, key=lambda r: r.index):
            gpu_profiles = profiles.get(row.index, ())
            instances = self._instances(row, listed.get(row.uuid), gpu_profiles, processes)
            gpu = Gpu(
                index=row.index,
                uuid=row.uuid,
                name=row.name,
                memory_mib=row.memory_total_mib,
                compute_capability=caps.get(row.uuid) or compute_capability_from_name(row.name),
                mig_enabled=row.mig_enabled,
                total_slices=total_slices_of(gpu_profiles),
                utilization_gpu=row.utilization_gpu,
                memory_used_mib=(
                    None
                    if row.memory_free_mib is None
                    else row.memory_total_mib - row.memory_free_mib
                ),
                driver_version=row.driver_version,
                processes=merge_processes(
                    processes.get(row.uuid, ()), *(inst.processes for inst in instances)
                ),
            )
            gpus.append(gpu)
            devices.extend(devices_for_gpu(gpu, instances))
        return Inventory(gpus=tuple(gpus), devices=tuple(devices), source=self.name)

    # -- commands ------------------------------------------------------------------

    def _call(self, argv: Sequence[str], *, allow_rc: tuple[int, ...] = ()) -> tuple[int, str]:
        command = [self._executable, *argv[1:]]
        rc, output = self._run(command)
        if rc == 0 or rc in allow_rc:
            return rc, output
        if rc in _RC_UNAVAILABLE:
            raise GpuUnavailableError(
                f"nvidia-smi cannot be used: {_RC_UNAVAILABLE[rc]} (exit {rc})",
                hint="Load the NVIDIA driver, or set gpu.inventory to none or file:PATH.",
            )
        first = output.strip().splitlines()[0] if output.strip() else "no output"
        raise GpuQueryError(
            f"`{' '.join(command)}` failed (exit {rc}): {first}",
            hint="Run the command by hand to see the driver's complaint.",
        )

    def _processes(self) -> dict[str, list[GpuProcess]]:
        _, output = self._call(_QUERY_APPS)
        by_uuid: dict[str, list[GpuProcess]] = {}
        for uuid, proc in parse_compute_apps(output):
            by_uuid.setdefault(uuid, []).append(proc)
        return by_uuid

    def _profile_tables(self) -> dict[int, tuple[MigProfile, ...]]:
        if self._profiles is None:
            _, output = self._call(_LIST_PROFILES)
            self._profiles = parse_instance_profiles(output)
        return self._profiles

    def _gpu_list(self) -> list[ListedGpu]:
        _, output = self._call(_LIST_GPUS)
        return parse_gpu_list(output)

    def _caps(self) -> dict[str, tuple[int, int]]:
        if self._compute_caps is None:
            rc, output = self._run([self._executable, *_QUERY_CC[1:]])
            # An old driver rejects the field (exit 2, "not a valid field"): fall back
            # to the product name rather than failing the inventory.
            self._compute_caps = parse_compute_caps(output) if rc == 0 else {}
        return self._compute_caps

    # -- assembly --------------------------------------------------------------------

    def _instances(
        self,
        row: SmiGpuRow,
        listed: ListedGpu | None,
        profiles: tuple[MigProfile, ...],
        processes: dict[str, list[GpuProcess]],
    ) -> tuple[MigInstance, ...]:
        if not row.mig_enabled:
            return ()
        if listed is None:
            raise GpuQueryError(
                f"GPU {row.index} ({row.uuid}) has MIG enabled but `nvidia-smi -L` does not "
                "list it",
                hint="Run `nvidia-smi -L` by hand.",
            )
        by_name = {p.name: p for p in profiles}
        instances: list[MigInstance] = []
        for profile, uuid in listed.mig_devices:
            ci_slices, gi_name = _split_profile(profile)
            gi_profile = by_name.get(gi_name)
            if gi_profile is None:
                raise GpuQueryError(
                    f"MIG device {uuid} on GPU {row.index} has profile {profile!r}, which "
                    "`nvidia-smi mig -lgip` does not list",
                    hint="Compare `nvidia-smi -L` with `nvidia-smi mig -lgip`.",
                )
            instances.append(
                MigInstance(
                    uuid=uuid,
                    profile=profile,
                    slices=ci_slices or gi_profile.slices,
                    memory_mib=gi_profile.memory_mib,
                    processes=merge_processes(processes.get(uuid, ())),
                )
            )
        return tuple(instances)
