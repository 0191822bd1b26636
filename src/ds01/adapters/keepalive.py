"""The installed keep-alive executable (:mod:`ds01.domain.keepalive`), found and vetted.

Docker resolves the host path of the keep-alive mount itself, as root, when a container
starts, and the file it finds is run at once. So the path is handed over only when no
one but root (or, in a single-user installation, the user running DS01) could replace
anything on it: every component, from ``/`` to the file, owned by root or by us, not
writable by group or others, and no symlink.
"""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path

import ds01
from ds01.domain.keepalive import MACHINES
from ds01.errors import ErrorCode, UsageError

__all__ = ["keepalive_path", "vetted"]


def keepalive_path(machine: str | None = None) -> Path | None:
    """The vetted host path of the keep-alive for this machine, or ``None`` when DS01
    ships none for it (the container then keeps the image's ``sleep``). A shipped file
    that fails the checks is an installation error (exit 2)."""
    machine = machine or platform.machine()
    if machine not in MACHINES:
        return None
    return vetted(Path(ds01.__file__).parent / "data" / f"keepalive-{machine}")


def vetted(shipped: Path) -> Path:
    """The real path of ``shipped`` if nobody but root or us can replace anything on it,
    and everyone may execute it; else exit 2 (``keepalive_untrusted``)."""
    path = Path(os.path.realpath(shipped))
    trusted = {0, os.geteuid()}
    current = Path("/")
    problem = None
    for component in [*reversed(path.parents), path]:
        current = component
        try:
            st = os.lstat(component)
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror})"
            break
        if stat.S_ISLNK(st.st_mode):
            problem = "is a symbolic link"
            break
        if st.st_uid not in trusted:
            problem = f"belongs to uid {st.st_uid}"
            break
        # A root-owned sticky directory (/tmp) is safe above us: others may add entries
        # but cannot rename or replace ours, and the next component is checked in turn.
        sticky_root_dir = component != path and st.st_uid == 0 and st.st_mode & stat.S_ISVTX
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_root_dir:
            problem = "is writable by others"
            break
    else:
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o555 != 0o555:
            problem = "is not a regular file everyone may execute"
    if problem is not None:
        raise UsageError(
            f"DS01's keep-alive program {path} cannot be trusted: {current} {problem}.",
            hint="Reinstall DS01 as root (scripts/install) so that its files belong to root "
            "and only root can change them.",
            code=ErrorCode.KEEPALIVE_UNTRUSTED,
        )
    return path
