"""The in-memory engine's own knobs, which Docker has no counterpart for (so they are not
in ``tests/conformance``): seeding, programmable exec/stats, sessions, injected failures,
the clock, the registry behind ``pull``, and that it imports without the Docker SDK."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from ds01.adapters.clock import FixedClock
from ds01.adapters.memory_engine import ExecCall, MemoryEngine, MemoryMountProbe
from ds01.adapters.memory_images import epoch
from ds01.adapters.memory_status import human_duration
from ds01.adapters.mounted import ProcMountProbe
from ds01.domain.containers import ContainerSpec, ContainerState, Mount
from ds01.domain.engine_types import ContainerFile, ExecResult
from ds01.errors import EngineError, ErrorCode, NotFoundError, UsageError
from ds01.services.container.mount_verify import verify_mounted
from ds01.services.container.mounts import CheckedMount

IMAGE = "base:latest"


def _engine() -> tuple[MemoryEngine, FixedClock]:
    clock = FixedClock(epoch())
    engine = MemoryEngine(clock)
    engine.add_image(
        IMAGE, files={"etc": None, "etc/passwd": ContainerFile(b"root\n", 0o100644, 0, 0)}
    )
    return engine, clock


def _spec(name: str = "c1", **labels: str) -> ContainerSpec:
    return ContainerSpec(tag=name, image=IMAGE, labels=labels, user="1000:1000", entrypoint=())


def test_imports_without_the_docker_sdk() -> None:
    code = (
        "import sys; sys.modules['docker'] = None; sys.modules['requests'] = None\n"
        "import ds01.adapters.memory_engine, ds01.ports, ds01.domain.engine_types\n"
        "assert 'docker' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_times_come_from_the_clock() -> None:
    engine, clock = _engine()
    engine.create(_spec())
    clock.advance(timedelta(minutes=5))
    engine.start("c1")
    clock.advance(timedelta(hours=2))
    assert engine.list_containers()[0].status == "Up 2 hours"
    engine.stop("c1")
    clock.advance(timedelta(seconds=30))
    details = engine.inspect("c1")
    assert (details.info.created, details.started_at, details.finished_at) == (
        epoch(),
        epoch() + timedelta(minutes=5),
        epoch() + timedelta(minutes=5, hours=2),
    )
    assert (details.exit_code, engine.list_containers()[0].status) == (
        143,
        "Exited (143) 30 seconds ago",
    )


def test_ids_and_pids_are_deterministic() -> None:
    first, second = _engine()[0], _engine()[0]
    for engine in (first, second):
        engine.create(_spec())
        engine.start("c1")
    assert first.inspect("c1") == second.inspect("c1")
    assert first.image(IMAGE) == second.image(IMAGE)


def test_exec_default_answer_handler_and_record() -> None:
    engine, _ = _engine()
    engine.create(_spec())
    engine.start("c1")
    assert engine.exec("c1", ["anything"], user="1000:1000") == ExecResult(0, b"", b"")
    engine.respond(["id", "-u"], stdout=b"1000\n")
    assert engine.exec("c1", ["id", "-u"], user="u", workdir="/w", env={"A": "1"}).stdout == (
        b"1000\n"
    )
    engine.exec_handler = lambda call: ExecResult(7, b"", b"") if call.user == "root" else None
    assert engine.exec("c1", ["id", "-u"], user="root").exit_code == 7
    assert engine.exec("c1", ["id", "-u"], user="u").exit_code == 0  # handler passed
    assert engine.exec_calls[1] == ExecCall("c1", ("id", "-u"), "u", "/w", {"A": "1"})
    assert engine.interactive_exec("c1", ["sh"], user="u", workdir="/", env={}) == 0
    assert engine.exec_calls[-1].interactive is True
    # The docker CLI's answer for a container that is not there: exit 1, no exception.
    assert engine.interactive_exec("nope", ["sh"], user="u", workdir="/", env={}) == 1


def test_sessions_show_in_top_and_stats_until_stop() -> None:
    engine, _ = _engine()
    engine.create(_spec())
    engine.start("c1")
    pid = engine.add_session("c1", "bash -l")
    rows = engine.top("c1")
    assert [(r["PID"], r["CMD"]) for r in rows][2] == (str(pid), "bash -l")
    assert engine.stats("c1")["pids_stats"] == {"current": 3}
    engine.stop("c1")
    engine.start("c1")
    assert len(engine.top("c1")) == 2
    engine.stop("c1")
    with pytest.raises(UsageError, match="is not running") as caught:  # no sessions when stopped
        engine.add_session("c1", "bash")
    assert caught.value.code == "conflict"


def test_set_stats_and_set_state() -> None:
    engine, _ = _engine()
    engine.create(_spec())
    engine.set_stats("c1", {"pids_stats": {"current": 9}})
    assert engine.stats("c1") == {"pids_stats": {"current": 9}}
    engine.set_state("c1", ContainerState.RUNNING)
    engine.set_state("c1", ContainerState.EXITED, exit_code=137)  # killed (OOM)
    details = engine.inspect("c1")
    assert (details.info.state, details.exit_code, details.pid) == (
        ContainerState.EXITED,
        137,
        None,
    )


def test_fail_next_raises_once() -> None:
    engine, _ = _engine()
    engine.create(_spec())
    engine.fail_next("start", EngineError("the engine stopped", code=ErrorCode.ENGINE_DOWN))
    with pytest.raises(EngineError, match=r"^the engine stopped$") as caught:
        engine.start("c1")
    assert caught.value.code == "engine_down"
    assert engine.inspect("c1").info.state is ContainerState.CREATED
    engine.start("c1")
    assert engine.inspect("c1").info.state is ContainerState.RUNNING


def test_pull_copies_from_the_registry() -> None:
    engine, _ = _engine()
    remote = engine.add_image("vendor/pytorch:2", labels={"v": "2"}, local=False)
    assert engine.image("vendor/pytorch:2") is None
    events: list[str] = []
    engine.pull("vendor/pytorch:2", lambda e: events.append(str(e["status"])))
    assert engine.image("vendor/pytorch:2") == remote
    assert events == [
        "Pulling from vendor/pytorch:2",
        "Status: Downloaded newer image for vendor/pytorch:2",
    ]
    with pytest.raises(NotFoundError, match=r"^pull 'vendor/missing:1': not found"):
        engine.pull("vendor/missing:1")


def test_image_files_seed_containers_and_a_tag_moves() -> None:
    engine, _ = _engine()
    old = engine.image(IMAGE)
    assert old is not None
    engine.create(_spec())
    assert engine.read_tree("c1", "/etc") == {
        "etc": None,
        "etc/passwd": ContainerFile(b"root\n", 0o100644, 0, 0),
    }
    new = engine.add_image(IMAGE, parent=old.id, labels={"rebuilt": "1"})
    moved = engine.image(old.id)
    assert moved is not None and moved.tags == ()
    assert engine.image(IMAGE) == new


def test_diff_marks_a_replaced_image_file_as_changed() -> None:
    engine, _ = _engine()
    engine.create(_spec())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entry = tarfile.TarInfo("etc/passwd")
        entry.size = 2
        tar.addfile(entry, io.BytesIO(b"x\n"))
    engine.put_archive("c1", "/", buf.getvalue())
    assert engine.diff("c1") == [{"Path": "/etc", "Kind": 0}, {"Path": "/etc/passwd", "Kind": 0}]


def test_invalid_name_is_bad_input() -> None:
    engine, _ = _engine()
    with pytest.raises(UsageError) as caught:
        engine.create(_spec("bad name"))
    assert caught.value.code == "bad_input"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (3599, "59 minutes"),
        (3600, "About an hour"),
        (5399, "About an hour"),
        (5400, "2 hours"),
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (14 * 86400, "2 weeks"),
        (60 * 86400, "2 months"),
        (2 * 365 * 86400, "2 years"),
    ],
)
def test_human_duration_words_it_as_docker(seconds: float, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text


def test_mount_verification_through_proc_finds_no_process(tmp_path: Path) -> None:
    """Its pids are no host's: the host's /proc probe fails safe (exit 1) instead of
    reading a stranger's mounts."""
    engine, _ = _engine()
    engine.create(replace(_spec(), mounts=(Mount(str(tmp_path), "/workspace"),)))
    engine.start("c1")
    st = os.stat(tmp_path)
    checked = (CheckedMount(Mount(str(tmp_path), "/workspace"), st.st_dev, st.st_ino),)
    with pytest.raises(EngineError) as caught:
        verify_mounted(engine, ProcMountProbe(), "c1", checked, what_next="removed")
    assert caught.value.code == "mount_unverified"


