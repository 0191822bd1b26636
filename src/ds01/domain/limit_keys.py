"""The limit keys of the resource policy: their kinds, which may be unlimited, and the
built-in defaults. Shared by the policy rules (:mod:`ds01.domain.policy`) and the resolved
values (:mod:`ds01.domain.resolved_limits`)."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

__all__ = [
    "BUILTIN_DEFAULTS",
    "KEY_KINDS",
    "LIMIT_KEYS",
    "NON_NULLABLE_KEYS",
    "NO_GROUP",
    "SOURCE_BUILTIN",
    "SOURCE_DEFAULT",
    "SOURCE_USER",
    "Layer",
    "LimitValue",
]

#: A limit value: ``None`` is unlimited; sizes are bytes, durations whole seconds,
#: GPU equivalents exact fractions, MIG profiles a tuple of profile names.
LimitValue = int | float | bool | Fraction | tuple[str, ...] | None
#: The keys one layer names (dotted for nested blocks), and only those.
Layer = Mapping[str, LimitValue]

SOURCE_BUILTIN = "builtin"
SOURCE_DEFAULT = "default"
SOURCE_USER = "user"
#: The group of everybody when the policy defines no groups at all.
NO_GROUP = "default"

#: Every limit key and how its value is written for people.
KEY_KINDS: Mapping[str, str] = {
    "max_cpus": "cpus",
    "memory": "size",
    "memory_swap": "size",
    "shm_size": "size",
    "pids_limit": "count",
    "max_containers": "count",
    "max_gpu_equivalents": "equivalents",
    "max_gpus_per_container": "count",
    "allow_full_gpu": "bool",
    "allowed_mig_profiles": "profiles",
    "priority": "count",
    "idle_timeout": "duration",
    "max_runtime": "duration",
    "gpu_hold_after_stop": "duration",
    "container_hold_after_stop": "duration",
    "aggregate.cpus": "cpus",
    "aggregate.memory": "size",
    "aggregate.pids": "count",
    "idle.gpu_threshold": "percent",
    "idle.cpu_threshold": "percent",
    "idle.network_threshold": "size",
    "idle.window": "duration",
}
LIMIT_KEYS: tuple[str, ...] = tuple(KEY_KINDS)
#: Keys that are settings rather than limits: ``null`` (unlimited) means nothing for them.
NON_NULLABLE_KEYS: frozenset[str] = frozenset(
    {
        "shm_size",
        "allow_full_gpu",
        "priority",
        "idle.gpu_threshold",
        "idle.cpu_threshold",
        "idle.network_threshold",
        "idle.window",
    }
)

#: What applies when neither the file's ``defaults`` nor any other layer names a key (and
#: everything, when there is no policy file). Chosen for a shared server: one container
#: cannot take the machine, a GPU is not held for hours by nobody. ``memory_swap`` is
#: absent on purpose: unset, it equals ``memory`` (no swap), see :func:`resolve`.
BUILTIN_DEFAULTS: Mapping[str, LimitValue] = {
    "max_cpus": 8.0,
    "memory": 32 * 1024**3,
    "shm_size": 8 * 1024**3,
    "pids_limit": 4096,
    "max_containers": 3,
    "max_gpu_equivalents": Fraction(1),
    "max_gpus_per_container": 1,
    "allow_full_gpu": True,
    "allowed_mig_profiles": None,
    "priority": 10,
    "idle_timeout": 3600,
    "max_runtime": 24 * 3600,
    "gpu_hold_after_stop": 15 * 60,
    "container_hold_after_stop": 3600,
    "aggregate.cpus": None,
    "aggregate.memory": None,
    "aggregate.pids": None,
    "idle.gpu_threshold": 5.0,
    "idle.cpu_threshold": 2.0,
    "idle.network_threshold": 1024**2,
    "idle.window": 300,
}
