"""Issue 4 on a real Docker engine, with a simulated GPU inventory (``gpu.runtime: none``).

The plan's Test Case 4 (allocation shown by ``gpu status``, released on remove), quota
refusals with their numbers, the queue (``--wait``, granted when a device frees up), the
start check for vanished devices, and the stress test: 64 concurrent creates from
separate processes for 16 users on 8 × A100 split into 56 MIG slices.
"""

from __future__ import annotations

import json
import pwd
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.domain.actor import Actor
from ds01.domain.labels import L
from ds01.errors import NoCapacityError, UsageError
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.gpu.holdings import HoldingsService
from ds01.services.gpu.queue import process_queue_quietly
from tests.integration.conftest import DS01_BIN, Ds01Env, InspectFn, remove_test_containers

pytestmark = pytest.mark.docker

H200_UUID = "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d"

TWO_GPUS = {
    "gpus": [
        {
            "index": 0,
            "uuid": "GPU-00000000-0000-0000-0000-00000000aaaa",
            "name": "NVIDIA A100-SXM4-40GB",
            "memory_mib": 40960,
            "compute_capability": "8.0",
        },
        {
            "index": 1,
            "uuid": "GPU-00000000-0000-0000-0000-00000000bbbb",
            "name": "NVIDIA A100-SXM4-40GB",
            "memory_mib": 40960,
            "compute_capability": "8.0",
        },
    ]
}


def test_plan_test_case_4_allocation_shown_and_released(
    ds01_env: Ds01Env, alice: Actor, docker_inspect: InspectFn
) -> None:
    ctx = ds01_env.context(alice)
    result = CreateService(ctx).create(alice, CreateRequest(name="gpu-test", framework="pytorch"))
    assert result.gpus == (H200_UUID,)

    status = json.loads(ds01_env.run_cli(alice.name, "gpu", "status", "--json").stdout)
    (device,) = status["devices"]
    assert (device["uuid"], device["user"], device["container"]) == (
        H200_UUID,
        alice.name,
        f"gpu-test._.{alice.uid}",
    )
    assert status["free_equivalents"] == 0

    inspected = docker_inspect(result.container)
    labels = inspected["Config"]["Labels"]
    assert labels[L.GPU_UUIDS] == H200_UUID
    assert labels[L.GPUS] == f"device={H200_UUID}"
    assert labels[L.GPU_EQUIVALENTS] == "1"
    assert f"CUDA_VISIBLE_DEVICES={H200_UUID}" in inspected["Config"]["Env"]
    # gpu.runtime none: the allocation is recorded, but no device is requested from Docker.
    assert not inspected["HostConfig"].get("DeviceRequests")

    # As in the plan: stop, then release (remove).
    ContainerService(ctx).stop(alice, "gpu-test", timeout=1)
    ContainerService(ctx).remove(alice, "gpu-test")
    status = json.loads(ds01_env.run_cli(alice.name, "gpu", "status", "--json").stdout)
    assert status["devices"][0]["user"] is None
    assert status["free_equivalents"] == 1


