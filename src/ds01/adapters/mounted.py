"""What a running container really has mounted, seen from the host through /proc.

Docker is given a path for each bind mount and resolves it itself, as root, when the
container starts; a directory replaced by a symlink in between would be followed. The
only trustworthy answer to "what did it mount?" is the mount itself: the directory at
``/proc/<init pid>/root/<target>`` is the one in the container's mount namespace, and its
``(st_dev, st_ino)`` can be compared with the directory that was checked.

The process is pinned first: ``/proc/<pid>`` is opened as a directory, and everything
after goes through that descriptor, so a pid reused after the container died answers
``ESRCH`` instead of speaking for another process (the caller re-inspects the container
after opening, to be sure the pid was its init when the descriptor was taken).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

__all__ = ["ProcMountProbe", "identity_at", "open_process", "wait_until_readable"]

#: How long runc's init may take to exec the keep-alive before the look is refused.
_EXEC_WAIT_S = 5.0


@contextlib.contextmanager
def open_process(pid: int) -> Iterator[int]:
    """A descriptor of ``/proc/<pid>`` (raises ``OSError`` when it cannot be had)."""
    fd = os.open(f"/proc/{int(pid)}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def identity_at(proc_fd: int, target: str) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of what is mounted at ``target`` in that process's root.

    ``root`` is the kernel's link to the process's root (followed: that is the point);
    below it no symlink is followed, because an absolute link inside the container would
    be resolved against the host's root from here, not the container's.
    """
    fd = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc_fd)
    try:
        for part in (p for p in target.split("/") if p):
            # O_PATH|O_NOFOLLOW opens a symlink as itself: it then fails the comparison.
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return st.st_dev, st.st_ino


def wait_until_readable(proc_fd: int) -> None:
    """``docker start`` returns once runc was told to start, and the pid Docker reports
    is runc's own init until it has exec'd the container's first program; runc keeps
    itself undumpable meanwhile, so ``root`` answers EACCES for a moment. The mounts are
    final by then; only the look is deferred (bounded: after that it counts as a refusal)."""
    deadline = time.monotonic() + _EXEC_WAIT_S
    while True:
        try:
            os.close(os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc_fd))
            return
        except PermissionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class ProcMountProbe:
    """The :class:`ds01.ports.MountProbe` of this host: ``/proc/<pid>/root``."""

    def open_process(self, pid: int) -> contextlib.AbstractContextManager[int]:
        return open_process(pid)

    def wait_until_readable(self, handle: int) -> None:
        wait_until_readable(handle)

    def identity_at(self, handle: int, target: str) -> tuple[int, int]:
        return identity_at(handle, target)
