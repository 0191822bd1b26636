"""The event log: who did what, when, with which result, attributed by the kernel.

Each process appends to a file of its own uid, ``state_dir/events/<uid>.jsonl`` (one
JSON object a line), in a sticky directory: nobody can remove, rename or write another
user's file, and root's (enforcement, sudo) is root's alone. A record names its actor,
but the *writer* is whoever owns the file, which the kernel says, not the record. The
reader merges every file and marks a record ``forged`` when its writer could not have
made it: a user writes their own events, and events for others only when they say they
did (``details.by`` is them: a queue grant their ``remove`` caused) or are an
administrator now; root writes anything.

What this does not stop in stage 1: a user can rewrite or empty *their own* file, and
the times in it are what its writer claimed. Events from before this layout (the old
``events`` table of the state database, which any user could rewrite) are moved once
by root into ``events/legacy-db.jsonl``, each marked ``legacy_db``; the database is
never read for events again.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ds01.adapters.state_db import StateDB, warn
from ds01.adapters.state_layout import EVENTS, is_admin_uid, open_shared_dir, owner_name
from ds01.errors import DS01Error
from ds01.serialize import json_key

__all__ = ["Event", "EventLog"]

_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINE = 1 << 20
#: Root's copy of the old database table (see :meth:`EventLog.migrate_legacy`).
LEGACY_FILE = "legacy-db.jsonl"


@dataclass(frozen=True)
class Event:
    id: int
    ts: str = field(metadata=json_key("time"))
    actor: str
    action: str
    target: str | None
    result: str
    owner: str | None
    details: dict[str, Any]
    #: Login name of the file's owner (the kernel's word); None: the old database.
    writer: str | None = None
    #: The writer could not have made this record (it names someone else as the actor).
    forged: bool = False


@dataclass(frozen=True)
class _Raw:
    ts: str
    uid: int | None
    seq: int
    record: dict[str, Any]


class EventLog:
    """Events in ``state_dir/events/``; reads the old database table too."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self.dir = db.state_dir / EVENTS
        #: What the last query had to skip or doubt, in words (shown as warnings).
        self.problems: list[str] = []
        self._migrated = False

    def _own_file(self) -> int:
        """This process's file, opened for appending; made if missing."""
        uid = os.geteuid()
        dir_fd = open_shared_dir(self.db.state_dir, EVENTS)
        try:
            # Normally <uid>.jsonl; if someone put a file of theirs under that name (to
            # block this user's commands, which refuse to run unrecorded), take the next.
            for attempt in range(100):
                name = f"{uid}.jsonl" if attempt == 0 else f"{uid}-{attempt}.jsonl"
                try:
                    fd = os.open(name, _APPEND, 0o640, dir_fd=dir_fd)
                except (PermissionError, IsADirectoryError):
                    continue  # another user's file (or a trap) under this name
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        continue  # a symlink under this name: never followed
                    raise
                st = os.fstat(fd)
                if st.st_uid == uid and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    if stat.S_IMODE(st.st_mode) != 0o640:
                        # Readable by the group like the old database was (admins read
                        # everyone's), writable by nobody else, whatever the umask.
                        os.fchmod(fd, 0o640)
                    return fd
                os.close(fd)
            raise OSError(f"no file of uid {uid} could be made in {self.dir}")
        finally:
            os.close(dir_fd)

    def ready(self) -> None:
        """Make sure this process can record (fails before an operation, not after)."""
        self.migrate_legacy()
        try:
            os.close(self._own_file())
        except OSError as exc:
            raise DS01Error(
                f"Cannot write to the event log {self.dir}: {exc}",
                hint="Check that the state directory is laid out for DS01 users "
                "(sudo scripts/install --state-only).",
            ) from exc

    def record(
        self,
        *,
        actor: str,
        action: str,
        target: str | None,
        result: str,
        owner: str | None = None,
        details: dict[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> None:
        when = (ts or datetime.now(UTC)).isoformat(timespec="milliseconds")
        line = json.dumps(
            {
                "ts": when,
                "actor": actor,
                "action": action,
                "target": target,
                "result": result,
                "owner": owner or actor,
                "details": details or {},
            },
            default=str,
            sort_keys=True,
        )
        data = (line + "\n").encode()
        try:
            fd = self._own_file()
            try:
                # One write of the whole line on an O_APPEND descriptor: lines of
                # concurrent processes of this uid never interleave.
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
            finally:
                os.close(fd)
        except OSError as exc:
            raise DS01Error(
                f"Cannot write to the event log {self.dir}: {exc}",
                hint="Check that the state directory is laid out for DS01 users "
                "(sudo scripts/install --state-only).",
            ) from exc

    # -- reading ----------------------------------------------------------------------

    def query(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        limit: int | None = 100,
    ) -> Iterator[Event]:
        """Newest last. ``user`` matches events the user did or that concern them.

        ``id`` is the position in the whole merged log (oldest first), stable while the
        log only grows.
        """
        self.problems = []
        self.migrate_legacy()
        raws = self._files()
        raws.sort(key=lambda r: (r.ts, -1 if r.uid is None else r.uid, r.seq))
        events = [self._event(n, raw) for n, raw in enumerate(raws, start=1)]
        chosen = [e for e in events if _matches(e, user, action)]
        if limit is not None:
            chosen = chosen[-limit:] if limit > 0 else []
        forged = sum(e.forged for e in chosen)
        if forged:
            self.problems.append(
                f"{forged} event(s) shown were written by someone other than the user they "
                "name (marked forged)."
            )
        yield from chosen

    def _event(self, n: int, raw: _Raw) -> Event:
        rec = raw.record
        details = rec.get("details")
        details = details if isinstance(details, dict) else {}
        actor = str(rec.get("actor", "?"))
        writer = None if raw.uid is None else owner_name(raw.uid)
        forged = raw.uid is not None and not self._may_write(raw.uid, actor, details.get("by"))
        return Event(
            id=n,
            ts=raw.ts,
            actor=actor,
            action=str(rec.get("action", "?")),
            target=None if rec.get("target") is None else str(rec.get("target")),
            result=str(rec.get("result", "?")),
            owner=None if rec.get("owner") is None else str(rec.get("owner")),
            details=details,
            writer=writer,
            forged=forged,
        )

    def _may_write(self, uid: int, actor: str, by: object) -> bool:
        if uid == 0:
            return True
        name = owner_name(uid)
        return name in (actor, by) or is_admin_uid(uid, self.db.admin_group)

    def _files(self) -> list[_Raw]:
        try:
            dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DS01Error(f"Cannot read the event log {self.dir}: {exc}") from exc
        out: list[_Raw] = []
        try:
            for name in sorted(os.listdir(dir_fd)):
                if name.endswith(".jsonl"):
                    out += self._read_file(dir_fd, name)
        finally:
            os.close(dir_fd)
        return out

    def _read_file(self, dir_fd: int, name: str) -> list[_Raw]:
        try:
            fd = os.open(name, _READ, dir_fd=dir_fd)
        except PermissionError:
            return []  # another user's, not shared with this one
        except OSError as exc:  # a symlink (ELOOP)
            self.problems.append(f"Skipped {self.dir / name}: {exc.strerror}.")
            return []
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                return []
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                # Writable by others: its owner is not the only possible writer.
                self.problems.append(
                    f"Skipped {self.dir / name}: others may write it (mode "
                    f"{stat.S_IMODE(st.st_mode):04o})."
                )
                return []
            out: list[_Raw] = []
            bad = 0
            for seq, line in enumerate(handle):
                record = _parse(line)
                if record is None:
                    bad += 1
                    continue
                out.append(_Raw(str(record.get("ts", "")), st.st_uid, seq, record))
        if bad:
            self.problems.append(f"{bad} damaged line(s) in {self.dir / name} were skipped.")
        return out

    def migrate_legacy(self) -> None:
        """As root, once: the old ``events`` table becomes ``events/legacy-db.jsonl``.

        Its rows could have been written by anyone, so each keeps ``legacy_db: true`` in
        its details. Once that file exists, an ``events`` table that appears again in
        the database (a user can make one) is dropped unread, with a warning.
        """
        if os.geteuid() != 0 or self._migrated or not self.db.path.exists():
            return
        self._migrated = True
        try:
            conn = self.db.conn
            if not _has_table(conn, "events"):
                return
            rows = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        except sqlite3.Error as exc:
            warn(f"The old event table in {self.db.path} is unreadable: {exc}")
            return
        dir_fd = open_shared_dir(self.db.state_dir, EVENTS)
        try:
            fd = os.open(LEGACY_FILE, _NEW, 0o640, dir_fd=dir_fd)
        except FileExistsError:
            warn(
                f"An events table appeared in {self.db.path} after its events were moved "
                f"to {self.dir / LEGACY_FILE}: its {len(rows)} row(s) could be anyone's and "
                "were dropped unread."
            )
            fd = None
        finally:
            os.close(dir_fd)
        if fd is not None:
            with os.fdopen(fd, "wb") as out:
                for row in rows:
                    out.write(_legacy_line(row))
                out.flush()
                os.fsync(out.fileno())
        try:
            with self.db.transaction() as tx:
                tx.execute("DROP TABLE events")
        except sqlite3.Error as exc:
            warn(f"Cannot drop the old event table in {self.db.path}: {exc}")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


def _legacy_line(row: sqlite3.Row) -> bytes:
    try:
        details = json.loads(row["details"] or "{}")
    except (ValueError, TypeError):
        details = {"raw": str(row["details"])}
    if not isinstance(details, dict):
        details = {"raw": details}
    record = {
        "ts": str(row["ts"]),
        "actor": str(row["actor"]),
        "action": str(row["action"]),
        "target": row["target"],
        "result": str(row["result"]),
        "owner": row["owner"],
        "details": {**details, "legacy_db": True},
    }
    return (json.dumps(record, default=str, sort_keys=True) + "\n").encode()


def _parse(line: bytes) -> dict[str, Any] | None:
    if len(line) > _MAX_LINE or not line.endswith(b"\n"):
        return None  # a torn last line (a writer killed mid-write) is not an event
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _matches(event: Event, user: str | None, action: str | None) -> bool:
    if user is not None and user not in (event.actor, event.owner):
        return False
    return action is None or event.action == action or event.action.startswith(action + ".")
