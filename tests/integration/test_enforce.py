"""Issue 7, lifecycle enforcement, on a real Docker engine with a simulated GPU inventory.

The main test runs real enforcement passes, a fresh service and context each time (as
the timer runs a fresh process every minute), with timeouts shortened to seconds and real
time between passes, because CPU use comes from real cgroup counters. On four GPUs at 0%
utilization:

* an idle container is warned, stopped, its GPU released (and granted to a queued
  request), then removed, its workspace untouched;
* a container running a CPU-busy loop is left alone;
* a container whose owner is exempt gets one FYI notice and keeps running;
* a container with a fresh ``/workspace/.keep-alive`` is left alone;
* a container created but never started is removed.

Other engineers share this engine, so these tests use their own Linux users (``ds01e-``)
and touch only those users' containers. The lifecycle store, the exemption commands and
the ``--watch`` loop are tested here too.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ds01.adapters.clock import FixedClock
from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.identity import actor_for_user
from ds01.adapters.lifecycle_store import LifecycleStore
from ds01.adapters.state_db import StateDB
from ds01.domain.actor import Actor
from ds01.domain.containers import ContainerSpec, ContainerState
from ds01.domain.idle import CounterReading, LifecycleState
from ds01.domain.labels import AIME, ContainerLabels
from ds01.domain.lifecycle import Exemption, LimitKind
from ds01.errors import NotFoundError, RefusedError, UsageError
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.enforcement.exemptions import grant, listing, parse_until, withdraw
from ds01.services.enforcement.passes import EnforceService, watch
from tests.conftest import BASE_IMAGE, FIXTURES, PROJECT_ROOT
from tests.integration.conftest import Ds01Env

PREFIX = "ds01e-"
IDLE, BUSY, EXEMPT, KEEP, WAIT = (
    f"{PREFIX}idle",
    f"{PREFIX}busy",
    f"{PREFIX}exempt",
    f"{PREFIX}keep",
    f"{PREFIX}wait",
)
USERS = (IDLE, BUSY, EXEMPT, KEEP, WAIT)
DS01 = PROJECT_ROOT / ".venv" / "bin" / "ds01"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def gpu(index: int) -> dict[str, Any]:
    return {
        "index": index,
        "uuid": f"GPU-00000000-0000-0000-0000-0000000e{index:04d}",
        "name": "NVIDIA A100-SXM4-40GB",
        "memory_mib": 40960,
        "compute_capability": "8.0",
        "utilization_gpu": 0,
    }


FOUR_IDLE_GPUS = {"gpus": [gpu(i) for i in range(4)]}

# Seconds instead of hours. Four of four GPUs held makes the server busy (share 0.8),
# which halves the idle timeout to 10 s: the busy-server rule is exercised too.
POLICY: dict[str, Any] = {
    "defaults": {
        "max_containers": 5,
        "memory": "256m",
        "idle_timeout": "20s",
        "max_runtime": None,
        "gpu_hold_after_stop": "2s",
        "container_hold_after_stop": "6s",
        "idle": {"window": "2s"},
    },
    "users": {BUSY: {"max_cpus": 0.25}},  # its busy loop stays a quarter of a core
}


# --------------------------------------------------------------------------- fixtures


def _owned_by_us(engine: DockerEngine) -> list[str]:
    return [c.id for c in engine.list_containers([AIME]) if (c.owner or "").startswith(PREFIX)]


def remove_our_containers(engine: DockerEngine) -> None:
    for cid in _owned_by_us(engine):
        engine.remove(cid, force=True)


@pytest.fixture(scope="module")
def enf_users(engine: DockerEngine) -> dict[str, Actor]:
    if os.geteuid() != 0:
        pytest.skip("creating test users needs root (CI runs as root)")
    try:
        grp.getgrnam("docker")
    except KeyError:
        subprocess.run(["groupadd", "docker"], check=True, capture_output=True)
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(
                ["useradd", "--create-home", "--shell", "/bin/bash", "-G", "docker", user],
                check=True,
                capture_output=True,
            )
    return {user: actor_for_user(user) for user in USERS}


@pytest.fixture
def enf_env(engine: DockerEngine, enf_users: dict[str, Actor]) -> Iterator[Ds01Env]:
    root = Path(tempfile.mkdtemp(prefix="ds01-enforce-", dir="/tmp"))
    root.chmod(0o755)
    state = root / "state"
    state.mkdir()
    catalog = FIXTURES / "aime" / "ml_images.v2.repo"
    if not catalog.exists():
        pytest.skip(f"AIME catalog fixture missing: {catalog}")
    env = Ds01Env(root, root / "ds01.yaml", root / "limits.yaml", root / "gpus.json", engine)
    env.config_path.write_text(
        yaml.safe_dump(
            {
                "catalog": str(catalog),
                "limits": str(env.limits_path),
                "state_dir": str(state),
                "admin_group": "ds01e-admins",
                "gpu": {"inventory": f"file:{env.inventory_path}", "runtime": "none"},
                "enforcement": {"created_timeout": 5, "sigterm_grace": 1},
            }
        )
    )
    env.write_limits(POLICY)
    env.write_inventory(FOUR_IDLE_GPUS)
    for path in (env.config_path, env.limits_path, env.inventory_path):
        path.chmod(0o644)
    remove_our_containers(engine)
    try:
        yield env
    finally:
        remove_our_containers(engine)
        shutil.rmtree(root, ignore_errors=True)
        for user in USERS:
            shutil.rmtree(Path(pwd.getpwnam(user).pw_dir) / "workspace", ignore_errors=True)


def root_actor() -> Actor:
    return actor_for_user("root")


def events(env: Ds01Env) -> list[Any]:
    return list(env.context(root_actor()).events.query(limit=None))


def _work_mount(engine: DockerEngine, container: str) -> Path:
    """The host workspace DS01 recorded in the container's labels."""
    decoded = engine.inspect(container).info.decoded
    assert decoded is not None and decoded.work_mount, f"{container} has no DS01 work mount"
    return Path(decoded.work_mount)


