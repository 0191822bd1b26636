"""Exemptions from lifecycle limits, as files whose owner the kernel vouches for.

Every DS01 user can write the state database in stage 1, so an exemption row there
("granted by root") proved nothing. An exemption is now one file,
``state_dir/exemptions/<user>.<kind>.json``, in a directory only root and the admin group
may write (``root:<admin_group> 2770``, made by the installer). A record counts only if
the file is a regular file, not group- or other-writable, and owned by root or by a
*current* member of ``admin_group``; ``created_by`` is that owner's name (root's
records may name the administrator who ran ``sudo``). Anything else is ignored, with a
warning that names the file and its owner. Rows in the database's old
``lifecycle_exemptions`` table are no longer honoured; their count is reported so that
an administrator can grant them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import stat
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from ds01.adapters.state_db import StateDB, warn
from ds01.adapters.state_layout import EXEMPTIONS, is_admin_uid, owner_name, trusted_owner
from ds01.domain.lifecycle import Exemption, LimitKind
from ds01.errors import ConfigError, DS01Error

__all__ = ["ExemptionFiles", "ExemptionRow"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_HINT = "An administrator lays it out with: sudo scripts/install --state-only"


@dataclass(frozen=True)
class ExemptionRow:
    """One exemption as stored, with its provenance; ``to_json`` of it is the object
    ``ds01 admin exempt --json`` prints for each limit."""

    user: str
    kind: LimitKind
    until: datetime | None
    reason: str
    created_by: str
    created_at: datetime

    def to_exemption(self) -> Exemption:
        return Exemption(kind=self.kind, reason=self.reason, until=self.until)

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


def _file_name(user: str, kind: LimitKind) -> str:
    return f"{quote(user, safe='')}.{kind.value}.json"


class ExemptionFiles:
    """The exemption directory of one state directory."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self.dir = db.state_dir / EXEMPTIONS

    # -- writing (administrators) ------------------------------------------------------

    def _existing_dir(self) -> int | None:
        try:
            return os.open(self.dir, _DIR)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"Cannot open {self.dir}: {exc.strerror}.", hint=_HINT) from exc

    def _writable_dir(self) -> int:
        found = self._existing_dir()
        if found is not None:
            return found
        state_uid = os.stat(self.db.state_dir).st_uid
        if os.geteuid() == 0 and state_uid == 0:
            _ = self.db.conn  # root's open lays the state directory out (state_layout)
        elif os.geteuid() == state_uid:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.dir, 0o700)  # a user's own state directory (a laptop)
        try:
            return os.open(self.dir, _DIR)
        except OSError as exc:
            raise ConfigError(
                f"There is no exemption directory {self.dir} that you may write.", hint=_HINT
            ) from exc

    def set(
        self,
        *,
        user: str,
        kind: LimitKind,
        until: datetime | None,
        reason: str,
        created_by: str,
        now: datetime,
    ) -> ExemptionRow:
        """Write (or replace) the record, atomically: a reader sees the old or the new."""
        body = json.dumps(
            {
                "version": 1,
                "user": user,
                "kind": kind.value,
                "until": None if until is None else until.isoformat(),
                "reason": reason,
                "created_by": created_by,
                "created_at": now.isoformat(),
            },
            sort_keys=True,
        ).encode()
        dir_fd = self._writable_dir()
        name = _file_name(user, kind)
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, _NEW, 0o640, dir_fd=dir_fd)
            try:
                os.fchmod(fd, 0o640)  # whatever the umask: nobody else may change it
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise DS01Error(
                f"Cannot save the exemption in {self.dir}: {exc.strerror or exc}.", hint=_HINT
            ) from exc
        finally:
            os.close(dir_fd)
        return ExemptionRow(user, kind, until, reason, _writer_name(os.geteuid(), created_by), now)

    def remove(self, user: str, kind: LimitKind) -> bool:
        """Withdraw; ``False`` when there was no record."""
        dir_fd = self._existing_dir()
        if dir_fd is None:
            return False
        try:
            os.unlink(_file_name(user, kind), dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise DS01Error(
                f"Cannot remove the exemption from {self.dir}: {exc.strerror}.", hint=_HINT
            ) from exc
        finally:
            os.close(dir_fd)
        return True

    # -- reading ----------------------------------------------------------------------

    def rows(self, user: str | None = None) -> list[ExemptionRow]:
        """Every record that counts (expired ones too), by user then kind."""
        self._report_legacy()
        dir_fd = self._existing_dir()
        if dir_fd is None:
            return []
        try:
            if not self._dir_trusted(dir_fd):
                return []
            best: dict[tuple[str, LimitKind], ExemptionRow] = {}
            for name in sorted(os.listdir(dir_fd)):
                if name.startswith(".") or not name.endswith(".json"):
                    continue
                row = self._read(dir_fd, name)
                if row is None or (user is not None and row.user != user):
                    continue
                key = (row.user, row.kind)
                if key not in best or best[key].created_at < row.created_at:
                    best[key] = row
        finally:
            os.close(dir_fd)
        return [best[k] for k in sorted(best, key=lambda k: (k[0], k[1].value))]

    def _dir_trusted(self, dir_fd: int) -> bool:
        st = os.fstat(dir_fd)
        state_uid = os.stat(self.db.state_dir).st_uid
        writable_by_others = st.st_mode & stat.S_IWOTH or (
            st.st_mode & stat.S_IWGRP and not _is_admin_gid(st.st_gid, self.db.admin_group)
        )
        if trusted_owner(st.st_uid, state_uid) and not writable_by_others:
            return True
        warn(
            f"Ignoring every exemption in {self.dir}: it belongs to {owner_name(st.st_uid)} "
            f"with mode {stat.S_IMODE(st.st_mode):04o}, so anyone could have written them. " + _HINT
        )
        return False

    def _read(self, dir_fd: int, name: str) -> ExemptionRow | None:
        shown = self.dir / name
        try:
            fd = os.open(name, _READ, dir_fd=dir_fd)
        except OSError as exc:
            warn(f"Ignoring the exemption {shown}: {exc.strerror}.")
            return None
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > 65536:
                return None
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                warn(f"Ignoring the exemption {shown}: others may write it.")
                return None
            if st.st_uid != 0 and not is_admin_uid(st.st_uid, self.db.admin_group):
                warn(
                    f"Ignoring the exemption {shown}: written by {owner_name(st.st_uid)}, "
                    "who is not a DS01 administrator."
                )
                return None
            try:
                data = json.loads(handle.read())
                return ExemptionRow(
                    user=str(data["user"]),
                    kind=LimitKind(data["kind"]),
                    until=None if data["until"] is None else datetime.fromisoformat(data["until"]),
                    reason=str(data["reason"]),
                    created_by=_writer_name(st.st_uid, str(data.get("created_by", "root"))),
                    created_at=datetime.fromisoformat(data["created_at"]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                warn(f"Ignoring the exemption {shown}: it is damaged ({exc}).")
                return None

    def _report_legacy(self) -> None:
        """Rows of the old database table: said once per read, never honoured."""
        if not self.db.path.exists():
            return
        try:
            conn = self.db.conn
            has = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lifecycle_exemptions'"
            ).fetchone()
            count = (
                conn.execute("SELECT count(*) FROM lifecycle_exemptions").fetchone()[0]
                if has
                else 0
            )
        except sqlite3.Error:
            return
        if count:
            warn(
                f"{count} exemption(s) in the state database {self.db.path} are no longer "
                "honoured (any DS01 user could write them); grant them again with "
                "'ds01 admin exempt'."
            )


def _writer_name(uid: int, claimed: str) -> str:
    """Root may write for the administrator who ran sudo; anyone else is who they are."""
    return claimed if uid == 0 else owner_name(uid)


def _is_admin_gid(gid: int, admin_group: str | None) -> bool:
    import grp

    if not admin_group:
        return False
    try:
        return grp.getgrgid(gid).gr_name == admin_group
    except KeyError:
        return False
