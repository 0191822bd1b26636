"""Host directories users mount into containers, checked so no path escapes its place.

A user's container has passwordless sudo inside, so anything mounted into it is readable
and writable as root there. A mount source therefore must (after resolving symlinks) lie
under one of the configured roots (by default the user's home) and be accessible to the
user on the host: DS01 never mounts what the user could not open themselves.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ds01.domain.actor import Actor
from ds01.errors import RefusedError, UsageError

__all__ = ["CreatedDirs", "check_mount_source", "ensure_workspace"]


def _allowed_roots(actor: Actor, roots: list[str], extra: list[Path]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        text = root.replace("{user}", actor.name)
        if text == "~" or text.startswith("~/"):
            text = actor.home + text[1:]
        out.append(Path(os.path.realpath(text)))
    out.extend(Path(os.path.realpath(p)) for p in extra)
    return out


def _accessible(actor: Actor, path: Path, st: os.stat_result) -> bool:
    """Can ``actor`` read and enter ``path``? Checked from the mode bits, not os.access,
    because DS01 may run as root (sudo, or the stage-2 daemon) on the user's behalf."""
    mode = st.st_mode
    if st.st_uid == actor.uid:
        return bool(mode & stat.S_IRUSR and mode & stat.S_IXUSR)
    gids = {actor.gid}
    # An account the group database no longer knows keeps just its primary group.
    with contextlib.suppress(OSError):
        gids.update(os.getgrouplist(actor.name, actor.gid))
    if st.st_gid in gids:
        return bool(mode & stat.S_IRGRP and mode & stat.S_IXGRP)
    return bool(mode & stat.S_IROTH and mode & stat.S_IXOTH)


def check_mount_source(
    actor: Actor, raw: str, *, what: str, roots: list[str], extra_roots: list[Path], cwd: Path
) -> Path:
    """Resolve a user-given directory for ``-w``/``-d``/``-m``; exit 2 or 3 if unusable."""
    if "\x00" in raw or "\n" in raw:
        raise UsageError(f"The {what} path contains control characters.")
    if raw.startswith("~"):
        if raw != "~" and not raw.startswith("~/"):
            # "~bob" would be another user's home: never expand it on their behalf.
            raise UsageError(f"The {what} path {raw!r} names another user's home.")
        given = Path(actor.home + raw[1:])
    else:
        given = Path(raw)
    absolute = given if given.is_absolute() else cwd / given
    real = Path(os.path.realpath(absolute))
    try:
        st = real.stat()
    except FileNotFoundError as exc:
        raise UsageError(
            f"The {what} directory {absolute} does not exist.",
            hint="Create it first, or leave the option out to use the default.",
            code="no_such_directory",
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"The {what} path {absolute} is not a directory.")
    allowed = _allowed_roots(actor, roots, extra_roots)
    if not any(real == root or root in real.parents for root in allowed):
        shown = ", ".join(str(r) for r in allowed)
        raise RefusedError(
            f"The {what} directory {real} is outside the places you may mount ({shown}).",
            hint="Use a directory under your home, or ask an admin to add a root to "
            "'container.allowed_mount_roots'.",
            code="mount_not_allowed",
        )
    if not _accessible(actor, real, st):
        raise RefusedError(
            f"You cannot read the {what} directory {real} on the host, so it is not mounted.",
            code="mount_not_allowed",
        )
    return real


@dataclass
class CreatedDirs:
    """Directories made for an operation, removed again (if still empty) when it fails."""

    paths: list[Path]

    def rollback(self) -> None:
        for path in reversed(self.paths):
            try:
                path.rmdir()
            except OSError:
                # Not empty (the user already put files there) or gone: leave it.
                continue


def ensure_workspace(actor: Actor, path: Path) -> CreatedDirs:
    """Create ``path`` (and missing parents) owned by the actor; report what was made."""
    made: list[Path] = []
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o755)
        except FileExistsError:
            continue
        except OSError as exc:
            CreatedDirs(made).rollback()
            raise UsageError(
                f"Cannot create the workspace {path}: {exc.strerror}.",
                hint="Check 'workspace_root' in the DS01 configuration, or pass -w DIR.",
            ) from exc
        made.append(directory)
        if os.geteuid() == 0:
            # Acting for a user as root (sudo, daemon): the directory must be theirs.
            os.chown(directory, actor.uid, actor.gid)
    return CreatedDirs(made)