# --------------------------------------------------------------------------- the story


@pytest.mark.docker
@pytest.mark.slow
def test_idle_is_stopped_and_freed_busy_exempt_and_keep_alive_are_not(
    enf_env: Ds01Env, enf_users: dict[str, Actor], engine: DockerEngine
) -> None:
    actors = enf_users
    names = {IDLE: "idle", BUSY: "busy", EXEMPT: "exempt", KEEP: "keep"}
    tags = {}
    for user, name in names.items():
        ctx = enf_env.context(actors[user])
        result = CreateService(ctx).create(
            actors[user], CreateRequest(name=name, framework="pytorch")
        )
        ContainerService(ctx).start(actors[user], name)
        tags[user] = result.container
    idle_gpu = engine.inspect(tags[IDLE]).info.decoded.gpu_uuids  # type: ignore[union-attr]

    # All four GPUs are held: this request waits in the queue for one to come free.
    queued = CreateService(enf_env.context(actors[WAIT])).create(
        actors[WAIT], CreateRequest(name="later", framework="pytorch", wait=True)
    )
    assert queued.queued is not None

    # The busy loop outlives the shell that starts it (docker-init adopts it).
    busy_ctx = enf_env.context(actors[BUSY])
    ContainerService(busy_ctx).exec(actors[BUSY], "busy", ["sh", "-c", "while :; do :; done &"])

    keep_workspace = _work_mount(engine, tags[KEEP])
    (keep_workspace / ".keep-alive").touch()
    idle_workspace = _work_mount(engine, tags[IDLE])
    (idle_workspace / "thesis.tex").write_text("my work\n")

    grant(
        enf_env.context(root_actor()),
        root_actor(),
        EXEMPT,
        [LimitKind.IDLE],
        until="1d",
        reason="demo on Friday",
    )

    # Created and never started: removed after enforcement.created_timeout (5 s here; long
    # enough for the container the queue grants below to be seen before it would go too).
    never = _create_unstarted(engine, actors[IDLE], idle_workspace)

    deadline = time.monotonic() + 50
    reports = []
    while time.monotonic() < deadline:
        ctx = enf_env.context(root_actor())
        report = EnforceService(ctx).run_pass(root_actor(), owners=set(USERS))
        assert report.ok, "\n".join(e.traceback or e.message for e in report.errors)
        reports.append(report)
        if not engine.exists(tags[IDLE]):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the idle container was not removed in time: {_story(enf_env, tags[IDLE])}")

    log = events(enf_env)
    story = [
        e.action for e in log if e.target == tags[IDLE] and e.action.startswith(("life", "gpu"))
    ]
    # Warned (80% and/or 95%), then stopped, then GPU released, then removed; in order.
    assert story[0] == "lifecycle.warn", story
    assert story[-3:] == ["lifecycle.stop", "gpu.release", "lifecycle.remove"], story
    warns = [e for e in log if e.target == tags[IDLE] and e.action == "lifecycle.warn"]
    percents = [e.details["percent"] for e in warns]
    assert len(percents) == len(set(percents)), "a warning was repeated"
    assert all(e.details["shortened_by_busy"] for e in warns)
    assert all(e.owner == IDLE and e.details["by"] == "enforcement" for e in warns)
    stop = next(e for e in log if e.target == tags[IDLE] and e.action == "lifecycle.stop")
    assert stop.result == "ok" and stop.details["grace"] == 1.0

    # The released GPU went to the queued request, in the same pass.
    grant_event = next(e for e in log if e.action == "queue.grant")
    later = engine.inspect(grant_event.target)
    assert later.info.owner == WAIT
    assert later.info.decoded.gpu_uuids == idle_gpu  # type: ignore[union-attr]

    # Busy, exempt and keep-alive containers still run; none was warned or stopped.
    for user in (BUSY, EXEMPT, KEEP):
        assert engine.inspect(tags[user]).info.state is ContainerState.RUNNING, user
        acted = [
            e.action
            for e in log
            if e.target == tags[user] and e.action in ("lifecycle.warn", "lifecycle.stop")
        ]
        assert acted == [], (user, acted)
    exempted = [e for e in log if e.target == tags[EXEMPT] and e.action == "lifecycle.exempted"]
    assert len(exempted) == 1 and exempted[0].details["reason"] == "demo on Friday"
    busy_rows = [c for r in reports for c in r.containers if c.container == tags[BUSY]]
    assert max(c.signals.get("cpu_percent") or 0 for c in busy_rows) > 2.0

    removed = [e for e in log if e.target == never and e.action == "lifecycle.remove"]
    assert removed and removed[0].details["reason"] == "created_never_started"
    assert not engine.exists(never)

    # Workspaces are never touched; the owner was told (no terminal: the alerts file).
    assert (idle_workspace / "thesis.tex").read_text() == "my work\n"
    alerts = (idle_workspace / ".ds01-alerts").read_text()
    assert "WARNING" in alerts and "being stopped now" in alerts and "was removed" in alerts
    assert "GPU of your stopped container" in alerts

    # The store keeps no state for containers that are gone.
    stored = LifecycleStore(StateDB(Path(enf_env.settings().state_dir))).load_states()
    assert engine.inspect(tags[BUSY]).info.id in stored
    assert all(engine.exists(cid) for cid in stored)


