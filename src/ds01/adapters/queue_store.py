"""Queued create requests, persistent in the state database.

The queue is the one piece of GPU state Docker cannot hold (a request has no container
yet). Entries move ``waiting`` → ``granting`` → ``granted``, or to ``cancelled`` |
``expired`` | ``failed``, and are kept afterwards, so ``ds01 gpu queue`` can say what
happened to a request. While ``granting``, ``container`` names the container being made
and ``message`` the process making it (``Creator.encode()``): a pass that finds the entry
so later decides from those whether the grant completed or died (a grant is all or
nothing: the entry and the container change together).

Every DS01 user can write this table in stage 1: a row proves nothing by itself (see
:mod:`ds01.adapters.queue_requests` for what does), and a row that does not even parse
is skipped (its id in :attr:`QueueStore.malformed`) instead of breaking every reader.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ds01.adapters.state_db import StateDB, register_schema
from ds01.domain.allocation import GpuRequest
from ds01.domain.queue import QueueEntry, QueueState
from ds01.errors import DS01Error, ErrorCode, NotFoundError

__all__ = ["QueueRow", "QueueStore"]


def _schema(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS gpu_queue (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            user        TEXT    NOT NULL,
            request     TEXT    NOT NULL,
            spec        TEXT    NOT NULL,
            priority    INTEGER NOT NULL,
            enqueued_at TEXT    NOT NULL,
            state       TEXT    NOT NULL DEFAULT 'waiting',
            updated_at  TEXT    NOT NULL,
            container   TEXT,
            message     TEXT
        );
        CREATE INDEX IF NOT EXISTS gpu_queue_state ON gpu_queue(state, id);
        """
    )


register_schema("gpu_queue", _schema)


@dataclass(frozen=True)
class QueueRow:
    """A stored entry: the domain's view plus what the store keeps besides."""

    entry: QueueEntry
    spec: dict[str, Any]
    updated_at: str
    container: str | None
    message: str | None


def _row(r: sqlite3.Row) -> QueueRow:
    spec = json.loads(r["spec"])
    if not isinstance(spec, dict):
        raise ValueError("the spec is not an object")
    entry = QueueEntry(
        id=r["id"],
        user=r["user"],
        request=GpuRequest.decode(r["request"]),
        spec=r["spec"],
        priority=r["priority"],
        enqueued_at=datetime.fromisoformat(r["enqueued_at"]),
        state=QueueState(r["state"]),
    )
    return QueueRow(entry, spec, r["updated_at"], r["container"], r["message"])


class QueueStore:
    def __init__(self, db: StateDB) -> None:
        self.db = db
        #: Ids of rows the last read could not parse (hand-written rows).
        self.malformed: list[int] = []

    def add(
        self,
        *,
        user: str,
        request: GpuRequest,
        spec: dict[str, Any],
        priority: int,
        now: datetime,
    ) -> int:
        stamp = now.isoformat()
        try:
            with self.db.transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO gpu_queue (user, request, spec, priority, enqueued_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        user,
                        request.encode(),
                        json.dumps(spec, sort_keys=True),
                        priority,
                        stamp,
                        stamp,
                    ),
                )
                return int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise DS01Error(f"Cannot queue the request in {self.db.path}: {exc}") from exc

    def rows(self, *, states: tuple[QueueState, ...] | None = None) -> list[QueueRow]:
        sql = "SELECT * FROM gpu_queue"
        args: list[Any] = []
        if states:
            sql += " WHERE state IN (" + ",".join("?" for _ in states) + ")"
            args = [s.value for s in states]
        sql += " ORDER BY id"
        try:
            raw = self.db.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise DS01Error(f"Cannot read the GPU queue in {self.db.path}: {exc}") from exc
        out: list[QueueRow] = []
        self.malformed = []
        for r in raw:
            try:
                out.append(_row(r))
            except (ValueError, TypeError, KeyError, AttributeError, DS01Error):
                self.malformed.append(r["id"])
        return out

    def waiting(self) -> list[QueueRow]:
        return self.rows(states=(QueueState.WAITING,))

    def granting(self) -> list[QueueRow]:
        return self.rows(states=(QueueState.GRANTING,))

    def fail_malformed(self, ids: list[int], *, now: datetime) -> None:
        """Mark rows that do not parse failed (only while they claim to wait)."""
        try:
            with self.db.transaction() as conn:
                for entry_id in ids:
                    conn.execute(
                        "UPDATE gpu_queue SET state = 'failed', updated_at = ?, message = ?"
                        " WHERE id = ? AND state IN ('waiting', 'granting')",
                        (now.isoformat(), "refused: not a request DS01 wrote", entry_id),
                    )
        except sqlite3.Error as exc:
            raise DS01Error(f"Cannot update the GPU queue in {self.db.path}: {exc}") from exc

    def get(self, entry_id: int) -> QueueRow:
        try:
            row = self.db.conn.execute(
                "SELECT * FROM gpu_queue WHERE id = ?", (entry_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise DS01Error(f"Cannot read the GPU queue in {self.db.path}: {exc}") from exc
        if row is None:
            raise NotFoundError(
                f"There is no queue entry {entry_id}.",
                hint="See 'ds01 gpu queue'.",
                code=ErrorCode.UNKNOWN_QUEUE_ENTRY,
            )
        try:
            return _row(row)
        except (ValueError, TypeError, KeyError, AttributeError, DS01Error) as exc:
            raise NotFoundError(
                f"Queue entry {entry_id} is not a request DS01 wrote.",
                code=ErrorCode.UNKNOWN_QUEUE_ENTRY,
            ) from exc

    def set_state(
        self,
        entry_id: int,
        state: QueueState,
        *,
        now: datetime,
        container: str | None = None,
        message: str | None = None,
        only_if: QueueState | None = QueueState.WAITING,
    ) -> bool:
        """Move an entry to ``state``; ``False`` if it was no longer ``only_if``."""
        sql = "UPDATE gpu_queue SET state = ?, updated_at = ?, container = ?, message = ?"
        sql += " WHERE id = ?"
        args: list[Any] = [state.value, now.isoformat(), container, message, entry_id]
        if only_if is not None:
            sql += " AND state = ?"
            args.append(only_if.value)
        try:
            with self.db.transaction() as conn:
                return conn.execute(sql, args).rowcount == 1
        except sqlite3.Error as exc:
            raise DS01Error(f"Cannot update the GPU queue in {self.db.path}: {exc}") from exc
