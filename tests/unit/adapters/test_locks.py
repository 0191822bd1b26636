"""The host-wide locks against the users they serialise (issue 10, finding 4).

Needs root: a second uid (``nobody``) plays the user, in forked children that drop to it,
as the users' own ``ds01`` processes would be. The integration tests repeat the decisive
attacks as real ds01t-* users during concurrent creates.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.lock_holders import Holder, _lock_lines, holders_of
from ds01.adapters.locks import host_lock, lay_out_locks, watch_lock
from ds01.errors import ConfigError, NoCapacityError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays a second uid: needs root")

NOBODY = 65534


@pytest.fixture
def state() -> Iterator[Path]:
    # Not under pytest's 0700 tmp dir: 'nobody' must reach it.
    root = Path(tempfile.mkdtemp(prefix="ds01-locks-", dir="/tmp"))
    root.chmod(0o755)
    state = root / "state"
    state.mkdir(mode=0o755)
    try:
        yield state
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(fn: Callable[[], Any]) -> tuple[int, str]:
    """Run ``fn`` in a child as uid/gid nobody; returns (exit status, what it printed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            out = str(fn())
        except BaseException as exc:
            out, code = f"{type(exc).__name__}: {getattr(exc, 'code', '')}: {exc}", 1
        os.write(write, out.encode())
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


def _hog(lock: Path) -> subprocess.Popen[bytes]:
    """``nobody`` holding the lock as any user can: flock(1), which leaves the locked
    descriptor to its child (sleep) too. Returns once the lock is held."""
    proc = subprocess.Popen(
        ["flock", "--exclusive", str(lock), "sh", "-c", "echo held; exec sleep 1000"],
        stdout=subprocess.PIPE,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        start_new_session=True,  # flock and its child: ended together by _stop
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
    proc.stdout.close()
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a holder and the child that shares its descriptor (same process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_lay_out_makes_root_owned_lock_files_nobody_else_can_write(state: Path) -> None:
    done = lay_out_locks(state)
    locks = state / "locks"
    assert (locks.stat().st_uid, _mode(locks)) == (0, 0o755)
    for name in ("allocation.lock", "enforce.lock"):
        st = (locks / name).lstat()
        assert stat.S_ISREG(st.st_mode) and (st.st_uid, _mode(locks / name)) == (0, 0o644)
    assert f"created {locks}" in done
    assert lay_out_locks(state) == []  # idempotent


def test_a_user_cannot_delete_replace_or_redirect_a_lock_but_can_take_it(state: Path) -> None:
    lay_out_locks(state)
    lock = state / "locks" / "allocation.lock"
    inode = lock.stat().st_ino
    for attack in (
        lock.unlink,
        lambda: lock.rename(lock.with_name("x")),
        lambda: (lock.parent / "new").write_text(""),
        lambda: os.symlink("/etc/passwd", lock.parent / "other.lock"),
        lambda: lock.write_text("x"),
        lambda: lock.chmod(0o666),
    ):
        code, out = as_nobody(attack)
        assert code == 1 and "PermissionError" in out, out
    assert lock.stat().st_ino == inode and sorted(os.listdir(lock.parent)) == [
        "allocation.lock",
        "enforce.lock",
    ]

    def take() -> float:
        with host_lock(lock, timeout=5) as waited:
            return waited

    code, out = as_nobody(take)  # read-only open is enough for flock
    assert code == 0, out


def test_root_never_creates_a_file_through_a_planted_link(state: Path) -> None:
    """Before: a symlinked enforce.lock made root's enforce create /root/... ."""
    target = state.parent / "target"
    locks = state / "locks"
    locks.mkdir()
    os.chown(locks, NOBODY, 0)  # as an older version left it: a user's, group-writable
    locks.chmod(0o2775)
    os.symlink(target, locks / "enforce.lock")
    with host_lock(locks / "enforce.lock", timeout=1, what="enforcement"):
        pass
    assert not target.exists() and not os.path.lexists(target)
    fresh = locks / "enforce.lock"
    assert stat.S_ISREG(fresh.lstat().st_mode) and fresh.lstat().st_uid == 0
    assert (locks.stat().st_uid, _mode(locks)) == (0, 0o755)
    moved = [p for p in state.iterdir() if p.name.startswith(".moved-locks-")]
    assert len(moved) == 1 and (moved[0] / "enforce.lock").is_symlink()


def test_a_link_or_fifo_in_a_root_owned_lock_dir_is_moved_aside_not_followed(state: Path) -> None:
    lay_out_locks(state)
    target = state.parent / "target"
    lock = state / "locks" / "allocation.lock"
    lock.unlink()
    os.symlink(target, lock)
    with host_lock(lock, timeout=1):
        pass
    assert not os.path.lexists(target) and stat.S_ISREG(lock.lstat().st_mode)
    lock.unlink()
    os.mkfifo(lock)  # opening a FIFO would block without O_NONBLOCK
    with host_lock(lock, timeout=1):
        pass
    assert stat.S_ISREG(lock.lstat().st_mode)


@pytest.mark.parametrize("plant", ["link", "user_dir", "missing", "writable_file"])
def test_a_user_refuses_an_unsafe_lock_with_exit_2_and_creates_nothing(
    state: Path, plant: str
) -> None:
    target = state.parent / "target"
    locks = state / "locks"
    if plant == "link":
        lay_out_locks(state)
        (locks / "allocation.lock").unlink()
        os.symlink(target, locks / "allocation.lock")
    elif plant == "user_dir":
        locks.mkdir(mode=0o775)
        os.chown(locks, NOBODY, NOBODY)
        (locks / "allocation.lock").touch()
    elif plant == "writable_file":
        lay_out_locks(state)
        (locks / "allocation.lock").chmod(0o666)

    def take() -> None:
        with host_lock(locks / "allocation.lock", timeout=1):
            pass

    code, out = as_nobody(take)
    assert code == 1 and "ConfigError: unsafe_lock" in out, out
    assert ConfigError.exit_code == 2
    assert not os.path.lexists(target)


def test_a_waiter_that_gives_up_names_the_holder(state: Path) -> None:
    lay_out_locks(state)
    lock = state / "locks" / "allocation.lock"
    hog = _hog(lock)
    try:

        def wait() -> None:
            with host_lock(lock, timeout=0.2):
                pass

        code, out = as_nobody(wait)
        assert code == 1 and "NoCapacityError: lock_timeout" in out, out
        assert f"nobody, pid {hog.pid} (flock --exclusive {lock}" in out
        assert hog.poll() is None  # a user's waiter never ends anyone
    finally:
        _stop(hog)


def test_root_ends_a_user_process_holding_the_lock_past_its_lease(state: Path) -> None:
    lay_out_locks(state)
    lock = state / "locks" / "allocation.lock"
    hog = _hog(lock)
    ended: list[Holder] = []
    try:
        # Two looks (two enforcement passes) 59 s apart: within the lease, left alone.
        assert watch_lock(lock, now=1000.0, on_end=ended.append) == []
        assert watch_lock(lock, now=1059.0, on_end=ended.append) == []
        assert hog.poll() is None
        # 60 s after it was first seen holding it: ended, with its descriptor's sharers.
        watch_lock(lock, now=1060.0, on_end=ended.append)
        assert hog.wait() == -signal.SIGKILL
        with host_lock(lock, timeout=10):  # the kernel dropped the lock with them
            pass
    finally:
        _stop(hog)
    # flock(1) took it; its child sleep shared the descriptor and was ended as well.
    assert ended[0].pid == hog.pid
    assert {h.uid for h in ended} == {NOBODY} and len(ended) == 2
    assert any(h.command == "sleep 1000" for h in ended)
    assert watch_lock(lock) == []  # free now: the record is cleared
    record = state / "locks" / "held.json"
    assert record.stat().st_uid == 0 and _mode(record) == 0o600


def test_a_new_holder_with_the_same_pid_starts_its_own_lease(state: Path) -> None:
    lay_out_locks(state)
    lock = state / "locks" / "allocation.lock"
    hog = _hog(lock)
    try:
        watch_lock(lock, now=1000.0)
        _stop(hog)
        again = _hog(lock)  # another process (another start time, maybe the same pid)
        try:
            assert watch_lock(lock, now=2000.0) == []  # first seen now
            assert again.poll() is None
        finally:
            _stop(again)
    finally:
        _stop(hog)


def test_root_never_ends_roots_own_holder(state: Path) -> None:
    lay_out_locks(state)
    lock = state / "locks" / "allocation.lock"
    proc = subprocess.Popen(
        ["flock", "--exclusive", str(lock), "sh", "-c", "echo held; exec sleep 1000"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        proc.stdout.close()
        assert watch_lock(lock, now=0.0) == [] and watch_lock(lock, now=1e6) == []
        with pytest.raises(NoCapacityError) as err, host_lock(lock, timeout=0.1):
            pass
        assert err.value.code == "lock_timeout" and f"root, pid {proc.pid}" in err.value.message
        assert proc.poll() is None
        st = lock.stat()
        assert [h.pid for h in holders_of(st.st_dev, st.st_ino)] == [proc.pid]
    finally:
        _stop(proc)


def test_proc_locks_lines_are_matched_by_device_and_inode() -> None:
    dev = os.makedev(0xFE, 0)
    text = (
        "1: FLOCK  ADVISORY  WRITE 100 fe:00:42 0 EOF\n"
        "1: -> FLOCK  ADVISORY  WRITE 101 fe:00:42 0 EOF\n"  # a waiter, not a holder
        "2: FLOCK  ADVISORY  WRITE 102 fe:01:42 0 EOF\n"  # same inode, other device
        "3: POSIX  ADVISORY  WRITE 103 fe:00:43 0 EOF\n"
        "garbage\n"
    )
    assert _lock_lines(text, dev, 42) == [(100, "fe:00:42")]
    # An overlay reports another device than fstat: the inode alone then decides.
    assert _lock_lines(text, os.makedev(0, 0x2E), 42) == [(100, "fe:00:42"), (102, "fe:01:42")]
    assert _lock_lines(text, dev, 44) == []
