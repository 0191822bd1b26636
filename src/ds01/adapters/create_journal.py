"""Journals of creates in progress, so that a crashed create can be found and undone.

A ``container create`` writes one small JSON record *before* it makes anything (a
directory, a container): who is creating (the process, told apart from a later process
with the same pid by its start time and the boot id), the container tag, and every
directory it may create. The record is deleted when the create succeeded or was rolled
back completely. A record whose creator is gone therefore names exactly what a kill -9,
a lost engine or a failed rollback left half-made; :mod:`ds01.services.container.recovery`
removes it.

Where: ``<state_dir>/users/<uid>/pending/<tag>.<nonce>.json``. ``users/<uid>`` belongs
to the user (or root); a record is trusted only from a directory and a file owned by that
uid or root, and is read without following symlinks.

Liveness has two independent signals, both needed to call a creator dead: the creator
holds an exclusive ``flock`` on its record for as long as it lives (the kernel drops it
when the process dies, however it dies), and its pid no longer runs with the recorded
start time in this boot. A sweeper takes the same lock before acting, so two sweepers
never work on one record, and a live creator's record is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "Creator",
    "Journal",
    "StaleJournal",
    "crash_point",
    "journal_dir",
    "stale_journals",
]

SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
#: A temporary record older than this with no live writer is debris of a kill mid-write.
TMP_MAX_AGE_S = 3600.0
MAX_RECORD_BYTES = 64 << 10
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def crash_point(step: str) -> None:
    """Test-only fault injection: ``DS01_TEST_CRASH_AT=<step>`` ends the process at that
    step as ``kill -9`` would (no cleanup, no ``finally``); ``DS01_TEST_PAUSE_AT=<step>``
    stops it there (SIGSTOP) until a SIGCONT. Harmless outside tests: they only ever
    affect the caller's own process."""
    if os.environ.get("DS01_TEST_CRASH_AT") == step:
        os._exit(137)
    if os.environ.get("DS01_TEST_PAUSE_AT") == step:
        os.kill(os.getpid(), signal.SIGSTOP)


# -- who is creating ------------------------------------------------------------------


@cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return -1  # exists, unreadable (hidepid): cannot compare, assume it is the one
    try:
        # The command name (field 2) may contain spaces and ')': split after the last ')'.
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return -1


@dataclass(frozen=True)
class Creator:
    """One process on one boot: ``boot:pid:start`` in the container label."""

    boot: str
    pid: int
    start: int

    @classmethod
    def me(cls) -> Creator:
        pid = os.getpid()
        return cls(boot_id(), pid, _start_ticks(pid) or 0)

    @classmethod
    def parse(cls, text: str | None) -> Creator | None:
        if not text:
            return None
        boot, _, rest = text.rpartition(":")
        boot, _, pid = boot.rpartition(":")
        try:
            return cls(boot, int(pid), int(rest))
        except ValueError:
            return None

    def encode(self) -> str:
        return f"{self.boot}:{self.pid}:{self.start}"

    def alive(self) -> bool:
        """Conservative: anything that might still be the creator counts as alive."""
        if self.boot != boot_id():
            return False  # the machine rebooted since: every process of then is gone
        if self.pid == os.getpid():
            return True
        ticks = _start_ticks(self.pid)
        if ticks is None:
            try:
                os.kill(self.pid, 0)  # /proc may hide other users' processes
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return ticks in (-1, self.start)


# -- the record -----------------------------------------------------------------------


def journal_dir(state_dir: Path, uid: int) -> Path:
    return Path(os.path.realpath(state_dir)) / "users" / str(uid) / "pending"


def _ensure_dir(path: Path, *, uid: int, gid: int, mode: int) -> None:
    """``path`` as a real directory owned by ``uid`` (or root); made if missing."""
    made = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
        made = True
    fd = os.open(path, _DIR_FLAGS)  # a symlink put in its place is refused, not followed
    try:
        st = os.fstat(fd)
        if made:
            os.fchmod(fd, mode)  # the umask may have taken bits away
        if made and os.geteuid() == 0 and uid != 0:
            os.fchown(fd, uid, gid)  # root acting for the user: the directory is theirs
            st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid not in (uid, 0):
        raise PermissionError(errno.EPERM, "not a directory of the user or root", str(path))


def _prepare_dirs(state_dir: Path, uid: int, gid: int) -> Path:
    real = Path(os.path.realpath(state_dir))
    users = real / "users"
    if not users.is_dir():
        old = os.umask(0)
        try:
            # Shared by every user: sticky, so nobody removes or renames another's entry.
            with contextlib.suppress(FileExistsError):
                os.mkdir(users, 0o1775 if os.geteuid() else 0o1755)
        finally:
            os.umask(old)
    own = users / str(uid)
    _ensure_dir(own, uid=uid, gid=gid, mode=0o755)
    pending = own / "pending"
    _ensure_dir(pending, uid=uid, gid=gid, mode=0o755)
    return pending


