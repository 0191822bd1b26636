"""The host's files as one user may use them, safe against symlink tricks.

DS01 often runs with more rights than the user it acts for (``sudo ds01 --as``, the
root enforcement timer, a stage-2 daemon), and a user's container has passwordless sudo
inside, so anything mounted into it is root-writable there. Every path a user names or
owns is therefore handled here, one way:

* **roots** come from places the user cannot redirect: their home as the password
  database has it, and directories an admin configured; never from ``realpath`` of a
  directory the user owns (a symlinked ``~/workspace -> /`` must not widen anything);
* **checks** resolve symlinks first and then require the real path to lie under a root,
  and the user's own rights (mode bits, their groups) to allow the access;
* **creating and opening** walks the real path one component at a time with
  ``O_NOFOLLOW`` (``openat``/``mkdirat``), so a symlink swapped in after the check is
  refused instead of followed, and ownership is changed through the descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ds01.domain.actor import Actor
from ds01.errors import DS01Error, ErrorCode, UsageError

__all__ = [
    "CreatedDirs",
    "append_user_file",
    "is_within",
    "make_user_dirs",
    "open_real_dir",
    "read_user_file",
    "readable_by",
    "resolve_user_path",
    "user_given_path",
    "user_roots",
    "walk_user_dir",
    "writable_by",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _gids(actor: Actor) -> set[int]:
    gids = {actor.gid}
    # An account the group database no longer knows keeps just its primary group.
    with contextlib.suppress(OSError):
        gids.update(os.getgrouplist(actor.name, actor.gid))
    return gids


def _allows(actor: Actor, st: os.stat_result, bits: tuple[int, int, int]) -> bool:
    """Mode-bit check as the kernel does it for ``actor`` (owner, then group, then other);
    os.access would answer for the process, which may be root."""
    user_bit, group_bit, other_bit = bits
    if st.st_uid == actor.uid:
        return bool(st.st_mode & user_bit == user_bit)
    if st.st_gid in _gids(actor):
        return bool(st.st_mode & group_bit == group_bit)
    return bool(st.st_mode & other_bit == other_bit)


def readable_by(actor: Actor, st: os.stat_result, *, enter: bool = False) -> bool:
    """May ``actor`` read this (and, with ``enter``, search it as a directory)?"""
    if enter:
        return _allows(
            actor,
            st,
            (stat.S_IRUSR | stat.S_IXUSR, stat.S_IRGRP | stat.S_IXGRP, stat.S_IROTH | stat.S_IXOTH),
        )
    return _allows(actor, st, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH))


def writable_by(actor: Actor, st: os.stat_result) -> bool:
    return _allows(
        actor,
        st,
        (stat.S_IWUSR | stat.S_IXUSR, stat.S_IWGRP | stat.S_IXGRP, stat.S_IWOTH | stat.S_IXOTH),
    )


def is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def user_roots(
    actor: Actor, configured: Sequence[str], *, admin_dirs: Sequence[Path] = ()
) -> list[Path]:
    """Real paths of the places ``actor`` may use: configured roots (``~`` = their home,
    ``{user}`` = their name) and admin-made directories (e.g. a workspace root outside
    homes). Only admin-controlled paths are resolved here."""
    out: list[Path] = []
    for root in configured:
        text = root.replace("{user}", actor.name)
        if text == "~" or text.startswith("~/"):
            text = actor.home + text[1:]
        out.append(Path(os.path.realpath(text)))
    out.extend(Path(os.path.realpath(p)) for p in admin_dirs)
    return out


def user_given_path(actor: Actor, raw: str, *, what: str, cwd: Path) -> Path:
    """A user-typed path made absolute: ``~`` is their home, relative is from ``cwd``.
    Nothing is resolved or looked at here."""
    if any(c in raw for c in "\x00\n\r"):
        raise UsageError(f"The {what} path contains control characters.", code=ErrorCode.BAD_PATH)
    if raw.startswith("~"):
        if raw != "~" and not raw.startswith("~/"):
            # "~bob" would be another user's home: never expand it on their behalf.
            raise UsageError(
                f"The {what} path {raw!r} names another user's home.",
                code=ErrorCode.PATH_NOT_ALLOWED,
            )
        given = Path(actor.home + raw[1:])
    else:
        given = Path(raw)
    return given if given.is_absolute() else cwd / given


def resolve_user_path(
    actor: Actor,
    raw: str,
    *,
    what: str,
    roots: Sequence[Path],
    cwd: Path,
    directory: bool,
) -> Path:
    """The real path of a user-given path, checked: under a root, of the right type,
    readable by the user. Anything else is bad input (exit 2) and nothing is touched."""
    absolute = user_given_path(actor, raw, what=what, cwd=cwd)
    real = Path(os.path.realpath(absolute))
    if not any(is_within(real, root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise UsageError(
            f"The {what} {real} is outside the places you may use ({shown}).",
            hint="Use a path under your home, or ask an admin to add a root to "
            "'container.allowed_mount_roots'.",
            code=ErrorCode.PATH_NOT_ALLOWED,
        )
    try:
        st = real.stat()
    except FileNotFoundError as exc:
        raise UsageError(
            f"The {what} {absolute} does not exist.", code=ErrorCode.NO_SUCH_PATH
        ) from exc
    except OSError as exc:
        raise UsageError(
            f"Cannot look at the {what} {absolute}: {exc.strerror}.", code=ErrorCode.BAD_PATH
        ) from exc
    if directory and not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"The {what} {absolute} is not a directory.", code=ErrorCode.BAD_PATH)
    if not directory and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"The {what} {absolute} is not a regular file.", code=ErrorCode.BAD_PATH)
    parent_ok = readable_by(actor, real.parent.stat(), enter=True)
    if not parent_ok or not readable_by(actor, st, enter=directory):
        raise UsageError(
            f"You cannot read the {what} {real} on the host.", code=ErrorCode.PATH_NOT_ALLOWED
        )
    return real


@contextlib.contextmanager
def open_real_dir(path: Path) -> Iterator[int]:
    """A descriptor of directory ``path`` reached without following any symlink (walked
    from ``/`` one component at a time); the context manager closes it."""
    if not path.is_absolute():
        raise ValueError(f"not absolute: {path}")
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in path.parts[1:]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


_SEARCH = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
_MAX_LINKS = 40  # the kernel's own limit on symlinks in one lookup


def walk_user_dir(
    actor: Actor, path: Path, *, follow: bool, file_ok: bool = False
) -> tuple[Path, os.stat_result]:
    """Resolve the absolute ``path`` to a directory as the kernel would for ``actor``, one
    component at a time, and return its real path and its ``stat`` (``st_dev``/``st_ino``
    name the very directory that was checked, whatever the path means later).

    Each component is opened with ``O_PATH | O_NOFOLLOW`` and looked at through that
    descriptor, so what is checked is what was opened: a link swapped in during the walk
    is either seen as a link or not at all, never followed behind our back. Symlinks are
    followed by reading them (``follow``), or refused with ``ELOOP`` (a path that was
    already resolved must not contain one). Search permission on every directory passed
    is the actor's, from the mode bits, so root acting for a user (a queue grant in
    ``enforce``) reaches no more than the user could. With ``file_ok`` the last component
    may also be a file (a bind-mounted file). Raises ``OSError`` (``ENOENT``, ``ENOTDIR``,
    ``EACCES``, ``ELOOP``).
    """
    if not path.is_absolute():
        raise ValueError(f"not absolute: {path}")
    todo = list(reversed(path.parts[1:]))
    fds = [os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    names: list[str] = []
    links = 0
    try:
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if actor.uid != 0 and not _allows(actor, os.fstat(fds[-1]), _SEARCH):
                raise PermissionError(errno.EACCES, "no search permission", _joined(names))
            if part == "..":
                if len(fds) > 1:  # ".." of "/" is "/"
                    os.close(fds.pop())
                    names.pop()
                continue
            fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[-1])
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                try:
                    # The link this descriptor holds, not whatever the name means now.
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                links += 1
                if not follow or links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, "symbolic link", _joined([*names, part]))
                todo.extend(reversed(target.split("/")))
                if target.startswith("/"):
                    while len(fds) > 1:
                        os.close(fds.pop())
                        names.pop()
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                if file_ok and not any(p not in ("", ".") for p in todo):
                    return Path(_joined([*names, part])), st
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", _joined([*names, part]))
            fds.append(fd)
            names.append(part)
        return Path(_joined(names)), os.fstat(fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


def _joined(names: Sequence[str]) -> str:
    return "/" + "/".join(names)


def _symlink_refusal(path: Path, exc: OSError) -> DS01Error:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return UsageError(
            f"{path} is, or passes through, a symbolic link or a file; DS01 only follows "
            "real directories here.",
            hint="Replace the link by a real directory (or pass the real path).",
            code=ErrorCode.SYMLINK_REFUSED,
        )
    return UsageError(f"Cannot use {path}: {exc.strerror}.", code=ErrorCode.BAD_PATH)


@dataclass
class CreatedDirs:
    """Directories made for an operation, removed again (if still empty) when it fails."""

    paths: list[Path] = field(default_factory=list)

    def rollback(self) -> None:
        for path in reversed(self.paths):
            try:
                path.rmdir()
            except OSError:
                # Not empty (the user already put files there) or gone: leave it.
                continue


def make_user_dirs(actor: Actor, top: Path, target: Path, *, mode: int = 0o755) -> CreatedDirs:
    """Create ``target`` below the existing directory ``top``, owned by ``actor``.

    Nothing above ``top`` is created or changed. Each component is created and entered
    with ``O_NOFOLLOW``: an existing symlink on the way is refused, not followed.
    """
    if not is_within(target, top):
        raise UsageError(f"{target} is not below {top}.", code=ErrorCode.PATH_NOT_ALLOWED)
    made = CreatedDirs()
    try:
        with open_real_dir(top) as fd:
            current = top
            dir_fd = os.dup(fd)
            try:
                for part in target.relative_to(top).parts:
                    current = current / part
                    try:
                        os.mkdir(part, mode, dir_fd=dir_fd)
                        made.paths.append(current)
                        created = True
                    except FileExistsError:
                        created = False
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
                    os.close(dir_fd)
                    dir_fd = nxt
                    if created and os.geteuid() == 0:
                        # Acting for a user as root: the directory must be theirs.
                        os.fchown(dir_fd, actor.uid, actor.gid)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        made.rollback()
        raise _symlink_refusal(target, exc) from exc
    return made


def read_user_file(actor: Actor, real: Path, *, what: str, max_bytes: int = 16 << 20) -> bytes:
    """Read a file ``resolve_user_path`` approved, refusing a symlink swapped in since."""
    try:
        with open_real_dir(real.parent) as dir_fd:
            fd = os.open(real.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise _symlink_refusal(real, exc) from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or not readable_by(actor, st):
            raise UsageError(f"You cannot read the {what} {real}.", code=ErrorCode.PATH_NOT_ALLOWED)
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UsageError(
            f"The {what} {real} is larger than {max_bytes} bytes.", code=ErrorCode.BAD_PATH
        )
    return data


def append_user_file(directory: Path, name: str, text: str, *, uid: int, gid: int) -> Path:
    """Append to ``directory/name``, a file of user ``uid``; never through a symlink or a
    hard link, and never to anything not owned by that user (the directory included)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    real = Path(os.path.realpath(directory))
    with open_real_dir(real) as dir_fd:
        if os.fstat(dir_fd).st_uid != uid:
            raise PermissionError(errno.EPERM, "directory not owned by the user", str(real))
        fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise PermissionError(errno.EPERM, "not a plain file", str(real / name))
        if st.st_uid != uid:
            if os.geteuid() != 0 or st.st_size:
                raise PermissionError(errno.EPERM, "file owned by someone else", str(real / name))
            os.fchown(fd, uid, gid)  # just created by root: make it the user's
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return real / name
