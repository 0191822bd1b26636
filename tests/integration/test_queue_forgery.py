"""Forged queue rows and all-or-nothing grants, with real users and a real engine
(issue 10, finding 3 and finding 6's "a grant and its queue entry change together").

Before: a row alice inserted by hand (priority 1000, ``data: /etc``, ``models:
/home/ds01t-bob``, for herself or "for bob") was granted by root's pass ahead of the
others and created that container; with the database read-only, a grant created a
container and left its entry waiting for ever.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.identity import actor_for_user
from ds01.adapters.queue_store import QueueStore
from ds01.adapters.state_db import StateDB
from ds01.domain.actor import Actor
from ds01.domain.queue import QueueState
from ds01.services.gpu.queue import QueueService
from tests.integration.conftest import CATALOG_IMAGE_ADA, Ds01Env

H200_UUID = "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d"

# Run as the attacker with the system Python: what any user can do with the database and
# with their own directory under users/ (arguments come as JSON, never a shell string).
_FORGE = r"""
import json, os, sqlite3, sys
args = json.loads(sys.argv[1])
conn = sqlite3.connect(args["db"], isolation_level=None)
cur = conn.execute(
    "INSERT INTO gpu_queue (user, request, spec, priority, enqueued_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?)",
    (args["user"], args["request"], json.dumps(args["spec"], sort_keys=True),
     1000, args["enqueued_at"], args["enqueued_at"]),
)
entry = cur.lastrowid
if args.get("file_dir"):
    os.makedirs(args["file_dir"], mode=0o755, exist_ok=True)
    record = {"version": 1, "id": entry, "user": args["user"], "uid": os.getuid(),
              "request": args["request"], "spec": args["spec"],
              "enqueued_at": args["enqueued_at"]}
    with open(os.path.join(args["file_dir"], f"{entry}.json"), "x") as f:
        json.dump(record, f)
