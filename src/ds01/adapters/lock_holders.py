"""Who holds a DS01 lock, and ending a holder that keeps it (root only).

The kernel says who holds an ``flock``: ``/proc/locks`` lists each lock with the pid that
took it and the locked inode (``major:minor:inode``, hex device numbers), and
``/proc/<pid>/fdinfo/<fd>`` lists, for each open file, the locks held through that very
open file — so it also shows the children that inherited the descriptor (``flock FILE
sleep 1d`` locks in ``flock`` and keeps it held in ``sleep``). A waiter that gives up
names the holder from the first; root, ending a holder, ends every process that shares
the locked descriptor, each through a pidfd after checking its start time, so a pid the
kernel recycled in between is never hit.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
from dataclasses import dataclass, field
from pathlib import Path

from ds01.serialize import JSON_SKIP

__all__ = ["Holder", "end_holder", "holders_of"]

_PROC = Path("/proc")


@dataclass(frozen=True)
class Holder:
    """A process holding a lock: pid, effective uid, start time (clock ticks), command,
    and the lock as the kernel names it (``major:minor:inode``).

    ``to_json`` of it (event details, the lock-timeout error) is ``pid``, ``uid``,
    ``user`` and ``command``; ``user`` is the uid's name, looked up once, when the
    holder is found.
    """

    pid: int
    uid: int | None
    user: str = field(init=False, compare=False)
    start: int | None = field(metadata=JSON_SKIP)
    command: str
    lock_id: str = field(default="", metadata=JSON_SKIP)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user", _user_name(self.uid))

    @property
    def key(self) -> tuple[int, int | None]:
        return (self.pid, self.start)

    def describe(self) -> str:
        shown = f" ({self.command})" if self.command else ""
        return f"{self.user}, pid {self.pid}{shown}"


def _user_name(uid: int | None) -> str:
    if uid is None:
        return "an unknown user"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _lock_lines(text: str, dev: int, ino: int) -> list[tuple[int, str]]:
    """``(pid, lock id)`` of each holder (not waiter: ``->``) of a lock on ``dev:ino`` in
    ``/proc/locks`` format. Overlay file systems report the real file's device: then the
    inode decides."""
    exact: list[tuple[int, str]] = []
    same_ino: list[tuple[int, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if key[2] != ino or pid <= 0:
            continue
        same_ino.append((pid, fields[5]))
        if key[:2] == (os.major(dev), os.minor(dev)):
            exact.append((pid, fields[5]))
    return sorted(set(exact or same_ino))


def _start_ticks(pid: int) -> int | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
        return int(raw.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _uid(pid: int) -> int | None:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[2])  # effective: the rights it acts with
    except (OSError, ValueError, IndexError):
        pass
    return None


def _command(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    text = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    # A user picks this text: keep it one short printable line in messages and events.
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 120 else text[:117] + "..."


def _holder(pid: int, lock_id: str = "") -> Holder:
    return Holder(pid, _uid(pid), _start_ticks(pid), _command(pid), lock_id)


def holders_of(dev: int, ino: int) -> list[Holder]:
    """The processes holding an ``flock`` on the file ``(dev, ino)`` now."""
    try:
        text = (_PROC / "locks").read_text()
    except OSError:
        return []
    return [_holder(pid, lock_id) for pid, lock_id in _lock_lines(text, dev, ino)]


def _sharers(fields: str) -> list[int]:
    """Every process whose open files carry the lock ``fields`` (``major:minor:inode``)
    in their fdinfo: the taker and whoever inherited its descriptor (root only)."""
    pids: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for info in (entry / "fdinfo").iterdir():
                with contextlib.suppress(OSError):
                    text = info.read_text()
                    if any(
                        line.startswith("lock:") and fields in line.split()
                        for line in text.splitlines()
                    ):
                        pids.append(int(entry.name))
                        break
    return pids


def _signal(pid: int, start: int | None) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False  # gone already
    try:
        if start is None or _start_ticks(pid) != start:
            return False  # not the process that was seen holding the lock
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def end_holder(holder: Holder) -> list[Holder]:
    """Kill ``holder`` and every other non-root process sharing its locked descriptor;
    returns those ended. Root's processes are never ended (root's own commands)."""
    if holder.uid in (None, 0):
        return []
    ended: list[Holder] = []
    if _signal(holder.pid, holder.start):
        ended.append(holder)
    for pid in _sharers(holder.lock_id) if holder.lock_id else []:
        if pid == holder.pid:
            continue
        other = _holder(pid)
        if other.uid not in (None, 0) and _signal(pid, other.start):
            ended.append(other)
    return ended
