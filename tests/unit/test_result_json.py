"""The ``--json`` object of every result that had a hand-written ``to_dict``, via ``to_json``.

Each test pins the keys in order and the values the old ``to_dict`` wrote (renamed keys,
computed values, rounding, left-out keys), so the typed results keep the README's JSON.
The builders that fill them from a running host are tested in
``tests/unit/services/test_results_json.py``.
"""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from ds01.adapters.exemption_files import ExemptionRow
from ds01.adapters.lock_holders import Holder
from ds01.adapters.queue_store import QueueRow
from ds01.domain.allocation import GpuRequest
from ds01.domain.idle import Busy, LifecycleState
from ds01.domain.lifecycle import LimitKind
from ds01.domain.queue import QueueEntry, QueueState, Waiting, WaitReason
from ds01.serialize import to_json
from ds01.services.catalog import CatalogRow
from ds01.services.container.deploy import DeployResult, PackageChanges, RetireResult
from ds01.services.container.recovery import Recovered
from ds01.services.enforcement.apply import ContainerOutcome, PassError, PassReport
from ds01.services.enforcement.exemptions import ListedExemption
from ds01.services.gpu.queue import QueueOutcome
from ds01.services.gpu.queue_listing import queue_item
from ds01.services.image.delete import DeleteResult
from ds01.services.image.service import ImageResult
from ds01.services.limits import UserLimitsResult

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _dumped(obj: object) -> Any:
    """``to_json``, checked to be what ``json.dumps`` writes without a fallback."""
    data = to_json(obj)
    assert json.loads(json.dumps(data)) == data
    return data


def _outcome(actions: tuple[dict[str, Any], ...] = ()) -> ContainerOutcome:
    return ContainerOutcome(
        container="n._.1000", owner="u", state="running", holds_gpu=True, activity="idle",
        idle=True, idle_since=WHEN, idle_deadline=WHEN + timedelta(hours=1),
        runtime_deadline=None, signals={"gpu_percent": 0}, actions=actions,
        new_state=LifecycleState(),
    )  # fmt: skip


def test_container_outcome_leaves_out_its_stored_state() -> None:
    assert _dumped(_outcome(({"action": "warn", "percent": 80},))) == {
        "container": "n._.1000",
        "owner": "u",
        "state": "running",
        "holds_gpu": True,
        "activity": "idle",
        "idle": True,
        "idle_since": "2025-01-02T03:04:05+00:00",
        "idle_deadline": "2025-01-02T04:04:05+00:00",
        "runtime_deadline": None,
        "signals": {"gpu_percent": 0},
        "actions": [{"action": "warn", "percent": 80}],
    }


def test_pass_error_writes_a_traceback_only_when_there_is_one() -> None:
    assert _dumped(PassError("c", "u", "m")) == {"container": "c", "owner": "u", "message": "m"}
    assert list(_dumped(PassError(None, None, "m", "Traceback..."))) == [
        "container", "owner", "message", "traceback",
    ]  # fmt: skip


def test_pass_report_document() -> None:
    report = PassReport(started_at=WHEN, dry_run=True, duration_s=0.123456)
    report.busy = Busy(0.5, True)
    report.allocated_equivalents = Fraction(2, 3)
    report.total_equivalents = Fraction(1)
    report.containers.append(_outcome(({"action": "stop"}, {"action": "warn"})))
    report.errors.append(PassError(None, None, "m"))
    report.warnings.append("w")
    report.queue.append(QueueOutcome(7, "bob", "granted", "x._.1001"))
    report.pruned = 2
    data = _dumped(report.result())
    assert list(data) == [
        "started_at", "duration_s", "dry_run", "busy", "counts", "containers", "errors",
        "warnings", "queue", "pruned",
    ]  # fmt: skip
    assert data["started_at"] == "2025-01-02T03:04:05+00:00"
    assert data["duration_s"] == 0.123
    assert data["busy"] == {
        "is_busy": True,
        "idle_timeout_factor": 0.5,
        "allocated_equivalents": 0.6667,
        "total_equivalents": 1.0,
    }
    assert data["counts"] == {
        "checked": 1, "warn": 1, "stop": 1, "release_gpu": 0, "remove": 0, "note": 0,
        "exempted": 0,
    }  # fmt: skip
    assert data["errors"] == [{"container": None, "owner": None, "message": "m"}]
    assert data["warnings"] == ["w"]
    assert data["queue"] == [
        {"id": 7, "user": "bob", "state": "granted", "container": "x._.1001", "message": None}
    ]
    assert data["pruned"] == 2
    empty = _dumped(PassReport(started_at=WHEN).result())["busy"]
    assert empty["allocated_equivalents"] is None and empty["total_equivalents"] is None


def test_recovered_names_the_tag_container() -> None:
    item = Recovered("n._.1000", "u", "pid:1", container_removed=True, dirs_removed=["/w"])
    assert _dumped(item) == {
        "container": "n._.1000",
        "user": "u",
        "creator": "pid:1",
        "container_removed": True,
        "dirs_removed": ["/w"],
        "queue_entry": None,
    }


def test_deploy_result() -> None:
    assert list(_dumped(DeployResult("n", "n._.1000", True, "img", False, ("GPU-1",)))) == [
        "name", "container", "created", "image", "built", "gpus", "queued", "shell_exit",
    ]  # fmt: skip


