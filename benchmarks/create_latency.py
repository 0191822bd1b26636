"""Create → first command: DS01 against AIME's way, on the hermetic base image, one run.

DS01 creates the container from the catalog image itself and copies the user's
passwd/group/shadow entries and home into it before the first start. AIME's ``mlc
create`` instead runs a setup container (apt-get update + install sudo git, adduser,
sudoers), ``docker commit``s it to a per-container image, removes it and creates the
real container from that image. This script reproduces AIME's steps with the docker CLI
on the same image and measures, side by side:

* create → first command completed (``id -u`` in the container), median of N rounds;
* extra disk per container: new images and the bytes they add;
* ``ds01 container list --json`` wall time (median), the command users type all day.

AIME's setup step downloads packages; the row "AIME without apt" removes that part, so
the comparison does not rest on network speed alone. Needs root (it makes a test user)
and a Docker engine with scripts/hermetic-base.sh run. Prints a table; never asserts.

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

from ds01.adapters.identity import actor_for_user
from ds01.config.loader import load_settings
from ds01.services.containers import ContainerService
from ds01.services.context import AppContext
from ds01.services.create import CreateRequest, CreateService

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


def images() -> set[str]:
    return set(sh("docker", "images", "-q", "--no-trunc").stdout.split())


def image_bytes(ids: set[str]) -> int:
    total = 0
    for image_id in ids:
        total += int(sh("docker", "image", "inspect", "-f", "{{.Size}}", image_id).stdout)
    return total


def setup_env(tmp: Path) -> Path:
    state = tmp / "state"
    state.mkdir()
    state.chmod(0o2777)
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
    for path in tmp.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)
    state.chmod(0o2777)
    return config


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
    exe = ROOT / ".venv" / "bin" / "ds01"
    env = {"PATH": "/usr/bin:/bin", "DS01_CONFIG": str(config), "HOME": f"/home/{USER}"}
    pw = pwd.getpwnam(USER)
    groups = os.getgrouplist(USER, pw.pw_gid)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(
            [str(exe), "container", "list", "--json"],
            env=env,
            capture_output=True,
            check=True,
            user=pw.pw_uid,
            group=pw.pw_gid,
            extra_groups=groups,
        )
        times.append(time.perf_counter() - start)
    return times


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
    rows = []
    try:
        before = images()
        ds01_times = []
        for n in range(args.rounds):
            elapsed, tag = ds01_round(ctx, n)
            ds01_times.append(elapsed)
            made.append(tag)
        ds01_new = images() - before
        rows.append(
            (
                "DS01",
                statistics.median(ds01_times),
                len(ds01_new) / args.rounds,
                image_bytes(ds01_new) / args.rounds,
            )
        )

        for with_apt, label in ((True, "AIME (setup run + commit)"), (False, "AIME without apt")):
            before = images()
            times = []
            for n in range(args.rounds):
                elapsed, tag, image = aime_round(n + (0 if with_apt else 100), with_apt=with_apt)
                times.append(elapsed)
                made.append(tag)
                committed.append(image)
            new = images() - before
            rows.append(
                (
                    label,
                    statistics.median(times),
                    len(new) / args.rounds,
                    image_bytes(new) / args.rounds,
                )
            )

        list_times = list_json_times(config, args.list_rounds)
    finally:
        for tag in made:
            sh("docker", "rm", "-f", tag, check=False)
        for image in committed:
            sh("docker", "rmi", image, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(Path(pwd.getpwnam(USER).pw_dir) / "workspace", ignore_errors=True)

    print(f"create -> first command, median of {args.rounds} (image {IMAGE})")
    print(f"{'way':28} {'median s':>9} {'new images':>11} {'extra MB':>9} {'vs DS01':>8}")
    base = rows[0][1]
    for label, median, new_images, extra in rows:
        print(
            f"{label:28} {median:9.3f} {new_images:11.1f} {extra / 1e6:9.1f} {median / base:7.1f}x"
        )
    print()
    print(
        f"ds01 container list --json: median {statistics.median(list_times):.3f} s "
        f"(min {min(list_times):.3f}, max {max(list_times):.3f}, n={len(list_times)}; "
        "target <= 0.35 s)"
    )
    print(json.dumps({"rows": rows, "list_json": list_times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
