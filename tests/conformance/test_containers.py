"""Containers: create, inspect, list, start, stop, remove, and their errors, as the
services use them (``create`` + ``inspect`` in create and recovery, label-filtered lists in
containers/gpus/recovery, the state machine in containers/enforce)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytest

from ds01.domain.containers import ContainerState, Limits, Mount
from ds01.errors import DS01Error, NotFoundError, UsageError
from ds01.ports import ContainerEngine
from tests.conformance.conftest import OWNER_LABEL, Rig
from tests.conftest import BASE_IMAGE


def _error(call: Callable[[], Any]) -> tuple[str, str]:
    """The class name and code of what ``call`` raised."""
    with pytest.raises(DS01Error) as caught:
        call()
    return type(caught.value).__name__, caught.value.code


def test_create_then_inspect_returns_what_was_asked(rig: Rig, engine: ContainerEngine) -> None:
    source = tempfile.mkdtemp(prefix="ds01conf-")
    limits = Limits(memory=256 * 1024**2, nano_cpus=10**9, pids_limit=100, cgroup_parent="/c")
    spec = rig.spec(
        "a",
        labels={OWNER_LABEL: rig.prefix, "ds01conf.role": "a"},
        user="1000:1000",
        env={"FOO": "bar", "EMPTY": ""},
        mounts=(Mount(source, "/data", read_only=True), Mount(source, "/workspace")),
        limits=limits,
    )
    container_id = engine.create(spec)
    details = engine.inspect(spec.tag)
    base = engine.image(BASE_IMAGE)
    assert base is not None
    info = details.info
    assert (info.id, info.tag, info.image) == (container_id, spec.tag, BASE_IMAGE)
    assert (info.state, info.status) == (ContainerState.CREATED, "created")
    assert info.labels == {OWNER_LABEL: rig.prefix, "ds01conf.role": "a"}
    assert info.created.tzinfo is not None
    assert details.image_id == base.id
    assert (details.started_at, details.finished_at, details.pid) == (None, None, None)
    assert (details.exit_code, details.user) == (0, "1000:1000")
    assert {k: details.env.get(k) for k in spec.env} == {"FOO": "bar", "EMPTY": ""}
    assert details.mounts == (
        {
            "Type": "bind",
            "Source": source,
            "Destination": "/data",
            "Mode": "",
            "RW": False,
            "Propagation": "rprivate",
        },
        {
            "Type": "bind",
            "Source": source,
            "Destination": "/workspace",
            "Mode": "",
            "RW": True,
            "Propagation": "rprivate",
        },
    )
    keys = ("NetworkMode", "CgroupParent", "Memory", "MemorySwap", "NanoCpus", "PidsLimit")
    assert {k: details.host_config.get(k) for k in keys} == {
        "NetworkMode": "bridge",
        "CgroupParent": "/c",
        "Memory": 256 * 1024**2,
        "MemorySwap": 512 * 1024**2,  # Docker's default: as much swap as memory
        "NanoCpus": 10**9,
        "PidsLimit": 100,
    }
    assert details.device_ids == ()


def test_device_requests_are_recorded(rig: Rig, engine: ContainerEngine) -> None:
    # Created only: a host without the NVIDIA runtime refuses to start it.
    spec = rig.spec("gpu", device_ids=("GPU-ds01conf-0", "MIG-ds01conf-1"))
    engine.create(spec)
    assert engine.inspect(spec.tag).device_ids == ("GPU-ds01conf-0", "MIG-ds01conf-1")


def test_inspect_by_id_and_id_prefix(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    container_id = engine.create(spec)
    assert len(container_id) == 64
    assert engine.inspect(container_id).info.tag == spec.tag
    assert engine.inspect(container_id[:12]).info.tag == spec.tag
    assert engine.exists(spec.tag) is True


def test_list_containers_filters_by_labels(rig: Rig, engine: ContainerEngine) -> None:
    a = rig.spec("a", labels={OWNER_LABEL: rig.prefix, "ds01conf.role": "a"})
    b = rig.spec("b", labels={OWNER_LABEL: rig.prefix, "ds01conf.role": "b", "ds01conf.x": ""})
    id_a, id_b = engine.create(a), engine.create(b)
    mine = f"{OWNER_LABEL}={rig.prefix}"

    def tags(labels: list[str]) -> list[str]:
        return sorted(c.tag for c in engine.list_containers(labels))

    assert tags([mine]) == [a.tag, b.tag]
    assert tags([mine, "ds01conf.role=a"]) == [a.tag]
    assert tags([mine, "ds01conf.x"]) == [b.tag]  # a key alone: present, any value
    assert tags([mine, "ds01conf.role=c"]) == []
    assert {a.tag, b.tag} <= {c.tag for c in engine.list_containers()}
    row = next(c for c in engine.list_containers([mine]) if c.id == id_a)
    details = engine.inspect(id_a)
    assert (row.tag, row.image, row.labels) == (a.tag, BASE_IMAGE, dict(a.labels))
    assert (row.state, row.status) == (ContainerState.CREATED, "Created")
    # A list row has whole seconds, inspect has the fraction too.
    assert row.created == details.info.created.replace(microsecond=0)
    assert id_b in {c.id for c in engine.list_containers([mine])}


def test_duplicate_name_is_a_conflict(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    first = engine.create(spec)
    assert _error(lambda: engine.create(spec)) == ("UsageError", "conflict")
    assert engine.inspect(spec.tag).info.id == first


def test_create_from_a_missing_image_is_not_found(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a", image=f"{rig.prefix}/missing:latest")
    assert _error(lambda: engine.create(spec)) == ("NotFoundError", "not_found")
    assert engine.exists(spec.tag) is False


def test_create_with_a_missing_bind_source_is_bad_input(rig: Rig, engine: ContainerEngine) -> None:
    missing = f"/nonexistent/{rig.prefix}"
    spec = rig.spec("a", mounts=(Mount(missing, "/data"),))
    assert _error(lambda: engine.create(spec)) == ("UsageError", "bad_input")
    assert engine.exists(spec.tag) is False


def test_start_stop_start(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    engine.start(spec.tag)
    up = engine.inspect(spec.tag)
    assert (up.info.state, up.info.status) == (ContainerState.RUNNING, "running")
    assert up.pid is not None and up.pid > 0
    assert up.started_at is not None and up.finished_at is None
    assert up.started_at >= up.info.created
    assert engine.list_containers([f"{OWNER_LABEL}={rig.prefix}"])[0].status.startswith("Up ")

    engine.start(spec.tag)  # running already: success, nothing changes
    again = engine.inspect(spec.tag)
    assert (again.pid, again.started_at) == (up.pid, up.started_at)

    engine.stop(spec.tag, timeout=5)
    down = engine.inspect(spec.tag)
    assert (down.info.state, down.info.status) == (ContainerState.EXITED, "exited")
    assert (down.pid, down.started_at) == (None, up.started_at)
    assert down.finished_at is not None and down.finished_at >= up.started_at
    row = engine.list_containers([f"{OWNER_LABEL}={rig.prefix}"])[0]
    assert row.status.startswith("Exited (")

    engine.stop(spec.tag)  # stopped already: success
    assert engine.inspect(spec.tag).finished_at == down.finished_at

    engine.start(spec.tag)
    restarted = engine.inspect(spec.tag)
    assert restarted.info.state is ContainerState.RUNNING
    assert restarted.started_at is not None and restarted.started_at >= down.finished_at
    # Docker keeps the last stop time while the container runs again.
    assert restarted.finished_at == down.finished_at


def test_stop_of_a_created_container_changes_nothing(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    engine.stop(spec.tag)
    details = engine.inspect(spec.tag)
    assert (details.info.state, details.started_at, details.finished_at) == (
        ContainerState.CREATED,
        None,
        None,
    )


def test_remove_running_needs_force(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    engine.start(spec.tag)
    assert _error(lambda: engine.remove(spec.tag)) == ("UsageError", "conflict")
    assert engine.inspect(spec.tag).info.state is ContainerState.RUNNING
    engine.remove(spec.tag, force=True)
    assert engine.exists(spec.tag) is False
    engine.remove(spec.tag)  # gone already: success
    engine.remove(spec.tag, force=True)


def test_remove_stopped_needs_no_force(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    engine.remove(spec.tag)
    assert engine.exists(spec.tag) is False
    assert engine.list_containers([f"{OWNER_LABEL}={rig.prefix}"]) == []


def test_every_operation_on_a_missing_container(rig: Rig, engine: ContainerEngine) -> None:
    name = rig.name("missing")
    not_found = ("NotFoundError", "not_found")
    assert _error(lambda: engine.inspect(name)) == not_found
    assert _error(lambda: engine.start(name)) == not_found
    assert _error(lambda: engine.stop(name)) == not_found
    assert _error(lambda: engine.top(name)) == not_found
    assert _error(lambda: engine.exec(name, ["true"], user="0:0")) == not_found
    assert _error(lambda: engine.stats(name)) == not_found
    assert _error(lambda: engine.put_archive(name, "/", b"")) == not_found
    assert _error(lambda: engine.diff(name)) == not_found
    assert engine.read_tree(name, "/etc") == {}
    assert engine.exists(name) is False
    engine.remove(name)
    engine.remove(name, force=True)


def test_top_shows_init_and_the_main_process(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    engine.start(spec.tag)
    pid = engine.inspect(spec.tag).pid
    rows = _top_once_the_child_runs(engine, spec.tag)
    columns = {"UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"}
    assert [set(r) for r in rows] == [columns, columns]
    init, main = rows
    assert (init["PID"], init["CMD"]) == (str(pid), "/sbin/docker-init -- sleep infinity")
    assert (main["PPID"], main["CMD"]) == (str(pid), "sleep infinity")


def _top_once_the_child_runs(engine: ContainerEngine, tag: str) -> list[dict[str, str]]:
    """``start`` returns before docker-init has forked its child: ask again (bounded)
    until the child is there, so the assertion never depends on the machine's load."""
    rows = engine.top(tag)
    for _ in range(500):
        if len(rows) >= 2:
            break
        time.sleep(0.01)
        rows = engine.top(tag)
    return rows


