"""The results services build for ``--json`` (no longer dicts): their keys in order, and
the values the services fill in, on the in-memory host.

alice holds the one H200; bob queues twice behind her. ``gpu status``, ``gpu queue``,
``limits``, ``admin apply-limits``, ``catalog list`` and ``container create`` each print
``to_json`` of what the service returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ds01.domain.actor import Actor
from ds01.serialize import to_json
from ds01.services.catalog import catalog_rows
from ds01.services.container.create import CreateRequest, CreateResult, CreateService
from ds01.services.gpu.queue import QueueService
from ds01.services.gpu.status import GpuService
from ds01.services.limits import apply_user_limits, describe_limits

from .conftest import H200, START, Lab


def _create(lab: Lab, user: str, name: str, **flags: Any) -> CreateResult:
    actor = lab.users[user]
    request = CreateRequest(name=name, cwd=Path(actor.home), framework="pytorch", **flags)
    return CreateService(lab.ctx(actor)).create(actor, request)


def _json(value: object) -> Any:
    data = to_json(value)
    assert json.loads(json.dumps(data)) == data  # nothing json.dumps needs help with
    return data


def _admin(lab: Lab) -> Actor:
    alice = lab.users["alice"]
    return Actor(uid=alice.uid, gid=alice.gid, name="alice", home=alice.home, is_admin=True)


def test_create_reports_its_limits_flat(lab: Lab) -> None:
    data = _json(_create(lab, "alice", "first"))
    assert list(data["limits"])[:7] == [
        "group", "cgroup_parent", "nano_cpus", "memory", "memory_swap", "shm_size",
        "pids_limit",
    ]  # fmt: skip
    assert data["limits"]["group"] == "students"
    assert data["gpus"] == [H200] and data["gpu_equivalents"] == 1.0


def test_gpu_status(lab: Lab) -> None:
    held = _create(lab, "alice", "first")
    data = _json(GpuService(lab.ctx(lab.users["bob"])).status())
    assert list(data) == [
        "source", "devices", "total_equivalents", "free_equivalents", "held_by_user",
        "released_after_stop",
    ]  # fmt: skip
    assert data["devices"] == [
        {
            "uuid": H200,
            "gpu_index": 0,
            "name": "NVIDIA H200",
            "mig_profile": None,
            "equivalents": 1.0,
            "memory_mib": 143771,
            "utilization_gpu": None,
            "processes": 0,
            "user": "alice",
            "container": held.container,
            "since": START.isoformat(),
            "state": "running",
        }
    ]
    assert data["source"] == "file"
    assert (data["total_equivalents"], data["free_equivalents"]) == (1.0, 0.0)
    assert data["held_by_user"] == {"alice": 1.0}
    assert data["released_after_stop"] == []


def test_gpu_queue_listing(lab: Lab) -> None:
    _create(lab, "alice", "first")
    queued = _create(lab, "bob", "second", wait=True)
    _create(lab, "bob", "third", wait=True)
    bob = lab.users["bob"]
    rows = [_json(r) for r in QueueService(lab.ctx(bob)).listing(bob)]
    assert [list(r) for r in rows] == [
        [
            "id", "user", "request", "name", "priority", "enqueued_at", "state", "updated_at",
            "container", "message", "position", "why", "detail", "effective_priority",
        ]
    ] * 2  # fmt: skip
    first = rows[0]
    assert first["id"] == queued.queued and first["name"] == "second"
    assert (first["user"], first["request"], first["state"]) == ("bob", "1 GPU", "waiting")
    assert first["enqueued_at"] == START.isoformat(timespec="seconds")
    assert (first["position"], first["why"]) == (1, "capacity")
    assert first["effective_priority"] == first["priority"]
    assert [r["position"] for r in rows] == [1, 2]
    # Everyone else sees none of bob's; an administrator with --all sees them all.
    alice = lab.users["alice"]
    assert QueueService(lab.ctx(alice)).listing(alice) == []
    admin = _admin(lab)
    assert len(QueueService(lab.ctx(admin)).listing(admin, all_users=True)) == 2


def test_limits_report(lab: Lab) -> None:
    alice = lab.users["alice"]
    report, resolved = describe_limits(lab.ctx(alice), alice, None)
    data = _json(report)
    assert list(data) == [
        "user", "group", "group_via", "limits", "docker", "cgroup_driver", "cgroup_parent",
    ]  # fmt: skip
    assert (data["user"], data["group"]) == ("alice", "students")
    assert data["limits"]["max_gpu_equivalents"] == {
        "value": 1.0,
        "display": "1",
        "source": "default",
    }
    assert data["docker"] == resolved.docker_create_kwargs()
    assert data["cgroup_parent"] == resolved.cgroup_parent(data["cgroup_driver"])


def test_apply_limits_reports_a_user_it_cannot_find(lab: Lab) -> None:
    admin = _admin(lab)
    (row,) = apply_user_limits(lab.ctx(admin), admin, ["ds01-nobody"])
    data = _json(row)
    assert list(data) == ["user", "applied", "where", "reason"]
    assert data["user"] == "ds01-nobody" and data["applied"] is False and data["where"] is None


def test_catalog_rows(lab: Lab) -> None:
    rows = catalog_rows(lab.ctx(lab.users["alice"]), framework="pytorch")
    assert rows
    data = _json(rows[0])
    assert list(data) == ["framework", "version", "archs", "image"]
    assert isinstance(data["archs"], list)
