"""The limits that apply to one user, resolved: values, how to show them, what Docker and
the cgroups get, and the rules that read them (GPU quota, container count)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from ds01.domain.containers import ContainerInfo
from ds01.domain.devices import format_equivalents
from ds01.domain.gpu_request import GpuQuota
from ds01.domain.limit_keys import KEY_KINDS, LIMIT_KEYS, LimitValue
from ds01.domain.slices import cgroup_parent, slice_chain
from ds01.domain.units import format_cpus, format_duration, format_size
from ds01.errors import ErrorCode, RefusedError

__all__ = [
    "AggregateLimits",
    "IdlePolicy",
    "LimitItem",
    "ResolvedLimits",
    "check_container_count",
    "display_value",
]


@dataclass(frozen=True)
class AggregateLimits:
    """Limits on all of one user's containers together (their parent cgroup).

    Each ``None`` is unlimited. The ``*_properties`` / ``*_files`` methods give exactly
    what to write, so applying them is a loop over a dict.
    """

    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None

    @property
    def is_unlimited(self) -> bool:
        return self.cpus is None and self.memory is None and self.pids is None

    def systemd_properties(self) -> dict[str, str]:
        """``[Slice]`` settings for a drop-in: ``CPUQuota``, ``MemoryMax``, ``TasksMax``.

        Unlimited values are written explicitly (empty ``CPUQuota``, ``infinity``) so a
        drop-in rewritten after the policy relaxed also lifts the old limit.
        """
        return {
            "CPUQuota": "" if self.cpus is None else f"{max(1, round(self.cpus * 100))}%",
            "MemoryMax": "infinity" if self.memory is None else str(self.memory),
            "TasksMax": "infinity" if self.pids is None else str(self.pids),
        }

    def cgroup_v1_files(self, cfs_period_us: int = 100_000) -> dict[str, str]:
        """Controller files under cgroup v1 (path relative to the cgroup's directories)."""
        quota = -1 if self.cpus is None else max(1000, round(self.cpus * cfs_period_us))
        return {
            "cpu/cpu.cfs_period_us": str(cfs_period_us),
            "cpu/cpu.cfs_quota_us": str(quota),
            "memory/memory.limit_in_bytes": "-1" if self.memory is None else str(self.memory),
            "pids/pids.max": "max" if self.pids is None else str(self.pids),
        }

    def cgroup_v2_files(self, cfs_period_us: int = 100_000) -> dict[str, str]:
        """Interface files under cgroup v2 (in the cgroup's single directory)."""
        quota = "max" if self.cpus is None else str(max(1000, round(self.cpus * cfs_period_us)))
        return {
            "cpu.max": f"{quota} {cfs_period_us}",
            "memory.max": "max" if self.memory is None else str(self.memory),
            "pids.max": "max" if self.pids is None else str(self.pids),
        }


@dataclass(frozen=True)
class IdlePolicy:
    """When a container holding GPUs counts as idle (read by lifecycle enforcement).

    Idle means: over the last ``window_s`` seconds, GPU utilisation of its devices below
    ``gpu_threshold`` % AND CPU below ``cpu_threshold`` % (100 = one core busy) AND
    network traffic (received + sent) below ``network_threshold_bytes`` per minute.
    """

    gpu_threshold: float
    cpu_threshold: float
    network_threshold_bytes: int
    window_s: int


def display_value(key: str, value: LimitValue) -> str:
    """A value as a person reads it: ``32g``, ``24h``, ``unlimited``, ``any``."""
    if value is None:
        return "any" if key == "allowed_mig_profiles" else "unlimited"
    kind = KEY_KINDS.get(key, "")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(value) if value else "none"
    if isinstance(value, Fraction):
        return f"{format_equivalents(value):g}"
    if kind == "size" and isinstance(value, int):
        return format_size(value)
    if kind == "duration" and isinstance(value, int):
        return format_duration(value)
    if kind == "cpus":
        return format_cpus(float(value))
    if kind == "percent":
        return f"{float(value):g}%"
    return str(value)


@dataclass(frozen=True)
class LimitItem:
    """One resolved limit: its value (a ``Fraction`` for GPU equivalents, a tuple for MIG
    profiles, ``None`` for unlimited), as a person reads it, and its source (``builtin``,
    ``default``, ``group:NAME``, ``user``)."""

    value: LimitValue
    display: str
    source: str


@dataclass(frozen=True)
class ResolvedLimits:
    """Every limit that applies to one user, with the source of each value.

    Sizes are bytes, durations seconds, ``None`` unlimited (for ``allowed_mig_profiles``:
    any profile; for the hold keys: kept indefinitely). ``sources`` maps every key of
    :data:`LIMIT_KEYS` to ``builtin``, ``default``, ``group:<name>`` or ``user``.
    """

    user: str
    group: str
    group_via: str
    max_cpus: float | None
    memory: int | None
    memory_swap: int | None
    shm_size: int
    pids_limit: int | None
    max_containers: int | None
    max_gpu_equivalents: Fraction | None
    max_gpus_per_container: int | None
    allow_full_gpu: bool
    allowed_mig_profiles: tuple[str, ...] | None
    priority: int
    idle_timeout_s: int | None
    max_runtime_s: int | None
    gpu_hold_after_stop_s: int | None
    container_hold_after_stop_s: int | None
    aggregate: AggregateLimits
    idle: IdlePolicy
    values: Mapping[str, LimitValue]
    sources: Mapping[str, str]

    def docker_create_kwargs(self) -> dict[str, int]:
        """Keyword arguments for the Docker SDK's ``containers.create``.

        ``nano_cpus``, ``mem_limit``, ``memswap_limit``, ``shm_size``, ``pids_limit``;
        unlimited ones are omitted (``shm_size`` never is: it cannot be unlimited).
        ``memswap_limit`` comes only with ``mem_limit`` (Docker refuses it alone): equal
        to memory when ``memory_swap`` is unset (no swap), ``-1`` when it is ``null``
        (unlimited swap).
        """
        out: dict[str, int] = {}
        if self.max_cpus is not None:
            out["nano_cpus"] = round(self.max_cpus * 1_000_000_000)
        if self.memory is not None:
            out["mem_limit"] = self.memory
            out["memswap_limit"] = -1 if self.memory_swap is None else self.memory_swap
        out["shm_size"] = self.shm_size
        if self.pids_limit is not None:
            out["pids_limit"] = self.pids_limit
        return out

    def docker_cli_args(self, cgroup_parent: str | None = None) -> list[str]:
        """The same limits as ``docker create`` flags (``ds01 limits --docker-args``)."""
        kwargs = self.docker_create_kwargs()
        args: list[str] = []
        if self.max_cpus is not None:
            args.append(f"--cpus={format_cpus(self.max_cpus)}")
        if "mem_limit" in kwargs:
            args.append(f"--memory={format_size(kwargs['mem_limit'])}")
            swap = kwargs["memswap_limit"]
            args.append(f"--memory-swap={'-1' if swap < 0 else format_size(swap)}")
        if "shm_size" in kwargs:
            args.append(f"--shm-size={format_size(kwargs['shm_size'])}")
        if "pids_limit" in kwargs:
            args.append(f"--pids-limit={kwargs['pids_limit']}")
        if cgroup_parent is not None:
            args.append(f"--cgroup-parent={cgroup_parent}")
        return args

    def cgroup_parent(self, driver: str) -> str:
        """Docker's cgroup parent for this user under ``driver`` (``systemd``/``cgroupfs``)."""
        return cgroup_parent(self.group, self.user, driver)

    def slice_chain(self) -> tuple[str, str, str]:
        """``ds01.slice`` → ``ds01-<group>.slice`` → ``ds01-<group>-<user>.slice``."""
        return slice_chain(self.group, self.user)

    def display(self, key: str) -> str:
        """One value as a person reads it (``32g``, ``24h``, ``unlimited``)."""
        return display_value(key, self.values[key])

    def gpu_quota(self) -> GpuQuota:
        """The GPU part of these limits, as the allocator reads it."""
        return GpuQuota(
            max_gpu_equivalents=self.max_gpu_equivalents,
            max_gpus_per_container=self.max_gpus_per_container,
            allow_full_gpu=self.allow_full_gpu,
            allowed_mig_profiles=self.allowed_mig_profiles,
            priority=self.priority,
        )

    def limit_items(self) -> dict[str, LimitItem]:
        """Every limit in :data:`LIMIT_KEYS` order: value, how it reads, where it came
        from (the ``limits`` object of ``ds01 limits --json``)."""
        return {
            key: LimitItem(self.values[key], self.display(key), self.sources[key])
            for key in LIMIT_KEYS
        }


def check_container_count(
    resolved: ResolvedLimits, existing: Sequence[ContainerInfo], *, adding: int = 1
) -> None:
    """``max_containers`` counts containers in every state; exit 3 naming what to remove."""
    cap = resolved.max_containers
    if cap is None or len(existing) + adding <= cap:
        return
    names = ", ".join(f"{c.display_name} ({c.state.value})" for c in existing)
    raise RefusedError(
        f"You have {len(existing)} containers and may have at most {cap} "
        f"(group {resolved.group}): {names}.",
        hint="Remove one you no longer need: 'ds01 container remove NAME' "
        "(stopped ones count too).",
        code=ErrorCode.CONTAINER_LIMIT,
        details={"held": len(existing), "allowed": cap, "containers": [c.tag for c in existing]},
    )
