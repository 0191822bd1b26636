"""The race between DS01's mount check and Docker's mount (issue 10, finding 2).

A user swaps a directory of theirs for a symlink to another user's home (or to ``/``)
and back, atomically and as fast as the machine allows, while DS01 creates, starts or
grants a container that mounts it. Whatever the timing, DS01 must either refuse (exit 2,
and no container, or for ``start`` a stopped one) or hand over a container whose mount
is the very directory it checked: never bob's home, never the host's root.

The check of each attempt is independent of DS01's code: ``os.stat`` of the mount target
through ``/proc/<init pid>/root`` (the test runs as root) against the inode of the real
directory, which the swaps never change (``renameat2(RENAME_EXCHANGE)`` swaps names).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.domain.actor import Actor
from ds01.errors import UsageError
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.context import AppContext
from tests.integration.conftest import Ds01Env

pytestmark = pytest.mark.docker

ATTEMPTS = 50
ARCH = ("--arch", "CUDA_ADA")

#: Swaps two names atomically, forever: the directory and a prepared symlink.
SWAPPER = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
swap = libc.renameat2
while True:
    swap(-100, a, -100, b, 2)  # AT_FDCWD, RENAME_EXCHANGE
"""


class Swapper:
    """Alice's process flipping ``path`` between a real directory and a link to
    ``target`` (as alice: only what she may do to her own files)."""

    def __init__(self, user: Actor, path: Path, target: str) -> None:
        self.path, self.link = path, path.with_name(path.name + ".swap")
        if not path.is_dir():
            _as(user, ["mkdir", "-p", str(path)])
        if not self.link.is_symlink():
            _as(user, ["ln", "-s", target, str(self.link)])
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Swapper:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SWAPPER, str(self.path), str(self.link)],
            user=self.user.uid,
            group=self.user.gid,
            extra_groups=[],
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if self.path.is_symlink():  # stopped mid-swap: put the directory back
            os.rename(self.path, self.path.with_name("tmp-swap"))
            os.rename(self.link, self.path)
            os.rename(self.path.with_name("tmp-swap"), self.link)


def _as(user: Actor, argv: list[str]) -> None:
    subprocess.run(["runuser", "-u", user.name, "--", *argv], check=True)


