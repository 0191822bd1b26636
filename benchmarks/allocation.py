"""GPU allocation decision latency: in-process inventory vs spawning nvidia-smi, one run.

The work ``container create`` does under the host-wide lock, end to end: read the GPU
inventory, read every container's holding back from Docker (labels, one list call plus
an inspect per stopped holder), check the queue, and decide. Set-up: 8 × A100-40GB, all
MIG-partitioned into 7 × 1g.5gb (56 devices), and 200 existing containers (56 holding a
device, 144 CPU-only), on the real Docker engine.

Two inventory sources are compared in the same run:

* the in-process inventory read — here the JSON *file* backend, the one these machines
  have; the NVML backend is not measured here (no GPU), and its recorded read time on the
  H200 is printed from the fixtures for reference only;
* spawning ``nvidia-smi`` for every read, through DS01's real nvidia-smi parser, with a
  stub executable serving the same data (measured: process spawn + parse). The real
  nvidia-smi took a median 22.0 ms per call on the H200 (fixtures/gpu/.../timing.txt) and
  a read makes several calls; that figure is printed as a PROJECTION, labelled so.

Target: p50 under 100 ms end to end. Needs root and a Docker engine; cleans up.

    .venv/bin/python benchmarks/allocation.py [--rounds 40]
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
from pathlib import Path

import yaml

from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.gpu.file import FileInventory
from ds01.adapters.gpu.smi import QUERY_GPU_FIELDS, SmiInventory
from ds01.adapters.identity import actor_for_user
from ds01.adapters.state_setup import install_state
from ds01.config.loader import load_settings
from ds01.domain.allocation import GpuRequest, decide
from ds01.domain.labels import ContainerLabels
from ds01.services.context import AppContext
from ds01.services.gpu.holdings import HoldingsService
from ds01.services.gpu.queue import QueueService
from ds01.services.limits import limits_for

IMAGE = "ds01-test/bookworm-base:latest"
OWNER = "ds01b-alloc"
ROOT = Path(__file__).resolve().parents[1]
TIMING = ROOT.parent / "shared" / "fixtures" / "gpu" / "h200-sxm-mig-disabled" / "timing.txt"
REAL_SMI_MS = 22.0  # median nvidia-smi --query-gpu on the H200 (fixtures timing.txt)


def ensure_user() -> None:
    if subprocess.run(["id", OWNER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--create-home", OWNER], check=True)


def write_smi_stub(tmp: Path, inventory_path: Path) -> Path:
    """A tiny nvidia-smi stand-in printing the file inventory in nvidia-smi's formats."""
    inv = FileInventory(inventory_path).read()
    query_lines, list_lines = [], []
    for gpu in inv.gpus:
        cells = {
            "index": str(gpu.index),
            "uuid": gpu.uuid,
            "name": gpu.name,
            "pci.bus_id": "0",
            "memory.total": str(gpu.memory_mib),
            "memory.used": "0",
            "memory.free": str(gpu.memory_mib),
            "utilization.gpu": "[N/A]",
            "utilization.memory": "[N/A]",
            "temperature.gpu": "40",
            "power.draw": "60.0",
            "power.limit": "400.0",
            "mig.mode.current": "Enabled",
            "mig.mode.pending": "Enabled",
            "compute_mode": "Default",
            "driver_version": "580.159.04",
            "persistence_mode": "Enabled",
        }
        query_lines.append(", ".join(cells.get(f, "[N/A]") for f in QUERY_GPU_FIELDS))
        list_lines.append(f"GPU {gpu.index}: {gpu.name} (UUID: {gpu.uuid})")
        for n, dev in enumerate(d for d in inv.devices if d.parent_uuid == gpu.uuid):
            list_lines.append(f"  MIG {dev.mig_profile}     Device  {n}: (UUID: {dev.uuid})")
    lgip = ["+----+", "| GPU instance profiles: |", "+====+"]
    rows = (
        "MIG 1g.5gb          19     0/7        4.75       No     14     0     0   |",
        "MIG 7g.40gb          0     0/1        39.25      No     98     5     0   |",
    )
    for gpu in inv.gpus:
        lgip.extend(f"|   {gpu.index}  {row}" for row in rows)
    (tmp / "query.txt").write_text("\n".join(query_lines) + "\n")
    (tmp / "list.txt").write_text("\n".join(list_lines) + "\n")
    (tmp / "lgip.txt").write_text("\n".join(lgip) + "\n")
    stub = tmp / "nvidia-smi"
    stub.write_text(
        "#!/bin/sh\n"
        f'case "$*" in\n'
        f'  *query-gpu*) exec cat "{tmp}/query.txt" ;;\n'
        f"  *query-compute-apps*) exit 0 ;;\n"
        f'  "-L") exec cat "{tmp}/list.txt" ;;\n'
        f'  *lgip*) exec cat "{tmp}/lgip.txt" ;;\n'
        "  *) exit 0 ;;\nesac\n"
    )
    stub.chmod(0o755)
    return stub


