"""Where a user's containers live in the cgroup tree: slice names and cgroupfs paths.

Every container DS01 creates gets a cgroup parent per group and user, so the user's
``aggregate`` limits can be put on that parent:

* systemd cgroup driver: ``ds01.slice`` → ``ds01-<group>.slice`` →
  ``ds01-<group>-<user>.slice``. systemd reads each ``-`` in a slice name as one level
  of hierarchy, so the group and user parts must not contain ``-`` (the existing DS01
  broke on LDAP names for exactly this reason).
* cgroupfs driver: Docker's ``--cgroup-parent`` is a path, ``/ds01/<group>/<user>``,
  with the same escaped parts, so both drivers name a user the same way.

Escaping a name into a *component* (see :func:`slice_component`):

* A name of only ASCII letters, digits and ``_``, at most 32 characters, is used as it
  is (``alice``, ``student``).
* Anything else is *lossy*: the part before ``@`` has every run of other characters
  replaced by ``_``, is cut to 21 characters, and gets ``.`` plus the first 10 hex digits
  of the SHA-256 of the **whole** original name: ``a.b@x`` -> ``a_b.<hash>``,
  ``a_b@x`` -> ``a_b.<other hash>``, ``228755@students.example`` -> ``228755.<hash>``.

Why this is collision-free: an unchanged name never contains ``.``, every escaped one
does, so the two kinds cannot meet; two escaped names can only meet if 40 bits of
SHA-256 of two different names agree. The ``.`` is legal in unit names and directory
names, and unlike ``\\x2d`` escapes it needs no quoting in a shell or a Docker flag.
A component is at most 32 characters, so a user slice name stays far below systemd's
255-character limit.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "CGROUPFS_ROOT",
    "SLICE_ROOT",
    "cgroup_parent",
    "cgroupfs_path",
    "group_slice",
    "is_valid_slice_name",
    "slice_chain",
    "slice_component",
    "user_slice",
]

#: The top slice every DS01 container sits under (systemd driver).
SLICE_ROOT = "ds01.slice"
#: The top cgroup directory every DS01 container sits under (cgroupfs driver).
CGROUPFS_ROOT = "/ds01"

_PREFIX = "ds01"
_MAX_COMPONENT = 32
_HASH_DIGITS = 10
_READABLE_MAX = _MAX_COMPONENT - 1 - _HASH_DIGITS  # 21: room for "." + hash
_PLAIN = re.compile(r"^[A-Za-z0-9_]+$")
_OTHER = re.compile(r"[^A-Za-z0-9_]+")
_UNIT_CHARS = re.compile(r"^[A-Za-z0-9:_.\\-]+$")
_UNIT_NAME_MAX = 255


def slice_component(name: str) -> str:
    """``name`` (a user or group name) as a slice/cgroup path component without ``-``.

    Deterministic and injective (see the module docstring); ``ValueError`` if empty.
    """
    if not name:
        raise ValueError("cannot build a slice name from an empty user or group name")
    if len(name) <= _MAX_COMPONENT and _PLAIN.fullmatch(name):
        return name
    local = name.split("@", 1)[0]
    readable = _OTHER.sub("_", local)
    readable = re.sub(r"_{2,}", "_", readable).strip("_")[:_READABLE_MAX].rstrip("_")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
    return f"{readable or 'u'}.{digest}"


def group_slice(group: str) -> str:
    """``ds01-<group>.slice``: the parent of every user slice of that group."""
    return f"{_PREFIX}-{slice_component(group)}.slice"


def user_slice(group: str, user: str) -> str:
    """``ds01-<group>-<user>.slice``: the cgroup parent of one user's containers."""
    return f"{_PREFIX}-{slice_component(group)}-{slice_component(user)}.slice"


def slice_chain(group: str, user: str) -> tuple[str, str, str]:
    """The slices from the top down: ``(ds01.slice, ds01-<g>.slice, ds01-<g>-<u>.slice)``.

    systemd creates missing parents implicitly, but with default settings; whoever puts
    limits on them creates them in this order.
    """
    return (SLICE_ROOT, group_slice(group), user_slice(group, user))


def cgroupfs_path(group: str, user: str) -> str:
    """``/ds01/<group>/<user>``: the cgroup parent under Docker's cgroupfs driver.

    Absolute, so Docker places it under each controller's root (``/sys/fs/cgroup/<c>/ds01``
    on cgroup v1, ``/sys/fs/cgroup/ds01`` on v2) rather than under its own cgroup.
    """
    return f"{CGROUPFS_ROOT}/{slice_component(group)}/{slice_component(user)}"


def cgroup_parent(group: str, user: str, driver: str) -> str:
    """The value for Docker's ``cgroup_parent`` / ``--cgroup-parent`` under ``driver``.

    ``driver`` is what ``docker info`` reports as ``CgroupDriver``: ``systemd`` or
    ``cgroupfs``; anything else is a ``ValueError`` (we would be guessing at a layout).
    """
    if driver == "systemd":
        return user_slice(group, user)
    if driver == "cgroupfs":
        return cgroupfs_path(group, user)
    raise ValueError(f"unknown cgroup driver {driver!r}; expected 'systemd' or 'cgroupfs'")


def is_valid_slice_name(name: str) -> bool:
    """True when systemd accepts ``name`` as a slice unit name.

    The rules: at most 255 characters; only ASCII letters, digits, ``:_.\\-``; ends in
    ``.slice``; and (except the root ``-.slice``) the prefix neither starts nor ends with
    ``-`` nor contains ``--``, because every ``-`` separates two levels of hierarchy.
    """
    if len(name) > _UNIT_NAME_MAX or not name.endswith(".slice"):
        return False
    if not _UNIT_CHARS.fullmatch(name):
        return False
    prefix = name[: -len(".slice")]
    if prefix == "-":
        return True
    return bool(prefix) and not (prefix.startswith("-") or prefix.endswith("-") or "--" in prefix)
