"""How far the local Docker engine can raise a container's ulimits.

runc sets a container's rlimits from a process of the engine. With ``CAP_SYS_RESOURCE``
(dockerd as root, the normal case) it may set any value, ``memlock: -1`` (unlimited,
what AIME uses for pinned memory) included; without it (rootless or nested Docker) it
may not go above the engine's own hard limits, and every container start asking for
more fails ("error setting rlimit type 8: operation not permitted"), i.e. exit 1 for
every ``container create``. Open files are capped by the kernel (``fs.nr_open``) for
everyone.

:func:`engine_ceilings` reads that from ``/proc`` for the engine on this machine so the
configuration can be refused when it is loaded (exit 2, naming the key) instead. It
answers ``None`` whenever it cannot tell (a remote ``DOCKER_HOST``, no pid file,
``/proc`` hidden): then nothing is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["UNLIMITED", "engine_ceilings"]

UNLIMITED = -1
_CAP_SYS_RESOURCE = 24
_LOCAL_HOSTS = ("", "unix:///var/run/docker.sock", "unix:///run/docker.sock")
_PID_FILES = (Path("/var/run/docker.pid"), Path("/run/docker.pid"))
# /proc/PID/limits row titles -> Docker's ulimit names.
_ROWS = {
    "Max cpu time": "cpu",
    "Max file size": "fsize",
    "Max data size": "data",
    "Max stack size": "stack",
    "Max core file size": "core",
    "Max resident set": "rss",
    "Max processes": "nproc",
    "Max open files": "nofile",
    "Max locked memory": "memlock",
    "Max file locks": "locks",
    "Max pending signals": "sigpending",
    "Max msgqueue size": "msgqueue",
    "Max nice priority": "nice",
    "Max realtime priority": "rtprio",
    "Max realtime timeout": "rttime",
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _engine_pid() -> int | None:
    for pid_file in _PID_FILES:
        text = _read(pid_file)
        if text is not None and text.strip().isdigit():
            return int(text.strip())
    return None


def _has_cap_sys_resource(status: str) -> bool:
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return True  # unknown: assume the normal case


def _hard_limits(limits: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in limits.splitlines()[1:]:
        for title, name in _ROWS.items():
            if line.startswith(title):
                fields = line[len(title) :].split()
                if len(fields) >= 2:
                    hard = fields[1]
                    out[name] = UNLIMITED if hard == "unlimited" else int(hard)
    return out


def engine_ceilings(environ: Mapping[str, str]) -> dict[str, int] | None:
    """The largest value the local engine can set per ulimit (-1: no cap); None: unknown."""
    if environ.get("DOCKER_HOST", "") not in _LOCAL_HOSTS:
        return None
    ceilings: dict[str, int] = {}
    pid = _engine_pid()
    if pid is not None:
        status = _read(Path(f"/proc/{pid}/status"))
        limits = _read(Path(f"/proc/{pid}/limits"))
        if status is not None and limits is not None and not _has_cap_sys_resource(status):
            try:
                ceilings.update(_hard_limits(limits))
            except ValueError:
                return None
    nr_open = _read(Path("/proc/sys/fs/nr_open"))
    if nr_open is not None and nr_open.strip().isdigit():
        cap = int(nr_open.strip())
        current = ceilings.get("nofile", UNLIMITED)
        ceilings["nofile"] = cap if current == UNLIMITED else min(cap, current)
    return ceilings or None