def make_containers(engine: DockerEngine, inventory: FileInventory, n: int) -> list[str]:
    devices = list(inventory.read().devices)
    made = []
    for i in range(n):
        device = devices[i] if i < len(devices) else None
        labels = ContainerLabels(
            name=f"alloc{i}",
            user=OWNER,
            framework="custom",
            uid=0,
            gpu_uuids=(device.uuid,) if device else (),
            gpu_equivalents=device.equivalents if device else 0,  # type: ignore[arg-type]
        ).encode()
        result = engine.api.create_container(
            IMAGE, ["sleep", "infinity"], name=f"alloc{i}._.0", labels=labels
        )
        made.append(result["Id"])
    return made


def measure(ctx: AppContext, rounds: int) -> list[float]:
    actor = ctx.actor
    quota = limits_for(ctx, actor).gpu_quota()
    request = GpuRequest.gpus(1)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        inventory = ctx.inventory.read()
        holdings = HoldingsService(ctx).holdings().in_force
        decide(request, actor.name, quota, inventory, holdings)
        QueueService(ctx).fits_behind_queue(actor.name, request, quota, inventory, holdings)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--containers", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates a user and containers)", file=sys.stderr)
        return 2
    ensure_user()
    tmp = Path(tempfile.mkdtemp(prefix="ds01-alloc-"))
    inv_path = tmp / "gpus.json"
    inv_path.write_text(
        '{"generate": {"count": 8, "name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960,'
        ' "compute_capability": "8.0", "total_slices": 7,'
        ' "mig": {"profile": "1g.5gb", "count": 7}}}'
    )
    (tmp / "limits.yaml").write_text(yaml.safe_dump({"defaults": {"max_gpu_equivalents": None}}))
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
    engine = DockerEngine()
    made: list[str] = []
    try:
        made = make_containers(engine, FileInventory(inv_path), args.containers)
        settings = load_settings(config)
        actor = actor_for_user(OWNER)
        in_process = measure(AppContext(settings=settings, actor=actor, engine=engine), args.rounds)
        stub = write_smi_stub(tmp, inv_path)
        calls: list[int] = []
        smi = SmiInventory(executable=str(stub))
        original = smi._call

        def counting(argv, **kw):  # type: ignore[no-untyped-def]
            calls.append(1)
            return original(argv, **kw)

        smi._call = counting  # type: ignore[method-assign]
        spawned = measure(
            AppContext(settings=settings, actor=actor, engine=engine, inventory=smi), args.rounds
        )
        calls_per_read = len(calls) / args.rounds
    finally:
        for cid in made:
            engine.remove(cid, force=True)
        shutil.rmtree(tmp, ignore_errors=True)

    def row(label: str, values: list[float]) -> str:
        q = statistics.quantiles(values, n=20)
        return (
            f"{label:44} p50 {statistics.median(values):7.1f} ms   p95 {q[18]:7.1f} ms   "
            f"min {min(values):6.1f}  max {max(values):6.1f}  (n={len(values)})"
        )

    print(
        f"allocation decision, end to end: 56 devices, {args.containers} containers, "
        f"{args.rounds} rounds"
    )
    print(row("in-process inventory (JSON file backend)", in_process))
    print(row("spawning nvidia-smi (stub, same parser)", spawned))
    projected = statistics.median(in_process) + calls_per_read * REAL_SMI_MS
    print(
        f"{'PROJECTION: spawning the real nvidia-smi':44} p50 ~{projected:6.1f} ms   "
        f"(not measured: {calls_per_read:.0f} calls/read x {REAL_SMI_MS} ms recorded on the H200)"
    )
    measured = statistics.median(spawned) / statistics.median(in_process)
    print(
        f"measured ratio stub nvidia-smi / in-process: {measured:.1f}x; projected ratio: "
        f"{projected / statistics.median(in_process):.1f}x; target p50 < 100 ms"
    )
    if TIMING.exists():
        print(
            "recorded on the H200:",
            " | ".join(line.strip() for line in TIMING.read_text().splitlines() if line.strip()),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
