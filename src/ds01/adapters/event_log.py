"""The append-only event log: who did what, when, with which result.

Rows can be added, never changed: SQLite triggers abort any UPDATE or DELETE, so the
audit trail cannot be rewritten through DS01 (an admin with the file can still remove
it, which is what file permissions are for).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ds01.adapters.state_db import StateDB, register_schema
from ds01.errors import DS01Error

__all__ = ["Event", "EventLog"]


def _schema(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS events (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            ts      TEXT    NOT NULL,
            actor   TEXT    NOT NULL,
            action  TEXT    NOT NULL,
            target  TEXT,
            result  TEXT    NOT NULL,
            owner   TEXT,
            details TEXT    NOT NULL DEFAULT '{}'
        );
        CREATE INDEX IF NOT EXISTS events_actor ON events(actor, id);
        CREATE INDEX IF NOT EXISTS events_owner ON events(owner, id);
        CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        """
    )


register_schema("events", _schema)


@dataclass(frozen=True)
class Event:
    id: int
    ts: str
    actor: str
    action: str
    target: str | None
    result: str
    owner: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "result": self.result,
            "owner": self.owner,
            "details": self.details,
        }


class EventLog:
    """Events in the state database."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def ready(self) -> None:
        """Open the database and prepare the table now (fails early if it cannot)."""
        _ = self.db.conn

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
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO events (ts, actor, action, target, result, owner, details)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        when,
                        actor,
                        action,
                        target,
                        result,
                        owner or actor,
                        json.dumps(details or {}, default=str, sort_keys=True),
                    ),
                )
        except sqlite3.Error as exc:
            raise DS01Error(
                f"Cannot write to the event log {self.db.path}: {exc}",
                hint="Check that the state directory is writable by DS01 users.",
            ) from exc

    def query(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        limit: int | None = 100,
    ) -> Iterator[Event]:
        """Newest last. ``user`` matches events the user did or that concern them."""
        where: list[str] = []
        args: list[Any] = []
        if user is not None:
            where.append("(actor = ? OR owner = ?)")
            args += [user, user]
        if action is not None:
            where.append("(action = ? OR action LIKE ?)")
            args += [action, action + ".%"]
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        try:
            rows = self.db.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise DS01Error(f"Cannot read the event log {self.db.path}: {exc}") from exc
        for row in reversed(rows):
            yield Event(
                id=row["id"],
                ts=row["ts"],
                actor=row["actor"],
                action=row["action"],
                target=row["target"],
                result=row["result"],
                owner=row["owner"],
                details=json.loads(row["details"] or "{}"),
            )
