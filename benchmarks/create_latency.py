"""Create → first command: DS01 against AIME's way, on the hermetic base image, one run.

DS01 creates the container from the catalog image itself and copies the user's
passwd/group/shadow entries and home into it before the first start. AIME's ``mlc
create`` instead runs a setup container (apt-get update + install sudo git, adduser,
sudoers), ``docker commit``s it to a per-container image, removes it and creates the
real container from that image. This script reproduces AIME's steps with the docker CLI
on the same image and measures, side by side, each over the same number of rounds
(min / median / max printed):

* **DS01 through its CLI, as users run it**: ``ds01 container create`` then ``ds01
  container exec NAME -- id -u``, two processes started as the test user (their uid,
  gid and groups) — the figure to compare with AIME's CLI steps;
* DS01 in-process (the service called from this script): the same work without the
  interpreter start-up and imports of two CLI processes;
* AIME's steps through the docker CLI, with and without the apt step (so the comparison
  does not rest on network speed alone);
* the disk each way adds per container: the container's own writable layer
  (``SizeRw``) plus the layers of any image made for it (a committed image's size minus
  its parent's) — never whole image sizes, which count the shared base layers again;
* ``ds01 container list --json`` wall time, the command users type all day.

Needs root (it makes a test user) and a Docker engine with scripts/hermetic-base.sh
run. Prints a table; never asserts.

    .venv/bin/python benchmarks/create_latency.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _stats import spread  # benchmarks/ is on sys.path when a script here runs
from ds01.adapters.identity import actor_for_user
from ds01.adapters.state_setup import install_state
from ds01.config.loader import load_settings
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.context import AppContext

IMAGE = "aimehub/pytorch-2.8.0-cuda12.6.3"
USER = "ds01b-bench"
ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT.parent / "shared" / "fixtures" / "aime" / "ml_images.v2.repo"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def ensure_user() -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        sh("useradd", "--create-home", "--groups", "docker", USER)


def own_layer_bytes(container: str, committed: str | None) -> int:
    """What one container adds on disk: its writable layer, plus the layers of an image
    made just for it (a committed image's size minus its parent's)."""
    size_rw = sh("docker", "inspect", "--size", "-f", "{{.SizeRw}}", container).stdout.strip()
    total = int(size_rw or 0)
    if committed:
        image_size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", committed).stdout)
        base_size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
        total += image_size - base_size
    return total


def setup_env(tmp: Path) -> Path:
    state = tmp / "state"
    # Laid out as the installer does (root-owned, the docker group, locks/ root's).
    install_state(state, group="docker", admin_group=None)
    config = tmp / "ds01.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": str(CATALOG),
                "limits": str(tmp / "limits.yaml"),
                "state_dir": str(state),
                "gpu": {"inventory": "none", "runtime": "none"},
            }
        )
    )
    (tmp / "limits.yaml").write_text(yaml.safe_dump({"defaults": {"max_containers": 100}}))
    tmp.chmod(0o755)
    for path in (config, tmp / "limits.yaml"):
        path.chmod(0o644)
    return config


def as_user(argv: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    """Run a command as the test user (uid, gid, groups), without a PAM session around it."""
    pw = pwd.getpwnam(USER)
    env = {"PATH": "/usr/bin:/bin", "DS01_CONFIG": str(config), "HOME": pw.pw_dir}
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=os.getgrouplist(USER, pw.pw_gid),
        cwd=pw.pw_dir,
    )


def ds01_cli_round(config: Path, n: int) -> tuple[float, str]:
    """``ds01 container create`` then ``ds01 container exec -- id -u``, as the user types them."""
    exe = str(ROOT / ".venv" / "bin" / "ds01")
    name = f"benchcli{n}"
    start = time.perf_counter()
    made = as_user(
        [exe, "container", "create", name, "pytorch", "--arch", "CUDA_ADA", "--cpu-only"], config
    )
    if made.returncode != 0:
        raise SystemExit(f"ds01 container create failed ({made.returncode}): {made.stderr}")
    ran = as_user([exe, "container", "exec", name, "--", "id", "-u"], config)
    elapsed = time.perf_counter() - start
    if ran.returncode != 0:
        raise SystemExit(f"ds01 container exec failed ({ran.returncode}): {ran.stderr}")
    return elapsed, f"{name}._.{pwd.getpwnam(USER).pw_uid}"


def ds01_round(ctx: AppContext, n: int) -> tuple[float, str]:
    actor = ctx.actor
    start = time.perf_counter()
    CreateService(ctx).create(
        actor, CreateRequest(name=f"bench{n}", framework="pytorch", arch="CUDA_ADA", cpu_only=True)
    )
    code = ContainerService(ctx).exec(actor, f"bench{n}", ["id", "-u"], on_output=lambda o, e: None)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"ds01: id -u failed with {code}")
    return elapsed, f"bench{n}._.{actor.uid}"


def aime_round(n: int, *, with_apt: bool) -> tuple[float, str, str]:
    """AIME's create: setup run, commit, rm, create; then start and the first command."""
    pw = pwd.getpwnam(USER)
    tag = f"aimebench{n}._.{pw.pw_uid}"
    workspace = Path(pw.pw_dir) / "workspace"
    workspace.mkdir(exist_ok=True)
    steps = []
    if with_apt:
        steps.append("apt-get update -y > /dev/null && apt-get install -y sudo git > /dev/null")
    steps += [
        f"groupadd -g {pw.pw_gid} {USER} 2>/dev/null || true",
        f"useradd -u {pw.pw_uid} -g {pw.pw_gid} -m -s /bin/bash {USER}",
        f"passwd -d {USER} > /dev/null",
        f"echo '{USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{USER}_no_password",
        f"chmod 440 /etc/sudoers.d/{USER}_no_password",
    ]
    start = time.perf_counter()
    sh(
        "docker",
        "run",
        "--name",
        tag,
        "-v",
        f"{workspace}:/workspace",
        "-w",
        "/workspace",
        IMAGE,
        "bash",
        "-c",
        " && ".join(steps),
    )
    committed = f"{IMAGE}:{tag}"
    sh("docker", "commit", tag, committed)
    sh("docker", "rm", tag)
    sh(
        "docker",
        "create",
        "-it",
        "--name",
        tag,
        "-v",
        f"{workspace}:/workspace",
        "-w",
        "/workspace",
        "--user",
        f"{pw.pw_uid}:{pw.pw_gid}",
        "--label",
        f"aime.mlc={USER}",
        committed,
        "bash",
        "-c",
        "bash",
    )
    sh("docker", "start", tag)
    sh("docker", "exec", "--user", f"{pw.pw_uid}:{pw.pw_gid}", tag, "id", "-u")
    return time.perf_counter() - start, tag, committed