@dataclass
class Journal:
    """The record of one create in progress; the lock on it is held until ``close``."""

    path: Path
    record: dict[str, Any]
    _fd: int | None = field(default=None, repr=False)

    @classmethod
    def begin(
        cls,
        state_dir: Path,
        *,
        uid: int,
        gid: int,
        user: str,
        tag: str,
        dirs: list[Path],
        creator: Creator,
        now: str,
    ) -> Journal:
        """Write and lock the record (atomically: written under a temporary name, locked,
        then renamed, so no sweeper ever sees it unlocked or half-written)."""
        pending = _prepare_dirs(state_dir, uid, gid)
        nonce = secrets.token_hex(6)
        path = pending / f"{tag}.{nonce}{SUFFIX}"
        tmp = pending / f"{tag}.{nonce}{TMP_SUFFIX}"
        record = {
            "version": 1,
            "uid": uid,
            "user": user,
            "tag": tag,
            "creator": creator.encode(),
            "dirs": [str(d) for d in dirs],
            "started_at": now,
        }
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.geteuid() == 0 and uid != 0:
                os.fchown(fd, uid, gid)
            os.write(fd, json.dumps(record, sort_keys=True).encode())
            os.fsync(fd)
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return cls(path, record, fd)

    @property
    def creator_label(self) -> str:
        return str(self.record["creator"])

    def commit(self) -> None:
        """Done (made and reported, or rolled back completely): forget the record."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        """Keep the record for the next sweep (something could not be undone)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- the sweeper's side ---------------------------------------------------------------


@dataclass
class StaleJournal:
    """A record whose creator is dead, locked by this sweeper until ``done``/``release``."""

    path: Path
    owner_uid: int
    record: dict[str, Any]
    fd: int

    @property
    def tag(self) -> str:
        return str(self.record.get("tag", ""))

    @property
    def creator(self) -> Creator | None:
        return Creator.parse(str(self.record.get("creator", "")))

    @property
    def dirs(self) -> list[Path]:
        raw = self.record.get("dirs") or []
        return [Path(d) for d in raw if isinstance(d, str) and os.path.isabs(d)]

    def done(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _user_dirs(state_dir: Path, uid: int | None) -> Iterator[tuple[int, Path]]:
    users = Path(os.path.realpath(state_dir)) / "users"
    if uid is not None:
        candidates = [str(uid)]
    else:
        try:
            candidates = sorted(os.listdir(users))
        except (FileNotFoundError, NotADirectoryError):
            return
    for name in candidates:
        if not name.isdigit():
            continue
        pending = users / name / "pending"
        try:
            st_user = os.lstat(users / name)
            st_pending = os.lstat(pending)
        except FileNotFoundError:
            continue
        owner = int(name)
        if not all(
            stat.S_ISDIR(s.st_mode) and s.st_uid in (owner, 0) for s in (st_user, st_pending)
        ):
            continue  # someone else's directory under this uid: never trusted
        yield owner, pending


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def _open_locked(dir_fd: int, name: str, owner: int) -> int | None:
    """A descriptor of the record ``name``, exclusively locked; ``None`` if it is in use,
    gone, or not a plain file of ``owner`` (or root)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (owner, 0) or st.st_nlink != 1:
            raise OSError(errno.EPERM, "untrusted record")
        if not _try_lock(fd):
            raise OSError(errno.EAGAIN, "in use")
        # Still the file under that name (another sweeper may have finished it meanwhile).
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise OSError(errno.ESTALE, "replaced")
    except OSError:
        os.close(fd)
        return None
    return fd


def _read(fd: int) -> dict[str, Any] | None:
    data = os.pread(fd, MAX_RECORD_BYTES + 1, 0)
    if len(data) > MAX_RECORD_BYTES:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def stale_journals(state_dir: Path, uid: int | None = None) -> Iterator[StaleJournal]:
    """Records of dead creators (of ``uid``, or of every user), each locked for the caller,
    who must call ``done()`` or ``release()``. Unreadable records are skipped, never
    guessed at; debris of a kill during the write of a record is deleted."""
    for owner, pending in _user_dirs(state_dir, uid):
        try:
            dir_fd = os.open(pending, _DIR_FLAGS)
        except OSError:
            continue
        try:
            names = sorted(os.listdir(dir_fd))
            for name in names:
                if name.endswith(TMP_SUFFIX):
                    _drop_debris(dir_fd, name, owner)
                    continue
                if not name.endswith(SUFFIX):
                    continue
                fd = _open_locked(dir_fd, name, owner)
                if fd is None:
                    continue
                record = _read(fd)
                creator = Creator.parse(str(record.get("creator", ""))) if record else None
                if (
                    record is None
                    or record.get("uid") != owner
                    or creator is None
                    or creator.alive()
                ):
                    os.close(fd)
                    continue
                yield StaleJournal(pending / name, owner, record, fd)
        finally:
            os.close(dir_fd)


def _drop_debris(dir_fd: int, name: str, owner: int) -> None:
    """A temporary record nobody holds, older than an hour: nothing was made after it
    (dirs and containers come only after the rename), so it can simply go."""
    fd = _open_locked(dir_fd, name, owner)
    if fd is None:
        return
    try:
        if time.time() - os.fstat(fd).st_mtime > TMP_MAX_AGE_S:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(fd)
