"""The record-and-undo side of ``container create`` (see :mod:`ds01.services.create`).

Before a create makes anything it writes its journal record
(:mod:`ds01.adapters.create_journal`): the container tag and every directory it may
make. On failure it undoes what it made; when the engine cannot remove the container now
(the engine stopped), the directories still go and the record stays, so that the next
command of the user or the next enforcement pass removes the container
(:mod:`ds01.services.recovery`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ds01.adapters.create_journal import Creator, Journal
from ds01.domain.labels import L
from ds01.errors import NotFoundError

if TYPE_CHECKING:
    from ds01.adapters.user_fs import CreatedDirs
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = ["begin", "missing_dirs", "remove_own", "rollback"]


class Prepared(Protocol):
    """The parts of :class:`ds01.services.create.Prepared` used here (a protocol, so
    that this module does not import the create service)."""

    actor: Actor
    tag: str
    workspace: Path
    default_workspace: bool
    created: bool
    creator: str | None
    journal: str | None


def missing_dirs(path: Path) -> list[Path]:
    """The directories above and including ``path`` that do not exist yet, top first."""
    missing: list[Path] = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def begin(ctx: AppContext, prepared: Prepared) -> Journal | None:
    """Record the create before anything is made: its tag and every directory it may
    make (so that even a kill -9 right after a mkdir leaves nothing behind)."""
    actor = prepared.actor
    dirs = missing_dirs(prepared.workspace) if prepared.default_workspace else []
    creator = Creator.me()
    prepared.creator = creator.encode()
    state_dir = Path(ctx.settings.state_dir)
    try:
        journal = Journal.begin(
            state_dir,
            uid=actor.uid,
            gid=actor.gid,
            user=actor.name,
            tag=prepared.tag,
            dirs=dirs,
            creator=creator,
            now=ctx.clock.now().isoformat(timespec="seconds"),
        )
    except OSError as exc:
        # Not fatal: the container still carries its creator, so a never-started one is
        # found; only a kill after its start would go unnoticed.
        ctx.warnings.append(
            f"This create could not be recorded under {state_dir}/users "
            f"({exc.strerror or exc}); if it is interrupted after the container started, "
            "remove the container yourself. Ask an admin to fix the state directory's "
            "permissions."
        )
        return None
    prepared.journal = str(journal.path)
    return journal


def rollback(
    ctx: AppContext, prepared: Prepared, made: CreatedDirs, journal: Journal | None
) -> None:
    """Undo what the create made. The directories go even when the engine cannot remove
    the container now; the record then stays for the next sweep."""
    undone = True
    try:
        if prepared.created:
            remove_own(ctx, prepared)
    except Exception as exc:
        undone = False
        why = getattr(exc, "message", None) or str(exc)
        ctx.warnings.append(
            f"The half-made container {prepared.tag} could not be removed now ({why}); "
            "your next ds01 command or the next enforcement pass removes it."
        )
    finally:
        made.rollback()
        if journal is not None:
            if undone:
                journal.commit()
            else:
                journal.close()


def remove_own(ctx: AppContext, prepared: Prepared) -> None:
    """Remove the container under this tag only if this create made it: a concurrent
    create of the same name may own it (and the engine answered 409 to ours)."""
    try:
        info = ctx.engine.inspect(prepared.tag).info
    except NotFoundError:
        return
    if info.labels.get(L.CREATOR) != prepared.creator:
        return
    ctx.engine.remove(info.id, force=True)
