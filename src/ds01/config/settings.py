"""The system configuration, ``ds01.yaml``: one validated model, built once per command.

Found at ``$DS01_CONFIG`` (default ``/etc/ds01/ds01.yaml``). With no file at all DS01
runs on the built-in defaults below; a file that exists but is invalid is an error
naming the file, the line and the key (exit 2). Every option carries a description: the
README's configuration table is generated from them (``ds01 config show --json``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "BuildSettings",
    "ContainerSettings",
    "EnforcementSettings",
    "GpuSettings",
    "QueueSettings",
    "Settings",
    "config_path",
]

DEFAULT_CONFIG_PATH = Path("/etc/ds01/ds01.yaml")
_INVENTORY = re.compile(r"^(auto|nvml|nvidia-smi|none|file:.+)$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Seconds = Annotated[float, Field(ge=0)]


class GpuSettings(_Section):
    inventory: str = Field(
        "auto",
        description="Where GPU facts come from: auto (NVML, then nvidia-smi, then none), "
        "nvml, nvidia-smi, none, or file:PATH (a JSON inventory for machines without GPUs).",
    )
    runtime: Literal["nvidia", "none"] = Field(
        "nvidia",
        description="nvidia: Docker gets device requests by UUID. none: the allocation is "
        "recorded (labels, CUDA_VISIBLE_DEVICES) but no device is requested (CI, laptops).",
    )
    lock_timeout: Seconds = Field(
        15.0,
        description="Seconds to wait for the host-wide allocation lock before giving up "
        "with exit 4. The lock is never skipped.",
    )

    @field_validator("inventory")
    @classmethod
    def _inventory(cls, v: str) -> str:
        if not _INVENTORY.match(v):
            raise ValueError("must be auto, nvml, nvidia-smi, none or file:PATH")
        return v


class QueueSettings(_Section):
    aging_interval: Seconds = Field(
        1800.0, description="Seconds of waiting after which a queued request gains priority."
    )
    aging_step: int = Field(
        1, ge=0, description="Priority points gained per aging interval (so nobody starves)."
    )
    max_wait: Seconds = Field(
        86400.0, description="Seconds after which a queued request expires (0: never)."
    )


class BuildSettings(_Section):
    ca_certificates: list[Path] = Field(
        default_factory=list,
        description="PEM files copied into every image and trusted by pip and curl "
        "(intercepting proxies, university networks).",
    )
    pip_index_url: str | None = Field(None, description="pip index URL used during builds.")
    http_proxy: str | None = Field(None, description="HTTP proxy passed as a build argument.")
    https_proxy: str | None = Field(None, description="HTTPS proxy passed as a build argument.")
    no_proxy: str | None = Field(None, description="Hosts that bypass the proxy (build arg).")
    network: str | None = Field(
        None, description="Docker network mode for builds (e.g. 'host'); default: Docker's."
    )
    timeout: Seconds = Field(3600.0, description="Seconds a single image build may take.")


class ContainerSettings(_Section):
    network: str = Field(
        "bridge",
        description="Network for user containers. 'bridge' isolates users and gives "
        "per-container traffic counters for idle detection; 'host' is AIME's choice.",
    )
    allowed_mount_roots: list[str] = Field(
        default_factory=lambda: ["~"],
        description="Host directories users may mount with -w/-d/-m ('~' is the user's "
        "home). A path outside all of them, after resolving symlinks, is refused.",
    )
    ulimits: dict[str, int] = Field(
        default_factory=lambda: {"stack": 67108864},
        description="ulimits for user containers (soft = hard). AIME also sets memlock: -1 "
        "(pinned memory for RDMA/NCCL); add it where the engine may raise that limit.",
    )
    stop_timeout: int = Field(
        10, ge=0, description="Seconds between SIGTERM and SIGKILL when stopping a container."
    )


class EnforcementSettings(_Section):
    interval: Seconds = Field(
        60.0, description="Seconds between enforcement passes (the systemd timer's period)."
    )
    busy_share: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Share of GPU equivalents allocated above which the server counts as busy.",
    )
    busy_factor: float = Field(
        0.5, gt=0, le=1, description="Idle timeouts are multiplied by this on a busy server."
    )
    sigterm_grace: int = Field(
        60, ge=0, description="Seconds a container gets after SIGTERM before SIGKILL."
    )
    created_timeout: Seconds = Field(
        1800.0, description="Seconds after which a created-but-never-started container is removed."
    )
    keep_alive_max: Seconds = Field(
        86400.0, description="How long touching /workspace/.keep-alive defers idle action."
    )


class Settings(_Section):
    catalog: Path = Field(
        Path("/opt/aime-ml-containers/ml_images.repo"),
        description="AIME's framework catalog (ml_images.repo, v1 or v2 format). When it is "
        "missing, a built-in Docker Hub mapping is used with a warning.",
    )
    limits: Path = Field(
        Path("/etc/ds01/resource-limits.yaml"),
        description="The resource-limits policy file (per-user and per-group limits).",
    )
    state_dir: Path = Field(
        Path("/var/lib/ds01"),
        description="Where the state database (events, queue, idle streaks) and the "
        "allocation lock live. Group-writable by DS01 users in stage 1.",
    )
    workspace_root: str = Field(
        "~/workspace",
        description="Parent of each user's project directories; '~' is the user's home and "
        "'{user}' their login name (e.g. /srv/work/{user}).",
    )
    admin_group: str | None = Field(
        "ds01-admin", description="Linux group whose members are DS01 administrators."
    )
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    build: BuildSettings = Field(default_factory=BuildSettings)
    container: ContainerSettings = Field(default_factory=ContainerSettings)
    enforcement: EnforcementSettings = Field(default_factory=EnforcementSettings)

    # Not a file key: set when the default state dir could not be used (laptop case).
    state_dir_fallback: bool = Field(False, exclude=True)

    def workspace_base(self, user: str, home: str) -> Path:
        """The directory holding ``user``'s projects."""
        text = self.workspace_root.replace("{user}", user)
        if text == "~" or text.startswith("~/"):
            text = home + text[1:]
        return Path(text)


def config_path() -> Path:
    """The configuration file this process uses (``$DS01_CONFIG`` or the default)."""
    env = os.environ.get("DS01_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH
