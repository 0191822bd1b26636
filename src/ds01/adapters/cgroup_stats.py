"""Activity counters of many containers, read straight from cgroup and proc files.

Enforcement needs, once per pass and for every GPU container, two cumulative counters:
the CPU time of the container's cgroup and the bytes its network interfaces moved. One
``docker stats`` call costs about a second per container (the engine waits for a second
sample), so 200 containers would take minutes; reading the same numbers from the kernel
costs two small file reads per container.

**CPU time** comes from the container's own cgroup directory:

* cgroup v1: ``cpuacct.usage`` (nanoseconds) in the ``cpuacct`` hierarchy (mounted as
  ``cpuacct`` or as the combined ``cpu,cpuacct``);
* cgroup v2 (a ``cgroup.controllers`` file at the root): ``usage_usec`` in ``cpu.stat``.

The directory is derived from the container id and its ``HostConfig.CgroupParent``:

* cgroupfs driver: ``<parent>/<id>``; an empty parent means Docker's ``/docker``;
* systemd driver: the parent is a slice (``ds01-student-alice.slice``, default
  ``system.slice``) that systemd nests by its dashes
  (``ds01.slice/ds01-student.slice/ds01-student-alice.slice``), and the container is the
  scope ``docker-<id>.scope`` inside it.

When none of those exists (Docker itself runs in a nested cgroup, a rootless engine) the
path is read from ``/proc/<pid>/cgroup`` of the container's main process instead.

**Network bytes** come from ``/proc/<pid>/net/dev`` of the container's main process: under
bridge networking that file shows the container's own network namespace. One counter per
interface and direction (``eth0:rx``, ``eth0:tx``); loopback is left out, because traffic
a container sends to itself (a notebook talking to its kernel) is not outside use. A
container on the host network has no counters of its own (``None``).

A file that does not exist means "no counter" (the container stopped between listing and
reading): ``None``, not an error. Anything else unexpected (unreadable, malformed) also
gives ``None`` and is described in :attr:`CounterRead.problems`, for the pass report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

from ds01.domain.idle import CounterReading

__all__ = ["CgroupStats", "CounterRead", "CounterTarget", "expand_slice", "parse_net_dev"]

#: Names the v1 cpuacct hierarchy is mounted under, most common first.
_V1_CPUACCT_MOUNTS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")
_DEFAULT_CGROUPFS_PARENT = "/docker"
_DEFAULT_SYSTEMD_PARENT = "system.slice"
_LOOPBACK = "lo"


def expand_slice(name: str) -> str:
    """The cgroup path of a systemd slice: every ``-`` in its name is one level.

    ``ds01-student-alice.slice`` -> ``ds01.slice/ds01-student.slice/ds01-student-alice.slice``;
    ``system.slice`` -> ``system.slice``; the root slice ``-.slice`` -> ``""``.
    """
    stem = name.removesuffix(".slice")
    if stem in ("", "-"):
        return ""
    parts = stem.split("-")
    return "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def parse_net_dev(text: str) -> dict[str, int]:
    """Byte counters per interface from ``/proc/net/dev`` text (loopback left out).

    Keys are ``<iface>:rx`` and ``<iface>:tx``. Raises ``ValueError`` on a line that is
    not in the kernel's format.
    """
    counters: dict[str, int] = {}
    for line in text.splitlines()[2:]:  # two header lines
        if not line.strip():
            continue
        # "  eth0: 123 ..." and, for large values, "eth0:123 ..." (no space after ':').
        iface, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            raise ValueError(f"unexpected line in net/dev: {line.strip()!r}")
        name = iface.strip()
        if name == _LOOPBACK:
            continue
        counters[f"{name}:rx"] = int(fields[0])
        counters[f"{name}:tx"] = int(fields[8])
    return counters


@dataclass(frozen=True)
class CounterTarget:
    """Where one container's counters are: its id, cgroup parent and main process.

    ``cgroup_parent`` is ``HostConfig.CgroupParent`` as ``docker inspect`` shows it (empty
    for Docker's default). ``pid`` is ``State.Pid`` (``None`` when not running).
    ``own_network`` is False for ``--network host``: host-wide counters say nothing about
    one container.
    """

    container_id: str
    cgroup_parent: str = ""
    pid: int | None = None
    own_network: bool = True


@dataclass(frozen=True)
class CounterRead:
    """One container's reading, with what went wrong reading it (for the pass report)."""

    reading: CounterReading
    cgroup_dir: Path | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)


class CgroupStats:
    """Reads CPU and network counters of containers from ``/sys/fs/cgroup`` and ``/proc``.

    Both roots are parameters so tests lay the files out in a temporary directory. The
    cgroup version and the v1 mount name are probed once per instance.
    """

    def __init__(
        self, cgroup_root: Path = Path("/sys/fs/cgroup"), proc_root: Path = Path("/proc")
    ) -> None:
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root

    @cached_property
    def version(self) -> int:
        """2 on the unified hierarchy, else 1 (a hybrid host keeps cpuacct on v1)."""
        return 2 if (self.cgroup_root / "cgroup.controllers").exists() else 1

    @cached_property
    def cpu_hierarchy(self) -> Path | None:
        """The directory CPU accounting lives under; ``None`` when it is not mounted."""
        if self.version == 2:
            return self.cgroup_root
        for name in _V1_CPUACCT_MOUNTS:
            candidate = self.cgroup_root / name
            if candidate.is_dir():
                return candidate
        return None

    # -- where ----------------------------------------------------------------------

    @staticmethod
    def candidate_paths(container_id: str, cgroup_parent: str) -> list[str]:
        """Relative cgroup paths the container may have, most likely first."""
        parent = cgroup_parent.strip()
        scope = f"docker-{container_id}.scope"
        if parent.endswith(".slice"):
            return [_join(expand_slice(parent), scope), _join(parent, container_id)]
        if parent:
            return [_join(parent, container_id)]
        return [
            _join(_DEFAULT_CGROUPFS_PARENT, container_id),
            _join(expand_slice(_DEFAULT_SYSTEMD_PARENT), scope),
        ]

    def cgroup_dir(self, target: CounterTarget) -> Path | None:
        """The container's cgroup directory in the CPU hierarchy, if it exists."""
        base = self.cpu_hierarchy
        if base is None:
            return None
        for relative in self.candidate_paths(target.container_id, target.cgroup_parent):
            path = base / relative
            if path.is_dir():
                return path
        from_proc = self._path_from_proc(target.pid)
        if from_proc is not None:
            path = base / from_proc.lstrip("/")
            if path.is_dir():
                return path
        return None

    def _path_from_proc(self, pid: int | None) -> str | None:
        """The CPU cgroup path ``/proc/<pid>/cgroup`` names (relative to the mount)."""
        if pid is None:
            return None
        try:
            text = (self.proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            return None  # the process is gone: the caller falls back to "no counter"
        for line in text.splitlines():
            _hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            names = controllers.split(",") if controllers else []
            if self.version == 2 and controllers == "":
                return path
            if self.version == 1 and "cpuacct" in names:
                return path
        return None

    # -- reading --------------------------------------------------------------------

    def cpu_usage_ns(self, cgroup_dir: Path) -> int:
        """Cumulative CPU time of the cgroup in ``cgroup_dir``, in nanoseconds.

        Raises ``OSError`` when the file cannot be read and ``ValueError`` when its
        content is not what the kernel writes.
        """
        if self.version == 2:
            for line in (cgroup_dir / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) * 1000
            raise ValueError(f"no usage_usec in {cgroup_dir / 'cpu.stat'}")
        return int((cgroup_dir / "cpuacct.usage").read_text().strip())

    def network_bytes(self, pid: int) -> dict[str, int]:
        """Byte counters of the network namespace of process ``pid`` (see module doc)."""
        return parse_net_dev((self.proc_root / str(pid) / "net" / "dev").read_text())

    def read(self, target: CounterTarget, at: datetime) -> CounterRead:
        """Both counters of one container, taken at ``at``; missing ones are ``None``."""
        problems: list[str] = []
        cpu: int | None = None
        directory = self.cgroup_dir(target)
        if directory is not None:
            try:
                cpu = self.cpu_usage_ns(directory)
            except FileNotFoundError:
                cpu = None  # the container stopped since it was listed
            except (OSError, ValueError) as exc:
                problems.append(f"CPU time unreadable in {directory}: {exc}")
        elif target.pid is not None and self.cpu_hierarchy is None:
            problems.append(f"no CPU accounting hierarchy under {self.cgroup_root}")
        elif target.pid is not None:
            problems.append(
                f"no cgroup directory found for container {target.container_id[:12]} "
                f"(parent {target.cgroup_parent or 'default'!r}) under {self.cpu_hierarchy}"
            )
        network: dict[str, int] | None = None
        if target.own_network and target.pid is not None:
            try:
                network = self.network_bytes(target.pid)
            except FileNotFoundError:
                network = None
            except (OSError, ValueError) as exc:
                problems.append(f"network counters unreadable for pid {target.pid}: {exc}")
        reading = CounterReading.of(at, cpu, network)
        return CounterRead(reading, directory, tuple(problems))


def _join(parent: str, child: str) -> str:
    return "/".join(part for part in (parent.strip("/"), child) if part)
