"""A user's parent cgroup: where the combined limit of all their containers is set.

Docker puts each container under ``--cgroup-parent``. Under the **systemd** driver that
is a slice (``ds01-<group>-<user>.slice``), and the aggregate limit is a drop-in with
``CPUQuota``, ``MemoryMax`` and ``TasksMax``. Under **cgroupfs** it is a path
(``/ds01/<group>/<user>``) in each controller hierarchy; DS01 creates those directories
and writes the limits *before* the first container is created (runc would otherwise
create them itself, without limits).

Writing either needs root: DS01 does it when it runs privileged (sudo, the stage-2
daemon, or ``ds01 admin apply-limits`` from a timer). An unprivileged create whose
parent is not prepared says so instead of pretending.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ds01.domain.resolved_limits import AggregateLimits
from ds01.errors import DS01Error

__all__ = ["AggregateResult", "CgroupManager"]

DROPIN_NAME = "50-ds01-aggregate.conf"


@dataclass(frozen=True)
class AggregateResult:
    """What happened to a user's parent cgroup."""

    applied: bool
    where: str
    reason: str = ""


Runner = Callable[[list[str]], int]


def _default_runner(argv: list[str]) -> int:
    return subprocess.run(argv, check=False, capture_output=True).returncode


class CgroupManager:
    """Prepares users' parent cgroups under the engine's cgroup driver."""

    def __init__(
        self,
        driver: str,
        *,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        systemd_dir: Path = Path("/etc/systemd/system"),
        run: Runner = _default_runner,
        privileged: bool | None = None,
    ) -> None:
        self.driver = driver
        self.cgroup_root = cgroup_root
        self.systemd_dir = systemd_dir
        self._run = run
        self.privileged = os.geteuid() == 0 if privileged is None else privileged

    @property
    def version(self) -> int:
        """2 on the unified hierarchy, 1 otherwise (hybrid hosts count as 1)."""
        return 2 if (self.cgroup_root / "cgroup.controllers").exists() else 1

    def apply(self, parent: str, slice_name: str, limits: AggregateLimits) -> AggregateResult:
        """Create the user's parent cgroup (if needed) and set ``limits`` on it."""
        if self.driver == "systemd":
            return self._apply_systemd(slice_name, limits)
        return self._apply_cgroupfs(parent, limits)

    # -- systemd ----------------------------------------------------------------------

    def _apply_systemd(self, slice_name: str, limits: AggregateLimits) -> AggregateResult:
        dropin_dir = self.systemd_dir / f"{slice_name}.d"
        dropin = dropin_dir / DROPIN_NAME
        content = render_dropin(limits.systemd_properties())
        if dropin.exists() and dropin.read_text() == content:
            return AggregateResult(True, str(dropin), "already in place")
        if not self.privileged:
            return AggregateResult(False, str(dropin), "needs root (ds01 admin apply-limits)")
        try:
            dropin_dir.mkdir(parents=True, exist_ok=True)
            tmp = dropin.with_suffix(".tmp")
            tmp.write_text(content)
            tmp.replace(dropin)
        except OSError as exc:
            raise DS01Error(f"Cannot write the slice drop-in {dropin}: {exc.strerror}.") from exc
        if self._run(["systemctl", "daemon-reload"]) != 0:
            raise DS01Error(
                "systemctl daemon-reload failed after writing the aggregate limits.",
                hint=f"Check {dropin} and 'journalctl -u systemd'.",
            )
        # Apply to a running slice at once; a slice not yet started picks the drop-in up.
        self._run(
            [
                "systemctl",
                "set-property",
                "--runtime",
                slice_name,
                *(f"{k}={v}" for k, v in limits.systemd_properties().items()),
            ]
        )
        return AggregateResult(True, str(dropin))

    # -- cgroupfs ---------------------------------------------------------------------

    def _apply_cgroupfs(self, parent: str, limits: AggregateLimits) -> AggregateResult:
        rel = parent.strip("/")
        if self.version == 2:
            files = {f"{rel}/{name}": value for name, value in limits.cgroup_v2_files().items()}
        else:
            files = {}
            for key, value in limits.cgroup_v1_files().items():
                controller, _, name = key.partition("/")
                files[f"{controller}/{rel}/{name}"] = value
        if self._matches(files):
            return AggregateResult(True, str(self.cgroup_root / rel), "already in place")
        if not self.privileged:
            return AggregateResult(
                False, str(self.cgroup_root / rel), "needs root (ds01 admin apply-limits)"
            )
        if self.version == 2:
            self._enable_v2_controllers(rel)
        for path_text, value in files.items():
            path = self.cgroup_root / path_text
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(value)
            except OSError as exc:
                raise DS01Error(
                    f"Cannot set the aggregate limit {path} = {value}: {exc.strerror}.",
                    hint="Check that the cgroup controller is mounted and writable by root.",
                ) from exc
        return AggregateResult(True, str(self.cgroup_root / rel))

    def _matches(self, files: Mapping[str, str]) -> bool:
        for path_text, wanted in files.items():
            path = self.cgroup_root / path_text
            try:
                current = path.read_text().strip()
            except OSError:
                return False
            if not _same_value(current, wanted):
                return False
        return True

    def _enable_v2_controllers(self, rel: str) -> None:
        """Under v2 a child can limit only controllers its parents delegate."""
        parts = rel.split("/")
        for depth in range(len(parts)):
            directory = self.cgroup_root.joinpath(*parts[:depth])
            directory.mkdir(parents=True, exist_ok=True)
            control = directory / "cgroup.subtree_control"
            try:
                control.write_text("+cpu +memory +pids")
            except OSError as exc:
                raise DS01Error(
                    f"Cannot delegate controllers in {control}: {exc.strerror}."
                ) from exc


def render_dropin(properties: Mapping[str, str]) -> str:
    lines = ["# Written by DS01 from the resource-limits policy (aggregate block).", "[Slice]"]
    lines += [f"{key}={value}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def _same_value(current: str, wanted: str) -> bool:
    """cgroup files read back normalised (v1 shows 'unlimited' as a huge number)."""
    if current == wanted:
        return True
    unlimited = {"-1", "max", "9223372036854771712"}
    return current in unlimited and wanted in unlimited