def _create_unstarted(engine: DockerEngine, owner: Actor, workspace: Path) -> str:
    labels = ContainerLabels(
        name="never", user=owner.name, framework="Pytorch-2.8.0", work_mount=str(workspace)
    )
    tag = f"never._.{owner.uid}"
    engine.create(
        ContainerSpec(tag=tag, image=BASE_IMAGE, labels=labels.encode(), user=f"{owner.uid}")
    )
    return tag


def _story(env: Ds01Env, tag: str) -> list[tuple[str, str]]:
    return [(e.action, e.result) for e in events(env) if e.target == tag]


@pytest.mark.docker
def test_dry_run_decides_but_changes_nothing(
    enf_env: Ds01Env, enf_users: dict[str, Actor], engine: DockerEngine
) -> None:
    enf_env.write_config(enforcement={"created_timeout": 1})
    never = _create_unstarted(engine, enf_users[IDLE], Path(enf_users[IDLE].home))
    # The pass sees a clock 2 s past now: beyond created_timeout without waiting for it.
    later = FixedClock(datetime.now(UTC) + timedelta(seconds=2))
    ctx = enf_env.context(root_actor(), clock=later)
    report = EnforceService(ctx).run_pass(root_actor(), dry_run=True, owners={IDLE})
    (row,) = [c for c in report.containers if c.container == never]
    assert [(a["action"], a["result"]) for a in row.actions] == [("remove", "planned")]
    assert engine.exists(never)
    assert LifecycleStore(StateDB(Path(enf_env.settings().state_dir))).load_states() == {}


