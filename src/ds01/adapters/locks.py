"""The host-wide locks (allocation, enforcement), safe against the users they serialise.

One ``flock`` on a file in ``state_dir/locks/`` serialises every decide-and-create on the
host. It is never skipped: a request that cannot get the lock in time fails with exit 4
(the existing DS01 carried on unlocked after 5 s, and double-booked GPUs). The kernel
drops the lock when its holder dies, so a crashed ``ds01`` never blocks the others.

In stage 1 every DS01 user runs these commands in their own processes, so the lock files
must be usable by them and yet out of their reach:

* ``locks/`` is **root's** (``root:root 0755``) and each lock file is ``root:root 0644``.
  ``flock(2)`` needs only a descriptor, not write access, so users open the file
  read-only; nobody but root can delete, rename, replace or symlink it, which is what
  let a user give one GPU to two creates (a deleted lock file means two lock files).
* Every open walks ``state_dir -> locks -> file`` with ``O_NOFOLLOW`` and checks what it
  opened (a directory / a regular file, owned by root or by the state directory's
  owner on a single-user install, writable by nobody else). Root never creates a file
  through a link a user planted. A layout that fails the check is refused (exit 2) for
  users; root moves it aside and makes it anew (:func:`lay_out_locks`, which the
  installer and root's commands run).
* A user can still hold the lock (the file is readable, and nothing in stage 1 stops a
  process from ``flock``-ing what it can open), so holding it is bounded instead
  (:mod:`ds01.adapters.lock_holders`): a waiter that gives up names the holder (user,
  pid, command) in its exit-4 message, and **root** looks at the lock in every
  enforcement pass (:func:`watch_lock`, every minute, without waiting): a non-root
  process found holding it in passes at least the *lease* apart (default 60 s; DS01's
  own holders need a few seconds) is ended. In stage 2 only ds01d takes the lock and
  users cannot open the directory at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ds01.adapters.lock_holders import Holder, end_holder, holders_of
from ds01.errors import ConfigError, ErrorCode, NoCapacityError
from ds01.serialize import to_json

__all__ = [
    "ALLOCATION_LOCK",
    "DEFAULT_LEASE_S",
    "ENFORCE_LOCK",
    "HELD_RECORD",
    "LOCK_DIR",
    "host_lock",
    "lay_out_locks",
    "watch_lock",
]

LOCK_DIR = "locks"
ALLOCATION_LOCK = "allocation.lock"
ENFORCE_LOCK = "enforce.lock"
_LOCK_NAMES = (ALLOCATION_LOCK, ENFORCE_LOCK)
#: How long root waits before it ends a non-root process that holds a lock.
DEFAULT_LEASE_S = 60.0
#: Root's own record of who it last saw holding each lock (in root's ``locks/``).
HELD_RECORD = "held.json"
_POLL_S = 0.05
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the lock's place must not hang the opener.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_HINT = "An administrator repairs it with: sudo scripts/install --state-only"

log = logging.getLogger(__name__)


def _trusted_uids(state_fd: int) -> set[int]:
    """Root, and the state directory's owner (a single-user install is all theirs)."""
    return {0, os.fstat(state_fd).st_uid}


def _problem(st: os.stat_result, trusted: set[int], *, directory: bool) -> str | None:
    """Why this inode cannot serve as the lock directory / a lock file (``None``: it can)."""
    if directory and not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if not directory and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid not in trusted:
        return f"belongs to uid {st.st_uid}"
    if st.st_mode & 0o022:
        return f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _open_state_dir(state_dir: Path) -> int:
    # The state directory comes from the trusted configuration; its own path may be a
    # link an admin made (realpath), everything below it is walked without following.
    try:
        return os.open(os.path.realpath(state_dir), _DIR_FLAGS)
    except OSError as exc:
        raise ConfigError(
            f"Cannot open the state directory {state_dir}: {exc.strerror}.",
            hint="Set 'state_dir' in the DS01 configuration to an existing directory.",
        ) from exc


def _may_lay_out(state_fd: int) -> bool:
    return os.geteuid() in _trusted_uids(state_fd)


def lay_out_locks(state_dir: Path) -> list[str]:
    """Create or repair ``locks/`` and its lock files (root, or a single-user owner).

    Anything in their place that fails the checks (a link, a FIFO, a user's file, a
    group-writable directory from older versions) is moved aside, never followed or
    written through. Returns what changed, in words.
    """
    state_fd = _open_state_dir(state_dir)
    try:
        return _lay_out_at(state_fd, Path(os.path.realpath(state_dir)))
    finally:
        os.close(state_fd)