def _ident(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _mounted(engine: DockerEngine, tag: str, target: str) -> tuple[tuple[int, int], str]:
    """What the running container really has at ``target``, and Docker's record of it."""
    details = engine.inspect(tag)
    assert details.pid, f"{tag} is not running: {details.info.status} exit {details.exit_code}"
    source = next(m["Source"] for m in details.mounts if m["Destination"] == target)
    return _ident(f"/proc/{details.pid}/root{target}"), source


@dataclass
class Race:
    env: Ds01Env
    engine: DockerEngine
    alice: Actor
    bob: Actor
    home: Path  # alice's


@pytest.fixture
def race(ds01_env: Ds01Env, engine: DockerEngine, alice: Actor, bob: Actor) -> Iterator[Race]:
    home = Path(alice.home)
    yield Race(ds01_env, engine, alice, bob, home)
    for path in (home / "sw", home / "sw.swap", home / "ws-evil", home / "moved"):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            subprocess.run(["rm", "-rf", str(path)], check=False)


def _create_attempts(
    race: Race, name: str, flags: list[str], *, target: str, real: Path
) -> Counter[str]:
    env, engine, alice = race.env, race.engine, race.alice
    expected = _ident(real)
    tag = f"{name}._.{alice.uid}"
    seen: Counter[str] = Counter()
    for _ in range(ATTEMPTS):
        res = env.run_cli(alice.name, "container", "create", name, "--cpu-only", *ARCH, *flags)
        if res.returncode == 2:
            assert not engine.exists(tag), f"refused but left {tag}: {res.stderr}"
            assert "Traceback" not in res.stderr
            seen["refused"] += 1
            continue
        assert res.returncode == 0, res.stderr
        ident, source = _mounted(engine, tag, target)
        assert ident == expected, f"{target} is not the checked {real}: {source}"
        assert source == str(real)
        engine.remove(tag, force=True)
        seen["created"] += 1
    print(f"{name} {flags}: {dict(seen)}")
    return seen


@pytest.mark.parametrize(
    ("flag", "target", "link_to"),
    [
        ("-w", "/workspace", "bob"),
        ("-d", "/data", "/"),
        ("-m", "/models", "bob"),
    ],
)
def test_create_with_a_swapped_mount_flag(race: Race, flag: str, target: str, link_to: str) -> None:
    sw = race.home / "sw"
    with Swapper(race.alice, sw, race.bob.home if link_to == "bob" else link_to):
        _create_attempts(race, f"race{flag[1]}", [flag, str(sw)], target=target, real=sw)


@pytest.mark.parametrize("what", ["project", "workspace-root"])
def test_create_with_the_default_workspace_swapped(race: Race, what: str) -> None:
    """What alice can swap under ``~/workspace/NAME``: the project directory itself, or
    ``~/workspace`` (for a directory whose ``NAME`` is a link to bob's home)."""
    alice, name = race.alice, "racedef"
    workspace = race.home / "workspace"
    project = workspace / name
    _as(alice, ["mkdir", "-p", str(project)])
    if what == "project":
        swapped, link_to = project, race.bob.home
    else:
        evil = race.home / "ws-evil"
        _as(alice, ["mkdir", "-p", str(evil)])
        if not (evil / name).is_symlink():
            _as(alice, ["ln", "-s", race.bob.home, str(evil / name)])
        swapped, link_to = workspace, str(evil)
    try:
        with Swapper(alice, swapped, link_to):
            _create_attempts(race, name, [], target="/workspace", real=project)
    finally:
        link = swapped.with_name(swapped.name + ".swap")
        if link.is_symlink():
            link.unlink()


def test_start_of_a_stopped_container_with_a_swapped_mount(race: Race) -> None:
    env, engine, alice = race.env, race.engine, race.alice
    sw = race.home / "sw"
    _as(alice, ["mkdir", "-p", str(sw)])
    made = env.run_cli(
        alice.name, "container", "create", "racest", "--cpu-only", *ARCH, "-d", str(sw)
    )
    assert made.returncode == 0, made.stderr
    tag = f"racest._.{alice.uid}"
    expected = _ident(sw)
    seen: Counter[str] = Counter()
    with Swapper(alice, sw, "/"):
        for _ in range(ATTEMPTS):
            engine.stop(tag, timeout=1)
            res = env.run_cli(alice.name, "container", "start", "racest")
            if res.returncode == 2:
                assert not engine.inspect(tag).info.state.is_active, res.stderr
                seen["refused"] += 1
                continue
            assert res.returncode == 0, res.stderr
            assert _mounted(engine, tag, "/data")[0] == expected
            seen["started"] += 1
    print(f"start: {dict(seen)}")


def test_queue_grant_as_root_with_a_swapped_mount(race: Race) -> None:
    """The single GPU is bob's; alice queues a container mounting ~/sw; bob's container
    goes; root's enforcement pass grants alice's request while ~/sw flips."""
    env, engine, alice, bob = race.env, race.engine, race.alice, race.bob
    sw = race.home / "sw"
    _as(alice, ["mkdir", "-p", str(sw)])
    expected, tag = _ident(sw), f"raceq._.{alice.uid}"
    seen: Counter[str] = Counter()
    with Swapper(alice, sw, bob.home):
        for i in range(ATTEMPTS):
            if engine.exists(tag):  # granted later by another queue pass: checked the same
                assert _mounted(engine, tag, "/workspace")[0] == expected
                engine.remove(tag, force=True)
                seen["granted later"] += 1
            # A new name each time: a removal still finishing never collides with a create.
            hold = env.run_cli(bob.name, "container", "create", f"hold{i}", "--gpus", "1", *ARCH)
            assert hold.returncode == 0, hold.stderr
            res = env.run_cli(
                alice.name,
                "container",
                "create",
                "raceq",
                "--gpus",
                "1",
                "--wait",
                *ARCH,
                "-w",
                str(sw),
            )
            engine.remove(f"hold{i}._.{bob.uid}", force=True)
            if res.returncode == 2:
                seen["refused at create"] += 1
                continue
            assert res.returncode == 4, res.stderr  # queued behind bob
            grant = env.run_cli(None, "enforce", "--json")
            assert grant.returncode in (0, 1), grant.stderr
            if not engine.exists(tag):
                seen["refused at grant"] += 1
                continue
            assert _mounted(engine, tag, "/workspace")[0] == expected
            engine.remove(tag, force=True)
            seen["granted"] += 1
    print(f"grant: {dict(seen)}")


# -- deterministic: the swap lands exactly between the check and Docker's start ----------


class SwappingEngine(DockerEngine):
    """The real engine, with the adversary's move made right before each start."""

    def __init__(self, swap: Path, link: Path) -> None:
        super().__init__()
        self.swap, self.link = swap, link

    def start(self, name: str) -> None:
        os.rename(self.swap, self.swap.with_name("moved"))
        os.rename(self.link, self.swap)
        super().start(name)


def test_a_swap_right_before_the_start_is_caught(race: Race) -> None:
    env, engine, alice = race.env, race.engine, race.alice
    sw = race.home / "sw"
    _as(alice, ["mkdir", "-p", str(sw)])
    link = race.home / "sw.swap"
    link.symlink_to("/")
    ctx = AppContext(settings=env.settings(), actor=alice, engine=SwappingEngine(sw, link))
    with pytest.raises(UsageError) as err:
        CreateService(ctx).create(
            alice, CreateRequest(name="racex", cpu_only=True, arch="CUDA_ADA", data=str(sw))
        )
    assert err.value.code == "mount_changed" and err.value.exit_code == 2
    assert not engine.exists(f"racex._.{alice.uid}")
    # The same for a start of the existing container.
    os.rename(sw, link)
    os.rename(race.home / "moved", sw)
    ok = CreateService(env.context(alice)).create(
        alice, CreateRequest(name="racex", cpu_only=True, arch="CUDA_ADA", data=str(sw))
    )
    engine.stop(ok.container, timeout=1)
    with pytest.raises(UsageError) as err:
        ContainerService(ctx).start(alice, "racex")
    assert err.value.code == "mount_changed"
    assert not engine.inspect(ok.container).info.state.is_active
    os.unlink(sw)
    os.rename(race.home / "moved", sw)


def test_an_image_entrypoint_does_not_run(race: Race, tmp_path: Path) -> None:
    """A custom image's ENTRYPOINT (and its own ``sleep``) would run before the check:
    DS01 runs neither, its keep-alive comes from the host."""
    env, engine, alice = race.env, race.engine, race.alice
    ctxdir = tmp_path / "img"
    ctxdir.mkdir()
    (ctxdir / "Dockerfile").write_text(
        "FROM ds01-test/bookworm-base:latest\n"
        'ENTRYPOINT ["/bin/sh", "-c", "touch /workspace/entrypoint-ran; exec \\"$@\\"", "x"]\n'
    )
    image = "ds01t-race-entrypoint:latest"
    subprocess.run(["docker", "build", "-q", "-t", image, str(ctxdir)], check=True)
    try:
        res = env.run_cli(
            alice.name, "container", "create", "raceep", "--cpu-only", "--image", image
        )
        assert res.returncode == 0, res.stderr
        tag = f"raceep._.{alice.uid}"
        assert engine.inspect(tag).info.state.is_active
        assert not (race.home / "workspace" / "raceep" / "entrypoint-ran").exists()
        top = " ".join(" ".join(p.values()) for p in engine.top(tag))
        assert "/sbin/ds01-keepalive" in top and "sleep" not in top
    finally:
        engine.remove(f"raceep._.{alice.uid}", force=True)
        subprocess.run(["docker", "rmi", "-f", image], check=False, capture_output=True)
