"""``exec`` (container exec, has_sessions), the archive calls (install_user reads /etc and
writes the user in) and ``diff`` (retire reads pip's additions), on both engines."""

from __future__ import annotations

import io
import tarfile

import pytest

from ds01.domain.engine_types import ContainerFile, ExecResult
from ds01.errors import NotFoundError
from ds01.ports import ContainerEngine
from tests.conformance.conftest import SH_SCRIPT, Rig


def _running(rig: Rig, engine: ContainerEngine) -> str:
    spec = rig.spec("a")
    engine.create(spec)
    engine.start(spec.tag)
    return spec.tag


def _tar() -> bytes:
    """A directory ``ds01conf`` (0750, 1234:5678) holding ``x`` (0640, ``abc``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entry = tarfile.TarInfo("ds01conf")
        entry.type, entry.mode, entry.uid, entry.gid = tarfile.DIRTYPE, 0o750, 1234, 5678
        tar.addfile(entry)
        entry = tarfile.TarInfo("ds01conf/x")
        entry.size, entry.mode, entry.uid, entry.gid = 3, 0o640, 1234, 5678
        tar.addfile(entry, io.BytesIO(b"abc"))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("true",), ExecResult(0, b"", b"")),
        (("false",), ExecResult(1, b"", b"")),
        (("echo", "hi"), ExecResult(0, b"hi\n", b"")),
        (SH_SCRIPT, ExecResult(3, b"out\n", b"err\n")),
    ],
)
def test_exec_exit_code_and_output(
    rig: Rig, engine: ContainerEngine, argv: tuple[str, ...], expected: ExecResult
) -> None:
    tag = _running(rig, engine)
    assert engine.exec(tag, argv, user="0:0", workdir="/", env={"A": "1"}) == expected


def test_exec_hands_the_streams_to_on_output(rig: Rig, engine: ContainerEngine) -> None:
    tag = _running(rig, engine)
    out: list[bytes] = []
    err: list[bytes] = []

    def collect(chunk_out: bytes | None, chunk_err: bytes | None) -> None:
        assert (chunk_out is None) != (chunk_err is None)  # one stream per chunk
        out.append(chunk_out or b"")
        err.append(chunk_err or b"")

    result = engine.exec(tag, SH_SCRIPT, user="0:0", on_output=collect)
    assert result == ExecResult(3, b"", b"")  # handed over, not kept
    assert (b"".join(out), b"".join(err)) == (b"out\n", b"err\n")


def test_put_archive_then_read_tree(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)  # created, not started: install_user runs before the first start
    engine.put_archive(spec.tag, "/", _tar())
    stored = ContainerFile(b"abc", 0o100640, 1234, 5678)
    assert engine.read_tree(spec.tag, "/ds01conf") == {"ds01conf": None, "ds01conf/x": stored}
    assert engine.read_tree(spec.tag, "/ds01conf/x") == {"x": stored}
    assert engine.read_tree(spec.tag, f"/{rig.prefix}-missing") == {}


def test_put_archive_below_a_directory(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    engine.put_archive(spec.tag, "/", _tar())
    engine.put_archive(spec.tag, "/ds01conf", _tar())
    assert set(engine.read_tree(spec.tag, "/ds01conf")) == {
        "ds01conf",
        "ds01conf/x",
        "ds01conf/ds01conf",
        "ds01conf/ds01conf/x",
    }


def test_put_archive_into_a_missing_directory_is_not_found(
    rig: Rig, engine: ContainerEngine
) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    with pytest.raises(NotFoundError, match=r"^copy files into '.*': not found"):
        engine.put_archive(spec.tag, f"/{rig.prefix}-missing", _tar())


def test_diff_lists_what_was_added(rig: Rig, engine: ContainerEngine) -> None:
    spec = rig.spec("a")
    engine.create(spec)
    engine.put_archive(spec.tag, "/", _tar())
    ours = [c for c in engine.diff(spec.tag) if str(c["Path"]).startswith("/ds01conf")]
    assert ours == [{"Path": "/ds01conf", "Kind": 1}, {"Path": "/ds01conf/x", "Kind": 1}]
