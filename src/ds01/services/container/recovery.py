"""Finding and removing what interrupted creates left half-made.

A create can die anywhere: ``kill -9``, a lost SSH session, the Docker engine stopping
between "create" and its answer, a rollback whose own engine call failed. What it leaves
is recognisable in two ways (see :mod:`ds01.adapters.create_journal`):

* its **journal** record is still there and its creator is dead: the record names the
  container tag and the directories the create may have made;
* its **container** carries the creator's identity (``DS01_CREATOR``) and the record's
  path (``DS01_JOURNAL``): a container whose creator is dead and that was never started,
  or whose record still exists, was never reported to anyone.

The sweep removes such a container (only when its creator label matches, so a later
create of the same name is never touched), removes the recorded directories if they are
still empty, puts a queue entry whose grant was interrupted back to waiting, records a
``container.recover`` event and tells the caller in a warning. Docker stays the source of
truth: a container is complete when its creator finished, which the deleted record says.

It runs at the start of every command that touches a user's containers (create, start,
stop, remove, list) and of every enforcement pass (all users). It never makes the
command fail: an engine that is down or a state directory that cannot be read means "try
again next time", said in a warning.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.adapters.create_journal import Creator, StaleJournal, stale_journals
from ds01.adapters.queue_store import QueueStore
from ds01.adapters.user_fs import is_within, open_real_dir
from ds01.domain.containers import ContainerState
from ds01.domain.labels import L
from ds01.domain.naming import split_tag
from ds01.domain.queue import QueueState
from ds01.errors import DS01Error, NotFoundError
from ds01.serialize import json_key, to_json

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.domain.containers import ContainerInfo
    from ds01.services.context import AppContext

__all__ = ["Recovered", "RecoveryService", "is_half_made"]


@dataclass
class Recovered:
    """One half-made create cleaned up."""

    tag: str = field(metadata=json_key("container"))
    user: str | None
    creator: str
    container_removed: bool = False
    dirs_removed: list[str] = field(default_factory=list)
    queue_entry: int | None = None

    def message(self) -> str:
        what = []
        if self.container_removed:
            what.append(f"removed the half-made container {self.tag}")
        if self.dirs_removed:
            what.append("removed the empty directories " + ", ".join(self.dirs_removed))
        if self.queue_entry is not None:
            what.append(f"put queue request #{self.queue_entry} back to waiting")
        pid = Creator.parse(self.creator)
        by = f"process {pid.pid}" if pid else "an earlier command"
        done = "; ".join(what) or "cleared its record"
        return f"A create interrupted earlier ({by}, {self.tag}) was cleaned up: {done}."


def _dead_creator(info: ContainerInfo) -> Creator | None:
    creator = Creator.parse(info.labels.get(L.CREATOR))
    return creator if creator is not None and not creator.alive() else None


def is_half_made(info: ContainerInfo) -> bool:
    """Cheap check on a listing (no settings, no state): made by a process that is gone,
    and either never started or its create record was never cleared."""
    if _dead_creator(info) is None:
        return False
    if info.state is ContainerState.CREATED:
        return True
    journal = info.labels.get(L.JOURNAL) or ""
    return os.path.isabs(journal) and os.path.lexists(journal)


class RecoveryService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    # -- entry points -------------------------------------------------------------------

    def sweep_user(
        self,
        actor: Actor,
        listing: list[ContainerInfo] | None = None,
        *,
        journals: bool = True,
    ) -> list[Recovered]:
        """Clean up ``actor``'s interrupted creates. ``journals=False`` (``container
        list``, typed all day) looks at the records only when the listing shows a
        half-made container, so that the common case reads no configuration."""
        try:
            if listing is None:
                # Only containers made since creators were labelled can be half-made.
                listing = self.ctx.engine.list_containers([f"{L.USER}={actor.name}", L.CREATOR])
            suspects = [c for c in listing if is_half_made(c)]
            if not suspects and not journals:
                return []
            return self._sweep(actor.uid, {actor.name}, suspects)
        except (DS01Error, OSError) as exc:
            self._warn_later(exc)
            return []

    def sweep_all(
        self, owners: Collection[str] | None = None, listing: list[ContainerInfo] | None = None
    ) -> list[Recovered]:
        """Every user's interrupted creates (enforcement; ``owners`` narrows it)."""
        if listing is None:
            listing = self.ctx.engine.list_containers([L.CREATOR])
        scoped = [c for c in listing if owners is None or c.owner in owners]
        suspects = [c for c in scoped if is_half_made(c)]
        return self._sweep(None, owners, suspects)

    # -- the sweep ----------------------------------------------------------------------

    def _sweep(
        self,
        uid: int | None,
        owners: Collection[str] | None,
        suspects: list[ContainerInfo],
    ) -> list[Recovered]:
        done: list[Recovered] = []
        handled: set[str] = set()
        state_dir = Path(self.ctx.settings.state_dir)
        for journal in stale_journals(state_dir, uid):
            try:
                user = str(journal.record.get("user", ""))
                if owners is not None and user not in owners:
                    continue
                outcome = self._from_journal(journal)
            except (DS01Error, OSError) as exc:
                self._warn_later(exc)
                continue  # the record stays for the next sweep
            finally:
                journal.release()
            handled.add(journal.tag)
            if outcome is not None:
                done.append(outcome)
        for info in suspects:
            if info.tag in handled or info.state is not ContainerState.CREATED:
                continue
            try:
                done.append(self._from_label(info))
            except DS01Error as exc:
                self._warn_later(exc)
        for item in done:
            self._report(item)
        return done

    def _from_journal(self, journal: StaleJournal) -> Recovered:
        tag = journal.tag
        item = Recovered(tag, journal.record.get("user"), str(journal.record.get("creator")))
        container = self._inspect(tag)
        if container is not None and self._made_by(container, journal):
            self._remove(container)
            item.container_removed = True
            item.queue_entry = self._requeue(container)
            container = None
        if container is None:
            # A container under this tag that the record's creator did not make means the
            # name was created again since: its directories may be in use, leave them.
            user = str(journal.record.get("user", ""))
            others = self.ctx.engine.list_containers([f"{L.USER}={user}"]) if user else []
            in_use = _mount_sources(c for c in others if c.tag != tag)
            item.dirs_removed = self._remove_empty_dirs(journal, in_use)
        journal.done()
        return item

    def _from_label(self, info: ContainerInfo) -> Recovered:
        """A never-started container whose creator died, with no record to go by (the
        record could not be written, or the engine finished the create after the
        record's sweep)."""
        item = Recovered(info.tag, info.owner, info.labels.get(L.CREATOR, ""))
        self._remove(info)
        item.container_removed = True
        item.queue_entry = self._requeue(info)
        return item

    # -- steps ----------------------------------------------------------------------

    def _inspect(self, tag: str) -> ContainerInfo | None:
        if not tag:
            return None
        try:
            return self.ctx.engine.inspect(tag).info
        except NotFoundError:
            return None

    @staticmethod
    def _made_by(info: ContainerInfo, journal: StaleJournal) -> bool:
        """The container is the one this record's create made, for this record's user
        (records live in a directory the user writes: never trust the tag alone)."""
        labels = info.decoded
        return (
            info.labels.get(L.CREATOR) == journal.record.get("creator")
            and split_tag(info.tag)[1] == journal.owner_uid
            and labels is not None
            and labels.uid == journal.owner_uid
        )

    def _remove(self, info: ContainerInfo) -> None:
        self.ctx.engine.remove(info.id, force=True)

    def _requeue(self, info: ContainerInfo) -> int | None:
        """An interrupted grant: its entry waits again (if it was marked granted)."""
        raw = info.labels.get(L.QUEUE_ID)
        if not raw or not raw.isdigit():
            return None

        store = QueueStore(self.ctx.state_db)
        try:
            row = store.get(int(raw))
            if row.entry.user != info.owner:
                return None
            if row.entry.state is QueueState.WAITING:
                return int(raw)  # never marked granted: the next pass grants it again
            if row.entry.state is QueueState.GRANTED and row.container == info.tag:
                store.set_state(
                    int(raw),
                    QueueState.WAITING,
                    now=self.ctx.clock.now(),
                    message="its grant was interrupted; waiting again",
                    only_if=QueueState.GRANTED,
                )
                return int(raw)
        except DS01Error as exc:
            self._warn_later(exc)
        return None

    def _remove_empty_dirs(self, journal: StaleJournal, in_use: set[str]) -> list[str]:
        """The recorded directories that are still empty and the user's, deepest first,
        without following a symlink anywhere on the way (this may run as root)."""
        owner = journal.owner_uid
        roots = self._user_roots(owner, str(journal.record.get("user", "")))
        removed: list[str] = []
        for path in sorted(journal.dirs, key=lambda p: len(p.parts), reverse=True):
            if str(path) in in_use or not any(is_within(path, r) and path != r for r in roots):
                continue
            with contextlib.suppress(OSError, ValueError), open_real_dir(path.parent) as dir_fd:
                st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) and st.st_uid == owner:
                    os.rmdir(path.name, dir_fd=dir_fd)  # only if empty
                    removed.append(str(path))
        return removed

    def _user_roots(self, uid: int, user: str) -> list[Path]:
        try:
            owner = self.ctx.accounts.actor(str(uid), with_groups=False)
        except DS01Error:
            return []
        home = Path(os.path.realpath(owner.home))
        base = self.ctx.settings.workspace_base(owner.name or user, owner.home)
        return [home, Path(os.path.realpath(base))]

    def _report(self, item: Recovered) -> None:
        self.ctx.warnings.append(item.message())
        try:
            self.ctx.events.record(
                actor=item.user or "?",
                action="container.recover",
                target=item.tag,
                result="removed" if item.container_removed else "cleaned",
                owner=item.user,
                details={**to_json(item), "by": self._by()},
            )
        except DS01Error as exc:
            self.ctx.warnings.append(f"The clean-up could not be recorded: {exc.message}")

    def _by(self) -> str | None:
        try:
            return self.ctx.actor.name
        except DS01Error:
            return None

    def _warn_later(self, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, DS01Error) else str(exc)
        self.ctx.warnings.append(
            f"Could not check for containers left half-made by interrupted creates "
            f"({message}); the next command retries."
        )


def _mount_sources(infos: Iterable[ContainerInfo]) -> set[str]:
    out: set[str] = set()
    for info in infos:
        labels = info.decoded
        if labels is None:
            continue
        out.update(p for p in (labels.work_mount, labels.data_mount, labels.models_mount) if p)
    return out
