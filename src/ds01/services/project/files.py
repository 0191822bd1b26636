"""The files of a user's project as a build reads and writes them: checked before they
are touched, read and written with no link followed (see :class:`ProjectFiles`)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

# The O_NOFOLLOW walk of user_fs, for directories DS01 writes into through a descriptor.
from ds01.adapters.user_fs import open_real_dir as walk_real_directory
from ds01.adapters.user_fs import read_user_file, resolve_user_path
from ds01.errors import ErrorCode, UsageError
from ds01.services.container.mounts import (
    CreatedDirs,
    default_workspace,
    ensure_workspace,
    mount_roots,
)

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = [
    "MAX_TEXT_BYTES",
    "NEW_FILE_FLAGS",
    "ProjectFiles",
    "acting_for_someone",
    "os_reason",
]


#: The largest text file (Dockerfile, requirements) a build reads for a user.
MAX_TEXT_BYTES = 1024 * 1024
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def acting_for_someone(actor: Actor) -> bool:
    """Root acting for a user: files made for them must be given to them."""
    return os.geteuid() == 0 and actor.uid != 0


def os_reason(exc: OSError) -> str:
    """Why a path could not be used, in words (a link in the way is named as such)."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a symbolic link (or a file) is in the way, and DS01 does not follow it"
    return exc.strerror or str(exc)


class ProjectFiles:
    """The files a build reads and writes for a user, checked before they are touched.

    Paths the user names (``--dockerfile``, ``--requirements``) must lie, after resolving
    links, under the places the user may mount from (their home from the password
    database and the admin's roots, :func:`ds01.services.container.mounts.mount_roots`), be readable
    by the user, and are then read through a descriptor that follows no link (exit 2
    otherwise). The project directory must be the user's own real directory, reached
    without a link; files in it are replaced atomically through its descriptor.
    """

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def roots(self, actor: Actor) -> list[Path]:
        """Where DS01 reads files for ``actor``: exactly where they may mount from."""
        return mount_roots(self.ctx.settings, actor)

    def user_path(
        self, actor: Actor, raw: str, *, what: str, cwd: Path, directory: bool = False
    ) -> Path:
        """A path the user named, resolved and checked like a mount source (exit 2).

        It must exist, lie (after symlinks) under :meth:`roots`, and be readable by the
        user: DS01 never reads a file for a build that its user could not.
        """
        return resolve_user_path(
            actor, raw, what=what, roots=self.roots(actor), cwd=cwd, directory=directory
        )

    def read_text(self, actor: Actor, path: Path, what: str) -> str:
        """The UTF-8 text of a file :meth:`user_path` approved, read without following a
        link swapped in since, and only if ``actor`` may read what was opened."""
        data = read_user_file(actor, path, what=what, max_bytes=MAX_TEXT_BYTES)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"The {what} {path} is not UTF-8 text.", code=ErrorCode.BAD_ENCODING
            ) from exc

    def project_path(self, actor: Actor, name: str) -> Path:
        """Where the project ``name`` lives (unchecked): the directory ``container create
        NAME`` mounts as its workspace, as a real path below the user's home (or below the
        admin's workspace root)."""
        return default_workspace(self.ctx.settings, actor, name)

    def project_dir(self, actor: Actor, name: str) -> Path:
        """:meth:`project_path`, checked: if it exists it is a real directory (not a link)
        owned by the user, reached without passing a link (exit 2 otherwise)."""
        project = self.project_path(actor, name)
        try:
            st = project.lstat()
        except FileNotFoundError:
            return project
        except OSError as exc:
            raise UsageError(
                f"Cannot look at the project directory {project}: {os_reason(exc)}.",
                code=ErrorCode.BAD_PROJECT_DIR,
            ) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(
                f"{project} is not a directory (a link or a file).",
                hint="Rename or remove it, or pick another project name.",
                code=ErrorCode.BAD_PROJECT_DIR,
            )
        if st.st_uid != actor.uid:
            # DS01 may run as root for the user: never write into a directory not theirs.
            raise UsageError(
                f"{project} does not belong to {actor.name}.",
                hint="Pick another project name, or ask the directory's owner to hand it over.",
                code=ErrorCode.BAD_PROJECT_DIR,
            )
        # Walks every component with O_NOFOLLOW: a linked ~/workspace is refused here.
        # It creates nothing, as everything exists; a directory a race made goes again.
        self.ensure_project_dir(actor, project).rollback()
        return project

    def ensure_project_dir(self, actor: Actor, project: Path) -> CreatedDirs:
        """Create the project directory (and missing parents), the user's, refusing links."""
        return ensure_workspace(actor, project, self.ctx.settings)

    def read_dockerfile(self, actor: Actor, path: Path) -> str | None:
        """The project Dockerfile's text, or ``None`` when there is none."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(
                f"Cannot look at {path}: {os_reason(exc)}.",
                hint="Check that the project directory is yours and a real directory.",
                code=ErrorCode.BAD_DOCKERFILE,
            ) from exc
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(
                f"{path} is not a regular file (a link or a directory).",
                hint="Replace it with the Dockerfile itself.",
                code=ErrorCode.BAD_DOCKERFILE,
            )
        return self.read_text(actor, path, "Dockerfile")

    def write(self, actor: Actor, path: Path, text: str) -> None:
        """Replace ``path`` atomically (a link there is replaced, never followed).

        ``path.parent`` must be a real path: it is opened with ``O_NOFOLLOW`` from ``/``
        down, and (acting as root) must belong to the user. Any failure is exit 2 with
        the reason; nothing is left behind.
        """
        try:
            with walk_real_directory(path.parent) as dir_fd:
                if acting_for_someone(actor) and os.fstat(dir_fd).st_uid != actor.uid:
                    raise UsageError(
                        f"{path.parent} does not belong to {actor.name}; DS01 does not "
                        "write there for you.",
                        code=ErrorCode.BAD_PROJECT_DIR,
                    )
                _replace_in(dir_fd, path.name, text.encode(), actor)
        except OSError as exc:
            raise UsageError(
                f"Cannot write {path}: {os_reason(exc)}.",
                hint="Check that the directory exists and is yours, and that the disk has room.",
                code=ErrorCode.CANNOT_WRITE,
            ) from exc


def _replace_in(dir_fd: int, name: str, data: bytes, actor: Actor) -> None:
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, NEW_FILE_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), 0o644)
            if acting_for_someone(actor):
                os.fchown(fh.fileno(), actor.uid, actor.gid)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        # The failure that got us here is what gets reported; a temporary file that
        # cannot be removed either is only clutter.
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
