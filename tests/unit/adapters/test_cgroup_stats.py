"""Reading container counters from files laid out like /sys/fs/cgroup and /proc.

Every layout here is a real directory tree in a temporary directory: cgroup v1 (with
``cpuacct`` or the combined ``cpu,cpuacct`` mount), v2, the cgroupfs and the systemd
drivers, DS01's own parents, and the fallback through ``/proc/<pid>/cgroup``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ds01.adapters.cgroup_stats import (
    CgroupStats,
    CounterTarget,
    expand_slice,
    parse_net_dev,
)
from ds01.domain.idle import sample_from_counters

CID = "8f614d33ab8bbc4eeb78b0831d7fe2d0deba6801cf317fcafb635c7a66147a90"
AT = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)

# The shape of a real /proc/<pid>/net/dev of a bridge-networked container (columns
# squeezed to fit the line length), with the kernel's glued "eth1:1234" form that
# appears when a counter fills its column.
_HEAD = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|"
    "bytes    packets errs drop fifo colls carrier compressed\n"
)
_ZEROS = " 0 0 0 0 0 0"
NET_DEV = (
    _HEAD
    + f"    lo: 5000 50{_ZEROS} 5000 50{_ZEROS}\n"
    + f"  eth0: 90210 71{_ZEROS} 12345 40{_ZEROS}\n"
    + f"eth1:12345678901 99{_ZEROS} 777 3{_ZEROS}\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def v1_tree(root: Path, mount: str = "cpuacct") -> tuple[Path, Path]:
    cgroup = root / "sys" / "fs" / "cgroup"
    (cgroup / mount).mkdir(parents=True)
    proc = root / "proc"
    proc.mkdir()
    return cgroup, proc


def v2_tree(root: Path) -> tuple[Path, Path]:
    cgroup = root / "sys" / "fs" / "cgroup"
    write(cgroup / "cgroup.controllers", "cpuset cpu io memory pids\n")
    proc = root / "proc"
    proc.mkdir()
    return cgroup, proc


# --------------------------------------------------------------------------- pure parts


def test_expand_slice_nests_by_dashes() -> None:
    assert expand_slice("system.slice") == "system.slice"
    assert (
        expand_slice("ds01-student-alice.slice")
        == "ds01.slice/ds01-student.slice/ds01-student-alice.slice"
    )
    assert expand_slice("-.slice") == ""


def test_parse_net_dev_per_interface_without_loopback() -> None:
    assert parse_net_dev(NET_DEV) == {
        "eth0:rx": 90210,
        "eth0:tx": 12345,
        "eth1:rx": 12345678901,
        "eth1:tx": 777,
    }


def test_parse_net_dev_rejects_a_foreign_format() -> None:
    with pytest.raises(ValueError, match="unexpected line"):
        parse_net_dev("header\nheader\neth0 1 2 3\n")


# --------------------------------------------------------------------------- cgroup v1


def test_v1_cgroupfs_default_parent(tmp_path: Path) -> None:
    cgroup, proc = v1_tree(tmp_path)
    write(cgroup / "cpuacct" / "docker" / CID / "cpuacct.usage", "25807810\n")
    write(proc / "4242" / "net" / "dev", NET_DEV)
    stats = CgroupStats(cgroup, proc)

    read = stats.read(CounterTarget(CID, "", pid=4242), AT)

    assert stats.version == 1
    assert read.cgroup_dir == cgroup / "cpuacct" / "docker" / CID
    assert read.reading.cpu_usage_ns == 25807810
    assert read.reading.network_map() == parse_net_dev(NET_DEV)
    assert read.reading.at == AT
    assert read.problems == ()


def test_v1_ds01_parent_under_the_combined_cpu_cpuacct_mount(tmp_path: Path) -> None:
    cgroup, proc = v1_tree(tmp_path, mount="cpu,cpuacct")
    write(cgroup / "cpu,cpuacct" / "ds01" / "student" / "alice" / CID / "cpuacct.usage", "7\n")
    stats = CgroupStats(cgroup, proc)

    read = stats.read(CounterTarget(CID, "/ds01/student/alice", pid=None), AT)

    assert read.reading.cpu_usage_ns == 7
    assert read.reading.network is None  # no process: no network namespace to read


def test_v1_systemd_driver_scope_in_nested_slices(tmp_path: Path) -> None:
    cgroup, proc = v1_tree(tmp_path)
    scope = (
        cgroup
        / "cpuacct"
        / "ds01.slice"
        / "ds01-student.slice"
        / "ds01-student-alice.slice"
        / f"docker-{CID}.scope"
    )
    write(scope / "cpuacct.usage", "123456789\n")
    stats = CgroupStats(cgroup, proc)

    read = stats.read(CounterTarget(CID, "ds01-student-alice.slice"), AT)

    assert read.cgroup_dir == scope
    assert read.reading.cpu_usage_ns == 123456789


def test_v1_systemd_default_parent(tmp_path: Path) -> None:
    cgroup, proc = v1_tree(tmp_path)
    write(cgroup / "cpuacct" / "system.slice" / f"docker-{CID}.scope" / "cpuacct.usage", "5\n")
    assert CgroupStats(cgroup, proc).read(CounterTarget(CID), AT).reading.cpu_usage_ns == 5


# --------------------------------------------------------------------------- cgroup v2


def test_v2_cgroupfs_reads_usage_usec_as_nanoseconds(tmp_path: Path) -> None:
    cgroup, proc = v2_tree(tmp_path)
    write(
        cgroup / "docker" / CID / "cpu.stat",
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n",
    )
    stats = CgroupStats(cgroup, proc)

    read = stats.read(CounterTarget(CID), AT)

    assert stats.version == 2
    assert read.reading.cpu_usage_ns == 2_500_000


def test_v2_systemd_ds01_slice(tmp_path: Path) -> None:
    cgroup, proc = v2_tree(tmp_path)
    scope = cgroup / "ds01.slice" / "ds01-g.slice" / "ds01-g-u.slice" / f"docker-{CID}.scope"
    write(scope / "cpu.stat", "usage_usec 42\n")
    read = CgroupStats(cgroup, proc).read(CounterTarget(CID, "ds01-g-u.slice"), AT)
    assert read.reading.cpu_usage_ns == 42_000


def test_v2_cpu_stat_without_usage_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    cgroup, proc = v2_tree(tmp_path)
    write(cgroup / "docker" / CID / "cpu.stat", "nr_periods 0\n")
    read = CgroupStats(cgroup, proc).read(CounterTarget(CID, pid=1), AT)
    assert read.reading.cpu_usage_ns is None
    assert any("usage_usec" in p for p in read.problems)


# --------------------------------------------------------------------------- fallbacks


def test_unknown_layout_found_through_proc_pid_cgroup(tmp_path: Path) -> None:
    # Docker itself in a nested cgroup: the path is only known from the process.
    cgroup, proc = v1_tree(tmp_path)
    write(cgroup / "cpuacct" / "outer" / "docker" / CID / "cpuacct.usage", "99\n")
    write(
        proc / "77" / "cgroup",
        f"9:name=systemd:/outer/docker/{CID}\n2:cpuacct:/outer/docker/{CID}\n"
        f"1:cpu:/outer/docker/{CID}\n0::/outer/docker/{CID}\n",
    )
    read = CgroupStats(cgroup, proc).read(CounterTarget(CID, pid=77), AT)
    assert read.reading.cpu_usage_ns == 99


def test_v2_fallback_uses_the_unified_line(tmp_path: Path) -> None:
    cgroup, proc = v2_tree(tmp_path)
    write(cgroup / "nested" / CID / "cpu.stat", "usage_usec 3\n")
    write(proc / "78" / "cgroup", f"0::/nested/{CID}\n")
    read = CgroupStats(cgroup, proc).read(CounterTarget(CID, pid=78), AT)
    assert read.reading.cpu_usage_ns == 3000


def test_container_gone_between_list_and_read_gives_no_counters(tmp_path: Path) -> None:
    cgroup, proc = v1_tree(tmp_path)
    read = CgroupStats(cgroup, proc).read(CounterTarget(CID, pid=None), AT)
    assert read.reading.cpu_usage_ns is None
    assert read.reading.network is None
    assert read.problems == ()


def test_running_container_without_a_cgroup_is_reported(tmp_path: Path) -> None:
    cgroup, proc = v1_tree(tmp_path)
    write(proc / "5" / "net" / "dev", NET_DEV)
    read = CgroupStats(cgroup, proc).read(CounterTarget(CID, "/ds01/x/y", pid=5), AT)
    assert read.reading.cpu_usage_ns is None
    assert read.reading.network is not None  # the network is still read
    assert any("no cgroup directory" in p for p in read.problems)


def test_host_network_has_no_per_container_counters(tmp_path: Path) -> None:
    cgroup, proc = v1_tree(tmp_path)
    write(cgroup / "cpuacct" / "docker" / CID / "cpuacct.usage", "1\n")
    write(proc / "6" / "net" / "dev", NET_DEV)
    read = CgroupStats(cgroup, proc).read(CounterTarget(CID, pid=6, own_network=False), AT)
    assert read.reading.network is None
    assert read.reading.cpu_usage_ns == 1


def test_malformed_counter_is_a_problem(tmp_path: Path) -> None:
    cgroup, proc = v1_tree(tmp_path)
    write(cgroup / "cpuacct" / "docker" / CID / "cpuacct.usage", "lots\n")
    read = CgroupStats(cgroup, proc).read(CounterTarget(CID, pid=None), AT)
    assert read.reading.cpu_usage_ns is None
    assert any("CPU time unreadable" in p for p in read.problems)


def test_no_cpu_accounting_mounted(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    proc = tmp_path / "proc"
    stats = CgroupStats(cgroup, proc)
    assert stats.cpu_hierarchy is None
    read = stats.read(CounterTarget(CID, pid=3), AT)
    assert any("no CPU accounting" in p for p in read.problems)


# --------------------------------------------------------------------------- end to end


def test_two_readings_make_a_per_interval_sample(tmp_path: Path) -> None:
    """Files rewritten between two reads, as the kernel does: CPU % and bytes per interval."""
    cgroup, proc = v1_tree(tmp_path)
    usage = write(cgroup / "cpuacct" / "docker" / CID / "cpuacct.usage", "1000000000\n")
    net = write(proc / "9" / "net" / "dev", NET_DEV)
    stats = CgroupStats(cgroup, proc)
    target = CounterTarget(CID, pid=9)
    first = stats.read(target, AT).reading

    usage.write_text("31000000000\n")  # 30 s of CPU time in 60 s: half a core
    net.write_text(NET_DEV.replace("90210", "92258"))  # 2048 more bytes received
    second = stats.read(target, AT + timedelta(seconds=60)).reading

    sample = sample_from_counters(first, second, started_at=AT, gpu_util_percent=None)
    assert sample.cpu_percent == pytest.approx(50.0)
    assert sample.network_bytes == 2048
