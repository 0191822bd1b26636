"""After a start: is what Docker mounted the very directory DS01 checked?

Docker resolves each bind source path when the container starts, following symlinks, so
any check of the path beforehand leaves a window in which a user could swap a directory
of theirs for a link to someone else's (or to ``/``). This closes it from the other end:
once the container runs (its main process is DS01's keep-alive from the host, so nothing
of the user's has run yet), the mount itself is looked at through
``/proc/<init pid>/root/<target>`` and its ``(st_dev, st_ino)`` compared with the checked
directory's. A mismatch is refused (exit 2, ``mount_changed``); a container DS01 cannot
look into is not handed over either (exit 1, ``mount_unverified``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ds01.domain.containers import KEEPALIVE_TARGET, ContainerState, Mount
from ds01.errors import EngineError, ErrorCode, UsageError
from ds01.services.container.mounts import CheckedMount, unchanged_stat

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.domain.engine_types import ContainerDetails
    from ds01.ports import ContainerEngine, MountProbe

__all__ = ["checked_before_start", "keepalive_source", "may_verify", "verify_mounted"]

_WHAT = {"/workspace": "workspace", "/data": "data", "/models": "models"}


def may_verify(owner_uid: int) -> bool:
    """Can this process look into a container of ``owner_uid``? The kernel lets only root
    and the owner (the container's processes run as the owner) open ``/proc/<pid>/root``.
    A queue grant for another user is therefore left waiting for a process that can: the
    owner's next command or root's enforcement pass (every minute)."""
    return os.geteuid() in (0, owner_uid)


def checked_before_start(actor: Actor, details: ContainerDetails) -> tuple[CheckedMount, ...]:
    """For (re)starting an existing container: each bind source, walked now without
    following a link with the owner's rights, and the identity it has now. A link found
    now is refused at once (``mount_changed``); the identities are what
    :func:`verify_mounted` then expects to find mounted."""
    out: list[CheckedMount] = []
    for raw in details.mounts:
        source, target = raw.get("Source"), raw.get("Destination")
        if raw.get("Type") != "bind" or not source or not target:
            continue  # Docker volumes are Docker's own directories, not a user's path
        if target == KEEPALIVE_TARGET:
            continue  # DS01's own file, vetted by the caller (it has run by the time of a check)
        st = unchanged_stat(source, actor)
        mount = Mount(source, target, read_only=not raw.get("RW", True))
        out.append(CheckedMount(mount, st.st_dev, st.st_ino))
    return tuple(out)


def verify_mounted(
    engine: ContainerEngine,
    probe: MountProbe,
    tag: str,
    checked: Sequence[CheckedMount],
    *,
    what_next: str,
) -> None:
    """Compare what is mounted in the running container ``tag`` with ``checked``.

    Raises ``mount_changed`` (exit 2) on any difference, ``mount_unverified`` (exit 1)
    when the container cannot be looked into; the caller then removes or stops it
    (``what_next`` says which, for the message).
    """
    if not checked:
        return
    details = engine.inspect(tag)
    pid = details.pid
    if details.info.state is not ContainerState.RUNNING or not pid:
        raise _unverified(tag, "it stopped right after starting", what_next)
    try:
        with probe.open_process(pid) as proc_fd:
            # The descriptor is taken; only if the container still runs with this very
            # init does /proc/<pid> speak for it (not for a process that reused the pid).
            again = engine.inspect(tag)
            if (
                again.pid != pid
                or again.started_at != details.started_at
                or again.info.state is not ContainerState.RUNNING
            ):
                raise _unverified(tag, "it restarted while being checked", what_next)
            probe.wait_until_readable(proc_fd)
            seen = {c.mount.target: _seen(probe, proc_fd, c.mount.target) for c in checked}
    except OSError as exc:
        raise _unverified(tag, f"/proc/{pid} cannot be opened ({exc.strerror})", what_next) from exc
    recorded = {m.get("Destination"): m for m in again.mounts}
    for check in checked:
        mount = check.mount
        record = recorded.get(mount.target) or {}
        same_dir = seen[mount.target] == (check.dev, check.ino)
        same_record = record.get("Source") == mount.source and not (
            mount.read_only and record.get("RW")
        )
        if not (same_dir and same_record):
            what = _WHAT.get(mount.target, f"{mount.target} mount's")
            raise UsageError(
                f"What Docker mounted at {mount.target} is not the {what} directory DS01 "
                f"checked ({mount.source}): it was replaced, by a link or another "
                f"directory, while the container was starting. The container was "
                f"{what_next}; nothing of yours ran in it.",
                hint="Keep the directory in place (do not swap it for a link) and run the "
                "command again.",
                code=ErrorCode.MOUNT_CHANGED,
                details={"target": mount.target, "source": mount.source},
            )


def _seen(probe: MountProbe, proc_fd: int, target: str) -> tuple[int, int] | None:
    try:
        return probe.identity_at(proc_fd, target)
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.EACCES, errno.EPERM):
            raise  # the process, not the mount: cannot verify at all
        return None  # missing or a link inside the container: not what was checked


def _unverified(tag: str, why: str, what_next: str) -> EngineError:
    return EngineError(
        f"DS01 could not check what Docker mounted into {tag}: {why}. The container was "
        f"{what_next}.",
        hint="Run the command again. DS01 must run on the same host (and PID namespace) as "
        "the Docker engine, as the container's owner or as root.",
        code=ErrorCode.MOUNT_UNVERIFIED,
    )


def keepalive_source(details: ContainerDetails) -> str | None:
    """The host path the container's keep-alive is mounted from (``None``: it has none)."""
    for raw in details.mounts:
        if raw.get("Destination") == KEEPALIVE_TARGET:
            return str(raw.get("Source") or "")
    return None