def test_memory_probe_sees_what_the_source_resolved_to_at_start(tmp_path: Path) -> None:
    """The memory probe answers from the start: the checked directory passes; a directory
    swapped for a link before the start is what "Docker" mounted, and is refused."""
    engine, _ = _engine()
    work = tmp_path / "work"
    work.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    engine.create(replace(_spec(), mounts=(Mount(str(work), "/workspace"),)))
    st = os.stat(work)
    checked = (CheckedMount(Mount(str(work), "/workspace"), st.st_dev, st.st_ino),)
    engine.start("c1")
    verify_mounted(engine, MemoryMountProbe(engine), "c1", checked, what_next="removed")

    engine.stop("c1")
    work.rmdir()
    work.symlink_to(other)  # the race: swapped between the check and the start
    engine.start("c1")
    with pytest.raises(UsageError, match="What Docker mounted at /workspace is not the") as c:
        verify_mounted(engine, MemoryMountProbe(engine), "c1", checked, what_next="removed")
    assert c.value.code == "mount_changed"
    assert c.value.details == {"target": "/workspace", "source": str(work)}


def test_memory_probe_knows_no_stopped_container(tmp_path: Path) -> None:
    engine, _ = _engine()
    engine.create(replace(_spec(), mounts=(Mount(str(tmp_path), "/workspace"),)))
    engine.start("c1")
    pid = engine.inspect("c1").pid
    assert pid is not None
    engine.stop("c1")
    probe = MemoryMountProbe(engine)
    with pytest.raises(ProcessLookupError, match="no such process"), probe.open_process(pid):
        pass
