"""Host directories users mount into containers, checked so no path escapes its place.

A user's container has passwordless sudo inside, so whatever is mounted into it is
root-writable there. A mount source must therefore, after resolving symlinks, lie under
the user's home or a root an admin configured (``container.allowed_mount_roots``), and
the user must be able to read it on the host. A directory the user may only read is
mounted read-only; the workspace must be writable. The checks and the symlink-proof
directory creation live in :mod:`ds01.adapters.user_fs`.

Docker resolves a bind source itself, following symlinks, when the container starts, so
a check of the path before that is only half the answer: a directory swapped for a link
in between would be followed. There is no window because of three steps:

1. **resolve** each path component by component without letting the kernel follow a link
   (:func:`~ds01.adapters.user_fs.walk_user_dir`), with the owner's rights, and keep the
   ``(st_dev, st_ino)`` of the directory that passed the checks; Docker gets its real path;
2. **nothing of the user's runs at start**: the container's main process is DS01's
   keep-alive from the host and the image's entrypoint is dropped
   (:mod:`ds01.domain.keepalive`);
3. **verify** after the start, before the container is handed over, that what is mounted
   at each target (seen through ``/proc/<init pid>/root``) is that very directory; if not,
   the container is removed (create) or stopped (start) and the command exits 2 with
   ``mount_changed``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.adapters.user_fs import (
    CreatedDirs,
    is_within,
    make_user_dirs,
    readable_by,
    user_given_path,
    user_roots,
    walk_user_dir,
    writable_by,
)
from ds01.domain.actor import Actor
from ds01.domain.containers import Mount
from ds01.errors import ErrorCode, UsageError

if TYPE_CHECKING:
    from ds01.config.settings import Settings

__all__ = [
    "CheckedMount",
    "CreatedDirs",
    "MountPlan",
    "check_mounts",
    "check_unchanged",
    "default_workspace",
    "ensure_workspace",
    "mount_roots",
    "plan_mounts",
    "unchanged_stat",
]

#: What each AIME mount target is called in messages.
_WHAT = {"/workspace": "workspace", "/data": "data", "/models": "models"}


def mount_roots(settings: Settings, actor: Actor) -> list[Path]:
    """Where ``actor`` may mount from: the configured roots, and the workspace root when
    an admin put it outside homes (``/srv/work/{user}``)."""
    base = settings.workspace_base(actor.name, actor.home)
    admin_dirs = [] if is_within(base, Path(actor.home)) else [base]
    return user_roots(actor, settings.container.allowed_mount_roots, admin_dirs=admin_dirs)


@dataclass(frozen=True)
class MountPlan:
    """The checked host directories of one container (real paths)."""

    workspace: Path
    workspace_is_default: bool
    data: Path | None = None
    data_read_only: bool = False
    models: Path | None = None
    models_read_only: bool = False


def _resolve(actor: Actor, raw: str, what: str, roots: list[Path], cwd: Path) -> tuple[Path, bool]:
    absolute = user_given_path(actor, raw, what=f"{what} directory", cwd=cwd)
    try:
        real, st = walk_user_dir(actor, absolute, follow=True)
    except OSError as exc:
        raise _walk_error(f"{what} directory", absolute, exc) from exc
    _check_place(actor, real, st, what, roots)
    _no_comma(real, what)
    return real, not writable_by(actor, st)


def _walk_error(what: str, path: Path, exc: OSError) -> UsageError:
    if exc.errno == errno.ENOENT:
        return UsageError(f"The {what} {path} does not exist.", code=ErrorCode.NO_SUCH_PATH)
    if exc.errno == errno.ENOTDIR:
        return UsageError(
            f"The {what} {path} is not a directory (or passes through a file).",
            code=ErrorCode.BAD_PATH,
        )
    if exc.errno == errno.EACCES:
        return UsageError(
            f"You cannot reach the {what} {path} on the host.",
            hint="Pick a directory you can open yourself.",
            code=ErrorCode.PATH_NOT_ALLOWED,
        )
    if exc.errno == errno.ELOOP:
        return UsageError(
            f"The {what} {path} passes through too many links.", code=ErrorCode.BAD_PATH
        )
    return UsageError(f"Cannot look at the {what} {path}: {exc.strerror}.", code=ErrorCode.BAD_PATH)


def _check_place(
    actor: Actor, real: Path, st: os.stat_result, what: str, roots: Sequence[Path]
) -> None:
    if not any(is_within(real, root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise UsageError(
            f"The {what} directory {real} is outside the places you may use ({shown}).",
            hint="Use a path under your home, or ask an admin to add a root to "
            "'container.allowed_mount_roots'.",
            code=ErrorCode.PATH_NOT_ALLOWED,
        )
    if not readable_by(actor, st, enter=True):
        raise UsageError(
            f"You cannot read the {what} directory {real} on the host.",
            code=ErrorCode.PATH_NOT_ALLOWED,
        )


def _no_comma(path: Path, what: str) -> None:
    """Mount paths become labels, and AIME's ``mlc list`` splits labels on commas."""
    if "," in str(path):
        raise UsageError(
            f"The {what} directory {path} contains a comma, which AIME's tools cannot read "
            "back from the container's labels.",
            hint="Rename the directory (or use a link without a comma to it).",
            code=ErrorCode.BAD_PATH,
        )