def test_quota_refusal_exits_3_with_the_numbers(
    ds01_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    ds01_env.write_inventory(TWO_GPUS)
    ds01_env.write_limits(
        {
            "default_group": "ds01t-students",
            "groups": {
                "ds01t-students": {
                    "unix_group": "ds01t-students",
                    "max_gpu_equivalents": 1,
                    "max_gpus_per_container": 2,
                }
            },
        }
    )
    ctx = ds01_env.context(alice)
    CreateService(ctx).create(alice, CreateRequest(name="one", framework="pytorch", gpus=1))
    result = ds01_env.run_cli(alice.name, "container", "create", "two", "pytorch", "--gpus", "1")
    assert result.returncode == 3, result.stderr
    assert "holds 1" in result.stderr and "limit is 1" in result.stderr
    assert not engine.exists(f"two._.{alice.uid}")
    per_container = ds01_env.run_cli(
        alice.name, "container", "create", "three", "pytorch", "--gpus", "3"
    )
    assert per_container.returncode == 3
    assert "2 GPU devices per container" in per_container.stderr


def test_queue_grants_the_freed_device_and_tells_the_owner(
    ds01_env: Ds01Env, alice: Actor, bob: Actor, engine: DockerEngine
) -> None:
    ctx_a, ctx_b = ds01_env.context(alice), ds01_env.context(bob)
    CreateService(ctx_a).create(alice, CreateRequest(name="first", framework="pytorch"))
    with pytest.raises(NoCapacityError, match=r"^No free GPU fits 1 GPU now: 0 of the 1") as full:
        CreateService(ctx_b).create(bob, CreateRequest(name="second", framework="pytorch"))
    assert full.value.code == "no_free_gpu"
    queued = CreateService(ctx_b).create(
        bob, CreateRequest(name="second", framework="pytorch", wait=True)
    )
    assert queued.queued is not None
    assert not engine.exists(f"second._.{bob.uid}")

    listing = json.loads(ds01_env.run_cli(bob.name, "gpu", "queue", "--json").stdout)
    assert [(e["id"], e["position"], e["why"]) for e in listing] == [(queued.queued, 1, "capacity")]
    # Through the CLI (exit 4 = no capacity now) without --wait:
    assert ds01_env.run_cli(bob.name, "container", "create", "third", "pytorch").returncode == 4

    # Removing returns the devices it freed; the caller (here: the test, as the CLI does)
    # runs the queue, which grants bob's request.
    removal = ContainerService(ctx_a).remove(alice, "first", force=True)
    assert removal.freed_devices == (H200_UUID,)
    outcomes = process_queue_quietly(ctx_a)
    assert [(o.entry_id, o.state) for o in outcomes] == [(queued.queued, "granted")]

    granted = engine.inspect(f"second._.{bob.uid}").info.decoded
    assert granted is not None, "the granted container lost its DS01 labels"
    assert granted.gpu_uuids == (H200_UUID,)
    assert granted.queue_id == str(queued.queued)
    events = json.loads(ds01_env.run_cli(bob.name, "events", "--json").stdout)
    assert any(e["action"] == "queue.grant" and e["result"] == "ok" for e in events)
    alerts = Path(bob.home) / "workspace" / "second" / ".ds01-alerts"
    assert "was granted" in alerts.read_text()  # bob has no terminal here: the file


def test_queue_cancel(ds01_env: Ds01Env, alice: Actor, bob: Actor) -> None:
    CreateService(ds01_env.context(alice)).create(
        alice, CreateRequest(name="x", framework="pytorch")
    )
    queued = CreateService(ds01_env.context(bob)).create(
        bob, CreateRequest(name="y", framework="pytorch", wait=True)
    )
    assert (
        ds01_env.run_cli(alice.name, "gpu", "queue", "cancel", str(queued.queued)).returncode == 3
    )
    result = ds01_env.run_cli(bob.name, "gpu", "queue", "cancel", str(queued.queued))
    assert result.returncode == 0, result.stderr
    assert json.loads(ds01_env.run_cli(bob.name, "gpu", "queue", "--json").stdout) == []


def test_start_refuses_when_the_device_is_gone(ds01_env: Ds01Env, alice: Actor) -> None:
    ctx = ds01_env.context(alice)
    CreateService(ctx).create(alice, CreateRequest(name="vanish", framework="pytorch"))
    ContainerService(ctx).stop(alice, "vanish", timeout=1)
    ds01_env.write_inventory(TWO_GPUS)  # the H200 is gone (e.g. MIG layout changed)
    with pytest.raises(UsageError) as err:
        ContainerService(ds01_env.context(alice)).start(alice, "vanish")
    assert err.value.code == "device_gone"
    assert H200_UUID in err.value.message


def test_mig_only_user_never_gets_a_whole_gpu(ds01_env: Ds01Env, alice: Actor) -> None:
    ds01_env.write_inventory(
        {
            "gpus": [
                TWO_GPUS["gpus"][0],
                {
                    "index": 1,
                    "uuid": "GPU-00000000-0000-0000-0000-0000000000cc",
                    "name": "NVIDIA A100-SXM4-40GB",
                    "memory_mib": 40960,
                    "compute_capability": "8.0",
                    "mig_enabled": True,
                    "total_slices": 7,
                    "mig": [
                        {"uuid": "MIG-00000000-0000-0000-0000-000000000001", "profile": "1g.5gb"},
                        {"uuid": "MIG-00000000-0000-0000-0000-000000000002", "profile": "3g.20gb"},
                    ],
                },
            ]
        }
    )
    ds01_env.write_limits(
        {
            "default_group": "ds01t-students",
            "groups": {
                "ds01t-students": {
                    "unix_group": "ds01t-students",
                    "allow_full_gpu": False,
                    "max_gpu_equivalents": 1,
                }
            },
        }
    )
    ctx = ds01_env.context(alice)
    small = CreateService(ctx).create(alice, CreateRequest(name="m1", framework="pytorch"))
    assert small.gpus == ("MIG-00000000-0000-0000-0000-000000000001",)  # smallest first
    assert small.gpu_equivalents == pytest.approx(1 / 7, abs=1e-4)
    big = CreateService(ctx).create(
        alice, CreateRequest(name="m2", framework="pytorch", gpu_profile="3g.20gb")
    )
    assert big.gpus == ("MIG-00000000-0000-0000-0000-000000000002",)
    # Both MIG instances are held and the whole GPU is not for her: 2 usable, 0 free. Her
    # quota (4/7 held of 1) is not what stops her.
    with pytest.raises(NoCapacityError, match=r"^No free GPU fits 1 GPU now: 0 of the 2") as full:
        CreateService(ctx).create(alice, CreateRequest(name="m3", framework="pytorch"))
    assert (full.value.code, full.value.details) == (
        "no_free_gpu",
        {"asked": 1, "usable": 2, "free": 0},
    )


# --------------------------------------------------------------------------- stress

STRESS_USERS = [f"ds01t-s{i:02d}" for i in range(1, 17)]


@pytest.fixture
def stress_users(linux_users: dict[str, Actor]) -> list[str]:
    for user in STRESS_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(
                ["useradd", "--create-home", "--groups", "docker,ds01t-students", user],
                check=True,
                capture_output=True,
            )
    return STRESS_USERS


@pytest.mark.slow
@pytest.mark.xfail(
    # Not strict: the outcome depends on how loaded the 2-core host is, and one
    # development run passed (XPASS) while another failed; a strict mark would make CI
    # flaky. An XPASS is listed in the run's summary, where it is noticed.
    strict=False,
    raises=AssertionError,  # only the counts below; an engine or setup error still fails
    reason=(
        "with the shipped gpu.lock_timeout (15 s) the 64-create burst on a 2-core host "
        "ends 44-54 created and the rest lock time-outs, not 56 created / 8 refused "
        "(issue 17); the allocation lock must be held for less time per create"
    ),
)
def test_stress_64_concurrent_creates_on_56_mig_slices(
    ds01_env: Ds01Env, stress_users: list[str], engine: DockerEngine
) -> None:
    ds01_env.write_inventory(
        {
            "generate": {
                "count": 8,
                "name": "NVIDIA A100-SXM4-40GB",
                "memory_mib": 40960,
                "compute_capability": "8.0",
                "total_slices": 7,
                "mig": {"profile": "1g.5gb", "count": 7},
            }
        }
    )
    ds01_env.write_limits(
        {
            "default_group": "ds01t-students",
            "defaults": {"max_containers": 4, "max_gpu_equivalents": 4, "memory": "256m"},
            "groups": {"ds01t-students": {"unix_group": "ds01t-students"}},
        }
    )
    # The shipped defaults (gpu.lock_timeout included): what a real burst meets.
    env = {"PATH": "/usr/bin:/bin", "DS01_CONFIG": str(ds01_env.config_path), "NO_COLOR": "1"}

    def create(job: tuple[str, int]) -> int:
        user, n = job
        argv = [
            "/usr/sbin/runuser",
            "-u",
            user,
            "--",
            str(DS01_BIN),
            "container",
            "create",
            f"s{n}",
            "pytorch",
            "--gpus",
            "1",
        ]
        return subprocess.run(
            argv, env=env, capture_output=True, timeout=600, check=False
        ).returncode

    jobs = [(user, n) for user in stress_users for n in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=64) as pool:
            codes = list(pool.map(create, jobs))
        assert sorted(set(codes)) == [0, 4], codes
        assert codes.count(0) == 56 and codes.count(4) == 8

        held = HoldingsService(ds01_env.context(linux_user(stress_users[0]))).holdings().in_force
        devices = [u for h in held for u in h.device_uuids]
        assert len(held) == 56
        assert len(devices) == len(set(devices)) == 56  # none double-booked
    finally:
        remove_test_containers(engine)


def linux_user(name: str) -> Actor:
    from ds01.adapters.identity import actor_for_user

    return actor_for_user(name)
