"""User paths: roots, checks, and symlink-proof creation, reading and appending (real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ds01.adapters.user_fs import (
    append_user_file,
    make_user_dirs,
    read_user_file,
    resolve_user_path,
    user_roots,
)
from ds01.domain.actor import Actor
from ds01.errors import UsageError


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    return home


@pytest.fixture
def me(home: Path) -> Actor:
    return Actor(uid=os.getuid(), gid=os.getgid(), name="me", home=str(home))


def test_roots_come_from_the_home_not_from_links_inside_it(me: Actor, home: Path) -> None:
    (home / "workspace").symlink_to("/")
    assert user_roots(me, ["~"]) == [home]
    with pytest.raises(UsageError) as err:
        resolve_user_path(
            me,
            "~/workspace/etc",
            what="data directory",
            roots=user_roots(me, ["~"]),
            cwd=home,
            directory=True,
        )
    assert err.value.code == "path_not_allowed" and err.value.exit_code == 2


def test_another_users_home_is_refused(me: Actor, home: Path) -> None:
    with pytest.raises(
        UsageError, match=r"^The data directory path '~root/x' names another user's home\.$"
    ):
        resolve_user_path(
            me, "~root/x", what="data directory", roots=[home], cwd=home, directory=True
        )


def test_a_path_inside_the_roots_resolves(me: Actor, home: Path) -> None:
    (home / "data").mkdir()
    (home / "data-link").symlink_to(home / "data")
    got = resolve_user_path(
        me, "data-link", what="data directory", roots=[home], cwd=home, directory=True
    )
    assert got == home / "data"


def test_make_user_dirs_creates_and_rolls_back(me: Actor, home: Path) -> None:
    made = make_user_dirs(me, home, home / "workspace" / "proj")
    assert (home / "workspace" / "proj").is_dir()
    assert made.paths == [home / "workspace", home / "workspace" / "proj"]
    made.rollback()
    assert not (home / "workspace").exists()


def test_make_user_dirs_refuses_a_symlink_on_the_way(me: Actor, home: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (home / "workspace").symlink_to(target)
    with pytest.raises(UsageError) as err:
        make_user_dirs(me, home, home / "workspace" / "ssh.service.d")
    assert err.value.code == "symlink_refused"
    assert list(target.iterdir()) == []  # nothing was created through the link


def test_read_user_file_refuses_a_symlink(me: Actor, home: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("top secret")
    (home / "reqs.txt").symlink_to(secret)
    with pytest.raises(UsageError, match=r"reqs.txt is, or passes through, a symbolic link"):
        read_user_file(me, home / "reqs.txt", what="requirements file")
    (home / "real.txt").write_text("numpy\n")
    assert read_user_file(me, home / "real.txt", what="requirements file") == b"numpy\n"


def test_append_user_file_never_follows_links(me: Actor, home: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("original\n")
    (home / ".ds01-alerts").symlink_to(victim)
    with pytest.raises(OSError, match=r"Too many levels of symbolic links"):
        append_user_file(home, ".ds01-alerts", "hello\n", uid=me.uid, gid=me.gid)
    assert victim.read_text() == "original\n"
    (home / ".ds01-alerts").unlink()
    os.link(victim, home / ".ds01-alerts")  # a hard link to someone else's file
    with pytest.raises(OSError, match=r"not a plain file"):
        append_user_file(home, ".ds01-alerts", "hello\n", uid=me.uid, gid=me.gid)
    assert victim.read_text() == "original\n"
    (home / ".ds01-alerts").unlink()
    path = append_user_file(home, ".ds01-alerts", "hello\n", uid=me.uid, gid=me.gid)
    assert path.read_text() == "hello\n"


def test_append_user_file_refuses_a_directory_of_someone_else(me: Actor, home: Path) -> None:
    with pytest.raises(OSError, match=r"directory not owned by the user"):
        append_user_file(home, ".ds01-alerts", "x\n", uid=me.uid + 1, gid=me.gid)
