"""``python -m ds01.adapters.state_setup [--group GROUP]``: what ``scripts/install`` runs.

As root, lays out the configured state directory (:func:`~ds01.adapters.state_layout.lay_out`)
and opens the database once, so that it exists root-owned and root's marker vouches for it.
Prints what it changed; exit 2 with a message when it cannot.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from ds01.adapters.event_log import EventLog
from ds01.adapters.state_db import StateDB
from ds01.adapters.state_layout import lay_out
from ds01.errors import DS01Error

__all__ = ["install_state", "main"]


def install_state(state_dir: Path, *, group: str | None, admin_group: str | None) -> list[str]:
    """Lay out ``state_dir`` and make the database root's, as the installer does."""
    changes = lay_out(state_dir, group=group, admin_group=admin_group)
    db = StateDB(state_dir, admin_group=admin_group)
    with contextlib.closing(db):
        _ = db.conn  # the database, root-owned, and the marker that vouches for it
        EventLog(db).migrate_legacy()  # the old, writable-by-all event table, once
    return changes


def main(argv: list[str]) -> int:
    from ds01.config.loader import load_settings

    group = None
    if len(argv) == 2 and argv[0] == "--group":
        group = argv[1]
    elif argv:
        print("usage: python -m ds01.adapters.state_setup [--group GROUP]", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        admin_group = settings.effective_admin_group()
        state = Path(settings.state_dir)
        changes = install_state(state, group=group, admin_group=admin_group)
    except DS01Error as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    for line in changes:
        print(f"state: {line}")
    print(f"state: {state} laid out (admin group: {admin_group or 'none, root only'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