def _lay_out_at(state_fd: int, shown: Path) -> list[str]:
    if not _may_lay_out(state_fd):
        raise ConfigError(
            f"Only root (or the owner of {shown}) lays out its lock directory.", hint=_HINT
        )
    trusted = _trusted_uids(state_fd)
    done: list[str] = []
    dir_fd = _open_or_make_dir(state_fd, shown, trusted, done)
    try:
        for name in _LOCK_NAMES:
            _open_or_make_file(dir_fd, name, shown / LOCK_DIR, trusted, done, keep=False)
    finally:
        os.close(dir_fd)
    return done


def _move_aside(parent_fd: int, name: str, shown: Path, why: str, done: list[str]) -> None:
    aside = f".moved-{name}-{secrets.token_hex(4)}"
    os.rename(name, aside, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    done.append(f"{shown / name} {why}: moved aside to {aside}")
    log.warning("%s %s: moved aside to %s", shown / name, why, aside)


def _open_or_make_dir(state_fd: int, shown: Path, trusted: set[int], done: list[str]) -> int:
    for _ in range(3):
        try:
            fd = os.open(LOCK_DIR, _DIR_FLAGS, dir_fd=state_fd)
        except FileNotFoundError:
            try:
                os.mkdir(LOCK_DIR, 0o755, dir_fd=state_fd)
            except FileExistsError:
                continue
            done.append(f"created {shown / LOCK_DIR}")
            continue
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            _move_aside(state_fd, LOCK_DIR, shown, "is not a directory", done)
            continue
        st = os.fstat(fd)
        why = _problem(st, trusted, directory=True)
        if why is None:
            return fd
        os.close(fd)
        # An older version's group-writable directory, or a user's: whatever is in it
        # may be theirs (links, files they can delete), so none of it is reused.
        _move_aside(state_fd, LOCK_DIR, shown, why, done)
    raise ConfigError(f"Cannot lay out {shown / LOCK_DIR}: it keeps changing.", hint=_HINT)


def _open_or_make_file(
    dir_fd: int, name: str, shown: Path, trusted: set[int], done: list[str], *, keep: bool
) -> int | None:
    """Open (``keep``) or just check ``name`` in the lock directory, making it if missing."""
    for _ in range(3):
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                made = os.open(name, os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o644, dir_fd=dir_fd)
            except FileExistsError:
                continue
            os.fchmod(made, 0o644)  # whatever the umask took away
            os.close(made)
            done.append(f"created {shown / name}")
            continue
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            _move_aside(dir_fd, name, shown, "is a symbolic link", done)
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid in trusted and st.st_mode & 0o022:
            # Only a mode to correct: the same inode stays the lock, so a process that
            # holds it now still excludes the next one.
            os.fchmod(fd, 0o644)
            done.append(f"{shown / name}: mode {stat.S_IMODE(st.st_mode):04o} -> 0644")
            st = os.fstat(fd)
        why = _problem(st, trusted, directory=False)
        if why is None:
            if keep:
                return fd
            os.close(fd)
            return None
        os.close(fd)
        _move_aside(dir_fd, name, shown, why, done)
    raise ConfigError(f"Cannot lay out {shown / name}: it keeps changing.", hint=_HINT)


def _open_lock(path: Path) -> int:
    """A read-only descriptor on the checked lock file ``path`` (``state_dir/locks/NAME``)."""
    state_dir, name = path.parent.parent, path.name
    if path.parent.name != LOCK_DIR:
        raise ConfigError(f"A DS01 lock lives in {state_dir / LOCK_DIR}, not {path.parent}.")
    state_fd = _open_state_dir(state_dir)
    try:
        shown = Path(os.path.realpath(state_dir))
        trusted = _trusted_uids(state_fd)
        if _may_lay_out(state_fd):
            # Root (and a single-user owner) make or repair what is missing or wrong.
            dir_fd = _open_or_make_dir(state_fd, shown, trusted, [])
            try:
                fd = _open_or_make_file(dir_fd, name, shown / LOCK_DIR, trusted, [], keep=True)
            finally:
                os.close(dir_fd)
            if fd is None:  # keep=True returns a descriptor or raises; this narrows the type
                raise ConfigError(f"Cannot open the lock {path}.", hint=_HINT)
            return fd
        return _open_checked(state_fd, shown, name, trusted)
    finally:
        os.close(state_fd)


def _open_checked(state_fd: int, shown: Path, name: str, trusted: set[int]) -> int:
    """A user's open: nothing is made or moved; anything not as root laid it out is
    refused with exit 2 (root's next command repairs it)."""
    where = shown / LOCK_DIR
    try:
        dir_fd = os.open(LOCK_DIR, _DIR_FLAGS, dir_fd=state_fd)
    except OSError as exc:
        raise _unsafe(where, exc.strerror or "cannot be opened") from exc
    try:
        why = _problem(os.fstat(dir_fd), trusted, directory=True)
        if why:
            raise _unsafe(where, why)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            what = "is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise _unsafe(where / name, what or "cannot be opened") from exc
    finally:
        os.close(dir_fd)
    why = _problem(os.fstat(fd), trusted, directory=False)
    if why:
        os.close(fd)
        raise _unsafe(where / name, why)
    return fd


def _unsafe(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"The lock {path} {why}; DS01 does not use a lock other users could remove, "
        "replace or redirect. Nothing was changed.",
        hint="Root's next command (the enforcement timer, every minute) lays it out "
        "again; " + _HINT,
        code=ErrorCode.UNSAFE_LOCK,
    )


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        return False
    return True


def _wait(fd: int, until: float) -> bool:
    while True:
        if _try_lock(fd):
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(_POLL_S)


@contextmanager
def host_lock(path: Path, *, timeout: float, what: str = "GPU allocation") -> Iterator[float]:
    """Hold the exclusive lock at ``path``; yields the seconds spent waiting for it.
    Not had within ``timeout``: exit 4, naming the holder."""
    fd = _open_lock(path)
    start = time.monotonic()
    try:
        if not _wait(fd, start + timeout):
            raise _busy(fd, what, timeout)
        yield time.monotonic() - start
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def watch_lock(
    path: Path,
    *,
    lease: float = DEFAULT_LEASE_S,
    on_end: Callable[[Holder], None] | None = None,
    now: float | None = None,
) -> list[Holder]:
    """Root, once per pass, without waiting: who holds ``path`` now? A non-root holder
    that was already holding it at an earlier look at least ``lease`` seconds ago is
    ended (with every process sharing its descriptor); returns those ended.

    The looks are kept in ``locks/held.json`` (root's directory: users cannot touch it).
    A holder is the same process only with the same pid and start time."""
    if os.geteuid() != 0:
        return []
    fd = _open_lock(path)
    try:
        if _try_lock(fd):
            _write_seen(path, {})
            return []  # free: forget earlier looks; the lock is released on close
        st = os.fstat(fd)
        holders = holders_of(st.st_dev, st.st_ino)
    finally:
        os.close(fd)
    when = time.time() if now is None else now
    seen = _read_seen(path)
    kept: dict[str, float] = {}
    ended: list[Holder] = []
    for holder in holders:
        if holder.uid in (None, 0):
            continue  # root's own commands are an administrator's business
        key = f"{holder.pid}:{holder.start}"
        since = seen.get(key, when)
        if when - since >= lease:
            for gone in end_holder(holder):
                ended.append(gone)
                log.warning("ended %s: it held a DS01 lock past its lease", gone.describe())
                if on_end is not None:
                    on_end(gone)
        else:
            kept[key] = since
    _write_seen(path, kept)
    return ended


def _read_seen(path: Path) -> dict[str, float]:
    try:
        fd = os.open(path.parent / HELD_RECORD, _FILE_FLAGS)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_size > 65536:
            return {}
        data = json.loads(os.read(fd, 65536) or b"{}")
        entries = data.get(path.name, {}) if isinstance(data, dict) else {}
        return {str(k): float(v) for k, v in entries.items()}
    except (ValueError, TypeError, AttributeError, OSError):
        return {}
    finally:
        os.close(fd)


def _write_seen(path: Path, seen: dict[str, float]) -> None:
    record = path.parent / HELD_RECORD
    try:
        fd = os.open(record, _FILE_FLAGS)
        try:
            data = json.loads(os.read(fd, 65536) or b"{}")
        finally:
            os.close(fd)
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[path.name] = seen
    # Written whole and renamed into root's directory: never through a link.
    tmp = record.with_name(f".{HELD_RECORD}.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)
        os.replace(tmp, record)
    except OSError as exc:
        log.warning("cannot record the lock's holders in %s: %s", record, exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _busy(fd: int, what: str, timeout: float) -> NoCapacityError:
    st = os.fstat(fd)
    holders = holders_of(st.st_dev, st.st_ino)
    held_by = ""
    if holders:
        held_by = " It is held by " + "; ".join(h.describe() for h in holders) + "."
    return NoCapacityError(
        f"The host is busy: the {what} lock was not free within {timeout:g} s.{held_by}",
        hint="Try again in a moment; nothing was created. A process that keeps holding it "
        "is ended by root's enforcement pass once it has held it past its lease.",
        code=ErrorCode.LOCK_TIMEOUT,
        details={"holders": [to_json(h) for h in holders]},
    )