def test_retire_result_flattens_the_packages() -> None:
    result = RetireResult(
        name="n",
        container="n._.1000",
        packages=PackageChanges(added=("a==1",), direct=("b",)),
        saved=("a==1",),
        dockerfile="/w/n/Dockerfile",
        stopped=True,
        released_gpus=("GPU-1",),
    )
    assert _dumped(result) == {
        "name": "n",
        "container": "n._.1000",
        "installed_packages": ["a==1"],
        "installed_from_paths": ["b"],
        "saved_packages": ["a==1"],
        "dockerfile": "/w/n/Dockerfile",
        "stopped": True,
        "released_gpus": ["GPU-1"],
    }
    assert result.installed_packages == result.packages.added


def test_image_result_writes_the_id_last_and_seconds_to_a_tenth() -> None:
    result = ImageResult(
        name="p", image="p:latest", dockerfile="/w/p/Dockerfile", base="b", framework="F",
        tiers=("core",), written=True, built=True, image_id="sha256:x", log="/l",
        seconds=12.345, steps=3, cached_steps=1, notes=("n",),
    )  # fmt: skip
    assert _dumped(result) == {
        "name": "p",
        "image": "p:latest",
        "dockerfile": "/w/p/Dockerfile",
        "base": "b",
        "framework": "F",
        "tiers": ["core"],
        "written": True,
        "built": True,
        "log": "/l",
        "seconds": 12.3,
        "steps": 3,
        "cached_steps": 1,
        "notes": ["n"],
        "id": "sha256:x",
    }
    unbuilt = _dumped(ImageResult("p", "p:latest", "/d", "b", "F", (), False, False))
    assert unbuilt["seconds"] is None and unbuilt["id"] is None and list(unbuilt)[-1] == "id"


def test_delete_result_keys_and_names() -> None:
    result = DeleteResult(
        name="p", image="p:latest", removed_containers=("p._.1",), stopped_containers=(),
        image_id="sha256:x", dockerfile="/w/p/Dockerfile",
    )  # fmt: skip
    assert _dumped(result) == {
        "name": "p",
        "image": "p:latest",
        "removed_containers": ["p._.1"],
        "stopped_containers": [],
        "id": "sha256:x",
        "dockerfile_kept": "/w/p/Dockerfile",
    }
    assert list(_dumped(result)) == [
        "name", "image", "removed_containers", "stopped_containers", "id", "dockerfile_kept",
    ]  # fmt: skip


def test_user_limits_result() -> None:
    assert _dumped(UserLimitsResult("u", False, None, "no aggregate limit")) == {
        "user": "u",
        "applied": False,
        "where": None,
        "reason": "no aggregate limit",
    }


def test_lock_holder_names_the_user_once_found() -> None:
    holder = Holder(12, os.getuid(), 99, "flock x", "08:01:12")
    assert _dumped(holder) == {
        "pid": 12,
        "uid": os.getuid(),
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "command": "flock x",
    }
    assert _dumped(Holder(1, None, None, ""))["user"] == "an unknown user"
    assert holder.key == (12, 99)


def test_exemptions_without_and_with_active() -> None:
    row = ExemptionRow("u", LimitKind.IDLE, None, "thesis", "root", WHEN)
    assert _dumped(row) == {
        "user": "u",
        "kind": "idle",
        "until": None,
        "reason": "thesis",
        "created_by": "root",
        "created_at": "2025-01-02T03:04:05+00:00",
    }
    ended = ExemptionRow("u", LimitKind.RUNTIME, WHEN, "r", "root", WHEN)
    listed = _dumped(ListedExemption.of(ended, WHEN + timedelta(seconds=1)))
    assert list(listed) == [
        "user", "kind", "until", "reason", "created_by", "created_at", "active",
    ]  # fmt: skip
    assert listed["until"] == "2025-01-02T03:04:05+00:00" and listed["active"] is False
    assert _dumped(ListedExemption.of(row, WHEN))["active"] is True


def test_catalog_row() -> None:
    assert _dumped(CatalogRow("Pytorch", "2.5.1", ("sm_90",), "aimehub/x")) == {
        "framework": "Pytorch",
        "version": "2.5.1",
        "archs": ["sm_90"],
        "image": "aimehub/x",
    }


def _row(state: QueueState = QueueState.WAITING) -> QueueRow:
    entry = QueueEntry(
        id=4, user="bob", request=GpuRequest.gpus(1), spec="{}", priority=1,
        enqueued_at=WHEN.replace(microsecond=123), state=state,
    )  # fmt: skip
    return QueueRow(entry, {"name": "train"}, "2025-01-02T03:05:00+00:00", None, None)


def test_queue_item_waiting() -> None:
    row = _row()
    checked = replace(row.entry, priority=5)
    waiting = Waiting(checked, 2, 7, WaitReason.CAPACITY, "All GPUs are in use.")
    data = _dumped(queue_item(row, checked, waiting))
    assert data == {
        "id": 4,
        "user": "bob",
        "request": "1 GPU",
        "name": "train",
        "priority": 5,  # the policy's, not the row's
        "enqueued_at": "2025-01-02T03:04:05+00:00",  # to the second
        "state": "waiting",
        "updated_at": "2025-01-02T03:05:00+00:00",
        "container": None,
        "message": None,
        "position": 2,
        "why": "capacity",
        "detail": "All GPUs are in use.",
        "effective_priority": 7,
    }


def test_queue_item_refused() -> None:
    data = _dumped(queue_item(_row(), None, None, refused="its request file is gone"))
    assert data["priority"] == 1 and data["position"] is None
    assert data["why"] == "refused" and data["effective_priority"] is None
    assert data["detail"] == "Refused at the next pass: its request file is gone."
