"""The one serialiser, and the exact ``--json`` object of each result it writes.

Each test pins the keys (in order) and values the hand-written ``to_dict`` these results
had produced, so a renamed or reordered field fails here before a user's script breaks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from fractions import Fraction
from pathlib import Path

import pytest

from ds01.adapters.event_log import Event
from ds01.config.yaml_source import Problem
from ds01.errors import ErrorCode
from ds01.serialize import JSON_OMIT_EMPTY, JSON_OMIT_NONE, JSON_SKIP, json_key, json_round, to_json
from ds01.services.container.create import CreateResult
from ds01.services.container.operations import ContainerView, StatsView
from ds01.services.image.service import ImageView
from ds01.services.limits import AppliedLimits
from ds01.services.project.service import ProjectInitResult
from ds01.services.user.setup import Check, CheckStatus, SetupReport

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class Colour(StrEnum):
    RED = "red"


@dataclass(frozen=True)
class Inner:
    at: datetime
    share: Fraction


@dataclass(frozen=True)
class Outer:
    name: str
    image_id: str = field(metadata=json_key("id"))
    inner: Inner = field(default_factory=lambda: Inner(WHEN, Fraction(1, 3)))
    tags: tuple[str, ...] = ("a", "b")
    colour: Colour = Colour.RED
    code: ErrorCode = ErrorCode.QUOTA
    path: Path = Path("/srv/x")
    hidden: int = field(default=1, metadata=JSON_SKIP)
    note: str | None = field(default=None, metadata=JSON_OMIT_EMPTY)
    extra: dict[str, object] = field(default_factory=lambda: {"k": (1, 2)})


def test_generic_rules() -> None:
    data = to_json(Outer("n", "sha"))
    assert data == {
        "name": "n",
        "id": "sha",
        "inner": {"at": "2025-01-02T03:04:05+00:00", "share": 0.3333},
        "tags": ["a", "b"],
        "colour": "red",
        "code": "quota",
        "path": "/srv/x",
        "extra": {"k": [1, 2]},
    }
    assert list(data) == ["name", "id", "inner", "tags", "colour", "code", "path", "extra"]
    assert type(data["code"]) is str and type(data["colour"]) is str  # plain, not the enum
    assert to_json(Outer("n", "s", note="hi"))["note"] == "hi"
    json.dumps(data)  # nothing json cannot write


@dataclass(frozen=True)
class Rounded:
    seconds: float | None = field(default=None, metadata=json_round(1))
    share: float = field(default=0.0, metadata={**json_key("s"), **json_round(3)})
    flag: bool | None = field(default=None, metadata=JSON_OMIT_NONE)
    count: int | None = field(default=None, metadata=JSON_OMIT_NONE)


def test_rounding_and_omitting_only_none() -> None:
    assert to_json(Rounded(12.3456, 0.123456)) == {"seconds": 12.3, "s": 0.123}
    assert to_json(Rounded()) == {"seconds": None, "s": 0.0}
    # Unlike JSON_OMIT_EMPTY, False and 0 are values and are written.
    assert to_json(Rounded(flag=False, count=0)) == {
        "seconds": None, "s": 0.0, "flag": False, "count": 0,
    }  # fmt: skip
    assert list(to_json(Rounded(flag=True, count=2))) == ["seconds", "s", "flag", "count"]


def test_unknown_types_are_refused_not_guessed() -> None:
    with pytest.raises(TypeError, match="object"):
        to_json(object())


def _keys_and_json(obj: object) -> tuple[list[str], str]:
    data = to_json(obj)
    return list(data), json.dumps(data)


def test_problem() -> None:
    assert to_json(Problem("f.yaml", 3, "a.b", "bad")) == {
        "file": "f.yaml",
        "line": 3,
        "key": "a.b",
        "message": "bad",
    }


def test_container_view() -> None:
    view = ContainerView(
        name="n", container="n._.1000", user="u", status="Up", state="running",
        image="img", framework="Pytorch", arch="sm_90", gpus=("GPU-1",),
        gpu_equivalents=0.5, created="2025", workspace="/w", managed_by="ds01",
    )  # fmt: skip
    keys, _ = _keys_and_json(view)
    assert keys == [
        "name", "container", "user", "status", "state", "image", "framework", "arch",
        "gpus", "gpu_equivalents", "created", "workspace", "managed_by",
    ]  # fmt: skip
    assert to_json(view)["gpus"] == ["GPU-1"]


def test_stats_view() -> None:
    view = StatsView("n", "n._.1000", 1.5, 10, None, 3, ("GPU-1",))
    assert to_json(view) == {
        "name": "n",
        "container": "n._.1000",
        "cpu_percent": 1.5,
        "memory_bytes": 10,
        "memory_limit_bytes": None,
        "pids": 3,
        "gpus": ["GPU-1"],
    }


def test_image_view() -> None:
    view = ImageView("p", "img:latest", "u", "base", "Pytorch", ("core",), 5, None, "sha")
    keys, _ = _keys_and_json(view)
    assert keys == [
        "name", "image", "user", "base", "framework", "tiers", "size_bytes", "created", "id",
    ]  # fmt: skip
    assert to_json(view)["tiers"] == ["core"]


def test_setup_report_and_checks() -> None:
    ok = Check("docker", "Docker", CheckStatus.OK, "fine", ("a",))
    bad = Check("gpu", "GPU", CheckStatus.FAIL, "none", fix="ask")
    report = SetupReport((ok, bad), Path("/w"), ("p",), None, host="h")
    assert to_json(report) == {
        "ok": False,
        "checks": [
            {"key": "docker", "title": "Docker", "status": "ok", "summary": "fine",
             "details": ["a"], "fix": None},
            {"key": "gpu", "title": "GPU", "status": "fail", "summary": "none",
             "details": [], "fix": "ask"},
        ],
        "workspace": "/w",
        "projects": ["p"],
        "ssh_public_key": None,
        "host": "h",
    }  # fmt: skip
    assert report.failed
    good = SetupReport((ok,), Path("/w"), ssh_public_key=Path("/k.pub"), host="h")
    assert to_json(good)["ok"] is True and to_json(good)["ssh_public_key"] == "/k.pub"
    assert not good.failed


def test_project_init_result() -> None:
    result = ProjectInitResult(
        "p", "/w/p", "img", "/w/p/Dockerfile", "Pytorch", ("core",), ("a",), (), "skipped"
    )
    assert to_json(result) == {
        "name": "p",
        "path": "/w/p",
        "image": "img",
        "dockerfile": "/w/p/Dockerfile",
        "framework": "Pytorch",
        "tiers": ["core"],
        "created": ["a"],
        "kept": [],
        "git": "skipped",
        "notes": [],
    }


def test_create_result() -> None:
    limits = AppliedLimits("g", "/ds01.slice", 2_000_000_000, 1024, 2048, 64, 100)
    result = CreateResult(
        "n", "n._.1000", "img", "Pytorch", None, "/w", ("GPU-1",), 1.0, limits, None
    )
    keys, _ = _keys_and_json(result)
    assert keys == [
        "name", "container", "image", "framework", "arch", "workspace", "gpus",
        "gpu_equivalents", "limits", "queued",
    ]  # fmt: skip
    # The limits container create has always reported; ``aggregate_applied`` only once
    # the combined limit was tried (then False is written too).
    assert to_json(result)["limits"] == {
        "group": "g", "cgroup_parent": "/ds01.slice", "nano_cpus": 2_000_000_000,
        "memory": 1024, "memory_swap": 2048, "shm_size": 64, "pids_limit": 100,
    }  # fmt: skip
    tried = AppliedLimits("g", None, None, None, None, 64, None, aggregate_applied=False)
    assert list(to_json(tried))[-1] == "aggregate_applied"
    assert to_json(tried)["aggregate_applied"] is False


def test_event_writes_ts_as_time() -> None:
    event = Event(7, "2025-01-02T03:04:05", "u", "create", "n", "ok", "u", {"x": 1}, "u")
    assert to_json(event) == {
        "id": 7,
        "time": "2025-01-02T03:04:05",
        "actor": "u",
        "action": "create",
        "target": "n",
        "result": "ok",
        "owner": "u",
        "details": {"x": 1},
        "writer": "u",
        "forged": False,
    }