def test_top_and_exec_need_a_running_container(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    conflict = ("UsageError", "conflict")
    assert _error(lambda: engine.top(spec.tag)) == conflict
    assert _error(lambda: engine.exec(spec.tag, ["true"], user="0:0")) == conflict
    engine.start(spec.tag)
    engine.stop(spec.tag)
    assert _error(lambda: engine.top(spec.tag)) == conflict
    assert _error(lambda: engine.exec(spec.tag, ["true"], user="0:0")) == conflict


def test_stats_of_a_running_container(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a", limits=Limits(memory=128 * 1024**2))
    engine.create(spec)
    engine.start(spec.tag)
    sample = engine.stats(spec.tag)
    assert {"cpu_stats", "precpu_stats", "memory_stats", "pids_stats"} <= set(sample)
    assert sample["memory_stats"]["limit"] == 128 * 1024**2
    assert isinstance(sample["memory_stats"]["usage"], int)
    assert sample["pids_stats"] == {"current": 2}  # docker-init and sleep
    assert isinstance(sample["cpu_stats"]["cpu_usage"]["total_usage"], int)


def test_containers_of_image_are_exact(rig: Rig, engine: ContainerEngine) -> None:
    derived = rig.make_image("derived", {"ds01conf.image": rig.prefix})
    on_derived = rig.spec("a", image=derived.tags[0])
    on_base = rig.spec("b")
    engine.create(on_derived)
    engine.create(on_base)
    assert [c.tag for c in engine.containers_of_image(derived.id)] == [on_derived.tag]
    of_base = {c.tag for c in engine.containers_of_image(engine.inspect(on_base.tag).image_id)}
    assert on_base.tag in of_base and on_derived.tag not in of_base


def test_engine_facts(engine: ContainerEngine) -> None:
    driver = engine.cgroup_driver()
    assert driver in ("systemd", "cgroupfs")
    assert engine.info()["CgroupDriver"] == driver
    assert isinstance(engine.info()["ServerVersion"], str)


def test_not_found_is_a_usage_error(rig: Rig, engine: ContainerEngine) -> None:
    # Services catch NotFoundError; callers that catch UsageError must see it too.
    with pytest.raises(UsageError, match=r"^inspect container '.*missing': not found") as a:
        engine.inspect(rig.name("missing"))
    assert isinstance(a.value, NotFoundError)
    assert a.value.code == "not_found"
    with pytest.raises(NotFoundError, match=r"^start container '.*missing': not found") as b:
        engine.start(rig.name("missing"))
    assert b.value.code == "not_found"
