"""Who is calling: the Linux account behind this process (sudo-aware)."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import replace

from ds01.domain.actor import Actor
from ds01.errors import ErrorCode, RefusedError, UsageError

__all__ = [
    "SystemAccounts",
    "actor_for_user",
    "require_non_root",
    "resolve_actor",
    "unknown_user",
    "user_groups",
]


def user_groups(name: str, gid: int) -> tuple[str, ...]:
    """Names of the Linux groups ``name`` belongs to (primary first), sorted otherwise."""
    try:
        gids = os.getgrouplist(name, gid)
    except OSError:
        gids = [gid]
    names: list[str] = []
    for g in gids:
        try:
            names.append(grp.getgrgid(g).gr_name)
        except KeyError:
            names.append(str(g))
    primary, rest = names[:1], sorted(set(names[1:]) - set(names[:1]))
    return tuple(primary + rest)


def _is_admin(uid: int, groups: tuple[str, ...], admin_group: str | None) -> bool:
    return uid == 0 or (admin_group is not None and admin_group in groups)


def unknown_user(user: str) -> UsageError:
    """The error for a name that is no account here (exit 2), from any account source."""
    return UsageError(
        f"There is no user {user!r} on this system.",
        hint="Check the name with 'getent passwd NAME'.",
        code=ErrorCode.UNKNOWN_USER,
    )


def actor_for_user(user: str, *, admin_group: str | None = None, with_groups: bool = True) -> Actor:
    """The Actor for a named (or numeric) Linux account; exit 2 if it does not exist.

    ``with_groups=False`` skips the group lookup (slow with LDAP/SSSD): for read-only
    views of one's own containers, where only the name and uid matter.
    """
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError as exc:
        raise unknown_user(user) from exc
    groups = user_groups(pw.pw_name, pw.pw_gid) if with_groups else ()
    return Actor(
        uid=pw.pw_uid,
        gid=pw.pw_gid,
        name=pw.pw_name,
        home=pw.pw_dir,
        groups=groups,
        is_admin=_is_admin(pw.pw_uid, groups, admin_group),
    )


def resolve_actor(
    *,
    act_as: str | None = None,
    admin_group: str | None = None,
    environ: Mapping[str, str] | None = None,
    real_uid: int | None = None,
    with_groups: bool = True,
) -> Actor:
    """The user DS01 acts for.

    The real uid of the caller; under ``sudo`` the invoking user (``SUDO_UID`` /
    ``SUDO_USER``), because ``sudo ds01 ...`` must never create root's containers. Root
    acting for itself is refused for user operations; an admin names the user with
    ``--as USER`` instead.
    """
    env = os.environ if environ is None else environ
    uid = os.getuid() if real_uid is None else real_uid
    caller: Actor
    if uid == 0 and env.get("SUDO_UID", "").isdigit() and env.get("SUDO_UID") != "0":
        caller = actor_for_user(env["SUDO_UID"], admin_group=admin_group)
        sudo_user = env.get("SUDO_USER")
        if sudo_user and sudo_user != caller.name:
            # The uid is authoritative; SUDO_USER may be an alias of the same account.
            caller = actor_for_user(str(caller.uid), admin_group=admin_group)
        # The process has root's power: whoever could sudo is an administrator here.
        caller = replace(caller, is_admin=True)
    else:
        caller = actor_for_user(str(uid), admin_group=admin_group, with_groups=with_groups)
    if act_as is not None:
        if not caller.is_admin:
            raise RefusedError(
                f"Only administrators may act for another user (--as {act_as}).",
                hint=f"Ask a DS01 admin, or drop --as to act as {caller.name}.",
                code=ErrorCode.NOT_ADMIN,
            )
        target = actor_for_user(act_as, admin_group=admin_group)
        if target.uid == 0:
            raise RefusedError(
                "DS01 does not manage containers for root.", code=ErrorCode.ROOT_REFUSED
            )
        # An admin acting for a user acts with that user's rights: checks stay meaningful.
        return target
    return caller


def require_non_root(actor: Actor) -> Actor:
    """User operations (containers, images, queue) are never done as root itself."""
    if actor.uid == 0:
        raise RefusedError(
            "DS01 does not create or manage containers as root.",
            hint="Run it as your own user, or as an admin with '--as USER' to act for someone.",
            code=ErrorCode.ROOT_REFUSED,
        )
    return actor


class SystemAccounts:
    """The :class:`ds01.ports.Accounts` of this host: passwd and group databases."""

    def actor(
        self, user: str, *, admin_group: str | None = None, with_groups: bool = True
    ) -> Actor:
        return actor_for_user(user, admin_group=admin_group, with_groups=with_groups)

    def uid(self, user: str) -> int | None:
        try:
            return pwd.getpwnam(user).pw_uid
        except KeyError:
            return None
