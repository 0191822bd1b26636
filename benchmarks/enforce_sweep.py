"""One lifecycle-enforcement pass over 200 running GPU containers, vs ``docker stats``.

Set-up, on the real Docker engine: a simulated inventory of 30 × H100-80GB, each split
into 7 × 1g.10gb MIG instances (210 devices), and 200 running containers with DS01's
labels, each holding one MIG instance, all owned by one test user. Every container is
judged: inspected, its CPU and network counters read from cgroup and /proc files, its
keep-alive file looked up, the decision taken, its state stored.

Measured in the same run:

* the first pass (no baseline yet; every container also gets the one-time note that
  MIG instances report no GPU utilization: 200 notices and events);
* a steady-state pass a few seconds later (the usual minute-by-minute case);
* the honest alternative: one batched ``docker stats --no-stream`` call over all the
  containers (CPU and network for every one of them), timed over the same number of
  repetitions;
* for reference, what the existing DS01's idle check did — one ``docker stats`` call per
  container — timed on a sample and printed as a *projection* (labelled so), not measured
  over all of them.

Target: the pass under 3 s on the 2-core build machine. Needs root and a Docker engine
with the hermetic base image; removes everything it creates (by its own label).

    .venv/bin/python benchmarks/enforce_sweep.py [--containers 200] [--stats-sample 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from _stats import spread  # benchmarks/ is on sys.path when a script here runs
from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.gpu.file import FileInventory
from ds01.adapters.identity import actor_for_user
from ds01.adapters.state_setup import install_state
from ds01.config.loader import load_settings
from ds01.domain.labels import ContainerLabels, L
from ds01.services.context import AppContext
from ds01.services.enforcement.passes import EnforceService, PassReport

IMAGE = "ds01-test/bookworm-base:latest"
OWNER = "ds01b-enforce"
TARGET_S = 3.0


def ensure_user() -> None:
    if subprocess.run(["id", OWNER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--create-home", OWNER], check=True)


def make_containers(
    engine: DockerEngine, inventory: FileInventory, n: int, run_id: str, workspace: Path
) -> list[str]:
    devices = [d for d in inventory.read().devices if d.is_mig]
    if len(devices) < n:
        raise SystemExit(f"the inventory has {len(devices)} MIG devices, fewer than {n}")
    owner = actor_for_user(OWNER)

    def create(i: int) -> str:
        device = devices[i]
        labels = ContainerLabels(
            name=f"sweep{i}",
            user=OWNER,
            framework="Pytorch-2.8.0",
            uid=owner.uid,
            work_mount=str(workspace),
            gpus=f"device={device.uuid}",
            gpu_uuids=(device.uuid,),
            gpu_equivalents=device.equivalents,
        ).encode()
        labels[L.TEST_RUN] = run_id
        api = engine.api
        result = api.create_container(
            IMAGE,
            ["sleep", "infinity"],
            name=f"sweep{i}._.{owner.uid}",
            labels=labels,
            user=f"{owner.uid}:{owner.gid}",
            host_config=api.create_host_config(init=True, network_mode="bridge"),
        )
        api.start(result["Id"])
        return str(result["Id"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(create, range(n)))


def remove_ours(engine: DockerEngine, run_id: str) -> int:
    ours = engine.list_containers([f"{L.TEST_RUN}={run_id}"])
    for info in ours:
        engine.remove(info.id, force=True)
    return len(ours)


def one_pass(ctx: AppContext) -> tuple[float, PassReport]:
    start = time.perf_counter()
    report = EnforceService(ctx).run_pass(ctx.actor, owners={OWNER})
    return time.perf_counter() - start, report


def docker_stats_batched(ids: list[str], repeats: int) -> list[float]:
    """One ``docker stats --no-stream`` call for every container at once."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{.CPUPerc}} {{.NetIO}}", *ids],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return times