print(entry)
"""


def _state(env: Ds01Env) -> Path:
    return env.root / "state"


def _forge(env: Ds01Env, attacker: Actor, *, user: str, spec: dict[str, Any], **kw: Any) -> int:
    args = {
        "db": str(_state(env) / "ds01.sqlite3"),
        "user": user,
        "request": kw.get("request", "gpus:1"),
        "spec": spec,
        "enqueued_at": "2000-01-01T00:00:00+00:00",  # "waited" 25 years: maximal aging
        "file_dir": kw.get("file_dir"),
    }
    out = subprocess.run(
        [
            "runuser",
            "-u",
            attacker.name,
            "--",
            sys.executable,
            "-I",
            "-c",
            _FORGE,
            json.dumps(args),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def _spec(name: str, owner: Actor, **paths: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "image": CATALOG_IMAGE_ADA,
        "framework": "Pytorch-2.8.0",
        "arch": "CUDA_ADA",
        "custom": False,
        "workspace": paths.get("workspace", f"{owner.home}/workspace/{name}"),
        "data": paths.get("data"),
        "models": paths.get("models"),
        "data_read_only": False,
        "models_read_only": False,
        "interface": "cli",
    }


def _root_pass(env: Ds01Env) -> list[Any]:
    """Root's queue pass, the one every enforcement pass runs (in-process: the engine is
    shared with other tests, so no whole-host enforcement here)."""
    root = actor_for_user("root")
    return QueueService(env.context(root)).process()


def _store(env: Ds01Env) -> QueueStore:
    return QueueStore(StateDB(_state(env)))


def _events(env: Ds01Env) -> list[dict[str, Any]]:
    out = env.run_cli(None, "events", "--json", "--limit", "500")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def test_forged_rows_are_refused_logged_and_never_granted_ahead(
    ds01_env: Ds01Env, alice: Actor, bob: Actor, carol: Actor, engine: Any
) -> None:
    assert ds01_env.run_cli(bob.name, "container", "create", "hold", "pytorch").returncode == 0
    queued = ds01_env.run_cli(carol.name, "container", "create", "legit", "pytorch", "--wait")
    assert queued.returncode == 4, queued.stderr  # carol waits, honestly, for the one GPU
    own_dir = str(_state(ds01_env) / "users" / str(alice.uid) / "queue")
    ws = Path(alice.home) / "workspace"
    subprocess.run(["runuser", "-u", alice.name, "--", "mkdir", "-p", str(ws / "jump")], check=True)
    evil = {"data": "/etc", "models": bob.home}

    no_file = _forge(ds01_env, alice, user=alice.name, spec=_spec("nofile", alice, **evil))
    as_bob = _forge(ds01_env, alice, user=bob.name, spec=_spec("asbob", bob, **evil))
    # Vouched for by alice's own file (she may write her directory): re-checked as a
    # create, with her rights, and refused for /etc.
    vouched = _forge(
        ds01_env,
        alice,
        user=alice.name,
        spec=_spec("etc", alice, **evil),
        request="cpu-only",
        file_dir=own_dir,
    )
    # Vouched for and valid, but "priority 1000, waiting since 2000": still behind carol.
    jump = _forge(ds01_env, alice, user=alice.name, spec=_spec("jump", alice), file_dir=own_dir)
    # alice cannot put a file in bob's name: his directory is his.
    bobs = _state(ds01_env) / "users" / str(bob.uid)
    attempt = subprocess.run(
        ["runuser", "-u", alice.name, "--", "mkdir", "-p", str(bobs / "queue")],
        capture_output=True,
        check=False,
    )
    assert attempt.returncode != 0 or (bobs / "queue").stat().st_uid != bob.uid

    listing = json.loads(ds01_env.run_cli(None, "gpu", "queue", "--all", "--json").stdout)
    by_id = {e["id"]: e for e in listing}
    assert by_id[no_file]["why"] == "refused" and by_id[as_bob]["why"] == "refused"
    assert by_id[jump]["priority"] != 1000  # shown with the policy's priority

    assert ds01_env.run_cli(bob.name, "container", "remove", "hold", "--force").returncode == 0
    _root_pass(ds01_env)

    store = _store(ds01_env)
    states = {i: store.get(i) for i in (no_file, as_bob, vouched, jump)}
    assert states[no_file].entry.state is QueueState.FAILED
    assert "there is no request file" in (states[no_file].message or "")
    assert states[as_bob].entry.state is QueueState.FAILED
    assert states[vouched].entry.state is QueueState.FAILED
    assert "outside the places you may use" in (states[vouched].message or "")
    assert states[jump].entry.state is QueueState.WAITING  # behind carol, not ahead
    granted = engine.inspect(f"legit._.{carol.uid}")
    assert granted.info.decoded.gpu_uuids == (H200_UUID,)
    for name, uid in (("nofile", alice.uid), ("asbob", bob.uid), ("etc", alice.uid)):
        assert not engine.exists(f"{name}._.{uid}")
    assert not engine.exists(f"jump._.{alice.uid}")

    events = _events(ds01_env)
    refusals = {e["target"] for e in events if e["action"] == "queue.refuse"}
    assert {f"queue:{no_file}", f"queue:{as_bob}"} <= refusals
    assert any(e["action"] == "queue.fail" and e["target"] == f"queue:{vouched}" for e in events)


def test_a_row_changed_after_queueing_is_refused(
    ds01_env: Ds01Env, alice: Actor, bob: Actor, engine: Any
) -> None:
    """alice rewrites bob's honest row (bigger request, /etc mounted): the row no longer
    matches bob's file, so it is refused, not granted as she wrote it."""
    assert ds01_env.run_cli(alice.name, "container", "create", "hold", "pytorch").returncode == 0
    assert (
        ds01_env.run_cli(bob.name, "container", "create", "mine", "pytorch", "--wait").returncode
        == 4
    )
    row = next(r for r in _store(ds01_env).waiting() if r.entry.user == bob.name)
    spec = dict(row.spec, data="/etc")
    conn = sqlite3.connect(_state(ds01_env) / "ds01.sqlite3", isolation_level=None)
    conn.execute(
        "UPDATE gpu_queue SET spec = ?, priority = 1000 WHERE id = ?",
        (json.dumps(spec, sort_keys=True), row.entry.id),
    )
    conn.close()
    assert ds01_env.run_cli(alice.name, "container", "remove", "hold", "--force").returncode == 0
    _root_pass(ds01_env)
    after = _store(ds01_env).get(row.entry.id)
    assert after.entry.state is QueueState.FAILED
    assert "spec differ" in (after.message or "")
    assert not engine.exists(f"mine._.{bob.uid}")


