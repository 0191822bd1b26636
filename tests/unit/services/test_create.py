"""``container create`` through the services, on the in-memory engine: every decision of
a create (image, GPU, policy, queue) without Docker. What Docker itself does with the
container is tested on the real engine in tests/integration."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.domain.actor import Actor
from ds01.domain.labels import ImageLabels
from ds01.domain.naming import project_image_name
from ds01.errors import NoCapacityError, RefusedError, UsageError
from ds01.services.container.create import CreateRequest, CreateResult, CreateService

from .conftest import H200, Lab

MIG_H200 = "GPU-9d0ab3c2-6f4e-4b7a-8c1d-2e3f4a5b6c7d"
SLICE_A = "MIG-11111111-2222-4333-8444-555555555555"
SLICE_B = "MIG-66666666-7777-4888-9999-aaaaaaaaaaaa"
MIG_INVENTORY = {
    "gpus": [
        {
            "index": 0,
            "uuid": MIG_H200,
            "name": "NVIDIA H200",
            "memory_mib": 143771,
            "compute_capability": "9.0",
            "mig_enabled": True,
            "total_slices": 7,
            "mig": [
                {"uuid": SLICE_A, "profile": "1g.18gb"},
                {"uuid": SLICE_B, "profile": "3g.71gb"},
            ],
        }
    ]
}


def create(lab: Lab, user: str, name: str, **flags: object) -> CreateResult:
    actor = lab.users[user]
    request = CreateRequest(name=name, cwd=Path(actor.home), **flags)  # type: ignore[arg-type]
    return CreateService(lab.ctx(actor)).create(actor, request)


def test_catalog_create_holds_the_gpu_by_its_labels(lab: Lab) -> None:
    result = create(lab, "alice", "demo", framework="pytorch")
    alice = lab.users["alice"]
    assert result.container == f"demo._.{alice.uid}"
    # An H200 (9.0) is CUDA_ADA in AIME's catalog; its first Pytorch line there is 2.8.0.
    assert result.image == "aimehub/pytorch-2.8.0-cuda12.6.3"
    assert (result.gpus, result.gpu_equivalents, result.queued) == ((H200,), 1.0, None)
    details = lab.engine.inspect(result.container)
    assert details.info.state.value == "running"
    labels = details.info.decoded
    assert labels is not None
    assert (labels.user, labels.name, labels.gpu_uuids) == ("alice", "demo", (H200,))
    assert details.env["CUDA_VISIBLE_DEVICES"] == H200
    assert details.user == f"{alice.uid}:{alice.gid}"
    workspace = Path(alice.home) / "workspace" / "demo"
    assert workspace.is_dir() and workspace.stat().st_uid == alice.uid
    assert [m["Source"] for m in details.mounts if m["Destination"] == "/workspace"] == [
        str(workspace)
    ]
    # The user was copied in before the start: the container's passwd knows alice.
    passwd = lab.engine.read_tree(result.container, "/etc")["etc/passwd"]
    assert passwd is not None and f":{alice.uid}:{alice.gid}:" in passwd.content.decode()


def test_cpu_only_holds_nothing_and_hides_every_gpu(lab: Lab) -> None:
    result = create(lab, "alice", "cpu", framework="pytorch", cpu_only=True)
    assert (result.gpus, result.gpu_equivalents) == ((), 0.0)
    env = lab.engine.inspect(result.container).env
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]) == ("void", "")
    # Nothing is held: bob still gets the GPU.
    assert create(lab, "bob", "gpu", framework="pytorch").gpus == (H200,)


def test_explicit_gpus_one(lab: Lab) -> None:
    assert create(lab, "alice", "one", framework="pytorch", gpus=1).gpus == (H200,)


def test_mig_profile_gets_that_slice_and_its_share(lab: Lab) -> None:
    lab.write_inventory(MIG_INVENTORY)
    small = create(lab, "alice", "small", framework="pytorch", gpu_profile="1g.18gb")
    assert small.gpus == (SLICE_A,)
    assert small.gpu_equivalents == 0.1429  # 1 of the GPU's 7 slices, to 4 places
    labels = lab.engine.inspect(small.container).info.decoded
    assert labels is not None and labels.gpu_profile == "1g.18gb"
    # The 3g slice is still free for bob; a second 1g is not there at all.
    assert create(lab, "bob", "big", framework="pytorch", gpu_profile="3g.71gb").gpus == (SLICE_B,)
    with pytest.raises(NoCapacityError, match="No free GPU") as caught:
        create(lab, "carol", "late", framework="pytorch", gpu_profile="1g.18gb")
    assert caught.value.code == "no_free_gpu"


def test_over_quota_is_refused_before_anything_is_made(lab: Lab) -> None:
    lab.write_limits(
        {
            "default_group": "students",
            "defaults": {"max_gpu_equivalents": 0.5},
            "groups": {"students": {"members": ["alice", "bob", "carol"]}},
        }
    )
    with pytest.raises(RefusedError) as caught:
        create(lab, "alice", "big", framework="pytorch", gpus=1)
    assert caught.value.code == "gpu_quota_exceeded"
    assert caught.value.exit_code == 3
    assert lab.engine.list_containers() == []
    assert not (Path(lab.users["alice"].home) / "workspace" / "big").exists()


def test_over_max_containers_names_what_to_remove(lab: Lab) -> None:
    lab.write_limits(
        {
            "default_group": "students",
            "defaults": {"max_containers": 1},
            "groups": {"students": {"members": ["alice", "bob", "carol"]}},
        }
    )
    create(lab, "alice", "first", framework="pytorch", cpu_only=True)
    with pytest.raises(RefusedError, match=r"You have 1 containers and may have at most 1") as c:
        create(lab, "alice", "second", framework="pytorch", cpu_only=True)
    assert c.value.code == "container_limit"
    assert c.value.details == {
        "held": 1,
        "allowed": 1,
        "containers": [f"first._.{lab.users['alice'].uid}"],
    }


def test_busy_gpu_without_wait_is_exit_4_and_with_wait_a_queue_entry(lab: Lab) -> None:
    create(lab, "alice", "first", framework="pytorch")
    with pytest.raises(NoCapacityError) as caught:
        create(lab, "bob", "second", framework="pytorch")
    assert (caught.value.code, caught.value.exit_code) == ("no_free_gpu", 4)
    queued = create(lab, "bob", "second", framework="pytorch", wait=True)
    assert queued.queued == 1
    assert queued.gpus == ()
    assert not lab.engine.exists(f"second._.{lab.users['bob'].uid}")


def _project_image(lab: Lab, owner: str, project: str) -> str:
    """An image as ``ds01 image create`` leaves it: named and labelled for its owner."""
    actor = lab.users[owner]
    image = project_image_name(project, owner)
    base = "aimehub/pytorch-2.8.0-cuda12.6.3"
    labels = ImageLabels(
        custom_image=image,
        maintainer=owner,
        base_image=base,
        framework="Pytorch-2.8.0",
        tiers=("base", "custom"),
        project=project,
        uid=actor.uid,
        gid=actor.gid,
        user=owner,
    )
    lab.engine.add_image(image, parent=f"{base}:latest", labels=labels.encode())
    return image


def test_own_project_image_is_found_without_a_framework(lab: Lab) -> None:
    image = _project_image(lab, "alice", "proj")
    result = create(lab, "alice", "proj")
    assert (result.image, result.framework) == (image, "Pytorch-2.8.0")


def test_another_users_project_image_of_the_same_name_is_not_taken(lab: Lab) -> None:
    # Image names can collide across users; only an image labelled as hers is alice's.
    _project_image(lab, "bob", "proj")
    result = create(lab, "alice", "proj", cpu_only=True)
    assert result.image == "aimehub/pytorch-2.8.0-cuda12.6.3"


def test_image_flag_takes_an_own_image_and_refuses_another_users(lab: Lab) -> None:
    theirs = _project_image(lab, "bob", "secret")
    with pytest.raises(RefusedError, match=f"The image {theirs} belongs to bob.") as caught:
        create(lab, "alice", "steal", image=theirs)
    assert caught.value.code == "not_owner"
    assert lab.engine.list_containers() == []
    mine = create(lab, "bob", "mine", image=theirs)
    assert (mine.image, mine.framework) == (theirs, "Pytorch-2.8.0")


def test_a_name_taken_is_exit_2_and_leaves_the_first_alone(lab: Lab) -> None:
    first = create(lab, "alice", "demo", framework="pytorch", cpu_only=True)
    with pytest.raises(UsageError, match="You already have a container named 'demo'") as c:
        create(lab, "alice", "demo", framework="pytorch", cpu_only=True)
    assert c.value.code == "container_exists"
    assert lab.engine.inspect(first.container).info.state.value == "running"


def test_root_never_gets_a_container(lab: Lab) -> None:
    root = Actor(uid=0, gid=0, name="root", home="/root")
    with pytest.raises(RefusedError, match="DS01 does not create or manage containers as root"):
        CreateService(lab.ctx(root)).create(root, CreateRequest(name="x", framework="pytorch"))
