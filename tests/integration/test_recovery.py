"""Issue 10, finding 6: crashes must not leave unreported GPU holders or directories.

A real ``ds01 container create --gpus 1`` run as a real user is ended like ``kill -9``
at each named step (``DS01_TEST_CRASH_AT``, test-only: ``os._exit`` there), then one
command of the user runs; afterwards no container holds a device that no successful
command reported, and no directory the failed command made is left. Engine failures are
real engine calls wrapped to fail after (or instead of) Docker acting, in a child process
that then exits, as a crashed command would. The heavy run (random kill points, the
engine stopped under 8 concurrent creates) is ``benchmarks/fault_injection.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.identity import actor_for_user
from ds01.domain.actor import Actor
from ds01.domain.containers import ContainerSpec
from ds01.domain.labels import L
from ds01.domain.queue import QueueState
from ds01.errors import EngineError
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.provisioning import make_container
from ds01.services.container.recovery import RecoveryService
from tests.conftest import BASE_IMAGE
from tests.integration.conftest import DS01_BIN

MIG_GPU = {
    "generate": {
        "count": 1,
        "name": "NVIDIA H200",
        "memory_mib": 143771,
        "compute_capability": "9.0",
        "total_slices": 7,
        "mig": {"profile": "1g.18gb", "count": 7},
    }
}

#: Every step create() marks, in order (see services/container/create.py).
STEPS = ["journal", "dirs", "locked", "created", "started", "recorded"]


def _user_env(ds01_env: Any, user: str, **extra: str) -> dict[str, str]:
    pw = pwd.getpwnam(user)
    return {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "DS01_CONFIG": str(ds01_env.config_path),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "HOME": pw.pw_dir,
        "USER": user,
        "LOGNAME": user,
        **extra,
    }


def _run_as(ds01_env: Any, user: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    pw = pwd.getpwnam(user)
    return subprocess.run(
        [str(DS01_BIN), *args],
        env=_user_env(ds01_env, user, **extra),
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=os.getgrouplist(user, pw.pw_gid),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _holders(engine: DockerEngine, user: str) -> dict[str, tuple[str, ...]]:
    """Containers of ``user`` that hold a device, by tag."""
    out = {}
    for info in engine.list_containers([f"{L.USER}={user}"]):
        labels = info.decoded
        if labels is not None and labels.gpu_uuids:
            out[info.tag] = labels.gpu_uuids
    return out


def _enforce(ds01_env: Any, actor: Actor) -> None:
    """One enforcement pass as root, limited to the test user (the engine is shared)."""
    from ds01.services.enforcement.passes import EnforceService

    root = actor_for_user("root")
    report = EnforceService(ds01_env.context(root)).run_pass(root, owners={actor.name})
    assert report.ok, report.errors


def _journals(ds01_env: Any, actor: Actor) -> list[Path]:
    pending = ds01_env.root / "state" / "users" / str(actor.uid) / "pending"
    return sorted(pending.iterdir()) if pending.is_dir() else []


@pytest.fixture
def mig_env(ds01_env: Any) -> Any:
    ds01_env.write_inventory(MIG_GPU)
    return ds01_env


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("then", ["list", "create"])
def test_kill_at_each_step_then_one_command_leaves_nothing(
    mig_env: Any, alice: Actor, engine: DockerEngine, step: str, then: str
) -> None:
    name = f"crash-{step}"
    workspace = Path(alice.home) / "workspace" / name
    crashed = _run_as(
        mig_env,
        alice.name,
        "container",
        "create",
        name,
        "--image",
        BASE_IMAGE,
        "--gpus",
        "1",
        DS01_TEST_CRASH_AT=step,
    )
    assert crashed.returncode == 137, crashed.stderr  # ended at that step, like kill -9
    tag = f"{name}._.{alice.uid}"
    if step in ("created", "started", "recorded"):
        # The hole as the review found it: a device held by a container nobody was told of.
        assert tag in _holders(engine, alice.name)
    if step != "journal":
        assert workspace.is_dir()

    if then == "list":
        after = _run_as(mig_env, alice.name, "container", "list", "--json")
        assert after.returncode == 0, after.stderr
        assert name not in {c["name"] for c in json.loads(after.stdout)}
    else:
        after = _run_as(
            mig_env, alice.name, "container", "create", "other", "--image", BASE_IMAGE, "--cpu-only"
        )
        assert after.returncode == 0, after.stderr
    assert tag not in _holders(engine, alice.name)
    assert not engine.exists(tag)
    if then == "create" or step in ("created", "started", "recorded"):
        # `list` reads the records only when a container shows the crash (kept cheap);
        # every other command and every enforcement pass always reads them.
        assert not workspace.exists()
        assert not [p for p in _journals(mig_env, alice) if p.name.startswith(name)]

    _enforce(mig_env, alice)  # the timer's pass, as root
    assert not workspace.exists()
    assert not [p for p in _journals(mig_env, alice) if p.name.startswith(name)]
    if step in ("created", "started", "recorded"):
        events = json.loads(mig_env.run_cli(alice.name, "events", "--json").stdout)
        assert any(
            e["action"] == "container.recover" and e["target"] == tag and e["result"] == "removed"
            for e in events
        )


def test_a_create_again_after_a_crash_succeeds_with_the_same_name(
    mig_env: Any, alice: Actor, engine: DockerEngine
) -> None:
    """Before: 'You already have a container named ...' (exit 2) and a held slice."""
    args = ("container", "create", "again", "--image", BASE_IMAGE, "--gpus", "1", "--json")
    assert _run_as(mig_env, alice.name, *args, DS01_TEST_CRASH_AT="started").returncode == 137
    again = _run_as(mig_env, alice.name, *args)
    assert again.returncode == 0, again.stderr
    assert "was cleaned up" in " ".join(again.stderr.split())  # the user is told
    result = json.loads(again.stdout)
    assert list(_holders(engine, alice.name).values()) == [tuple(result["gpus"])]


def test_live_create_is_never_swept(mig_env: Any, alice: Actor, engine: DockerEngine) -> None:
    """A create that is still running (its record locked, its process alive) is left
    alone by the user's other commands and by enforcement."""
    pw = pwd.getpwnam(alice.name)
    proc = subprocess.Popen(
        [str(DS01_BIN), "container", "create", "slow", "--image", BASE_IMAGE, "--gpus", "1"],
        env=_user_env(mig_env, alice.name, DS01_TEST_PAUSE_AT="created"),
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=os.getgrouplist(alice.name, pw.pw_gid),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tag = f"slow._.{alice.uid}"
        for _ in range(600):  # the child stops itself (SIGSTOP) at the step: no timing
            if _stopped(proc.pid):
                break
            time.sleep(0.1)
        assert _stopped(proc.pid), "the create never reached the pause point"
        assert engine.exists(tag)
        assert _run_as(mig_env, alice.name, "container", "list").returncode == 0
        _enforce(mig_env, alice)
        assert engine.exists(tag)  # its creator lives: not half-made, just not done yet
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert engine.exists(tag)


def _stopped(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return data[data.rindex(")") + 2] == "T"


def test_without_a_record_a_never_started_container_is_still_found(
    mig_env: Any, alice: Actor, bob: Actor, engine: DockerEngine
) -> None:
    """The record cannot be written (its directory belongs to someone else): the create
    goes on with a warning, and the container's creator label is enough."""
    users = mig_env.root / "state" / "users"
    users.mkdir(mode=0o1777, exist_ok=True)
    foreign = users / str(alice.uid)
    foreign.mkdir()
    os.chown(foreign, bob.uid, bob.gid)  # not alice's: never trusted for her records
    crashed = _run_as(
        mig_env,
        alice.name,
        "container",
        "create",
        "nojournal",
        "--image",
        BASE_IMAGE,
        "--gpus",
        "1",
        DS01_TEST_CRASH_AT="created",
    )
    assert crashed.returncode == 137
    assert "could not be recorded" in crashed.stderr or crashed.stderr == ""
    tag = f"nojournal._.{alice.uid}"
    assert engine.exists(tag)
    assert _run_as(mig_env, alice.name, "container", "list").returncode == 0
    assert not engine.exists(tag)


# -- engine failures, in a child process that then exits as a crashed command would ----


class _FailingEngine(DockerEngine):
    """The real engine, but the create call raises after Docker made the container (a
    lost answer), and every remove fails (the engine went away)."""

    def create(self, spec: ContainerSpec) -> str:
        super().create(spec)
        raise EngineError("create container: connection aborted (simulated)")

    def remove(self, name: str, *, force: bool = False) -> None:
        raise EngineError("remove container: engine unreachable (simulated)")


def _create_in_child(ds01_env: Any, actor: Actor, name: str, engine: DockerEngine) -> None:
    def child() -> None:
        ctx = ds01_env.context(actor)
        ctx._engine = engine
        try:
            CreateService(ctx).create(actor, CreateRequest(name=name, image=BASE_IMAGE, gpus=1))
        except EngineError:
            os._exit(1)
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(120)
    assert proc.exitcode == 1


def test_rollback_runs_when_the_engine_call_fails(
    mig_env: Any, alice: Actor, engine: DockerEngine
) -> None:
    """Before: the failed remove skipped the directory rollback, and the container (made
    by Docker, reported as failed) held its slice for good."""
    workspace = Path(alice.home) / "workspace" / "lost"
    _create_in_child(mig_env, alice, "lost", _FailingEngine())
    tag = f"lost._.{alice.uid}"
    assert not workspace.exists()  # rolled back although the engine call failed
    assert tag in _holders(engine, alice.name)  # the engine could not remove it then
    assert len(_journals(mig_env, alice)) == 1  # ... so the record stays for the sweep

    assert _run_as(mig_env, alice.name, "container", "list").returncode == 0
    assert not engine.exists(tag)
    assert _journals(mig_env, alice) == []


def test_enforcement_removes_it_and_requeues_an_interrupted_grant(
    mig_env: Any, alice: Actor, engine: DockerEngine
) -> None:
    """A grant killed after its container was made (and its entry marked granted): the
    pass removes the container, puts the entry back to waiting, and grants it anew."""
    from ds01.adapters.queue_store import QueueStore
    from ds01.domain.allocation import GpuRequest

    ctx = mig_env.context(alice)
    store = QueueStore(ctx.state_db)
    spec = {
        "name": "granted",
        "image": BASE_IMAGE,
        "framework": "custom",
        "arch": None,
        "custom": True,
        "workspace": alice.home,
        "data": None,
        "models": None,
        "interface": "cli",
    }
    from ds01.services.gpu.queue import QueueService

    # As create --wait stores it: the row and alice's request file that vouches for it.
    entry = QueueService(ctx).add(alice, GpuRequest.gpus(1), spec, priority=10)
    tag = f"granted._.{alice.uid}"

    def child() -> None:  # the grant's first half, then death
        from ds01.services.gpu.queue import QueueService

        cctx = mig_env.context(alice)
        row = QueueStore(cctx.state_db).get(entry)
        prepared = QueueService(cctx)._prepare(row)
        allocation = CreateService(cctx).allocate(prepared)
        assert allocation is not None
        make_container(cctx, prepared, allocation)
        QueueStore(cctx.state_db).set_state(
            entry, QueueState.GRANTED, now=cctx.clock.now(), container=tag
        )
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0 and engine.exists(tag)
    first_id = engine.inspect(tag).info.id

    report = RecoveryService(mig_env.context(alice)).sweep_all({alice.name})
    assert [r.tag for r in report] == [tag] and report[0].queue_entry == entry
    assert not engine.exists(tag)
    assert store.get(entry).entry.state is QueueState.WAITING

    _enforce(mig_env, alice)  # the queue pass grants it again, fully
    assert store.get(entry).entry.state is QueueState.GRANTED
    again = engine.inspect(tag)
    assert again.info.id != first_id and again.info.state.value == "running"
