"""Which configuration files DS01 may believe: only those that only root can change.

``ds01.yaml`` decides who is an administrator (``admin_group``), which policy applies
(``limits``), which host directories may be mounted (``allowed_mount_roots``), where the
shared state lives (``state_dir``), the catalog and the GPU inventory. On a shared
server those settings govern *other* users, so a user must not be able to pick them:
with her own ``DS01_CONFIG`` (``admin_group: alice``) alice once stopped bob's
containers and mounted ``/etc``. The rule built here:

* A file is **trusted** when it is a regular file owned by root and not writable by its
  group or others, and every directory above it (after resolving symbolic links) is
  owned by root and not writable by group or others. A root-owned directory that *is*
  group/other-writable is accepted only when it is sticky (``/tmp``, mode 1777): there
  only an entry's owner (or root) may rename or remove it, and the next component is
  itself required to be root-owned, so no other user can swap what the path names.
* A machine has a **system installation** when ``/etc/ds01`` or ``/var/lib/ds01``
  exists (:data:`SYSTEM_MARKERS`; both are made by ``sudo scripts/install`` and only root
  can make them). There, a caller that is not root gets exit 2 for an untrusted
  ``ds01.yaml``, and for an untrusted resource-limits file, members file or GPU
  inventory file named by a trusted one. Root (``sudo`` included) may use any file.
* Without a system installation (one user on a laptop) ``DS01_CONFIG`` works as before,
  with one exception everywhere: ``admin_group`` counts only from a trusted file, so
  nobody's admin status ever comes from a file they could write.

The check resolves the path once and hands back the real path; callers read *that*
path. Every directory on it is root-controlled, so nothing can change between the check
and the read (no window for a symlink swap).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ds01.errors import ConfigError, ErrorCode

__all__ = [
    "SYSTEM_MARKERS",
    "TrustContext",
    "Verdict",
    "check_path",
    "current_trust",
    "require_trusted",
    "untrusted_error",
]

#: Paths whose existence means DS01 was installed for every user of this machine.
SYSTEM_MARKERS: tuple[Path, ...] = (Path("/etc/ds01"), Path("/var/lib/ds01"))

Lstat = Callable[[str], os.stat_result]


@dataclass(frozen=True)
class TrustContext:
    """Who is asking, on what kind of machine; decides whether the rule is enforced."""

    caller_uid: int
    system_install: Path | None  # the marker found, or None for a single-user install

    @property
    def enforced(self) -> bool:
        """Untrusted files are refused (rather than only denied admin powers)."""
        return self.caller_uid != 0 and self.system_install is not None


def current_trust(
    markers: Sequence[Path] = SYSTEM_MARKERS, *, uid: int | None = None
) -> TrustContext:
    """The trust context of this process.

    The *real* uid decides: ``sudo`` runs with uid 0 and is root; a process whose
    effective uid alone is 0 was started by someone else and is treated as that user.
    """
    found = next((m for m in markers if os.path.lexists(m)), None)
    return TrustContext(os.getuid() if uid is None else uid, found)


@dataclass(frozen=True)
class Verdict:
    """The real path a configuration path names, and why it is not trusted (or None)."""

    real: Path
    reason: str | None

    @property
    def trusted(self) -> bool:
        return self.reason is None


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _writable_by_others(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def check_path(path: Path, *, lstat: Lstat = os.lstat) -> Verdict:
    """Whether only root can change what ``path`` names (see the module docstring).

    A path that does not exist is judged by the directories above it: it is trusted when
    only root could create it. ``lstat`` is injectable for tests.
    """
    real = Path(os.path.realpath(path))
    chain = [*reversed(real.parents), real]
    parent_mode = 0
    for index, component in enumerate(chain):
        is_last = index == len(chain) - 1
        try:
            st = lstat(str(component))
        except FileNotFoundError:
            # Nothing below exists: trusted when only root may create it. A sticky
            # directory does not protect a name nobody holds yet, so it must not be
            # group/other-writable at all.
            if _writable_by_others(parent_mode):
                return Verdict(
                    real,
                    f"{component} does not exist and others may create it in "
                    f"{component.parent} (mode {stat.S_IMODE(parent_mode):04o})",
                )
            return Verdict(real, None)
        except OSError as exc:
            return Verdict(real, f"{component} cannot be examined ({exc.strerror})")
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            return Verdict(real, f"{component} changed while it was being checked")
        if st.st_uid != 0:
            return Verdict(real, f"{component} is owned by {_owner(st.st_uid)}, not by root")
        if is_last:
            if not stat.S_ISREG(mode):
                return Verdict(real, f"{component} is not a regular file")
            if _writable_by_others(mode):
                return Verdict(
                    real,
                    f"{component} is writable by its group or others "
                    f"(mode {stat.S_IMODE(mode):04o})",
                )
        else:
            if not stat.S_ISDIR(mode):
                return Verdict(real, f"{component} is not a directory")
            # Sticky (like /tmp): others may add entries but not rename or remove the
            # root-owned ones, and the next component must be root-owned.
            if _writable_by_others(mode) and not mode & stat.S_ISVTX:
                return Verdict(
                    real,
                    f"the directory {component} is writable by its group or others "
                    f"(mode {stat.S_IMODE(mode):04o}) and not sticky",
                )
            parent_mode = mode
    return Verdict(real, None)


def untrusted_error(
    path: Path, reason: str, *, what: str, setting: str, marker: Path | None = None
) -> ConfigError:
    """The exit-2 error for an untrusted file on a machine where the rule is enforced."""
    if marker is None:
        marker = current_trust().system_install
    where = f"a system installation: {marker} exists" if marker else "a system installation"
    if setting == "DS01_CONFIG":
        hint = (
            "Unset DS01_CONFIG to use the system configuration (/etc/ds01/ds01.yaml). "
            "An administrator can make a file trusted: owned by root and not writable by "
            "group or others, in directories that are too (chown root: FILE; chmod go-w "
            "FILE and each directory above it)."
        )
    else:
        hint = (
            f"Ask an administrator to make {path} and every directory above it owned by "
            "root and not writable by group or others (chown root:; chmod go-w), or to "
            f"point '{setting}' at such a file."
        )
    return ConfigError(
        f"DS01 will not read the {what} {path}: {reason}. On this machine ({where}) the "
        "configuration decides who is an administrator, what may be mounted and where "
        "shared state lives, so DS01 reads it only from files that only root can change.",
        hint=hint,
        code=ErrorCode.UNTRUSTED_CONFIG,
        details={"file": str(path), "reason": reason, "setting": setting},
    )


def require_trusted(
    path: Path,
    *,
    what: str,
    setting: str,
    marker: Path | None = None,
    lstat: Lstat = os.lstat,
) -> Path:
    """The real path of ``path`` to read, or exit 2 (:class:`ConfigError`) if untrusted.

    Callers call it only where the rule is enforced (:attr:`TrustContext.enforced`).
    """
    verdict = check_path(path, lstat=lstat)
    if verdict.reason is not None:
        raise untrusted_error(path, verdict.reason, what=what, setting=setting, marker=marker)
    return verdict.real
