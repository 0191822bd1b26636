"""Owner-stamped queue requests: the file that proves who queued a GPU request.

In stage 1 the state database is writable by every DS01 user, so a queue row proves
nothing: anyone can insert one "by bob" with priority 1000 and ``data: /etc``. What the
kernel vouches for is who owns a file. So ``create --wait`` also writes the request to

    state_dir/users/<uid>/queue/<id>.json     uid 0644, in uid's own 0755 directories

(``users/`` is root's and sticky; ``users/<uid>`` belongs to that uid: see
:mod:`ds01.adapters.state_layout`). Nobody else can create, replace or change a file
there, and root creating it for the user (``sudo ds01 --as``) hands it over through the
descriptor. A grant reads the request from this file, never from the row: a row whose
file is missing, is a link, is not the row's user's, is writable by others or says
something else is refused. The file's change time (``st_ctime``, which no user can set)
is when it was written: a backdated ``enqueued_at`` gains no aging.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ds01.adapters.state_layout import USERS, open_user_dir
from ds01.errors import ConfigError, ErrorCode

__all__ = [
    "MAX_BYTES",
    "RequestFile",
    "Unverifiable",
    "discard_request",
    "read_request",
    "write_request",
]

SUB = "queue"
MAX_BYTES = 64 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class Unverifiable(Exception):
    """The request file does not vouch for the row. ``definite``: it proves the row was
    not made by its user's ``ds01`` (missing, a link, someone else's, different); else
    this process just could not look (no permission, an I/O error)."""

    def __init__(self, reason: str, *, definite: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.definite = definite


@dataclass(frozen=True)
class RequestFile:
    """What the owner's file says, and when the kernel says it was written."""

    record: dict[str, Any]
    written_at: float  # st_ctime, seconds since the epoch


def _name(entry_id: int) -> str:
    return f"{int(entry_id)}.json"


def write_request(
    state_dir: Path, *, uid: int, gid: int, entry_id: int, record: dict[str, Any]
) -> None:
    """Write the request of entry ``entry_id`` as ``uid``'s file (by ``uid`` or root)."""
    if os.geteuid() not in (0, uid):
        raise ConfigError(
            "Only the owner (or root) can queue a request in their name.",
            hint="Run the command as that user, or with sudo.",
            code=ErrorCode.NOT_OWNER,
        )
    data = json.dumps(record, sort_keys=True).encode()
    dir_fd = open_user_dir(state_dir, uid, gid, SUB, mode=0o755)
    try:
        name = _name(entry_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            # Left by an entry of a database since lost (ids start again): the directory
            # is the owner's own, so the stale file is replaced, never written through.
            os.unlink(name, dir_fd=dir_fd)
            fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o644)
            if os.geteuid() == 0 and uid != 0:
                os.fchown(fd, uid, gid)
            os.write(fd, data)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _open_dir(parent_fd: int, name: str, uid: int, shown: str) -> Any:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise _why(exc, shown) from exc
    try:
        st = os.fstat(fd)
        if st.st_uid != uid:
            raise Unverifiable(f"{shown} belongs to uid {st.st_uid}, not to the entry's user")
        if st.st_mode & 0o022:
            raise Unverifiable(f"{shown} is writable by others")
        yield fd
    finally:
        os.close(fd)


def _why(exc: OSError, shown: str) -> Unverifiable:
    if exc.errno == errno.ENOENT:
        return Unverifiable(f"there is no request file {shown}")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return Unverifiable(f"{shown} is a link or not what it should be")
    return Unverifiable(f"cannot read {shown}: {exc.strerror}", definite=False)


def read_request(state_dir: Path, *, uid: int, entry_id: int) -> RequestFile:
    """The request file of entry ``entry_id`` of ``uid``, read without following links and
    checked to be ``uid``'s own; :class:`Unverifiable` otherwise."""
    real = os.path.realpath(state_dir)
    base = f"{real}/{USERS}/{uid}"
    try:
        state_fd = os.open(real, _DIR_FLAGS)
    except OSError as exc:
        raise Unverifiable(f"cannot open {real}: {exc.strerror}", definite=False) from exc
    try:
        try:
            users_fd = os.open(USERS, _DIR_FLAGS, dir_fd=state_fd)
        except OSError as exc:
            raise _why(exc, f"{real}/{USERS}") from exc
        try:
            with (
                _open_dir(users_fd, str(uid), uid, base) as own_fd,
                _open_dir(own_fd, SUB, uid, f"{base}/{SUB}") as queue_fd,
            ):
                return _read_file(queue_fd, _name(entry_id), uid, f"{base}/{SUB}")
        finally:
            os.close(users_fd)
    finally:
        os.close(state_fd)


def _read_file(dir_fd: int, name: str, uid: int, shown_dir: str) -> RequestFile:
    shown = f"{shown_dir}/{name}"
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _why(exc, shown) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unverifiable(f"{shown} is not a regular file")
        if st.st_uid != uid:
            raise Unverifiable(f"{shown} belongs to uid {st.st_uid}, not to the entry's user")
        if st.st_mode & 0o022:
            raise Unverifiable(f"{shown} is writable by others")
        if st.st_size > MAX_BYTES:
            raise Unverifiable(f"{shown} is larger than any request DS01 writes")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise Unverifiable(f"{shown} is not a request DS01 wrote") from exc
    if not isinstance(record, dict):
        raise Unverifiable(f"{shown} is not a request DS01 wrote")
    return RequestFile(record, st.st_ctime)


def discard_request(state_dir: Path, *, uid: int, entry_id: int) -> None:
    """Remove the file of an entry that no longer waits (by its owner or root), so that
    no row forged later with this id can use it again. Best effort."""
    if os.geteuid() not in (0, uid):
        return
    real = os.path.realpath(state_dir)
    with contextlib.suppress(OSError):
        fd = os.open(f"{real}/{USERS}", _DIR_FLAGS)
        try:
            own = os.open(str(uid), _DIR_FLAGS, dir_fd=fd)
            try:
                sub = os.open(SUB, _DIR_FLAGS, dir_fd=own)
                try:
                    if os.fstat(sub).st_uid == uid:
                        os.unlink(_name(entry_id), dir_fd=sub)
                finally:
                    os.close(sub)
            finally:
                os.close(own)
        finally:
            os.close(fd)
