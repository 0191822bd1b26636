"""Paths that try to escape, links swapped in later, AIME's GPU holders, queue limits."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.domain.actor import Actor
from ds01.domain.labels import L
from ds01.errors import NoCapacityError, RefusedError, UsageError
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.gpu.status import GpuService
from tests.conftest import BASE_IMAGE
from tests.integration.conftest import Ds01Env, InspectFn

pytestmark = pytest.mark.docker

H200_UUID = "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d"


def test_a_symlinked_workspace_is_refused_and_nothing_made(
    ds01_env: Ds01Env, alice: Actor, engine: DockerEngine, tmp_path: Path
) -> None:
    outside = Path("/tmp") / f"ds01-outside-{os.getpid()}"
    outside.mkdir(exist_ok=True)
    link = Path(alice.home) / "workspace" / "escape"
    link.parent.mkdir(exist_ok=True)
    os.chown(link.parent, alice.uid, alice.gid)
    try:
        link.symlink_to(outside)
        result = ds01_env.run_cli(
            alice.name, "container", "create", "escape", "pytorch", "--cpu-only"
        )
        assert result.returncode == 2, result.stderr
        assert "link" in result.stderr
        assert not engine.exists(f"escape._.{alice.uid}")
        # -d pointing outside the home (through a link or not) is refused too.
        result = ds01_env.run_cli(
            alice.name, "container", "create", "x", "pytorch", "--cpu-only", "-d", str(outside)
        )
        assert result.returncode == 2 and "outside" in result.stderr
    finally:
        link.unlink(missing_ok=True)
        shutil.rmtree(outside, ignore_errors=True)


def test_a_directory_the_user_may_only_read_is_mounted_read_only(
    ds01_env: Ds01Env, alice: Actor, bob: Actor, docker_inspect: InspectFn
) -> None:
    shared = Path(bob.home) / "shared-data"
    shared.mkdir(exist_ok=True)
    os.chown(shared, bob.uid, bob.gid)
    shared.chmod(0o755)
    Path(bob.home).chmod(0o755)
    ds01_env.write_config(container={"allowed_mount_roots": ["~", str(shared)]})
    try:
        result = CreateService(ds01_env.context(alice)).create(
            alice, CreateRequest(name="ro", framework="pytorch", cpu_only=True, data=str(shared))
        )
        mounts = {m["Destination"]: m for m in docker_inspect(result.container)["Mounts"]}
        assert mounts["/data"]["RW"] is False
        assert mounts["/workspace"]["RW"] is True
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_start_refuses_a_workspace_replaced_by_a_link(ds01_env: Ds01Env, alice: Actor) -> None:
    ctx = ds01_env.context(alice)
    result = CreateService(ctx).create(
        alice, CreateRequest(name="swap", framework="pytorch", cpu_only=True)
    )
    ContainerService(ctx).stop(alice, "swap", timeout=1)
    workspace = Path(result.workspace)
    workspace.rmdir()
    workspace.symlink_to("/etc")
    try:
        with pytest.raises(UsageError) as err:
            ContainerService(ctx).start(alice, "swap")
        assert err.value.code == "mount_changed"
    finally:
        workspace.unlink()


def test_notice_file_is_never_written_through_a_link(ds01_env: Ds01Env, alice: Actor) -> None:
    from ds01.adapters.notifier import TerminalNotifier

    victim = Path("/tmp") / f"ds01-victim-{os.getpid()}"
    victim.write_text("root's file\n")
    workspace = Path(alice.home) / "workspace" / "notes"
    workspace.mkdir(parents=True, exist_ok=True)
    os.chown(workspace, alice.uid, alice.gid)
    (workspace / ".ds01-alerts").symlink_to(victim)
    try:
        delivered = TerminalNotifier().notify(alice.name, "hi", fallback_dir=str(workspace))
        assert delivered == []
        assert victim.read_text() == "root's file\n"
        assert victim.stat().st_uid == 0
    finally:
        victim.unlink()
        shutil.rmtree(workspace, ignore_errors=True)


def test_an_aime_container_with_gpus_all_holds_every_device(
    ds01_env: Ds01Env, alice: Actor, bob: Actor, engine: DockerEngine
) -> None:
    tag = f"aimegpu._.{bob.uid}"
    labels = {
        "aime.mlc": bob.name,
        "aime.mlc.NAME": "aimegpu",
        "aime.mlc.USER": bob.name,
        "aime.mlc.MLC_VERSION": "4",
        "aime.mlc.FRAMEWORK": "Pytorch-2.5.1",
        "aime.mlc.GPUS": "all",
    }
    engine.api.create_container(BASE_IMAGE, ["sleep", "infinity"], name=tag, labels=labels)
    status = GpuService(ds01_env.context(alice)).status()
    assert status.devices[0].container == tag and status.free_equivalents == 0
    with pytest.raises(NoCapacityError, match=r"^No free GPU fits 1 GPU now: 0 of the 1") as full:
        CreateService(ds01_env.context(alice)).create(
            alice, CreateRequest(name="wants-gpu", framework="pytorch")
        )
    assert full.value.code == "no_free_gpu"


def test_queue_respects_max_containers_and_refuses_a_duplicate(
    ds01_env: Ds01Env, alice: Actor, bob: Actor
) -> None:
    ds01_env.write_limits(
        {
            "default_group": "ds01t-students",
            "defaults": {"max_containers": 2},
            "groups": {"ds01t-students": {"unix_group": "ds01t-students"}},
        }
    )
    CreateService(ds01_env.context(alice)).create(
        alice, CreateRequest(name="hold", framework="pytorch")
    )
    ctx = ds01_env.context(bob)
    CreateService(ctx).create(bob, CreateRequest(name="cpu", framework="pytorch", cpu_only=True))
    CreateService(ctx).create(bob, CreateRequest(name="q1", framework="pytorch", wait=True))
    with pytest.raises(RefusedError) as err:  # one container + one queued = the limit
        CreateService(ctx).create(bob, CreateRequest(name="q2", framework="pytorch", wait=True))
    assert err.value.code == "container_limit"
    ds01_env.write_limits(
        {
            "default_group": "ds01t-students",
            "groups": {"ds01t-students": {"unix_group": "ds01t-students"}},
        }
    )
    with pytest.raises(UsageError) as dup:
        CreateService(ds01_env.context(bob)).create(
            bob, CreateRequest(name="q1", framework="pytorch", wait=True)
        )
    assert dup.value.code == "already_queued"


def test_another_users_image_is_refused(
    ds01_env: Ds01Env, alice: Actor, bob: Actor, engine: DockerEngine
) -> None:
    image = f"ds01-test-foreign-{os.getpid()}:latest"
    # An image labelled as bob's build (as `image create` labels it).
    container = engine.api.create_container(BASE_IMAGE, ["true"], labels={})["Id"]
    engine.api.commit(
        container,
        repository=image.split(":", maxsplit=1)[0],
        tag="latest",
        conf={"Labels": {L.CUSTOM_IMAGE: image, L.MAINTAINER: bob.name, L.IMAGE_PROJECT: "p"}},
    )
    engine.remove(container, force=True)
    try:
        theirs = re.escape(f"The image {image} belongs to {bob.name}.")
        with pytest.raises(RefusedError, match=theirs) as err:
            CreateService(ds01_env.context(alice)).create(
                alice, CreateRequest(name="steal", image=image, cpu_only=True)
            )
        assert err.value.code == "not_owner"
        result = ds01_env.run_cli(alice.name, "container", "list", "--json")
        assert json.loads(result.stdout) == []
    finally:
        engine.remove_image(image, force=True)
