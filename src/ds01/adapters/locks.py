"""The host-wide allocation lock.

One ``flock`` on a file in the state directory serialises every decide-and-create on the
host. It is never skipped: a request that cannot get the lock in time fails with exit 4
(the existing DS01 carried on unlocked after 5 s, and double-booked GPUs). The kernel
drops the lock when its holder dies, so a crashed ``ds01`` never blocks the others.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ds01.errors import ConfigError, NoCapacityError

__all__ = ["host_lock"]

_POLL_S = 0.05


@contextmanager
def host_lock(path: Path, *, timeout: float, what: str = "GPU allocation") -> Iterator[float]:
    """Hold the exclusive lock at ``path``; yields the seconds spent waiting for it."""
    old_umask = os.umask(0o002)  # every DS01 user must be able to open the lock file
    try:
        path.parent.mkdir(mode=0o2775, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
    except OSError as exc:
        raise ConfigError(
            f"Cannot open the lock file {path}: {exc.strerror}.",
            hint="The state directory must be writable by every DS01 user (see README).",
        ) from exc
    finally:
        os.umask(old_umask)
    start = time.monotonic()
    deadline = start + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                raise NoCapacityError(
                    f"The host is busy: the {what} lock was not free within {timeout:g} s.",
                    hint="Try again in a moment; nothing was created.",
                    code="lock_timeout",
                )
            time.sleep(_POLL_S)
        yield time.monotonic() - start
    finally:
        os.close(fd)  # closing the descriptor releases the flock