def _pass_as(env: Ds01Env, actor: Actor, *, pause_at: str | None = None) -> tuple[int, int]:
    """Fork a queue pass running as ``actor`` (as their ``container remove`` runs it after
    freeing a GPU); returns (pid, a pipe that gets its warnings when it ends)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            os.setgroups(os.getgrouplist(actor.name, actor.gid))
            os.setresgid(actor.gid, actor.gid, actor.gid)
            os.setresuid(actor.uid, actor.uid, actor.uid)
            if pause_at:
                os.environ["DS01_TEST_PAUSE_AT"] = pause_at
            from ds01.adapters.docker_engine import DockerEngine
            from ds01.services.context import AppContext
            from ds01.services.gpu.queue import process_queue_quietly

            ctx = AppContext(settings=env.settings(), actor=actor, engine=DockerEngine())
            process_queue_quietly(ctx)
            os.write(write, "\n".join(ctx.warnings).encode())
        except BaseException as exc:
            os.write(write, f"{type(exc).__name__}: {exc}".encode())
            code = 1
        os._exit(code)
    os.close(write)
    return pid, read


def _finish(pid: int, read: int) -> str:
    with os.fdopen(read) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text


def _stopped(pid: int, read: int) -> bool:
    """True once the child paused itself (SIGSTOP at its pause point). A child that ended
    instead never will: fail at once with what it said, rather than spin forever."""
    state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        with os.fdopen(read) as f:
            said = f.read()
        os.waitpid(pid, 0)
        pytest.fail(f"the queue pass ended before its pause point: {said}")
    return state == "T"


def test_a_grant_and_its_entry_change_together_with_a_read_only_database(
    ds01_env: Ds01Env, alice: Actor, bob: Actor, engine: Any
) -> None:
    db = _state(ds01_env) / "ds01.sqlite3"
    run = ds01_env.run_cli
    assert run(bob.name, "container", "create", "hold", "pytorch").returncode == 0
    assert run(alice.name, "container", "create", "waiter", "pytorch", "--wait").returncode == 4
    entry = next(r for r in _store(ds01_env).waiting() if r.entry.user == alice.name).entry.id
    assert run(bob.name, "container", "remove", "hold", "--force").returncode == 0
    tag = f"waiter._.{alice.uid}"
    assert not engine.exists(tag)  # bob's pass leaves alice's grant to alice or root

    # 1. The database refuses writes for the whole pass: nothing is made.
    db.chmod(0o444)
    try:
        warnings = _finish(*_pass_as(ds01_env, alice))
    finally:
        db.chmod(0o664)
    assert "GPU queue could not be processed" in warnings and "readonly" in warnings, warnings
    assert not engine.exists(tag)
    assert _store(ds01_env).get(entry).entry.state is QueueState.WAITING

    # 2. The database fails only the last write, after the container was made and
    # started: another process holds it locked past the busy timeout (a mode change
    # would not reach the pass's already open connection).
    pid, read = _pass_as(ds01_env, alice, pause_at="queue-granted")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        while not _stopped(pid, read):  # waits for the state, not for a time
            time.sleep(0.01)
        assert engine.exists(tag)  # made and started, not yet recorded
        assert _store(ds01_env).get(entry).entry.state is QueueState.GRANTING
        blocker.execute("BEGIN EXCLUSIVE")
        os.kill(pid, signal.SIGCONT)
        warnings = _finish(pid, read)
    finally:
        blocker.close()
    assert not engine.exists(tag), warnings  # not recorded as granted: removed again
    assert _store(ds01_env).get(entry).entry.state is QueueState.GRANTING

    # 3. The next pass settles it: waiting again (its container is gone), then granted.
    _root_pass(ds01_env)
    after = _store(ds01_env).get(entry)
    assert after.entry.state is QueueState.GRANTED and after.container == tag
    info = engine.inspect(tag).info
    assert info.state.value == "running" and info.decoded.gpu_uuids == (H200_UUID,)
