"""A user's parent cgroup: the aggregate limit as cgroup files or a systemd drop-in.

Real files in a temporary directory laid out like /sys/fs/cgroup and /etc/systemd/system.
systemctl itself cannot run here (no systemd in the build machine), so the systemd case
records the commands it would run instead.
"""

from __future__ import annotations

from pathlib import Path

from ds01.adapters.cgroups import CgroupManager
from ds01.domain.policy import AggregateLimits

LIMITS = AggregateLimits(cpus=1.5, memory=192 * 1024**2, pids=300)


def v1_root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    for controller in ("cpu", "memory", "pids"):
        (root / controller).mkdir(parents=True)
    return root


def test_cgroupfs_v1_writes_each_controller_once(tmp_path: Path) -> None:
    root = v1_root(tmp_path)
    manager = CgroupManager("cgroupfs", cgroup_root=root, privileged=True)
    result = manager.apply("/ds01/students/alice", "unused.slice", LIMITS)
    assert result.applied and result.reason == ""
    parent = "ds01/students/alice"
    assert (root / "memory" / parent / "memory.limit_in_bytes").read_text() == str(192 * 1024**2)
    assert (root / "cpu" / parent / "cpu.cfs_quota_us").read_text() == "150000"
    assert (root / "cpu" / parent / "cpu.cfs_period_us").read_text() == "100000"
    assert (root / "pids" / parent / "pids.max").read_text() == "300"
    again = manager.apply("/ds01/students/alice", "unused.slice", LIMITS)
    assert again.applied and again.reason == "already in place"


def test_cgroupfs_v2_delegates_controllers_and_writes_the_unified_files(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    manager = CgroupManager("cgroupfs", cgroup_root=root, privileged=True)
    assert manager.version == 2
    assert manager.apply("/ds01/g/u", "unused.slice", LIMITS).applied
    assert (root / "ds01/g/u/cpu.max").read_text() == "150000 100000"
    assert (root / "ds01/g/u/memory.max").read_text() == str(192 * 1024**2)
    assert (root / "ds01/g/u/pids.max").read_text() == "300"
    for directory in (root, root / "ds01", root / "ds01/g"):
        assert (directory / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"


def test_unlimited_lifts_an_old_limit(tmp_path: Path) -> None:
    root = v1_root(tmp_path)
    manager = CgroupManager("cgroupfs", cgroup_root=root, privileged=True)
    manager.apply("/ds01/g/u", "unused.slice", LIMITS)
    assert manager.apply("/ds01/g/u", "unused.slice", AggregateLimits()).applied
    assert (root / "memory/ds01/g/u/memory.limit_in_bytes").read_text() == "-1"
    assert (root / "cpu/ds01/g/u/cpu.cfs_quota_us").read_text() == "-1"
    assert (root / "pids/ds01/g/u/pids.max").read_text() == "max"


def test_without_root_nothing_is_written_and_the_reason_says_so(tmp_path: Path) -> None:
    root = v1_root(tmp_path)
    manager = CgroupManager("cgroupfs", cgroup_root=root, privileged=False)
    result = manager.apply("/ds01/g/u", "unused.slice", LIMITS)
    assert not result.applied and "root" in result.reason
    assert not (root / "memory/ds01").exists()


def test_systemd_writes_a_dropin_and_reloads(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    units = tmp_path / "systemd"
    manager = CgroupManager("systemd", systemd_dir=units, run=run, privileged=True)
    result = manager.apply("unused", "ds01-students-alice.slice", LIMITS)
    dropin = units / "ds01-students-alice.slice.d" / "50-ds01-aggregate.conf"
    assert result.applied and result.where == str(dropin)
    assert dropin.read_text() == (
        "# Written by DS01 from the resource-limits policy (aggregate block).\n"
        "[Slice]\n"
        "CPUQuota=150%\n"
        "MemoryMax=201326592\n"
        "TasksMax=300\n"
    )
    assert calls[0] == ["systemctl", "daemon-reload"]
    assert calls[1] == [
        "systemctl",
        "set-property",
        "--runtime",
        "ds01-students-alice.slice",
        "CPUQuota=150%",
        "MemoryMax=201326592",
        "TasksMax=300",
    ]
    calls.clear()
    assert manager.apply("unused", "ds01-students-alice.slice", LIMITS).reason == "already in place"
    assert calls == []  # nothing changed: no reload
