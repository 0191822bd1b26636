"""The state store: one SQLite file under the state directory.

It holds only what Docker cannot: events, queue entries, idle streaks, exemptions
(DESIGN.md). Each table belongs to one repository module (``event_log``,
``queue_store``, ``lifecycle_store``); this module opens the file, applies the schema
migrations those modules register, and sets the pragmas every writer needs.

Several users write the file at once in stage 1, so: WAL journal (readers never block
the writer), a busy timeout instead of "database is locked" errors, and files created
group-writable (the state directory is setgid to the DS01 group; see the README).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ds01.errors import ConfigError, DS01Error

__all__ = ["StateDB", "register_schema"]

DB_NAME = "ds01.sqlite3"
_SCHEMAS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = []


def register_schema(name: str, apply: Callable[[sqlite3.Connection], None]) -> None:
    """Register an idempotent schema step (``CREATE TABLE IF NOT EXISTS`` ...)."""
    if all(existing != name for existing, _ in _SCHEMAS):
        _SCHEMAS.append((name, apply))


class StateDB:
    """A connection to the state file, opened on first use."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_NAME
        self._conn: sqlite3.Connection | None = None
        self._applied: set[str] = set()

    def _open(self) -> sqlite3.Connection:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"Cannot create the state directory {self.state_dir}: {exc.strerror}.",
                hint="Set 'state_dir' in the DS01 configuration to a directory you can write.",
            ) from exc
        fresh = not self.path.exists()
        old_umask = os.umask(0o002)  # group-writable files: every DS01 user appends events
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise DS01Error(f"Cannot open the state database {self.path}: {exc}") from exc
        finally:
            os.umask(old_umask)
        if fresh:
            _make_group_writable(self.path)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        # A read-only state directory refuses WAL; reading still works in the default mode.
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        self._ensure_schemas(self._conn)
        return self._conn

    def _ensure_schemas(self, conn: sqlite3.Connection) -> None:
        for name, apply in _SCHEMAS:
            if name in self._applied:
                continue
            try:
                # Schema steps are idempotent scripts; executescript manages its own commit.
                apply(conn)
            except sqlite3.Error as exc:
                raise DS01Error(
                    f"Cannot prepare the state database {self.path} ({name}): {exc}",
                    hint="Check that the state directory and its files are writable by you.",
                ) from exc
            self._applied.add(name)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front, so no upgrade deadlock."""
        with _transaction(self.conn) as conn:
            yield conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _make_group_writable(path: Path) -> None:
    try:
        mode = path.stat().st_mode
        path.chmod(stat.S_IMODE(mode) | stat.S_IRGRP | stat.S_IWGRP)
    except OSError:
        # Not ours to change (another user created it first); their umask decided.
        return
