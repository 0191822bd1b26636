"""Old key names of the resource-limits file, and the shaping of its raw YAML.

Before the file is validated against the schema in :mod:`ds01.config.limits`, the raw
mapping is normalised here: keys the existing DS01 used are renamed to the current ones
(each rename is reported as a deprecation warning at its line), keys that no longer
mean anything are reported as problems, old units are converted (hours, systemd CPU
percentages), and empty sections become empty mappings. :class:`_Reader` carries the
state of one load, so that problems and warnings still point at the line and the key
as the file spells them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ds01.config.yaml_source import KeyPath, LineMap, Problem, dotted, line_for
from ds01.domain.units import format_duration

#: The nested sections of a limits layer (``defaults``, ``groups.*``, ``users.*``).
_BLOCKS = ("aggregate", "idle")

# --------------------------------------------------------------------------- legacy names

#: Old key -> canonical key, in every limits section (defaults, groups.*, users.*).
_RENAMED = {
    "max_mig_instances": "max_gpu_equivalents",
    "max_gpus_per_user": "max_gpu_equivalents",
    "max_gpu_slots": "max_gpu_equivalents",
    "max_mig_per_container": "max_gpus_per_container",
    "max_gpu_slots_per_container": "max_gpus_per_container",
    "cpus": "max_cpus",
    "max_containers_per_user": "max_containers",
    "policies": "idle",
}
#: Old hour-valued keys (``idle_timeout_h: 0.5``) -> duration keys.
_HOURS = {
    "idle_timeout_h": "idle_timeout",
    "max_runtime_h": "max_runtime",
    "gpu_hold_after_stop_h": "gpu_hold_after_stop",
    "container_hold_after_stop_h": "container_hold_after_stop",
}
_BLOCK_RENAMED = {
    "aggregate": {"memory_max": "memory", "tasks_max": "pids", "cpu_quota": "cpus"},
    "idle": {
        "gpu_idle_threshold": "gpu_threshold",
        "cpu_idle_threshold": "cpu_threshold",
        "network_idle_threshold": "network_threshold",
    },
}
_DROPPED = {
    "idle_detection_window": "counted checks of the old hourly cron; give idle.window as a "
    "duration such as 10m",
    "memory_high": "is not supported; aggregate.memory is the hard limit",
    "gpu_limit": "is not supported in aggregate; use max_gpu_equivalents",
    "max_tasks": "is not supported; use aggregate.pids for all of a user's containers",
}


@dataclass
class _Reader:
    """State of one load: where we are, what we found."""

    filename: str
    lines: LineMap
    problems: list[Problem]
    warnings: list[str]
    renamed: dict[KeyPath, KeyPath]

    def where(self, path: KeyPath) -> int | None:
        return line_for(self.lines, path)

    def problem(self, path: KeyPath, message: str, *, key: str | None = None) -> None:
        shown = key if key is not None else dotted(self.shown(path))
        self.problems.append(Problem(self.filename, self.where(path), shown, message))

    def shown(self, path: KeyPath) -> KeyPath:
        """The path as the file spells it (old names where a legacy key was renamed)."""
        for cut in range(len(path), 0, -1):
            old = self.renamed.get(path[:cut])
            if old is not None:
                return (*old, *path[cut:])
        return path

    def rename(self, section: dict[str, Any], at: KeyPath, old: str, new: str, value: Any) -> None:
        if new in section:
            self.problem((*at, old), f"both {old} (old name) and {new} are set; keep only {new}")
            del section[old]
            return
        del section[old]
        section[new] = value
        for path, line in list(self.lines.items()):
            if path[: len(at) + 1] == (*at, old):
                self.lines[(*at, new, *path[len(at) + 1 :])] = line
        self.renamed[(*at, new)] = (*at, old)
        self.warnings.append(
            f"{self.filename}:{self.where((*at, old))}: {dotted(self.shown((*at, old)))} is a "
            f"deprecated name; use {new}"
            + (f" ({new}: {value})" if isinstance(value, str) and old.endswith("_h") else "")
        )


def _migrate_section(reader: _Reader, section: dict[str, Any], at: KeyPath) -> None:
    for old in list(section):
        value = section[old]
        if old in _DROPPED:
            reader.problem((*at, old), f"{old} {_DROPPED[old]}")
            del section[old]
        elif old in _RENAMED:
            reader.rename(section, at, old, _RENAMED[old], value)
        elif old in _HOURS:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                reader.problem((*at, old), f"expected a number of hours, got {value!r}")
                del section[old]
                continue
            converted = None if value is None else format_duration(round(value * 3600))
            reader.rename(section, at, old, _HOURS[old], converted)
    for block, renames in _BLOCK_RENAMED.items():
        inner = section.get(block)
        if not isinstance(inner, dict):
            continue
        for old in list(inner):
            if old in _DROPPED:
                reader.problem((*at, block, old), f"{old} {_DROPPED[old]}")
                del inner[old]
            elif old in renames:
                value = inner[old]
                if old == "cpu_quota":
                    value = _cpu_quota_to_cpus(reader, (*at, block, old), value)
                reader.rename(inner, (*at, block), old, renames[old], value)


def _cpu_quota_to_cpus(reader: _Reader, path: KeyPath, value: Any) -> Any:
    """systemd's ``CPUQuota`` percentage (``9600%``, 100% = one CPU) as a CPU count."""
    text = str(value).strip().rstrip("%") if value is not None else None
    try:
        return None if text is None else float(text) / 100
    except ValueError:
        reader.problem(path, f"expected a percentage such as 800%, got {value!r}")
        return value


# --------------------------------------------------------------------------- before validation


def _normalise(reader: _Reader, data: Any) -> dict[str, Any]:
    """Empty sections become empty; names become strings; legacy keys are renamed."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        reader.problem((), "the file must be a mapping with defaults, groups and users", key="")
        return {}
    if "user_overrides" in data:
        reader.rename(data, (), "user_overrides", "users", data["user_overrides"])
    for name in ("defaults", "groups", "users"):
        if data.get(name) is None and name in data:
            data[name] = {}
    if isinstance(data.get("defaults"), dict):
        _normalise_layer(reader, data["defaults"], ("defaults",))
    for kind in ("groups", "users"):
        section = data.get(kind)
        if not isinstance(section, dict):
            continue
        data[kind] = {str(k): ({} if v is None else v) for k, v in section.items()}
        for name, entry in data[kind].items():
            if isinstance(entry, dict):
                _normalise_layer(reader, entry, (kind, name))
    return data


def _normalise_layer(reader: _Reader, layer: dict[str, Any], at: KeyPath) -> None:
    _migrate_section(reader, layer, at)
    for block in _BLOCKS:
        if block in layer and layer[block] is None:
            layer[block] = {}
    members = layer.get("members", ())
    if members is None:
        layer["members"] = []
    elif isinstance(members, list):
        layer["members"] = [
            str(m) if isinstance(m, int) and not isinstance(m, bool) else m for m in members
        ]
