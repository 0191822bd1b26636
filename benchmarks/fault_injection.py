"""Fault injection: creates killed at random points, the Docker engine stopped under load.

Issue 10, finding 6 and its "Done when": ``kill -9`` of ``ds01 container create --gpus 1``
at 30 random points, and the Docker engine stopped during 8 concurrent creates; then one
command of each affected user (``container list``, the cheapest) and one enforcement
pass. Printed as a table, after each stage:

* **unreported holders**: containers of the test users holding a device that no
  successful command (exit 0) reported;
* **leftover dirs**: workspace directories that a failed (killed or failing) command
  created and that still exist;
* **stuck queue entries**: entries of the test users still ``waiting`` while a container
  carries their id, or ``granted`` to a container that does not exist.

The kill points are uniform over 0-110 % of a measured create (``--seed`` repeats a run).
A kill lands in the process group of the command (``runuser``-free: the command runs as
the user directly, so the group is just ``ds01``). The engine is stopped with SIGTERM
(as ``systemctl stop docker`` does) ``--stop-after`` seconds into the 8 creates and
started again the way it was running (its own command line, output appended to
``/var/log/ds01-ci-dockerd.log``), always, even when the run fails. Stopping the engine
stops every container on it: run this on a machine nobody else is testing on.

Needs root, a Docker engine and the hermetic base image; makes users ``ds01f-*`` (kept)
and removes every container and directory it made.

    .venv/bin/python benchmarks/fault_injection.py [--kills 30] [--concurrent 8]
        [--stop-after 1.8] [--seed N] [--no-engine-stop]
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.identity import actor_for_user
from ds01.adapters.state_setup import install_state
from ds01.config.loader import load_settings
from ds01.domain.labels import AIME, L
from ds01.domain.queue import QueueState
from ds01.errors import DS01Error
from ds01.services.context import AppContext

PROJECT = Path(__file__).resolve().parent.parent
DS01 = PROJECT / ".venv" / "bin" / "ds01"
IMAGE = "ds01-test/bookworm-base:latest"
USERS = [f"ds01f-u{i}" for i in range(4)]
DOCKERD_LOG = "/var/log/ds01-ci-dockerd.log"


@dataclass
class Attempt:
    user: str
    name: str
    rc: int | None = None  # None: killed
    printed: bool = False  # its result reached the user (stdout) before the kill

    @property
    def reported(self) -> bool:
        return self.rc == 0 or self.printed

    @property
    def tag(self) -> str:
        return f"{self.name}._.{pwd.getpwnam(self.user).pw_uid}"

    @property
    def workspace(self) -> Path:
        return Path(pwd.getpwnam(self.user).pw_dir) / "workspace" / self.name


def ensure_users() -> None:
    try:
        grp.getgrnam("docker")
    except KeyError:
        subprocess.run(["groupadd", "docker"], check=True)
    for user in USERS:
        if subprocess.run(["id", user], capture_output=True, check=False).returncode:
            subprocess.run(["useradd", "--create-home", "--groups", "docker", user], check=True)


def make_env(root: Path) -> Path:
    state = root / "state"
    # Laid out as the installer does (root-owned, the docker group, locks/ root's).
    install_state(state, group="docker", admin_group=None)
    inventory = root / "gpus.json"
    inventory.write_text(
        json.dumps(
            {
                "generate": {
                    "count": 2,
                    "name": "NVIDIA H200",
                    "memory_mib": 143771,
                    "compute_capability": "9.0",
                    "total_slices": 7,
                    "mig": {"profile": "1g.18gb", "count": 7},
                }
            }
        )
    )
    limits = root / "limits.yaml"
    limits.write_text(
        yaml.safe_dump(
            {
                "default_group": "fi",
                "defaults": {"max_containers": 40, "max_gpu_equivalents": 14, "memory": "256m"},
                "groups": {"fi": {}},
            }
        )
    )
    config = root / "ds01.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "limits": str(limits),
                "state_dir": str(state),
                "admin_group": "ds01f-admins",
                "gpu": {
                    "inventory": f"file:{inventory}",
                    "runtime": "none",
                    "lock_timeout": 300,
                },
            }
        )
    )
    for path in (root, inventory, limits, config):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return config


def start_as(user: str, config: Path, *args: str) -> subprocess.Popen[bytes]:
    pw = pwd.getpwnam(user)
    env = {
        "PATH": "/usr/bin:/bin",
        "DS01_CONFIG": str(config),
        "HOME": pw.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [str(DS01), *args],
        env=env,
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=os.getgrouplist(user, pw.pw_gid),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def create_args(name: str) -> list[str]:
    return ["container", "create", name, "--image", IMAGE, "--gpus", "1"]


def kill_run(config: Path, n: int, rng: random.Random) -> list[Attempt]:
    probe = Attempt(USERS[0], "fiprobe")
    start = time.monotonic()
    proc = start_as(probe.user, config, *create_args(probe.name))
    _, err = proc.communicate(timeout=300)
    duration = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"a plain create failed: {err.decode()}")
    start_as(probe.user, config, "container", "remove", probe.name, "--force").wait(120)
    print(f"one create takes {duration:.2f} s; killing at uniform 0-{1.1 * duration:.2f} s")
    attempts = []
    for i in range(n):
        attempt = Attempt(USERS[i % len(USERS)], f"fik{i}")
        proc = start_as(attempt.user, config, *create_args(attempt.name))
        time.sleep(rng.uniform(0, 1.1 * duration))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        attempt.rc = proc.returncode if proc.returncode >= 0 else None
        # Killed after printing its result (in interpreter shutdown): the user was told.
        attempt.printed = b"Created " in out
        attempts.append(attempt)
    return attempts


def dockerd() -> tuple[int, list[str]] | None:
    out = subprocess.run(["pgrep", "-x", "dockerd"], check=False, capture_output=True, text=True)
    if out.returncode:
        return None
    pid = int(out.stdout.split()[0])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return pid, [a.decode() for a in argv if a]


def engine_up(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["docker", "info"], check=False, capture_output=True).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def engine_stop_run(config: Path, n: int, stop_after: float) -> list[Attempt]:
    found = dockerd()
    if found is None:
        raise SystemExit("dockerd is not running as a process this script can restart")
    pid, argv = found
    attempts = [Attempt(USERS[i % len(USERS)], f"fie{i}") for i in range(n)]
    procs = [start_as(a.user, config, *create_args(a.name)) for a in attempts]
    time.sleep(stop_after)
    stopped_at = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        with ThreadPoolExecutor(max_workers=n) as pool:
            outs = list(pool.map(lambda p: p.communicate(timeout=300)[0], procs))
        codes = [p.returncode for p in procs]
    finally:
        with open(DOCKERD_LOG, "ab") as log:
            subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        if not engine_up(120):
            raise SystemExit("the Docker engine did not come back; see " + DOCKERD_LOG)
        print(f"engine stopped for {time.monotonic() - stopped_at:.1f} s")
    for attempt, code, out in zip(attempts, codes, outs, strict=True):
        attempt.rc = code
        attempt.printed = b"Created " in out
    return attempts


def counts(engine: DockerEngine, ctx: AppContext, attempts: list[Attempt]) -> tuple[int, int, int]:
    reported = {a.tag for a in attempts if a.reported}
    containers = [c for u in USERS for c in engine.list_containers([f"{L.USER}={u}"]) if c.decoded]
    unreported = sum(
        1 for c in containers if c.decoded and c.decoded.gpu_uuids and c.tag not in reported
    )
    leftover = sum(1 for a in attempts if not a.reported and a.workspace.exists())
    tags = {c.tag for c in containers}
    by_queue = {c.labels.get(L.QUEUE_ID) for c in containers}
    stuck = 0
    try:
        from ds01.adapters.queue_store import QueueStore

        for row in QueueStore(ctx.state_db).rows():
            if row.entry.user not in USERS:
                continue
            if row.entry.state is QueueState.WAITING and str(row.entry.id) in by_queue:
                stuck += 1
            if row.entry.state is QueueState.GRANTED and row.container not in tags:
                stuck += 1
    except DS01Error:
        stuck = -1
    return unreported, leftover, stuck


def cleanup(engine: DockerEngine, attempts: list[Attempt]) -> None:
    for info in engine.list_containers([AIME]):
        if (info.owner or "").startswith("ds01f-"):
            engine.remove(info.id, force=True)
    for attempt in [*attempts, Attempt(USERS[0], "fiprobe")]:
        shutil.rmtree(attempt.workspace, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--stop-after", type=float, default=1.8)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-engine-stop", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it makes test users and runs commands as them")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    ensure_users()
    engine = DockerEngine()
    if engine.image(IMAGE) is None:
        raise SystemExit(f"{IMAGE} missing: run scripts/hermetic-base.sh")
    root = Path(tempfile.mkdtemp(prefix="ds01-fault-", dir="/tmp"))
    attempts: list[Attempt] = []
    try:
        config = make_env(root)
        ctx = AppContext(settings=load_settings(config), actor=actor_for_user("root"))
        cleanup(engine, [])
        attempts += kill_run(config, args.kills, rng)
        # The survivors hold slices the engine-stop run needs: they were reported, drop them.
        for a in attempts:
            if a.reported:
                engine.remove(a.tag, force=True)
                shutil.rmtree(a.workspace, ignore_errors=True)
        if not args.no_engine_stop:
            attempts += engine_stop_run(config, args.concurrent, args.stop_after)
        rows = [("after the faults, before any command", counts(engine, ctx, attempts))]
        for user in sorted({a.user for a in attempts}):
            proc = start_as(user, config, "container", "list")
            proc.wait(120)
        rows.append(("after one `container list` per user", counts(engine, ctx, attempts)))
        from ds01.services.enforcement.passes import EnforceService

        report = EnforceService(ctx).run_pass(ctx.actor, owners=set(USERS))
        rows.append(("after one enforcement pass", counts(engine, ctx, attempts)))
        failed = sum(1 for a in attempts if not a.reported)
        late = sum(1 for a in attempts if a.printed and a.rc != 0)
        print(
            f"{len(attempts)} creates: {failed} killed or failed before reporting, "
            f"{len(attempts) - failed} reported ({late} of them killed after printing)"
        )
        for a in attempts:
            if not a.reported and (engine.exists(a.tag) or a.workspace.exists()):
                print(f"  left: {a.tag} rc={a.rc} dir={a.workspace.exists()}")
        if report.errors:
            print("enforcement errors:", [e.message for e in report.errors])
        width = max(len(r[0]) for r in rows)
        print(f"{'stage':<{width}}  unreported holders  leftover dirs  stuck queue entries")
        for label, (holders, dirs, stuck) in rows:
            print(f"{label:<{width}}  {holders:>18}  {dirs:>13}  {stuck:>19}")
        return 0 if rows[-1][1] == (0, 0, 0) else 1
    finally:
        cleanup(engine, attempts)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
