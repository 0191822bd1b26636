"""Giving a created container its user: passwd, group, shadow, home, sudo — no commit.

Before its first start the container's ``/etc/passwd``, ``/etc/group`` and
``/etc/shadow`` are read out of it, the user's entries merged in (pure functions in
:mod:`ds01.domain.user_setup`), and the files copied back with the user's home and a
sudoers drop-in in one archive: a few Docker API calls and no new image. Images built by
``ds01 image create`` already carry the user and are left alone.
"""

from __future__ import annotations

import grp
import io
import tarfile
import time
from typing import TYPE_CHECKING

from ds01.domain.labels import ImageLabels
from ds01.domain.user_setup import (
    ContainerUser,
    account_name,
    bashrc,
    merge_group,
    merge_passwd,
    merge_shadow,
    profile,
    sudoers,
)

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.domain.engine_types import ImageInfo
    from ds01.ports import ContainerEngine

__all__ = ["container_user", "install_user"]


def container_user(actor: Actor) -> ContainerUser:
    """The account ``actor`` has inside containers (same uid/gid, a safe name)."""
    try:
        group = grp.getgrgid(actor.gid).gr_name
    except KeyError:
        group = actor.name
    return ContainerUser(
        name=account_name(actor.name), uid=actor.uid, gid=actor.gid, group=account_name(group)
    )


def install_user(engine: ContainerEngine, tag: str, user: ContainerUser, info: ImageInfo) -> None:
    """Give the created container a passwd entry, a home and sudo — no commit."""
    baked = ImageLabels.decode(info.labels)
    if baked and baked.uid == user.uid and baked.gid == user.gid:
        return  # built for this user by `image create`: nothing to add
    # One archive read of /etc (each archive call mounts the container's filesystem).
    etc = engine.read_tree(tag, "/etc")
    shells = etc.get("etc/shells")
    has_bash = shells is not None and any(
        line.strip() in ("/bin/bash", "/usr/bin/bash")
        for line in shells.content.decode().splitlines()
    )
    user = ContainerUser(
        user.name, user.uid, user.gid, user.group, "/bin/bash" if has_bash else "/bin/sh"
    )
    files: list[tuple[str, bytes, int, int, int]] = []
    passwd_before = ""
    for path, merge, fallback_mode in (
        ("etc/passwd", merge_passwd, 0o644),
        ("etc/group", merge_group, 0o644),
        ("etc/shadow", merge_shadow, 0o640),
    ):
        current = etc.get(path)
        if current is None and path == "etc/shadow":
            continue  # an image without shadow passwords needs no entry there
        text = current.content.decode() if current else ""
        if path == "etc/passwd":
            passwd_before = text
        mode, uid, gid = (
            (current.mode, current.uid, current.gid) if current else (fallback_mode, 0, 0)
        )
        files.append((path, merge(text, user).encode(), mode, uid, gid))
    # /home exists in every usual image; writing its entry again only restates root 0755.
    dirs: list[tuple[str, int, int, int]] = [("home", 0o755, 0, 0)]
    if not any(line.split(":")[0] == user.name for line in passwd_before.splitlines()):
        # A new account: give it a home. (An image that already has this account has one.)
        home = user.home.lstrip("/")
        dirs.append((home, 0o755, user.uid, user.gid))
        files.append((f"{home}/.bashrc", bashrc(user.name).encode(), 0o644, user.uid, user.gid))
        files.append((f"{home}/.profile", profile().encode(), 0o644, user.uid, user.gid))
        dirs.append((f"{home}/.local", 0o755, user.uid, user.gid))
        dirs.append((f"{home}/.local/bin", 0o755, user.uid, user.gid))
    if "etc/sudoers.d" in etc:
        files.append((f"etc/sudoers.d/ds01-{user.uid}", sudoers(user).encode(), 0o440, 0, 0))
    engine.put_archive(tag, "/", _tar(dirs, files))


def _tar(
    dirs: list[tuple[str, int, int, int]], files: list[tuple[str, bytes, int, int, int]]
) -> bytes:
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode, uid, gid in dirs:
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode, entry.uid, entry.gid, entry.mtime = (
                tarfile.DIRTYPE,
                mode,
                uid,
                gid,
                now,
            )
            tar.addfile(entry)
        for name, content, mode, uid, gid in files:
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode, entry.uid, entry.gid, entry.mtime = (
                len(content),
                mode,
                uid,
                gid,
                now,
            )
            tar.addfile(entry, io.BytesIO(content))
    return buf.getvalue()
