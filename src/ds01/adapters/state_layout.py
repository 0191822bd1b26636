"""Who owns what in the state directory, and the one function that lays it out.

In stage 1 every DS01 user's own processes write the shared state, so nothing in it can
be protected by "only DS01 writes here". What the kernel *can* guarantee is ownership:
a file belongs to the uid that created it, and in a sticky directory nobody but that
owner (and the directory's owner) can remove or rename it. The layout builds on that::

    state_dir/              root:GROUP 3775  setgid + sticky: nobody removes or replaces
                                             another's entry (the database, the marker)
      ds01.sqlite3          root:GROUP 0664  the queue and enforcement's idle state
      state-db.marker       root:root  0644  which database root last vouched for
      users/                root:GROUP 1775  users/<uid>/ belongs to that uid (0755):
        <uid>/build-logs/   uid        0700  build logs, journals (create_journal)
      events/               root:GROUP 3775  events/<uid>.jsonl: each writer's own log
      exemptions/           root:ADMIN 2770  only administrators write; a record counts
                                             only from root or a current admin's file

``GROUP`` is the group every DS01 user is in (``docker`` by default), ``ADMIN`` the
configured ``admin_group``. :func:`lay_out` is what ``scripts/install`` runs as root; root's
commands (the enforcement timer every minute) run it too, which hands shared directories
a user created first back to root and moves a squatted ``users/<uid>`` aside. Without
root (a laptop, ``~/.local/state/ds01``) the state directory is the user's own and
everything in it is trusted as theirs.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from ds01.adapters.identity import user_groups
from ds01.adapters.locks import lay_out_locks
from ds01.errors import ConfigError, ErrorCode

__all__ = [
    "DB_NAME",
    "EVENTS",
    "EXEMPTIONS",
    "MARKER",
    "USERS",
    "is_admin_uid",
    "lay_out",
    "open_shared_dir",
    "open_user_dir",
    "owner_name",
    "state_owner",
    "trusted_owner",
]

DB_NAME = "ds01.sqlite3"
MARKER = "state-db.marker"
USERS = "users"
EVENTS = "events"
EXEMPTIONS = "exemptions"

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Shared directories users create entries in: sticky, so an entry is its owner's alone.
_SHARED_MODES = {USERS: 0o1775, EVENTS: 0o3775}
_INSTALL_HINT = "An administrator fixes the layout with: sudo scripts/install --state-only"


def owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@cache
def is_admin_uid(uid: int, admin_group: str | None) -> bool:
    """Whether ``uid`` is a member of ``admin_group`` now (root is checked by callers)."""
    if not admin_group:
        return False

    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    return admin_group in user_groups(pw.pw_name, pw.pw_gid)


def state_owner(state_dir: Path) -> int:
    """The uid that owns the state directory: root on a server, the user on a laptop."""
    return os.stat(os.path.realpath(state_dir)).st_uid


def trusted_owner(uid: int, state_uid: int) -> bool:
    """Shared directories and root's records are trusted from root or the state dir's owner."""
    return uid in (0, state_uid)


@contextmanager
def _dir_fd(
    path: str | Path, name: str | None = None, *, dir_fd: int | None = None
) -> Iterator[int]:
    fd = os.open(name if name is not None else path, DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _mkdir_at(dir_fd: int, name: str, mode: int) -> bool:
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        return False
    return True


def open_shared_dir(state_dir: Path, name: str) -> int:
    """A descriptor on ``state_dir/name`` (``users`` or ``events``), made if missing.

    Root makes it root's. A user may make it only in a state directory they can write
    (an installation the installer has not laid out yet); it is then sticky like the
    installer's, and root's next command takes it over. Never follows a symlink.
    """
    real = os.path.realpath(state_dir)
    try:
        Path(real).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the state directory {state_dir}: {exc.strerror}.",
            hint="Set 'state_dir' in the DS01 configuration to a directory you can write.",
        ) from exc
    with _dir_fd(real) as state_fd:
        st_state = os.fstat(state_fd)
        made = _mkdir_at(state_fd, name, 0o700)
        fd = os.open(name, DIR_FLAGS, dir_fd=state_fd)
        try:
            if made:
                # Sticky and group-writable where others share the state directory;
                # a private one (a laptop) stays private.
                shared = st_state.st_mode & stat.S_IWGRP or os.geteuid() == 0
                os.fchmod(fd, _SHARED_MODES.get(name, 0o755) if shared else 0o755)
                if os.geteuid() == 0:
                    os.fchown(fd, 0, st_state.st_gid)
        except BaseException:
            os.close(fd)
            raise
        return fd


def open_user_dir(state_dir: Path, uid: int, gid: int, sub: str, mode: int = 0o700) -> int:
    """A descriptor on ``state_dir/users/<uid>/<sub>``, both levels owned by ``uid``.

    Made if missing (root acting for the user hands them over); a directory another user
    made first under that name is refused, never written into: it could be theirs to
    read, swap or delete. Never follows a symlink.
    """
    users_fd = open_shared_dir(state_dir, USERS)
    try:
        own_fd = _owned_dir(
            users_fd, str(uid), uid=uid, gid=gid, mode=0o755, where=f"{state_dir}/{USERS}"
        )
    finally:
        os.close(users_fd)
    try:
        return _owned_dir(
            own_fd, sub, uid=uid, gid=gid, mode=mode, where=f"{state_dir}/{USERS}/{uid}"
        )
    finally:
        os.close(own_fd)


def _owned_dir(parent_fd: int, name: str, *, uid: int, gid: int, mode: int, where: str) -> int:
    made = _mkdir_at(parent_fd, name, mode)
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    try:
        if made:
            os.fchmod(fd, mode)  # the umask may have taken bits away
            if os.geteuid() == 0 and uid != 0:
                os.fchown(fd, uid, gid)
        owner = os.fstat(fd).st_uid
        if owner != uid:
            raise ConfigError(
                f"{where}/{name} belongs to {owner_name(owner)}, not {owner_name(uid)}: "
                "DS01 does not keep your files there.",
                hint="Root's next 'ds01 enforce' (the timer, every minute) moves it aside; "
                + _INSTALL_HINT
                + " does too.",
                code=ErrorCode.STATE_DIR_SQUATTED,
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- the installer's side (root) ------------------------------------------------------


def lay_out(
    state_dir: Path,
    *,
    group: str | int | None,
    admin_group: str | None,
    fix_state_dir: bool = True,
) -> list[str]:
    """Create or repair the layout above, as root; returns what it changed, in words.

    Idempotent: run by ``scripts/install`` and, with ``fix_state_dir=False`` (the state
    directory's own mode is the installer's business), by root's commands. ``group``
    defaults to the state directory's current group.
    """
    if os.geteuid() != 0:
        raise ConfigError("Laying out the shared state directory needs root.", hint=_INSTALL_HINT)
    done: list[str] = []
    path = Path(os.path.realpath(state_dir))
    if not path.exists():
        path.mkdir(parents=True, mode=0o755)
        done.append(f"created {path}")
    gid = _gid(group) if group is not None else path.stat().st_gid
    with _dir_fd(path) as fd:
        if fix_state_dir:
            _fix(fd, None, path, uid=0, gid=gid, mode=0o3775, done=done)
        for name, mode in _SHARED_MODES.items():
            if _mkdir_at(fd, name, mode):
                done.append(f"created {path / name}")
            _fix(fd, name, path / name, uid=0, gid=gid, mode=mode, done=done)
        admin_gid = _admin_gid(admin_group)
        if _mkdir_at(fd, EXEMPTIONS, 0o700):
            done.append(f"created {path / EXEMPTIONS}")
        exempt_mode = 0o2770 if admin_gid is not None else 0o700
        _fix(
            fd,
            EXEMPTIONS,
            path / EXEMPTIONS,
            uid=0,
            gid=admin_gid or 0,
            mode=exempt_mode,
            done=done,
        )
        with _dir_fd(path, USERS, dir_fd=fd) as users_fd:
            done += _move_squatters(users_fd, path / USERS)

    done += lay_out_locks(path)  # locks/ root:root 0755, lock files 0644 (users only flock)
    return done


def _gid(group: str | int) -> int:
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise ConfigError(
            f"The group {group!r} does not exist.", hint="Create it, or set DS01_GROUP."
        ) from exc


def _admin_gid(admin_group: str | None) -> int | None:
    if not admin_group:
        return None
    try:
        return grp.getgrnam(admin_group).gr_gid
    except KeyError:
        return None  # no such group: only root (and sudo) administer


def _fix(
    parent_fd: int,
    name: str | None,
    shown: Path,
    *,
    uid: int,
    gid: int,
    mode: int,
    done: list[str],
) -> None:
    if name is None:
        fd = os.dup(parent_fd)
    else:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:  # a symlink or a file in its place: move it aside
            _move_aside(parent_fd, name, done, shown, why=exc.strerror or "not a directory")
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
            if st.st_uid != uid:
                done.append(f"{shown}: owner {owner_name(st.st_uid)} -> {owner_name(uid)}")
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)
            done.append(f"{shown}: mode {stat.S_IMODE(st.st_mode):04o} -> {mode:04o}")
    finally:
        os.close(fd)


def _move_aside(parent_fd: int, name: str, done: list[str], shown: Path, *, why: str) -> None:
    aside = f".moved-{name}-{secrets.token_hex(4)}"
    os.rename(name, aside, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    done.append(f"{shown} ({why}) moved aside to {aside}")


def _move_squatters(users_fd: int, shown: Path) -> list[str]:
    """``users/<uid>`` owned by someone other than ``uid`` (or root) was made by another
    user to block or watch ``uid``: move it aside so that ``uid`` gets their own."""
    done: list[str] = []
    for name in os.listdir(users_fd):
        if not name.isdigit():
            continue
        st = os.stat(name, dir_fd=users_fd, follow_symlinks=False)
        if st.st_uid in (int(name), 0) and stat.S_ISDIR(st.st_mode):
            continue
        aside = f".squatted-{name}-by-{st.st_uid}-{secrets.token_hex(4)}"
        os.rename(name, aside, src_dir_fd=users_fd, dst_dir_fd=users_fd)
        done.append(
            f"{shown}/{name} belonged to {owner_name(st.st_uid)}, not {owner_name(int(name))}:"
            f" moved aside to {aside}"
        )
    return done
