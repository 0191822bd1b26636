"""What lifecycle enforcement remembers between passes, in the state database.

What Docker cannot hold (DESIGN.md):

* ``lifecycle_state``: one row per container (keyed by Docker's id; the name is kept for
  people reading the table) holding :class:`~ds01.domain.idle.LifecycleState` as JSON:
  the idle streak, the warnings already sent, the counter baseline. A restart of
  enforcement reads it back, so it loses no streak and repeats no warning. Rows of
  containers that no longer exist are pruned by each pass.
* exemptions: an admin's exemption of a user from the idle or the runtime limit, with
  an optional end, the reason, who granted it and when. One per user and kind: granting
  again replaces it. Kept as files whose owner the kernel vouches for, not in this
  database that every user can write (:mod:`ds01.adapters.exemption_files`); the
  methods below keep their names.

Idempotent by construction: saving a state replaces the row, pruning what is already
gone deletes nothing, removing an exemption that does not exist reports ``False``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ds01.adapters.exemption_files import ExemptionFiles, ExemptionRow
from ds01.adapters.state_db import StateDB, register_schema
from ds01.domain.lifecycle import Exemption, LimitKind
from ds01.errors import DS01Error

__all__ = ["ExemptionRow", "LifecycleStore", "StoredState"]


def _schema(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS lifecycle_state (
            container_id TEXT PRIMARY KEY,
            name         TEXT NOT NULL,
            owner        TEXT,
            state        TEXT NOT NULL,
            updated_at   TEXT NOT NULL
        );
        """
    )


register_schema("lifecycle", _schema)


@dataclass(frozen=True)
class StoredState:
    """One ``lifecycle_state`` row; ``data`` is the JSON of a ``LifecycleState``.

    The JSON is turned into a state by the caller (``LifecycleState.from_json``) so that
    one damaged row is one container's problem, not the whole pass's. ``problem`` says
    why a row could not be read at all (``data`` is then empty).
    """

    container_id: str
    name: str
    owner: str | None
    data: Mapping[str, Any]
    updated_at: str
    problem: str | None = None


class LifecycleStore:
    """The two lifecycle tables of one state database."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def _fail(self, what: str, exc: sqlite3.Error) -> DS01Error:
        return DS01Error(
            f"Cannot {what} in {self.db.path}: {exc}",
            hint="Check that the state directory is writable by DS01's enforcement (root).",
        )

    # -- per-container state ----------------------------------------------------------

    def load_states(self) -> dict[str, StoredState]:
        """Every stored container state, by container id (one query for the pass)."""
        try:
            rows = self.db.conn.execute("SELECT * FROM lifecycle_state").fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read the lifecycle state", exc) from exc
        out: dict[str, StoredState] = {}
        for row in rows:
            data: Mapping[str, Any] = {}
            problem = None
            try:
                parsed = json.loads(row["state"])
            except json.JSONDecodeError as exc:
                problem = f"stored lifecycle state is not JSON ({exc})"
            else:
                if isinstance(parsed, dict):
                    data = parsed
                else:
                    problem = "stored lifecycle state is not a JSON object"
            out[row["container_id"]] = StoredState(
                row["container_id"], row["name"], row["owner"], data, row["updated_at"], problem
            )
        return out

    def save_states(
        self, rows: Iterable[tuple[str, str, str | None, Mapping[str, Any]]], *, now: datetime
    ) -> int:
        """Replace the state of each ``(container_id, name, owner, state_json)``, at once."""
        stamp = now.isoformat()
        values = [
            (cid, name, owner, json.dumps(dict(data), sort_keys=True), stamp)
            for cid, name, owner, data in rows
        ]
        if not values:
            return 0
        try:
            with self.db.transaction() as conn:
                conn.executemany(
                    "INSERT INTO lifecycle_state (container_id, name, owner, state, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(container_id) DO UPDATE SET name = excluded.name,"
                    " owner = excluded.owner, state = excluded.state,"
                    " updated_at = excluded.updated_at",
                    values,
                )
        except sqlite3.Error as exc:
            raise self._fail("save the lifecycle state", exc) from exc
        return len(values)

    def prune(self, existing_ids: Collection[str]) -> int:
        """Delete the rows of containers not in ``existing_ids``; returns how many."""
        keep = set(existing_ids)
        try:
            with self.db.transaction() as conn:
                stored = [r[0] for r in conn.execute("SELECT container_id FROM lifecycle_state")]
                gone = [(cid,) for cid in stored if cid not in keep]
                conn.executemany("DELETE FROM lifecycle_state WHERE container_id = ?", gone)
        except sqlite3.Error as exc:
            raise self._fail("prune the lifecycle state", exc) from exc
        return len(gone)

    # -- exemptions -------------------------------------------------------------------

    def _exemption_files(self) -> ExemptionFiles:
        return ExemptionFiles(self.db)

    def set_exemption(
        self,
        *,
        user: str,
        kind: LimitKind,
        until: datetime | None,
        reason: str,
        created_by: str,
        now: datetime,
    ) -> ExemptionRow:
        """Grant (or replace) ``user``'s exemption from ``kind``."""
        return self._exemption_files().set(
            user=user, kind=kind, until=until, reason=reason, created_by=created_by, now=now
        )

    def remove_exemption(self, user: str, kind: LimitKind) -> bool:
        """Withdraw an exemption; ``False`` when there was none."""
        return self._exemption_files().remove(user, kind)

    def exemptions(self, user: str | None = None) -> list[ExemptionRow]:
        """Exemptions that count (expired ones too), by user then kind."""
        return self._exemption_files().rows(user)

    def exemptions_by_user(self) -> dict[str, tuple[Exemption, ...]]:
        """Every user's exemptions as the decision takes them (it ignores expired ones)."""
        out: dict[str, list[Exemption]] = {}
        for row in self.exemptions():
            out.setdefault(row.user, []).append(row.to_exemption())
        return {user: tuple(items) for user, items in out.items()}