def docker_stats_seconds(ids: list[str], sample: int) -> list[float]:
    times = []
    for cid in ids[:sample]:
        start = time.perf_counter()
        subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{.CPUPerc}} {{.NetIO}}", cid],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return times


def write_setup(tmp: Path) -> tuple[Path, Path]:
    """The inventory file and a private DS01 configuration; returns both paths."""
    inv_path = tmp / "gpus.json"
    inv_path.write_text(
        '{"generate": {"count": 30, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559,'
        ' "compute_capability": "9.0", "total_slices": 7,'
        ' "mig": {"profile": "1g.10gb", "count": 7}}}'
    )
    (tmp / "limits.yaml").write_text(
        yaml.safe_dump({"defaults": {"max_gpu_equivalents": None, "max_containers": None}})
    )
    # Laid out as the installer does (root-owned, locks/ root's).
    install_state(tmp / "state", group=None, admin_group=None)
    config = tmp / "ds01.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "limits": str(tmp / "limits.yaml"),
                "state_dir": str(tmp / "state"),
                "gpu": {"inventory": f"file:{inv_path}", "runtime": "none"},
            }
        )
    )
    return inv_path, config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--stats-sample", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates a user, containers, reads /proc of others)", file=sys.stderr)
        return 2
    engine = DockerEngine()
    if engine.image(IMAGE) is None:
        print(
            f"the hermetic base image {IMAGE} is missing: scripts/hermetic-base.sh", file=sys.stderr
        )
        return 2
    ensure_user()
    run_id = f"enforce-sweep-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="ds01-enforce-sweep-"))
    workspace = tmp / "workspace"
    workspace.mkdir()
    inv_path, config = write_setup(tmp)
    try:
        t0 = time.perf_counter()
        ids = make_containers(engine, FileInventory(inv_path), args.containers, run_id, workspace)
        setup_s = time.perf_counter() - t0
        settings = load_settings(config)
        root = actor_for_user("root")

        def context() -> AppContext:
            return AppContext(settings=settings, actor=root, engine=engine)

        first_s, first = one_pass(context())
        time.sleep(3)
        steady = []
        report = first
        for _ in range(3):
            seconds, report = one_pass(context())
            steady.append(seconds)
            time.sleep(1)
        batched = docker_stats_batched(ids, len(steady))
        stats_times = docker_stats_seconds(ids, args.stats_sample)
    finally:
        removed = remove_ours(engine, run_id)
        shutil.rmtree(tmp, ignore_errors=True)

    judged = len(report.containers)
    sampled = [c for c in report.containers if c.signals.get("cpu_percent") is not None]
    if not report.ok:
        for error in report.errors[:5]:
            print("error:", error.container, error.message, file=sys.stderr)
    per_stats = statistics.mean(stats_times)
    projected = per_stats * args.containers
    steady_s = statistics.median(steady)
    batched_s = statistics.median(batched)
    print(
        f"enforcement pass over {args.containers} running GPU containers "
        f"(30 x H100, 7 MIG slices each; set-up {setup_s:.0f} s, {removed} removed after)"
    )
    print(f"  containers judged: {judged}; with CPU and network measured: {len(sampled)}")
    print(
        f"  first pass (baseline + {first.counts()['note']} one-time MIG notes): "
        f"{first_s:.2f} s (n=1)"
    )
    print(
        f"  steady-state pass: {spread(steady)} "
        f"({steady_s / args.containers * 1000:.1f} ms per container)"
    )
    print(f"  docker stats --no-stream, one batched call for all: {spread(batched)}")
    print(
        f"  ratio batched docker stats / steady pass: {batched_s / steady_s:.1f}x; "
        f"target pass < {TARGET_S:g} s: {'met' if max(first_s, steady_s) < TARGET_S else 'NOT met'}"
    )
    print(
        f"  PROJECTION, not measured: one docker stats call per container (the existing "
        f"DS01's way): {per_stats:.2f} s each on a sample of {len(stats_times)} "
        f"-> ~{projected:.0f} s for {args.containers}"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
