"""Telling a user something: their terminals first, a file in their workspace as fallback.

A message is written to every terminal the user is logged in on (the ``/dev/pts/N`` and
``/dev/ttyN`` devices they own, which is what ``write(1)`` targets). Writing to another
user's terminal needs root, so unprivileged DS01 processes reach only their own user;
when no terminal takes the message, it is appended to ``<workspace>/.ds01-alerts`` where
the user sees it on their next login to the container. The event log records it either
way (the caller does that).
"""

from __future__ import annotations

import os
import pwd
import stat
from datetime import UTC, datetime
from pathlib import Path

from ds01.adapters.user_fs import append_user_file

__all__ = ["TerminalNotifier"]

ALERT_FILE = ".ds01-alerts"


class TerminalNotifier:
    def __init__(self, dev: Path = Path("/dev")) -> None:
        self.dev = dev

    def terminals(self, uid: int) -> list[Path]:
        found: list[Path] = []
        candidates = list((self.dev / "pts").glob("[0-9]*")) + list(self.dev.glob("tty[0-9]*"))
        for path in sorted(candidates):
            try:
                st = path.stat()
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_uid == uid:
                found.append(path)
        return found

    def notify(self, user: str, message: str, *, fallback_dir: str | None = None) -> list[str]:
        """Deliver ``message`` to ``user``; returns where it went (may be empty)."""
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return []
        uid, gid = entry.pw_uid, entry.pw_gid
        # Terminals interpret control sequences: only printable text and newlines go out.
        clean = "".join(c for c in message if c == "\n" or c.isprintable())
        stamp = datetime.now(UTC).strftime("%H:%M UTC")
        text = f"\r\n\a*** DS01 ({stamp}) ***\r\n" + clean.replace("\n", "\r\n") + "\r\n"
        delivered: list[str] = []
        for tty in self.terminals(uid):
            try:
                fd = os.open(tty, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError:
                continue  # another user's terminal (needs root) or gone since listed
            try:
                os.write(fd, text.encode())
                delivered.append(str(tty))
            except OSError:
                continue
            finally:
                os.close(fd)
        if not delivered and fallback_dir:
            line = f"[{datetime.now(UTC).isoformat(timespec='seconds')}] {clean}\n"
            try:
                target = append_user_file(Path(fallback_dir), ALERT_FILE, line, uid=uid, gid=gid)
            except OSError:
                # Not the user's directory, a link, or not writable: the event log has it.
                return delivered
            delivered.append(str(target))
        return delivered
