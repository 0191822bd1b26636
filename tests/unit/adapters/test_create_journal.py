"""The create journal: records written before anything is made, found only when their
creator is dead (issue 10, finding 6)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ds01.adapters.create_journal import Creator, Journal, boot_id, stale_journals


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _begin(state: Path, tag: str = "x._.1000", creator: Creator | None = None) -> Journal:
    return Journal.begin(
        state,
        uid=os.getuid(),
        gid=os.getgid(),
        user="me",
        tag=tag,
        dirs=[state / "ws" / "x"],
        creator=creator or Creator.me(),
        now="2026-01-01T00:00:00+00:00",
    )


def test_creator_round_trip_and_liveness() -> None:
    me = Creator.me()
    assert Creator.parse(me.encode()) == me
    assert me.alive()
    assert not Creator(boot_id(), _dead_pid(), 1).alive()
    assert not Creator("another-boot", os.getpid(), me.start).alive()
    # A reused pid (same number, another start time) is not the creator.
    assert not Creator(me.boot, 1, me.start + 12345).alive()
    assert Creator.parse("garbage") is None and Creator.parse(None) is None


def test_a_live_creators_record_is_never_stale(tmp_path: Path) -> None:
    journal = _begin(tmp_path)
    assert journal.path.is_file()
    assert json.loads(journal.path.read_text())["tag"] == "x._.1000"
    assert list(stale_journals(tmp_path)) == []
    journal.close()  # lock released, but the process (its creator) still lives
    assert list(stale_journals(tmp_path)) == []


def test_a_dead_creators_record_is_found_once_and_removed(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # a create that dies right after writing its record
        _begin(tmp_path)
        os._exit(0)
    os.waitpid(pid, 0)
    (found,) = list(stale_journals(tmp_path, os.getuid()))
    assert found.tag == "x._.1000" and found.dirs == [tmp_path / "ws" / "x"]
    assert found.creator is not None and found.creator.pid == pid
    assert list(stale_journals(tmp_path)) == []  # locked by the first sweeper
    found.done()
    assert list(stale_journals(tmp_path)) == []
    assert not found.path.exists()


def test_commit_forgets_the_record(tmp_path: Path) -> None:
    journal = _begin(tmp_path)
    journal.commit()
    assert not journal.path.exists()


def test_records_of_another_uid_or_forged_are_ignored(tmp_path: Path) -> None:
    dead = Creator(boot_id(), _dead_pid(), 1)
    journal = _begin(tmp_path, creator=dead)
    journal.close()
    record = json.loads(journal.path.read_text())
    record["uid"] = os.getuid() + 1  # claims another user's tag from this user's directory
    journal.path.write_text(json.dumps(record))
    assert list(stale_journals(tmp_path)) == []
    journal.path.write_text("{not json")
    assert list(stale_journals(tmp_path)) == []


def test_a_symlinked_record_is_not_followed(tmp_path: Path) -> None:
    dead = Creator(boot_id(), _dead_pid(), 1)
    journal = _begin(tmp_path, creator=dead)
    journal.close()
    target = tmp_path / "elsewhere.json"
    journal.path.rename(target)
    journal.path.symlink_to(target)
    assert list(stale_journals(tmp_path)) == []


def test_old_debris_of_a_kill_mid_write_is_dropped(tmp_path: Path) -> None:
    pending = _begin(tmp_path).path.parent
    debris = pending / "y._.1000.abc.tmp"
    debris.write_text("{")
    assert list(stale_journals(tmp_path)) == []
    assert debris.exists()  # young: maybe a create writing right now
    old = time.time() - 7200
    os.utime(debris, (old, old))
    list(stale_journals(tmp_path))
    assert not debris.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's directory")
def test_a_directory_of_someone_else_is_refused(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.mkdir()
    (users / "4242").mkdir()
    os.chown(users / "4242", 4343, 4343)
    with pytest.raises(PermissionError, match="not a directory of the user or root") as err:
        Journal.begin(
            tmp_path,
            uid=4242,
            gid=4242,
            user="x",
            tag="t._.4242",
            dirs=[],
            creator=Creator.me(),
            now="",
        )
    assert err.value.filename == str(users / "4242")
