"""Host directories users mount into containers, checked so no path escapes its place.

A user's container has passwordless sudo inside, so whatever is mounted into it is
root-writable there. A mount source must therefore, after resolving symlinks, lie under
the user's home or a root an admin configured (``container.allowed_mount_roots``), and
the user must be able to read it on the host. A directory the user may only read is
mounted read-only; the workspace must be writable. The checks and the symlink-proof
directory creation live in :mod:`ds01.adapters.user_fs`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.adapters.user_fs import (
    CreatedDirs,
    is_within,
    make_user_dirs,
    resolve_user_path,
    user_roots,
    writable_by,
)
from ds01.domain.actor import Actor
from ds01.errors import UsageError

if TYPE_CHECKING:
    from ds01.config.settings import Settings

__all__ = [
    "CreatedDirs",
    "MountPlan",
    "check_unchanged",
    "default_workspace",
    "ensure_workspace",
    "mount_roots",
    "plan_mounts",
]


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
    real = resolve_user_path(
        actor, raw, what=f"{what} directory", roots=roots, cwd=cwd, directory=True
    )
    _no_comma(real, what)
    return real, not writable_by(actor, real.stat())


def _no_comma(path: Path, what: str) -> None:
    """Mount paths become labels, and AIME's ``mlc list`` splits labels on commas."""
    if "," in str(path):
        raise UsageError(
            f"The {what} directory {path} contains a comma, which AIME's tools cannot read "
            "back from the container's labels.",
            hint="Rename the directory (or use a link without a comma to it).",
            code="bad_path",
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
                code="path_not_allowed",
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
            code="no_workspace_root",
        )
    return make_user_dirs(actor, top, path)


def check_unchanged(sources: Iterable[str]) -> None:
    """Before a (re)start: every bind source is still the real directory it was checked
    as; a directory replaced by a symlink since would make Docker mount its target."""
    for source in sources:
        if os.path.realpath(source) != source.rstrip("/") or os.path.islink(source):
            raise UsageError(
                f"The mounted directory {source} has been replaced by a link since the "
                "container was created; DS01 does not start it like that.",
                hint="Put the real directory back, or remove the container and create it again.",
                code="mount_changed",
            )
