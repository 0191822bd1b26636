"""Giving a container its user without ``docker commit``, and the user's name inside.

AIME runs a setup container, adds the user with ``adduser`` and commits a multi-GB image
per container. DS01 instead edits the created container's ``/etc/passwd`` and
``/etc/group`` (and adds a home directory and a sudoers drop-in) by copying files into
it before its first start: milliseconds, and no new image. These pure functions compute
those files; the container service copies them in.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = [
    "ContainerUser",
    "account_name",
    "bashrc",
    "merge_group",
    "merge_passwd",
    "merge_shadow",
    "profile",
    "sudoers",
]

_SAFE = re.compile(r"[A-Za-z0-9._@-]")


_SYSTEM_ACCOUNTS = frozenset(
    re.findall(
        r"\S+",
        "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc "
        "gnats nobody _apt messagebus syslog sshd systemd-network systemd-resolve "
        "systemd-timesync polkitd uuidd tss",
    )
)


def account_name(login: str) -> str:
    """The account name baked into the image for ``login``; always ``[a-z_][a-z0-9_-]{0,31}``.

    Inside the image there is exactly one human account, so the name only has to be valid
    for ``useradd``/``adduser``/sudo on every base and recognisable. The login stays intact
    in the labels and the account's comment field. Mapping: drop ``@domain``; lower-case;
    every run of other characters becomes ``_``; a name starting with a digit (numeric LDAP
    names) or equal to a system account gets ``u_`` in front; over 32 characters, the first
    24 plus ``_`` and 7 hex digits of the login's SHA-256. ``a.b@domain`` -> ``a_b``,
    ``228755@students.example`` -> ``u_228755``, ``root`` -> ``u_root``.
    """
    local = login.split("@", 1)[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "_", local)
    name = re.sub(r"_{2,}", "_", name).strip("_-")
    if not name or not re.match(r"[a-z_]", name) or name in _SYSTEM_ACCOUNTS:
        name = f"u_{name}".rstrip("_")
    if len(name) > 32:
        name = f"{name[:24]}_{hashlib.sha256(login.encode()).hexdigest()[:7]}"
    return name


@dataclass(frozen=True)
class ContainerUser:
    """The account a container runs as."""

    name: str
    uid: int
    gid: int
    group: str
    shell: str = "/bin/bash"

    @property
    def home(self) -> str:
        return f"/home/{self.name}"


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def merge_passwd(text: str, user: ContainerUser) -> str:
    """``/etc/passwd`` with exactly one entry for ``user``.

    An entry with the same name or the same uid (base images often ship ``ubuntu`` as
    uid 1000) is replaced, so ``whoami`` and ``id`` name the real user.
    """
    kept = []
    for line in _lines(text):
        fields = line.split(":")
        if len(fields) >= 3 and (fields[0] == user.name or fields[2] == str(user.uid)):
            continue
        kept.append(line)
    kept.append(f"{user.name}:x:{user.uid}:{user.gid}:DS01 user:{user.home}:{user.shell}")
    return "\n".join(kept) + "\n"


def merge_group(text: str, user: ContainerUser) -> str:
    """``/etc/group`` with the user's primary group present under its gid.

    A group that already has the gid keeps its entry (renaming system groups would
    surprise software in the image); otherwise the user's group is added, replacing any
    group of the same name with another gid.
    """
    lines = _lines(text)
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[2] == str(user.gid):
            return "\n".join(lines) + "\n"
    kept = [line for line in lines if line.split(":")[0] != user.group]
    kept.append(f"{user.group}:x:{user.gid}:")
    return "\n".join(kept) + "\n"


def merge_shadow(text: str, user: ContainerUser) -> str:
    """``/etc/shadow`` with a password-less, *locked-for-login* entry (``*``) for ``user``.

    Without an entry PAM's account check fails and even NOPASSWD sudo refuses
    ("account validation failure"); ``*`` passes that check yet allows no password login.
    """
    kept = [line for line in _lines(text) if line.split(":")[0] != user.name]
    kept.append(f"{user.name}:*:19000:0:99999:7:::")
    return "\n".join(kept) + "\n"


def bashrc(display_name: str) -> str:
    """The user's ``~/.bashrc``: the image's defaults, ``~/.local/bin``, a clear prompt."""
    prompt_name = "".join(c for c in display_name if _SAFE.fullmatch(c))
    return (
        "# Written by DS01 when the container was created.\n"
        "[ -f /etc/skel/.bashrc ] && . /etc/skel/.bashrc\n"
        'export PATH="$HOME/.local/bin:$PATH"\n'
        f"export PS1='[{prompt_name}] \\u@\\h:\\w\\$ '\n"
        "cd /workspace 2>/dev/null || true\n"
    )


def profile() -> str:
    """``~/.profile`` for login shells: read ``~/.bashrc`` like Debian's default does."""
    return (
        "# Written by DS01 when the container was created.\n"
        'if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi\n'
        'export PATH="$HOME/.local/bin:$PATH"\n'
    )


def sudoers(user: ContainerUser) -> str:
    """Passwordless sudo inside the container, as AIME gives it.

    Root inside stays confined by the container: no privileged mode, Docker's default
    capabilities and seccomp profile, and only the user's own directories mounted.
    """
    return f"{user.name} ALL=(ALL) NOPASSWD: ALL\n"
