"""``user-setup``: what a user needs to work on this server, checked and explained.

The checks only read: the Docker engine (reachable for this user?), the resource policy
(which group, which limits), the GPUs (how many are free right now), the workspace
directory and an SSH key. Running them again changes nothing, so ``user-setup`` can be
repeated at any time. The one thing that writes is :meth:`OnboardingService.create_ssh_key`,
which the wizard calls only on a terminal and after the user agreed; it runs
``ssh-keygen`` as the user, attached to their terminal, so they choose the passphrase.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.domain.devices import format_equivalents
from ds01.domain.naming import container_tag
from ds01.errors import DS01Error, ErrorCode, UsageError
from ds01.services.audit import audited
from ds01.services.gpu.status import GpuService
from ds01.services.limits import limits_for
from ds01.services.project.service import ProjectService

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.services.context import AppContext

__all__ = [
    "SSH_KEY_NAMES",
    "Check",
    "CheckStatus",
    "OnboardingService",
    "SetupReport",
    "connect_guide",
]

#: Public keys looked for in ``~/.ssh``, preferred first.
SSH_KEY_NAMES = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but something is worth doing
    FAIL = "fail"  # DS01 cannot be used until this is fixed


@dataclass(frozen=True)
class Check:
    """One item of ``user-setup``: what was found, and what to do about it."""

    key: str
    title: str
    status: CheckStatus
    summary: str
    details: tuple[str, ...] = ()
    fix: str | None = None


@dataclass(frozen=True)
class SetupReport:
    """All checks, plus the facts the wizard continues with.

    ``ok`` (no check failed) is computed, and first in the ``--json`` object."""

    ok: bool = field(init=False)
    checks: tuple[Check, ...]
    workspace: Path
    projects: tuple[str, ...] = ()
    ssh_public_key: Path | None = None
    host: str = field(default_factory=socket.getfqdn)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", all(c.status is not CheckStatus.FAIL for c in self.checks))

    @property
    def failed(self) -> bool:
        return not self.ok

    def check(self, key: str) -> Check | None:
        return next((c for c in self.checks if c.key == key), None)


class OnboardingService:
    """The checks and the SSH key of ``user-setup``, for one acting user."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def check(self, actor: Actor) -> SetupReport:
        """Run every check; none of them changes anything."""
        docker = self._docker(actor)
        workspace, projects, workspace_check = self._workspace(actor)
        key, ssh_check = self._ssh(actor)
        checks = (
            docker,
            self._limits(actor),
            self._gpus(actor.name, docker_ok=docker.status is CheckStatus.OK),
            workspace_check,
            ssh_check,
        )
        return SetupReport(checks, workspace, projects, key)

    # -- the checks -------------------------------------------------------------------

    def _docker(self, actor: Actor) -> Check:
        try:
            info = self.ctx.engine.info()
        except DS01Error as exc:
            groups = ", ".join(actor.groups) or "none"
            return Check(
                "docker",
                "Docker engine",
                CheckStatus.FAIL,
                f"not reachable for {actor.name}: {exc.message}",
                (f"Your groups: {groups}.",),
                fix="Ask an administrator to give you access to Docker (the 'docker' group), "
                "then log out and in again.",
            )
        version = info.get("ServerVersion") or "unknown version"
        return Check(
            "docker",
            "Docker engine",
            CheckStatus.OK,
            f"reachable (Docker {version}, cgroup driver {info.get('CgroupDriver', '?')})",
        )

    def _limits(self, actor: Actor) -> Check:
        try:
            resolved = limits_for(self.ctx, actor)
        except DS01Error as exc:
            return Check(
                "limits",
                "Your limits",
                CheckStatus.FAIL,
                exc.message,
                fix=exc.hint or "Ask an administrator to check the resource-limits file.",
            )
        limits = resolved.limit_items()

        def shown(key: str) -> str:
            item = limits.get(key)
            return item.display if item else "?"

        cpus = shown("max_cpus")
        summary = (
            f"group {resolved.group}: {cpus} CPU{'' if cpus == '1' else 's'} and "
            f"{shown('memory')} memory "
            f"per container, {shown('max_gpu_equivalents')} GPU(s) in all, up to "
            f"{shown('max_containers')} containers"
        )
        details = (
            f"Idle containers are stopped after {shown('idle_timeout')}; any container "
            f"after {shown('max_runtime')} at most.",
            f"A stopped container keeps its GPU for {shown('gpu_hold_after_stop')}.",
            f"Linux groups: {', '.join(actor.groups) or 'none'}.",
            "All of it, with where each value comes from: ds01 limits",
        )
        return Check("limits", "Your limits", CheckStatus.OK, summary, details)

    def _gpus(self, user: str, *, docker_ok: bool) -> Check:
        try:
            if not docker_ok:
                inventory = self.ctx.inventory.read()
                return Check(
                    "gpus",
                    "GPUs",
                    CheckStatus.WARN,
                    f"{len(inventory.devices)} device(s) on this host; who holds them is "
                    "unknown without Docker",
                )
            status = GpuService(self.ctx).status()
        except DS01Error as exc:
            return Check("gpus", "GPUs", CheckStatus.WARN, f"cannot be read: {exc.message}")
        devices = status.devices
        if not devices:
            return Check(
                "gpus",
                "GPUs",
                CheckStatus.OK,
                f"none on this host (inventory: {status.source}); containers run on CPUs",
            )
        free = format_equivalents(status.free_equivalents)
        total = format_equivalents(status.total_equivalents)
        names = sorted({d.name for d in devices})
        summary = f"{free:g} of {total:g} GPU(s) free now ({', '.join(names)})"
        mine = format_equivalents(status.held_by_user.get(user, Fraction(0)))
        held = (f"You hold {mine:g} of them (ds01 container list).",) if mine else ()
        if free <= 0:
            return Check(
                "gpus",
                "GPUs",
                CheckStatus.WARN,
                summary,
                ("All GPUs are in use right now.", *held),
                fix="Create with --wait to queue for the next free GPU, or work on CPUs "
                "meanwhile (--cpu-only).",
            )
        return Check("gpus", "GPUs", CheckStatus.OK, summary, (*held, "Details: ds01 gpu status"))

    def _workspace(self, actor: Actor) -> tuple[Path, tuple[str, ...], Check]:
        base = self.ctx.settings.workspace_base(actor.name, actor.home)
        if not base.is_dir():
            return (
                base,
                (),
                Check(
                    "workspace",
                    "Workspace",
                    CheckStatus.WARN,
                    f"{base} does not exist yet",
                    fix="Your first project creates it: ds01 project-init NAME",
                ),
            )
        names = tuple(p.name for p in ProjectService(self.ctx).projects(actor))
        listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        summary = f"{base}: {len(names)} project(s)" + (f" ({listed})" if names else "")
        return base, names, Check("workspace", "Workspace", CheckStatus.OK, summary)

    def _ssh(self, actor: Actor) -> tuple[Path | None, Check]:
        ssh_dir = Path(actor.home) / ".ssh"
        try:
            key = next((ssh_dir / n for n in SSH_KEY_NAMES if (ssh_dir / n).is_file()), None)
            authorized = ssh_dir / "authorized_keys"
            logins = _count_keys(authorized) if authorized.is_file() else 0
        except OSError as exc:
            return None, Check(
                "ssh", "SSH key", CheckStatus.WARN, f"{ssh_dir} cannot be read: {exc.strerror}"
            )
        login_line = (
            f"{logins} key(s) may log in to this account (~/.ssh/authorized_keys)."
            if logins
            else "No key may log in to this account yet (~/.ssh/authorized_keys)."
        )
        if key is None:
            return None, Check(
                "ssh",
                "SSH key",
                CheckStatus.WARN,
                "no SSH key in ~/.ssh",
                (login_line,),
                fix="Create one: ssh-keygen -t ed25519 (user-setup offers to do it)",
            )
        return key, Check("ssh", "SSH key", CheckStatus.OK, f"{key}", (login_line,))

    # -- the one change ---------------------------------------------------------------

    def create_ssh_key(self, actor: Actor) -> Path:
        """Create ``~/.ssh/id_ed25519`` with ``ssh-keygen`` attached to the terminal.

        Only for oneself: a key made by an administrator acting for the user (``--as``)
        would belong to the wrong account. An existing key is kept and returned.
        """
        if os.geteuid() != actor.uid:
            raise UsageError(
                "An SSH key can only be created by its owner.",
                hint=f"Let {actor.name} run 'ds01 user-setup' (or ssh-keygen) themselves.",
                code=ErrorCode.NOT_OWN_ACCOUNT,
            )
        ssh_dir = Path(actor.home) / ".ssh"
        path = ssh_dir / "id_ed25519"
        if path.with_suffix(".pub").is_file():
            return path.with_suffix(".pub")
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise UsageError(
                "ssh-keygen is not installed on this server.",
                hint="Create the key on your laptop, or ask an administrator to install "
                "openssh-client.",
                code=ErrorCode.NO_SSH_KEYGEN,
            )
        comment = f"{actor.name}@{socket.gethostname()}"
        with audited(self.ctx, actor, "user.ssh_key", str(path)):
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            # The terminal is handed over: ssh-keygen asks for the passphrase itself.
            code = subprocess.call([keygen, "-t", "ed25519", "-f", str(path), "-C", comment])
            if code != 0 or not path.with_suffix(".pub").is_file():
                raise DS01Error(
                    f"ssh-keygen stopped with exit code {code}; no key was created.",
                    hint="Run 'ssh-keygen -t ed25519' yourself to see what it needs.",
                    code=ErrorCode.SSH_KEYGEN_FAILED,
                )
        return path.with_suffix(".pub")


def _count_keys(path: Path) -> int:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return sum(1 for line in lines if line.strip() and not line.lstrip().startswith("#"))


def connect_guide(actor: Actor, host: str, workspace: Path, project: str | None) -> list[str]:
    """How to reach this server from VS Code, and how to attach to a container."""
    shown = project or "PROJECT"
    return [
        "On your laptop:",
        "  1. Make a key if you have none:   ssh-keygen -t ed25519",
        f"  2. Allow it to log in here:       ssh-copy-id {actor.name}@{host}",
        "  3. Add to ~/.ssh/config:",
        "       Host ds01",
        f"         HostName {host}",
        f"         User {actor.name}",
        "  4. In VS Code install the extensions 'Remote - SSH' and 'Dev Containers'.",
        f"  5. 'Remote-SSH: Connect to Host...' -> ds01, then open the folder {workspace / shown}.",
        f"  6. With a container running (ds01 container deploy {shown} --background):",
        "     'Dev Containers: Attach to Running Container...' -> "
        f"{container_tag(shown, actor.uid)}, then open /workspace.",
    ]
