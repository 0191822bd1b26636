"""The state store: one SQLite file under the state directory.

It holds only what Docker cannot: events, queue entries, idle streaks, exemptions
(DESIGN.md). Each table belongs to one repository module (``event_log``,
``queue_store``, ``lifecycle_store``); this module opens the file, applies the schema
migrations those modules register, and sets the pragmas every writer needs.

Several users write the file at once in stage 1, so: WAL journal (readers never block
the writer), a busy timeout instead of "database is locked" errors, and files created
group-writable (the state directory is setgid to the DS01 group; see the README).

Every DS01 user can write this file, so nothing in it decides who may do what (events
and exemptions live in files the kernel attributes, :mod:`ds01.adapters.state_layout`);
what a user can still do is delete or empty it. That is made visible: the database
holds a random instance id, and a root-owned marker next to it records the id root last
vouched for. A command that finds the database missing, emptied or replaced prints a
warning; root's next command records the new one (and says so), so the warning names
each loss once per user command until root has seen it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ds01.adapters.state_layout import DB_NAME, MARKER, lay_out, owner_name, trusted_owner
from ds01.errors import ConfigError, DS01Error

__all__ = ["DB_NAME", "StateDB", "register_schema", "warn"]

_SCHEMAS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = []


def register_schema(name: str, apply: Callable[[sqlite3.Connection], None]) -> None:
    """Register an idempotent schema step (``CREATE TABLE IF NOT EXISTS`` ...)."""
    if all(existing != name for existing, _ in _SCHEMAS):
        _SCHEMAS.append((name, apply))


class StateDB:
    """A connection to the state file, opened on first use."""

    def __init__(self, state_dir: Path, *, admin_group: str | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_NAME
        #: Whose files count as an administrator's (exemptions, events for others).
        self.admin_group = admin_group
        self._conn: sqlite3.Connection | None = None
        self._applied: set[str] = set()
        #: Why the database is not the one root last vouched for (None: it is).
        self.lost: str | None = None

    def _open(self) -> sqlite3.Connection:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"Cannot create the state directory {self.state_dir}: {exc.strerror}.",
                hint="Set 'state_dir' in the DS01 configuration to a directory you can write.",
            ) from exc
        if os.geteuid() == 0:
            self._repair_layout()
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
        self._check_identity(conn, fresh=fresh)
        return conn

    def _repair_layout(self) -> None:
        """Root's commands keep the layout right (a shared directory a user made first,
        a squatted ``users/<uid>``); the installer's run is the first of these."""
        try:
            real = Path(os.path.realpath(self.state_dir))
            if not real.is_dir() or real.stat().st_uid != 0:
                return  # not a shared installation: nothing of others' to protect
            for line in lay_out(
                real, group=None, admin_group=self.admin_group, fix_state_dir=False
            ):
                warn(f"state directory repaired: {line}")
            _adopt(real / DB_NAME)
        except OSError as exc:
            warn(f"Cannot check the layout of {self.state_dir}: {exc}")

    def _check_identity(self, conn: sqlite3.Connection, *, fresh: bool) -> None:
        """Compare the database with root's marker; warn when it was lost or replaced."""
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS ds01_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = conn.execute("SELECT value FROM ds01_meta WHERE key = 'instance'").fetchone()
            if row is None:
                instance = secrets.token_hex(16)
                conn.execute(
                    "INSERT OR IGNORE INTO ds01_meta (key, value) VALUES ('instance', ?)",
                    (instance,),
                )
                row = conn.execute("SELECT value FROM ds01_meta WHERE key = 'instance'").fetchone()
            instance = str(row[0])
        except sqlite3.Error:
            return  # read-only: nothing to compare against a database we cannot mark
        marker = _read_marker(self.state_dir)
        if marker is not None and marker.get("instance") != instance:
            since = marker.get("created_at", "an unknown time")
            how = "was missing" if fresh else "was emptied or replaced"
            self.lost = (
                f"The state database {self.path} {how}: the one root vouched for (since "
                f"{since}) held the GPU queue and enforcement's idle state, and they are "
                "gone. Queued requests must be made again."
            )
            warn(
                self.lost
                + (
                    " Recorded as the new database."
                    if _may_vouch(self.state_dir)
                    else " An administrator should find out why (root's next command records it)."
                )
            )
        if _may_vouch(self.state_dir) and (marker is None or marker.get("instance") != instance):
            earlier = marker.get("previous") if marker else None
            history: list[object] = list(earlier) if isinstance(earlier, list) else []
            if marker is not None:
                history.append(
                    {"instance": marker.get("instance"), "lost": self.lost or "replaced"}
                )
            _write_marker(self.state_dir, instance, history[-20:])

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


def _adopt(path: Path) -> None:
    """A database a user recreated is theirs to delete again: root takes it over."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid != 0:
            os.fchown(fd, 0, -1)
            warn(f"{path} belonged to {owner_name(st.st_uid)}; it is root's again.")
    finally:
        os.close(fd)


def _make_group_writable(path: Path) -> None:
    try:
        mode = path.stat().st_mode
        path.chmod(stat.S_IMODE(mode) | stat.S_IRGRP | stat.S_IWGRP)
    except OSError:
        # Not ours to change (another user created it first); their umask decided.
        return


def warn(message: str) -> None:
    """Straight to stderr: the state's health concerns every command, whatever it prints."""
    print(f"warning: {message}", file=sys.stderr)


def _may_vouch(state_dir: Path) -> bool:
    """Root vouches for a shared database; on a laptop the state directory's own user."""
    try:
        return os.geteuid() in (0, os.stat(state_dir).st_uid)
    except OSError:
        return False


def _read_marker(state_dir: Path) -> dict[str, object] | None:
    """Root's record of the database, trusted only from root (or a laptop's own user)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(state_dir / MARKER, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        state_uid = os.stat(state_dir).st_uid
        if not stat.S_ISREG(st.st_mode) or st.st_size > 65536:
            return None
        if not trusted_owner(st.st_uid, state_uid) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            warn(f"Ignoring {state_dir / MARKER}: it belongs to {owner_name(st.st_uid)}, not root.")
            return None
        data = json.loads(os.read(fd, 65536) or b"{}")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def _write_marker(state_dir: Path, instance: str, previous: list[object]) -> None:
    from datetime import UTC, datetime

    real = Path(os.path.realpath(state_dir))
    body = json.dumps(
        {
            "instance": instance,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "previous": previous,
        },
        sort_keys=True,
    )
    tmp = real / f".{MARKER}.{secrets.token_hex(4)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, body.encode())
        finally:
            os.close(fd)
        os.replace(tmp, real / MARKER)  # root owns the target: nobody else may remove it
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        warn(f"Cannot record the state database's identity in {real / MARKER}: {exc}")