def plan_mounts(
    settings: Settings,
    actor: Actor,
    *,
    name: str,
    workspace: str | None,
    data: str | None,
    models: str | None,
    cwd: Path,
) -> MountPlan:
    """Check ``-w``/``-d``/``-m`` (exit 2 if unusable); nothing is created here."""
    roots = mount_roots(settings, actor)
    data_path = data_ro = None
    models_path = models_ro = None
    if data:
        data_path, data_ro = _resolve(actor, data, "data", roots, cwd)
    if models:
        models_path, models_ro = _resolve(actor, models, "models", roots, cwd)
    if workspace:
        ws, ws_ro = _resolve(actor, workspace, "workspace", roots, cwd)
        if ws_ro:
            raise UsageError(
                f"You cannot write to the workspace directory {ws}.",
                hint="Pick a directory of yours, or leave -w out for ~/workspace/NAME.",
                code=ErrorCode.PATH_NOT_ALLOWED,
            )
        return MountPlan(ws, False, data_path, bool(data_ro), models_path, bool(models_ro))
    workspace_path = default_workspace(settings, actor, name)
    _no_comma(workspace_path, "workspace")
    return MountPlan(
        workspace_path,
        True,
        data_path,
        bool(data_ro),
        models_path,
        bool(models_ro),
    )


def default_workspace(settings: Settings, actor: Actor, name: str) -> Path:
    """``<workspace_base>/NAME`` as a real path below a directory the user cannot redirect."""
    top, below = _workspace_top(settings, actor)
    return top / below / name


def _workspace_top(settings: Settings, actor: Actor) -> tuple[Path, Path]:
    base = settings.workspace_base(actor.name, actor.home)
    home = Path(actor.home)
    if is_within(base, home):
        return Path(os.path.realpath(home)), base.relative_to(home)
    # An admin-made root such as /srv/work/{user}: its parent must exist already.
    return Path(os.path.realpath(base.parent)), Path(base.name)


def ensure_workspace(actor: Actor, path: Path, settings: Settings | None = None) -> CreatedDirs:
    """Create a project directory (and missing parents up to the user's home, or up to the
    admin's workspace root), owned by the actor, refusing symlinks on the way."""
    home = Path(os.path.realpath(actor.home))
    if settings is not None:
        top, _ = _workspace_top(settings, actor)
    elif is_within(path, home):
        top = home
    else:
        top = path.parent  # an admin-made root: nothing above the project is created
    if not top.is_dir():
        raise UsageError(
            f"The workspace root {top} does not exist.",
            hint="Ask an admin to create it (see 'workspace_root'), or pass -w DIR.",
            code=ErrorCode.NO_WORKSPACE_ROOT,
        )
    return make_user_dirs(actor, top, path)


@dataclass(frozen=True)
class CheckedMount:
    """A bind mount whose source directory passed the checks, and which directory that
    was: ``(dev, ino)`` is compared with what Docker really mounted at ``mount.target``."""

    mount: Mount
    dev: int
    ino: int


def _changed(what: str, source: str) -> UsageError:
    return UsageError(
        f"The {what} directory {source} has been replaced (by a link or another directory) "
        "since DS01 checked it; DS01 does not mount it like that.",
        hint="Put the real directory back (or pass the directory itself, not a link that "
        "changes), then run the command again.",
        code=ErrorCode.MOUNT_CHANGED,
    )


def check_mounts(
    settings: Settings, actor: Actor, mounts: Sequence[Mount]
) -> tuple[CheckedMount, ...]:
    """Right before the container is made: each source, already a real path, is walked
    again without following any link (one found now was swapped in), with the owner's
    rights, under the owner's roots; a directory the owner cannot write is mounted
    read-only whatever was asked. Raises exit 2 (``mount_changed`` and the plan's codes).
    """
    roots = mount_roots(settings, actor)
    out: list[CheckedMount] = []
    for mount in mounts:
        what = _WHAT.get(mount.target, mount.target)
        path = Path(mount.source)
        try:
            real, st = walk_user_dir(actor, path, follow=False)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _changed(what, mount.source) from exc
            raise _walk_error(f"{what} directory", path, exc) from exc
        if str(real) != mount.source:
            raise _changed(what, mount.source)  # "..", "//": not the real path DS01 made
        _check_place(actor, real, st, what, roots)
        read_only = mount.read_only or not writable_by(actor, st)
        if mount.target == "/workspace" and read_only:
            raise UsageError(
                f"You cannot write to the workspace directory {real}.",
                hint="Pick a directory of yours, or leave -w out for ~/workspace/NAME.",
                code=ErrorCode.PATH_NOT_ALLOWED,
            )
        out.append(CheckedMount(Mount(mount.source, mount.target, read_only), st.st_dev, st.st_ino))
    return tuple(out)


def check_unchanged(sources: Iterable[str], actor: Actor | None = None) -> None:
    """Every bind source is still the real path it was checked as (walked without
    following a link, with ``actor``'s rights when given): a directory replaced by a
    symlink since would make Docker mount the link's target. Exit 2 ``mount_changed``.
    This is the early refusal with a clear message; what Docker then really mounts is
    verified after the start (:mod:`ds01.services.container.mount_verify`)."""
    walker = actor or _process_actor()
    for source in sources:
        unchanged_stat(source, walker)


def unchanged_stat(source: str, actor: Actor) -> os.stat_result:
    """The ``stat`` of the bind source ``source``, reached without following a link (one
    on the way is refused with ``mount_changed``) and with ``actor``'s search rights."""
    path = Path(source)
    try:
        real, st = walk_user_dir(actor, path, follow=False, file_ok=True)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _changed("mounted", source) from exc
        raise _walk_error("mounted directory", path, exc) from exc
    if str(real) != (source.rstrip("/") or "/"):
        raise _changed("mounted", source)
    return st


def _process_actor() -> Actor:
    import pwd

    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
        return Actor(uid=uid, gid=os.getegid(), name=entry.pw_name, home=entry.pw_dir)
    except KeyError:
        return Actor(uid=uid, gid=os.getegid(), name=str(uid), home="/")