def list_json_times(config: Path, rounds: int) -> list[float]:
    """Wall time of the command as the user runs it: their uid, gid and groups, and no
    runuser/PAM session around it (which adds tens of ms DS01 has nothing to do with)."""
    exe = str(ROOT / ".venv" / "bin" / "ds01")
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = as_user([exe, "container", "list", "--json"], config)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"ds01 container list failed: {result.stderr}")
    return times


Row = tuple[str, list[float], list[int]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--list-rounds", type=int, default=15)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates a test user and containers)", file=sys.stderr)
        return 2
    ensure_user()
    tmp = Path(tempfile.mkdtemp(prefix="ds01-bench-", dir="/tmp"))
    config = setup_env(tmp)
    ctx = AppContext(settings=load_settings(config), actor=actor_for_user(USER))
    made: list[str] = []
    committed: list[str] = []
    rows: list[Row] = []
    try:
        times, disk = [], []
        for n in range(args.rounds):
            elapsed, tag = ds01_cli_round(config, n)
            made.append(tag)
            times.append(elapsed)
            disk.append(own_layer_bytes(tag, None))
        rows.append(("DS01 CLI (create + exec)", times, disk))

        times, disk = [], []
        for n in range(args.rounds):
            elapsed, tag = ds01_round(ctx, n)
            made.append(tag)
            times.append(elapsed)
            disk.append(own_layer_bytes(tag, None))
        rows.append(("DS01 in-process (service)", times, disk))

        for with_apt, label in (
            (True, "AIME CLI (setup run+commit)"),
            (False, "AIME CLI without apt"),
        ):
            times, disk = [], []
            for n in range(args.rounds):
                elapsed, tag, image = aime_round(n + (0 if with_apt else 100), with_apt=with_apt)
                made.append(tag)
                committed.append(image)
                times.append(elapsed)
                disk.append(own_layer_bytes(tag, image))
            rows.append((label, times, disk))

        list_times = list_json_times(config, args.list_rounds)
    finally:
        for tag in made:
            sh("docker", "rm", "-f", tag, check=False)
        for image in committed:
            sh("docker", "rmi", image, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(Path(pwd.getpwnam(USER).pw_dir) / "workspace", ignore_errors=True)

    print(f"create -> first command, {args.rounds} rounds each (image {IMAGE})")
    print(f"{'way':30} {'time':44} {'own layers MB (median)':>22} {'vs DS01 CLI':>12}")
    cli = statistics.median(rows[0][1])
    for label, times, disk in rows:
        ratio = statistics.median(times) / cli
        print(f"{label:30} {spread(times):44} {statistics.median(disk) / 1e6:22.2f} {ratio:11.2f}x")
    print()
    print(
        f"ds01 container list --json, as the user: {spread(list_times)} (target median <= 0.35 s)"
    )
    print(json.dumps({"rows": rows, "list_json": list_times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
