"""Issue 10, finding 7: the state directory as real unprivileged users attack it.

The review forged an exemption "granted by root" with a row in the shared database,
deleted events after dropping the trigger that protected them, forged an event as
another user, replaced another user's build-log directory (state files belonged to
whoever made them first), and lost the database without anyone being told. Each test
replays one of those as ``ds01t-alice`` (``runuser``, the installed Python) against a
state directory laid out by the installer's own function, and shows it refused or
flagged. The last test runs ``scripts/install --state-only`` itself.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from ds01.adapters.state_setup import install_state
from ds01.domain.actor import Actor
from tests.conftest import PROJECT_ROOT
from tests.integration.conftest import TEST_ADMIN_GROUP, Ds01Env

PYTHON = PROJECT_ROOT / ".venv" / "bin" / "python"
#: Put a file of one's own in place of the target (needs to own it, in a sticky dir).
REPLACE = "open(sys.argv[1] + '.n', 'w').close(); os.replace(sys.argv[1] + '.n', sys.argv[1])"
ADMIN = "ds01t-st-admin"


def as_user(user: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python as ``user`` (a real unprivileged process), code given on the command line."""
    return subprocess.run(
        ["runuser", "-u", user, "--", str(PYTHON), "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )


def state(env: Ds01Env) -> Path:
    return env.root / "state"


def _json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def admin(ds01_env: Ds01Env) -> Iterator[str]:
    """A non-root administrator: a member of the configured admin group."""
    try:
        grp.getgrnam(TEST_ADMIN_GROUP)
    except KeyError:
        subprocess.run(["groupadd", TEST_ADMIN_GROUP], check=True)
    try:
        pwd.getpwnam(ADMIN)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--groups", "docker", ADMIN], check=True)
    subprocess.run(["gpasswd", "-a", ADMIN, TEST_ADMIN_GROUP], check=True, capture_output=True)
    # The group exists now: re-run the installer's layout (as after changing admin_group).
    install_state(state(ds01_env), group="docker", admin_group=TEST_ADMIN_GROUP)
    yield ADMIN
    subprocess.run(["gpasswd", "-d", ADMIN, TEST_ADMIN_GROUP], check=False, capture_output=True)


# -- exemptions -------------------------------------------------------------------------


def test_exemption_row_typed_into_the_database_exempts_nobody(
    ds01_env: Ds01Env, alice: Actor
) -> None:
    # The review's attack: the database is writable by every DS01 user.
    forged = as_user(
        alice.name,
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
        "c.execute('CREATE TABLE IF NOT EXISTS lifecycle_exemptions (user TEXT, kind TEXT,"
        " until TEXT, reason TEXT, created_by TEXT, created_at TEXT)');"
        "c.execute(\"INSERT INTO lifecycle_exemptions VALUES (?, 'idle', NULL, 'ok', 'root',"
        " '2025-01-01T00:00:00+00:00')\", (sys.argv[2],)); c.commit()",
        str(state(ds01_env) / "ds01.sqlite3"),
        alice.name,
    )
    assert forged.returncode == 0, forged.stderr  # writing the row still works ...
    listed = ds01_env.run_cli(None, "admin", "exemptions", "--json")
    assert _json(listed) == []  # ... and counts for nothing
    assert "1 exemption(s) in the state database" in listed.stderr
    assert "no longer honoured" in listed.stderr


def test_user_cannot_write_the_exemption_directory_and_planted_files_are_ignored(
    ds01_env: Ds01Env, alice: Actor, admin: str
) -> None:
    exemptions = state(ds01_env) / "exemptions"
    st = exemptions.stat()
    assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name) == (0, TEST_ADMIN_GROUP)
    assert stat.S_IMODE(st.st_mode) == 0o2770
    record = {
        "user": alice.name,
        "kind": "idle",
        "until": None,
        "reason": "mine",
        "created_by": "root",
        "created_at": "2025-01-01T00:00:00+00:00",
    }
    planted = as_user(
        alice.name,
        "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
        str(exemptions / f"{alice.name}.idle.json"),
        json.dumps(record),
    )
    assert planted.returncode != 0 and "Permission denied" in planted.stderr
    # Had the directory been writable (a mistake), a file of alice's still would not count.
    path = exemptions / f"{alice.name}.idle.json"
    path.write_text(json.dumps(record))
    os.chown(path, alice.uid, alice.gid)
    path.chmod(0o644)
    listed = ds01_env.run_cli(None, "admin", "exemptions", "--json")
    assert _json(listed) == []
    assert f"written by {alice.name}, who is not a DS01 administrator" in listed.stderr


def test_an_admins_exemption_counts_until_they_leave_the_admin_group(
    ds01_env: Ds01Env, bob: Actor, admin: str
) -> None:
    granted = ds01_env.run_cli(
        admin, "admin", "exempt", bob.name, "--idle", "--until", "7d", "--reason", "demo"
    )
    assert granted.returncode == 0, granted.stderr
    record = state(ds01_env) / "exemptions" / f"{bob.name}.idle.json"
    assert record.stat().st_uid == pwd.getpwnam(admin).pw_uid  # the kernel's word
    rows = _json(ds01_env.run_cli(None, "admin", "exemptions", "--json"))
    assert isinstance(rows, list) and len(rows) == 1
    row = rows[0]
    assert (row["user"], row["kind"], row["created_by"], row["active"]) == (
        bob.name,
        "idle",
        admin,
        True,
    )
    subprocess.run(["gpasswd", "-d", admin, TEST_ADMIN_GROUP], check=True, capture_output=True)
    listed = ds01_env.run_cli(None, "admin", "exemptions", "--json")
    assert _json(listed) == []
    assert f"written by {admin}, who is not a DS01 administrator" in listed.stderr


# -- events -----------------------------------------------------------------------------


def _events(env: Ds01Env, user: str) -> list[dict[str, object]]:
    found = _json(env.run_cli(user, "events", "--json"))
    assert isinstance(found, list)
    return found


def test_others_event_files_cannot_be_changed_removed_or_replaced(
    ds01_env: Ds01Env, alice: Actor, bob: Actor
) -> None:
    made = ds01_env.run_cli(bob.name, "container", "create", "st-ev", "--cpu-only")
    assert made.returncode == 0, made.stderr
    events = state(ds01_env) / "events"
    bobs = events / f"{bob.uid}.jsonl"
    assert bobs.stat().st_uid == bob.uid and stat.S_IMODE(bobs.stat().st_mode) == 0o640
    attempts = {
        "append": "open(sys.argv[1], 'a').write('{}\\n')",
        "truncate": "os.truncate(sys.argv[1], 0)",
        "unlink": "os.unlink(sys.argv[1])",
        "rename": "os.rename(sys.argv[1], sys.argv[1] + '.x')",
        "replace": REPLACE,
        "rename dir": "os.rename(os.path.dirname(sys.argv[1]), os.path.dirname(sys.argv[1]) + 'x')",
    }
    for what, code in attempts.items():
        tried = as_user(alice.name, "import os, sys; " + code, str(bobs))
        assert tried.returncode != 0, f"alice could {what} bob's event file"
        assert "PermissionError" in tried.stderr, tried.stderr
    mine = [e for e in _events(ds01_env, bob.name) if e["action"] == "container.create"]
    assert [(e["actor"], e["writer"], e["forged"]) for e in mine] == [(bob.name, bob.name, False)]


def test_events_forged_as_another_user_are_flagged_or_never_read(
    ds01_env: Ds01Env, alice: Actor, bob: Actor
) -> None:
    events = state(ds01_env) / "events"
    fake = {
        "ts": datetime.now(UTC).isoformat(),
        "actor": bob.name,
        "action": "container.remove",
        "target": "st-fake",
        "result": "ok",
        "owner": bob.name,
        "details": {},
    }
    # 1. The old way: a row in the database's events table (alice can make one).
    as_db = as_user(
        alice.name,
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
        "c.execute('CREATE TABLE events (id INTEGER PRIMARY KEY, ts, actor, action, target,"
        " result, owner, details)');"
        "c.execute(\"INSERT INTO events VALUES (NULL, ?, ?, 'container.remove', 'st-db', 'ok',"
        " ?, '{}')\", (sys.argv[2], sys.argv[3], sys.argv[3])); c.commit()",
        str(state(ds01_env) / "ds01.sqlite3"),
        fake["ts"],  # type: ignore[arg-type]
        bob.name,
    )
    assert as_db.returncode == 0, as_db.stderr
    # 2. In her own file, claiming to be bob; 3. in a file she named after bob's uid.
    for name in (f"{alice.uid}.jsonl", f"{bob.uid}.jsonl"):
        wrote = as_user(
            alice.name,
            "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')",
            str(events / name),
            json.dumps(fake),
        )
        assert wrote.returncode == 0, wrote.stderr
    # Bob's own commands still record (the squatted name is skipped, not written into):
    # the event log's own writer, run as bob, as every command's audit runs it.
    recorded = as_user(
        bob.name,
        "import sys; from pathlib import Path; from ds01.adapters.state_db import StateDB;"
        "from ds01.adapters.event_log import EventLog;"
        "EventLog(StateDB(Path(sys.argv[1]))).record(actor=sys.argv[2],"
        " action='container.create', target='st-ev2', result='ok')",
        str(state(ds01_env)),
        bob.name,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert (events / f"{bob.uid}-1.jsonl").stat().st_uid == bob.uid

    seen = _events(ds01_env, bob.name)
    assert not any(e["target"] == "st-db" for e in seen)  # the database is not read
    forged = [e for e in seen if e["target"] == "st-fake"]
    assert len(forged) == 2
    assert all(e["forged"] is True and e["writer"] == alice.name for e in forged)
    genuine = [e for e in seen if e["action"] == "container.create"]
    assert [(e["writer"], e["forged"]) for e in genuine] == [(bob.name, False)]
    text = ds01_env.run_cli(bob.name, "events")
    assert f"{bob.name} [FORGED by {alice.name}]" in text.stdout
    assert "2 event(s) shown were written by someone other than" in text.stderr


# -- per-user directories (build logs) ----------------------------------------------------

OPEN_USER_DIR = (
    "import sys; from pathlib import Path;"
    "from ds01.adapters.state_layout import open_user_dir;"
    "from ds01.errors import DS01Error\n"
    "try:\n"
    "    open_user_dir(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), 'build-logs')\n"
    "except DS01Error as e:\n"
    "    print(e.code, e.message); sys.exit(2)\n"
)


def test_a_users_build_log_directory_is_theirs_alone(
    ds01_env: Ds01Env, alice: Actor, bob: Actor
) -> None:
    users = state(ds01_env) / "users"
    st = users.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o1775
    # Alice squats bob's directory before bob's first build ...
    squat = as_user(alice.name, "import os, sys; os.mkdir(sys.argv[1])", str(users / str(bob.uid)))
    assert squat.returncode == 0, squat.stderr
    refused = as_user(bob.name, OPEN_USER_DIR, str(state(ds01_env)), str(bob.uid), str(bob.gid))
    assert refused.returncode == 2 and "state_dir_squatted" in refused.stdout
    assert f"belongs to {alice.name}" in refused.stdout
    assert not (users / str(bob.uid) / "build-logs").exists()  # nothing written into it
    # ... root's next command (the enforcement timer) moves it aside, and bob gets his own.
    ds01_env.run_cli(None, "gpu", "queue", "--all", "--json")
    assert any(p.name.startswith(f".squatted-{bob.uid}-by-{alice.uid}-") for p in users.iterdir())
    made = as_user(bob.name, OPEN_USER_DIR, str(state(ds01_env)), str(bob.uid), str(bob.gid))
    assert made.returncode == 0, made.stdout + made.stderr
    logs = users / str(bob.uid) / "build-logs"
    assert logs.stat().st_uid == bob.uid and stat.S_IMODE(logs.stat().st_mode) == 0o700
    # Alice can neither replace nor remove bob's directory in the sticky, root-owned users/.
    for code in (
        "import os, sys; os.rename(sys.argv[1], sys.argv[1] + '.gone')",
        "import shutil, sys; shutil.rmtree(sys.argv[1])",
    ):
        tried = as_user(alice.name, code, str(users / str(bob.uid)))
        assert tried.returncode != 0 and "PermissionError" in tried.stderr
    assert logs.is_dir()


# -- the database itself ------------------------------------------------------------------


def test_a_lost_or_replaced_database_is_reported(
    ds01_env: Ds01Env, alice: Actor, bob: Actor
) -> None:
    db = state(ds01_env) / "ds01.sqlite3"
    assert db.stat().st_uid == 0
    assert (state(ds01_env) / "state-db.marker").stat().st_uid == 0
    quiet = ds01_env.run_cli(bob.name, "gpu", "queue", "--json")
    assert quiet.returncode == 0 and "state database" not in quiet.stderr
    # Users cannot remove or replace it (root's, in the sticky state directory) ...
    for code in (
        "import os, sys; os.unlink(sys.argv[1])",
        "import os, sys; " + REPLACE,
    ):
        tried = as_user(alice.name, code, str(db))
        assert tried.returncode != 0 and "PermissionError" in tried.stderr
    # ... but can empty it: every later command says so, until root has seen it.
    emptied = as_user(alice.name, "import os, sys; os.truncate(sys.argv[1], 0)", str(db))
    assert emptied.returncode == 0, emptied.stderr
    told = ds01_env.run_cli(bob.name, "gpu", "queue", "--json")
    assert told.returncode == 0, told.stderr
    assert f"The state database {db} was emptied or replaced" in told.stderr
    assert "Queued requests must be made again" in told.stderr
    again = ds01_env.run_cli(alice.name, "gpu", "queue", "--json")
    assert "was emptied or replaced" in again.stderr
    seen = ds01_env.run_cli(None, "gpu", "queue", "--all", "--json")
    assert "Recorded as the new database" in seen.stderr
    marker = json.loads((state(ds01_env) / "state-db.marker").read_text())
    assert len(marker["previous"]) == 1  # root's record keeps the loss
    assert "state database" not in ds01_env.run_cli(bob.name, "gpu", "queue", "--json").stderr
    # Lost altogether (a disk, an admin's mistake): said too.
    db.unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    missing = ds01_env.run_cli(bob.name, "gpu", "queue", "--json")
    assert f"The state database {db} was missing" in missing.stderr


# -- the installer ------------------------------------------------------------------------


def test_install_state_only_lays_out_the_state_directory(ds01_env: Ds01Env, admin: str) -> None:
    target = ds01_env.root / "fresh-state"
    config = ds01_env.root / "install.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(target), "admin_group": TEST_ADMIN_GROUP}))
    config.chmod(0o644)
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "DS01_CONFIG": str(config),
        "DS01_VENV": str(PROJECT_ROOT / ".venv"),
    }
    script = str(PROJECT_ROOT / "scripts" / "install")
    run = subprocess.run(
        [script, "--state-only"], check=False, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    docker, admins = grp.getgrnam("docker").gr_gid, grp.getgrnam(TEST_ADMIN_GROUP).gr_gid
    expected = {
        "": (0, docker, 0o3775, stat.S_ISDIR),
        "users": (0, docker, 0o1775, stat.S_ISDIR),
        "events": (0, docker, 0o3775, stat.S_ISDIR),
        "exemptions": (0, admins, 0o2770, stat.S_ISDIR),
        "ds01.sqlite3": (0, docker, 0o664, stat.S_ISREG),
        "state-db.marker": (0, None, 0o644, stat.S_ISREG),
    }
    for name, (uid, gid, mode, kind) in expected.items():
        st = (target / name).lstat()
        assert kind(st.st_mode), name
        assert st.st_uid == uid and (gid is None or st.st_gid == gid), name
        assert stat.S_IMODE(st.st_mode) == mode, f"{name}: {stat.S_IMODE(st.st_mode):04o}"
    # Idempotent: a second run changes nothing; without root it refuses (exit 2).
    rerun = subprocess.run(
        [script, "--state-only"], check=False, env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0 and "state: " in rerun.stdout
    assert [line for line in rerun.stdout.splitlines() if "->" in line or "created" in line] == []
    user = subprocess.run(
        ["runuser", "-u", "ds01t-alice", "--", script, "--state-only"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert user.returncode == 2 and "sudo" in user.stdout + user.stderr
    with sqlite3.connect(target / "ds01.sqlite3") as conn:
        assert conn.execute("SELECT value FROM ds01_meta WHERE key = 'instance'").fetchone()
