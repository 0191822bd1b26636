"""The no-follow mount resolver, the re-check before create, /proc identities and the
keep-alive executable (real files, real processes; no Docker)."""

from __future__ import annotations

import errno
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ds01.adapters.keepalive import keepalive_path, vetted
from ds01.adapters.mounted import identity_at, open_process
from ds01.adapters.user_fs import walk_user_dir
from ds01.domain.actor import Actor
from ds01.domain.containers import Mount
from ds01.domain.keepalive import MACHINES, keepalive_elf
from ds01.errors import UsageError
from ds01.services.container.mounts import check_mounts, check_unchanged, plan_mounts

DATA = Path(__file__).resolve().parents[3] / "src" / "ds01" / "data"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    return home


@pytest.fixture
def me(home: Path) -> Actor:
    return Actor(uid=os.getuid(), gid=os.getgid(), name="me", home=str(home))


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A home another uid can reach (pytest's own tmp dirs are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="ds01-resolver-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _ident(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


# -- walk_user_dir ----------------------------------------------------------------------


def test_walk_follows_relative_and_absolute_links_and_dotdot(me: Actor, home: Path) -> None:
    (home / "a" / "b").mkdir(parents=True)
    (home / "rel").symlink_to("a/b")
    (home / "abs").symlink_to(home / "a")
    (home / "chain").symlink_to("abs/b/../b")
    for given in ("rel", "abs/b", "chain", "a/./b/../b"):
        real, st = walk_user_dir(me, home / given, follow=True)
        assert real == home / "a" / "b", given
        assert (st.st_dev, st.st_ino) == _ident(home / "a" / "b")


def test_walk_without_follow_refuses_a_link_anywhere(me: Actor, home: Path) -> None:
    (home / "real" / "inner").mkdir(parents=True)
    (home / "link").symlink_to(home / "real")
    (home / "real" / "leaf").symlink_to(home / "real" / "inner")
    for given in (home / "link" / "inner", home / "real" / "leaf"):
        with pytest.raises(OSError) as err:
            walk_user_dir(me, given, follow=False)
        assert err.value.errno == errno.ELOOP


def test_walk_refuses_files_unless_last_and_allowed(me: Actor, home: Path) -> None:
    (home / "f").write_text("x")
    with pytest.raises(OSError) as err:
        walk_user_dir(me, home / "f", follow=False)
    assert err.value.errno == errno.ENOTDIR
    with pytest.raises(OSError) as err:
        walk_user_dir(me, home / "f" / "below", follow=False, file_ok=True)
    assert err.value.errno == errno.ENOTDIR
    real, st = walk_user_dir(me, home / "f", follow=False, file_ok=True)
    assert real == home / "f" and st.st_size == 1


def test_walk_stops_a_link_loop(me: Actor, home: Path) -> None:
    (home / "x").symlink_to("y")
    (home / "y").symlink_to("x")
    with pytest.raises(OSError) as err:
        walk_user_dir(me, home / "x", follow=True)
    assert err.value.errno == errno.ELOOP


def test_walk_checks_search_rights_of_the_actor_not_the_process(open_home: Path) -> None:
    # The process may be root (a grant in enforce): the owner's mode bits decide.
    locked = open_home / "locked"
    (locked / "inside").mkdir(parents=True)
    locked.chmod(0o700)
    stranger = Actor(uid=os.getuid() + 4242, gid=os.getgid() + 4242, name="nobody-x", home="/")
    try:
        with pytest.raises(OSError) as err:
            walk_user_dir(stranger, locked / "inside", follow=True)
        assert err.value.errno == errno.EACCES
        # The directory itself may be named (its own rights are the caller's check).
        assert walk_user_dir(stranger, locked, follow=True)[0] == locked
    finally:
        locked.chmod(0o755)


def test_a_link_swapped_in_mid_walk_is_seen_not_followed(me: Actor, home: Path) -> None:
    """The walk holds descriptors: renaming the checked directory away and putting a
    link in its place after the walk changes nothing about what was returned."""
    (home / "sw").mkdir()
    real, st = walk_user_dir(me, home / "sw", follow=True)
    (home / "sw").rename(home / "moved")
    (home / "sw").symlink_to("/")
    assert (st.st_dev, st.st_ino) == _ident(home / "moved") != _ident(Path("/"))
    with pytest.raises(OSError) as err:
        walk_user_dir(me, real, follow=False)
    assert err.value.errno == errno.ELOOP  # the link now at the checked name, not followed


# -- plan and re-check --------------------------------------------------------------------


class _Settings:
    """The two settings plan_mounts reads."""

    class container:  # mirrors settings.container
        allowed_mount_roots = ("~",)

    def __init__(self, home: Path) -> None:
        self.home = home

    def workspace_base(self, user: str, home: str) -> Path:
        return Path(home) / "workspace"


def test_plan_resolves_links_inside_home_and_refuses_escapes(me: Actor, home: Path) -> None:
    (home / "d").mkdir()
    (home / "ok").symlink_to(home / "d")
    (home / "out").symlink_to("/etc")
    settings = _Settings(home)
    plan = plan_mounts(
        settings,  # type: ignore[arg-type]
        me,
        name="p",
        workspace="~/ok",
        data=None,
        models=None,
        cwd=home,
    )
    assert plan.workspace == home / "d"
    with pytest.raises(UsageError) as err:
        plan_mounts(
            settings,  # type: ignore[arg-type]
            me,
            name="p",
            workspace=None,
            data="~/out",
            models=None,
            cwd=home,
        )
    assert err.value.code == "path_not_allowed"


def test_check_mounts_refuses_a_source_swapped_for_a_link(me: Actor, home: Path) -> None:
    (home / "sw").mkdir()
    settings = _Settings(home)
    checked = check_mounts(settings, me, [Mount(str(home / "sw"), "/workspace")])  # type: ignore[arg-type]
    assert (checked[0].dev, checked[0].ino) == _ident(home / "sw")
    (home / "sw").rename(home / "sw.real")
    (home / "sw").symlink_to(home / "sw.real")  # even a link to a fine place: not the path
    with pytest.raises(UsageError) as err:
        check_mounts(settings, me, [Mount(str(home / "sw"), "/workspace")])  # type: ignore[arg-type]
    assert err.value.code == "mount_changed" and err.value.exit_code == 2
    with pytest.raises(UsageError) as err:
        check_unchanged([str(home / "sw")], me)
    assert err.value.code == "mount_changed"


def test_check_mounts_refuses_dotdot_and_outside_roots(
    me: Actor, home: Path, tmp_path: Path
) -> None:
    (home / "d").mkdir()
    settings = _Settings(home)
    with pytest.raises(UsageError) as err:
        check_mounts(settings, me, [Mount(str(home / "d") + "/../d", "/data")])  # type: ignore[arg-type]
    assert err.value.code == "mount_changed"
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(UsageError) as err:
        check_mounts(settings, me, [Mount(str(outside), "/data")])  # type: ignore[arg-type]
    assert err.value.code == "path_not_allowed"


def test_check_mounts_makes_an_unwritable_data_dir_read_only(open_home: Path) -> None:
    home = open_home
    shared = home / "shared"
    shared.mkdir(mode=0o755)
    other = Actor(uid=os.getuid() + 4242, gid=os.getgid() + 4242, name="o", home=str(home))
    got = check_mounts(_Settings(home), other, [Mount(str(shared), "/data")])  # type: ignore[arg-type]
    assert got[0].mount.read_only
    with pytest.raises(UsageError) as err:
        check_mounts(_Settings(home), other, [Mount(str(shared), "/workspace")])  # type: ignore[arg-type]
    assert err.value.code == "path_not_allowed"


# -- /proc identities ---------------------------------------------------------------------


def test_identity_through_proc_root_matches_and_refuses_links(home: Path) -> None:
    (home / "d").mkdir()
    (home / "l").symlink_to(home / "d")
    with open_process(os.getpid()) as proc_fd:
        assert identity_at(proc_fd, str(home / "d")) == _ident(home / "d")
        # A link is opened as itself: its identity is not the directory's.
        assert identity_at(proc_fd, str(home / "l")) != _ident(home / "d")


# -- keep-alive ---------------------------------------------------------------------------


@pytest.mark.parametrize("machine", MACHINES)
def test_shipped_keepalives_are_the_generated_bytes(machine: str) -> None:
    shipped = DATA / f"keepalive-{machine}"
    assert shipped.read_bytes() == keepalive_elf(machine)
    assert os.stat(shipped).st_mode & 0o555 == 0o555


@pytest.mark.skipif(platform.machine() != "x86_64", reason="runs the x86-64 build natively")
def test_keepalive_waits_until_a_signal_ends_it() -> None:
    proc = subprocess.Popen([str(DATA / "keepalive-x86_64")])
    try:
        with pytest.raises(subprocess.TimeoutExpired, match=r"timed out after 0\.3 seconds"):
            proc.wait(timeout=0.3)  # still waiting: it only ever sleeps
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_keepalive_path_is_vetted_and_real() -> None:
    path = keepalive_path()
    if platform.machine() in MACHINES:
        assert path is not None and path.is_file() and not path.is_symlink()
    assert keepalive_path("mips") is None


def test_a_keepalive_others_could_replace_is_refused(tmp_path: Path) -> None:
    exe = tmp_path / "open" / "keepalive"
    exe.parent.mkdir()
    exe.write_bytes(keepalive_elf("x86_64"))
    exe.chmod(0o755)
    exe.parent.chmod(0o777)
    with pytest.raises(UsageError) as err:
        vetted(exe)
    assert err.value.code == "keepalive_untrusted"


def test_a_root_owned_sticky_directory_above_the_keepalive_is_accepted(tmp_path: Path) -> None:
    """/tmp-like: others may add entries there but not replace ours (CI may clone there)."""
    if os.geteuid() != 0:
        pytest.skip("the sticky directory must be root's")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    exe = sticky / "install" / "keepalive"
    exe.parent.mkdir()
    exe.parent.chmod(0o755)
    exe.write_bytes(keepalive_elf("x86_64"))
    exe.chmod(0o755)
    assert vetted(exe) == exe.resolve()
    sticky.chmod(0o777)  # the same directory without the sticky bit is not safe
    with pytest.raises(UsageError, match="is writable by others") as err:
        vetted(exe)
    assert err.value.code == "keepalive_untrusted"
