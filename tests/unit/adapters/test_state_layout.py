"""The state directory's layout and the readers' trust rules, in a temporary directory.

Needs root (to hand files to another uid, as users would make them); the integration
tests replay the same attacks as real users.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ds01.adapters.event_log import EventLog
from ds01.adapters.exemption_files import ExemptionFiles
from ds01.adapters.state_db import StateDB
from ds01.adapters.state_layout import lay_out
from ds01.domain.lifecycle import LimitKind

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hands files to another uid: root")

NOBODY = 65534


def _state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    lay_out(state, group=0, admin_group=None)
    return state


def test_lay_out_takes_back_a_shared_directory_a_user_made_and_moves_squatters(
    tmp_path: Path,
) -> None:
    state = _state(tmp_path)
    os.chown(state / "events", NOBODY, NOBODY)
    (state / "users" / "1234").mkdir()
    os.chown(state / "users" / "1234", NOBODY, NOBODY)
    done = lay_out(state, group=0, admin_group=None, fix_state_dir=False)
    assert (state / "events").stat().st_uid == 0
    assert stat.S_IMODE((state / "events").stat().st_mode) == 0o3775
    assert not (state / "users" / "1234").exists()
    assert any("moved aside" in line and "users/1234" in line for line in done)
    assert lay_out(state, group=0, admin_group=None) == []  # idempotent


def test_exemptions_count_only_from_a_root_controlled_directory_and_unwritable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _state(tmp_path)
    files = ExemptionFiles(StateDB(state))
    now = datetime.now(UTC)
    files.set(user="u1", kind=LimitKind.IDLE, until=None, reason="r", created_by="adm", now=now)
    assert [r.created_by for r in files.rows()] == ["adm"]  # root may name the sudo admin
    record = state / "exemptions" / "u1.idle.json"
    record.chmod(0o664)
    assert files.rows() == []
    assert "others may write it" in capsys.readouterr().err
    record.chmod(0o640)
    os.chown(record, NOBODY, NOBODY)
    assert files.rows() == []
    assert "who is not a DS01 administrator" in capsys.readouterr().err
    os.chown(record, 0, 0)
    (state / "exemptions").chmod(0o777)
    assert files.rows() == []
    assert "Ignoring every exemption" in capsys.readouterr().err


def test_event_records_are_attributed_to_their_files_owner(tmp_path: Path) -> None:
    state = _state(tmp_path)
    log = EventLog(StateDB(state))
    log.record(actor="someone", action="x.root", target=None, result="ok")
    theirs = state / "events" / f"{NOBODY}.jsonl"
    lines: list[dict[str, object]] = [
        {"ts": "2030-01-01T00:00:00+00:00", "actor": "nobody", "action": "x.own"},
        {"ts": "2030-01-01T00:00:01+00:00", "actor": "root", "action": "x.forged"},
        {"ts": "2030-01-01T00:00:02+00:00", "actor": "root", "action": "x.by"},
    ]
    lines[2]["details"] = {"by": "nobody"}
    theirs.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"torn')
    os.chown(theirs, NOBODY, NOBODY)
    theirs.chmod(0o640)
    got = {e.action: (e.writer, e.forged) for e in log.query(limit=None)}
    assert got == {
        "x.root": ("root", False),
        "x.own": ("nobody", False),
        "x.forged": ("nobody", True),
        "x.by": ("nobody", False),  # says who did it: attributed to them, not forged
    }
    assert any("damaged line" in p for p in log.problems)
    assert any("1 event(s) shown were written by someone other" in p for p in log.problems)


def test_database_replaced_behind_roots_back_is_reported_once_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _state(tmp_path)
    db = StateDB(state)
    _ = db.conn
    db.close()
    assert capsys.readouterr().err == ""
    (state / "ds01.sqlite3").unlink()
    again = StateDB(state)
    _ = again.conn
    assert again.lost is not None and "was missing" in again.lost
    assert "Recorded as the new database" in capsys.readouterr().err
    again.close()
    _ = StateDB(state).conn
    assert capsys.readouterr().err == ""