@pytest.mark.docker
def test_non_admins_are_refused(enf_env: Ds01Env, enf_users: dict[str, Actor]) -> None:
    ctx = enf_env.context(enf_users[IDLE])
    with pytest.raises(RefusedError, match=r"^Only administrators may run lifecycle") as err:
        EnforceService(ctx).run_pass(enf_users[IDLE])
    assert err.value.code == "not_admin"
    with pytest.raises(RefusedError, match=r"^Only administrators may exempt users") as err:
        grant(ctx, enf_users[IDLE], IDLE, [LimitKind.IDLE], until="1d", reason="me")
    assert err.value.code == "not_admin"


# --------------------------------------------------------------------------- the CLI


# Runs the ds01 entry point with this module's commands registered (until main.py
# registers them itself, after which this only runs main).
def run_cli(env: Ds01Env, user: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``ds01``, as ``user`` (``None``: root, an administrator)."""
    argv = [str(DS01), *args]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(
        argv,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "DS01_CONFIG": str(env.config_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.docker
def test_cli_admin_exemptions_and_refusals(enf_env: Ds01Env, enf_users: dict[str, Actor]) -> None:
    assert run_cli(enf_env, IDLE, "enforce").returncode == 3
    assert run_cli(enf_env, IDLE, "admin", "exemptions").returncode == 3
    refused = run_cli(
        enf_env, IDLE, "admin", "exempt", BUSY, "--idle", "--until", "1d", "--reason", "x"
    )
    assert refused.returncode == 3, refused.stderr

    made = run_cli(
        enf_env,
        None,
        "admin",
        "exempt",
        BUSY,
        "--idle",
        "--runtime",
        "--until",
        "2999-01-31",
        "--reason",
        "long experiment",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    assert {r["kind"] for r in json.loads(made.stdout)} == {"idle", "runtime"}
    listed = json.loads(run_cli(enf_env, None, "admin", "exemptions", "--json").stdout)
    assert [(r["user"], r["kind"], r["active"]) for r in listed] == [
        (BUSY, "idle", True),
        (BUSY, "runtime", True),
    ]
    assert listed[0]["until"].startswith("2999-02-01") or listed[0]["until"].startswith(
        "2999-01-31"
    )

    assert run_cli(enf_env, None, "admin", "unexempt", BUSY, "--idle").returncode == 0
    again = run_cli(enf_env, None, "admin", "unexempt", BUSY, "--idle")
    assert again.returncode == 2 and "no idle exemption" in again.stderr
    assert (
        run_cli(
            enf_env,
            None,
            "admin",
            "exempt",
            "nobody-here-x",
            "--idle",
            "--until",
            "1d",
            "--reason",
            "x",
        ).returncode
        == 2
    )
    assert (
        run_cli(enf_env, None, "admin", "exempt", BUSY, "--until", "1d", "--reason", "x").returncode
        == 2
    )

    passed = run_cli(enf_env, None, "enforce", "--json", "--dry-run")
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout)["dry_run"] is True


# --------------------------------------------------------------------------- no Docker


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LifecycleStore]:
    db = StateDB(tmp_path)
    yield LifecycleStore(db)
    db.close()


def test_store_round_trips_states_and_prunes_the_gone(store: LifecycleStore) -> None:
    state = LifecycleState(
        run_started_at=T0,
        idle_since=T0 + timedelta(minutes=1),
        sent=frozenset({"idle-80"}),
        counters=CounterReading.of(T0, 123, {"eth0:rx": 5}),
    )
    store.save_states([("c1", "a._.1", "alice", state.to_json())], now=T0)
    store.save_states(
        [("c1", "a._.1", "alice", state.to_json()), ("c2", "b._.2", "bob", {})], now=T0
    )
    loaded = store.load_states()
    assert LifecycleState.from_json(loaded["c1"].data) == state
    assert loaded["c2"].owner == "bob"
    assert store.prune({"c1"}) == 1
    assert set(store.load_states()) == {"c1"}
    assert store.prune({"c1"}) == 0  # idempotent


def test_store_reports_a_damaged_row_instead_of_failing(store: LifecycleStore) -> None:
    store.save_states([("c1", "a._.1", "alice", {})], now=T0)
    with store.db.transaction() as conn:
        conn.execute("UPDATE lifecycle_state SET state = '{not json'")
    row = store.load_states()["c1"]
    assert row.problem is not None and row.data == {}


def test_store_exemptions_replace_and_withdraw(store: LifecycleStore) -> None:
    store.set_exemption(
        user="alice", kind=LimitKind.IDLE, until=None, reason="a", created_by="root", now=T0
    )
    store.set_exemption(
        user="alice",
        kind=LimitKind.IDLE,
        until=T0 + timedelta(days=1),
        reason="b",
        created_by="root",
        now=T0,
    )
    assert store.exemptions_by_user() == {
        "alice": (Exemption(LimitKind.IDLE, "b", T0 + timedelta(days=1)),)
    }
    (row,) = store.exemptions("alice")
    assert row.active(T0) and not row.active(T0 + timedelta(days=2))
    assert store.remove_exemption("alice", LimitKind.IDLE)
    assert not store.remove_exemption("alice", LimitKind.IDLE)


def test_parse_until() -> None:
    now = datetime.now(UTC)
    assert parse_until("never", now=now) is None
    assert parse_until("7d", now=now) == now + timedelta(days=7)
    tomorrow = (now + timedelta(days=2)).astimezone().date().isoformat()
    end = parse_until(tomorrow, now=now)
    assert end is not None and end.tzinfo is UTC
    assert end.astimezone().time().hour == 0  # through the end of that day, server time
    with pytest.raises(UsageError, match=r"^--until '2001-01-01' is in the past \(2001-01-0"):
        parse_until("2001-01-01", now=now)
    with pytest.raises(UsageError, match=r"^--until 'next friday' is not a date, a time or a"):
        parse_until("next friday", now=now)


def test_withdraw_without_exemption_is_not_found(tmp_path: Path) -> None:
    from ds01.config.settings import Settings
    from ds01.services.context import AppContext

    ctx = AppContext(settings=Settings(state_dir=tmp_path), actor=root_actor())
    with pytest.raises(NotFoundError, match=r"^root has no runtime exemption") as err:
        withdraw(ctx, root_actor(), "root", [LimitKind.RUNTIME])
    assert err.value.code == "unknown_exemption"
    grant(ctx, root_actor(), "root", [LimitKind.RUNTIME], until="never", reason="ops")
    assert [(r.user, r.until) for r in listing(ctx, root_actor())] == [("root", None)]
    assert withdraw(ctx, root_actor(), "root", [LimitKind.RUNTIME]) == [LimitKind.RUNTIME]


class FakeMonotonic:
    """The clock ``watch`` times a pass by: it moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watch_stops_cleanly_on_sigterm_during_the_sleep() -> None:
    clock = FakeMonotonic()
    slept: list[float] = []

    def run_once() -> None:
        clock.now += 0.25  # the pass took a quarter of a second

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while "sleeping"
        pytest.fail("the signal should have ended the sleep")

    before = signal.getsignal(signal.SIGTERM)
    assert watch(run_once, interval=60, sleep=sleep, monotonic=clock) == 1
    assert slept == [59.75]  # the interval less the pass, exactly
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_watch_finishes_the_pass_when_signalled_during_it() -> None:
    slept: list[float] = []

    def run_once() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    assert watch(run_once, interval=60, sleep=slept.append, monotonic=FakeMonotonic()) == 1
    assert slept == []  # no sleep after a signal: the loop ends


def test_watch_runs_passes_every_interval() -> None:
    clock = FakeMonotonic()
    durations = iter([0.5, 1.25, 2.0])
    slept: list[float] = []

    def run_once() -> None:
        clock.now += next(durations)

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    assert watch(run_once, interval=5, sleep=sleep, monotonic=clock, max_passes=3) == 3
    # Each pause is the interval less that pass's duration; none after the last pass.
    assert slept == [4.5, 3.75]
    assert clock.now == 1000.0 + 0.5 + 4.5 + 1.25 + 3.75 + 2.0


def test_watch_does_not_sleep_when_a_pass_overran_the_interval() -> None:
    clock = FakeMonotonic()
    slept: list[float] = []

    def run_once() -> None:
        clock.now += 7.0  # longer than the 5 s interval

    assert watch(run_once, interval=5, sleep=slept.append, monotonic=clock, max_passes=2) == 2
    assert slept == [0.0]  # the next pass starts at once, never a negative sleep
