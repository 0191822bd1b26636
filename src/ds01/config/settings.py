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

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "INTERNAL_KEYS",
    "MAX_SECONDS",
    "ULIMIT_NAMES",
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
#: Longest duration any setting takes: ten years. Larger values are typos, and Python's
#: timedelta (about 2.7 million years) and Docker's int32/int64 fields overflow on them.
MAX_SECONDS = 10 * 366 * 86400
#: Docker's ulimit names (``docker run --ulimit``; go-units' table).
ULIMIT_NAMES = frozenset(
    (
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    )
)
_INT64_MAX = 2**63 - 1
# A Linux group name as getent can return it (LDAP/SSSD names with '@', '.', '-', even
# upper case), but never empty, never with spaces, ':' or control characters.
_GROUP = re.compile(r"^[^\s:,/\x00-\x1f\x7f]{1,256}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Every duration is finite (YAML's .inf and 1e309 are), not negative, at most MAX_SECONDS.
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
# Periods something runs at: 0 would busy-loop (enforcement) or divide by zero (aging).
Period = Annotated[float, Field(ge=1, le=MAX_SECONDS, allow_inf_nan=False)]
WholeSeconds = Annotated[int, Field(ge=0, le=MAX_SECONDS, strict=True)]
Share = Annotated[float, Field(allow_inf_nan=False)]


def _ulimit_name(name: str) -> str:
    if name not in ULIMIT_NAMES:
        raise ValueError(f"not a ulimit Docker knows ({', '.join(sorted(ULIMIT_NAMES))})")
    return name


def _ulimit_value(limit: object) -> object:
    """A whole number in int64; of the negative values only -1 ("unlimited").

    Docker hands a negative value to the kernel as a huge unsigned one (``stack: -5``
    became 16 EiB); only -1 (RLIM_INFINITY) means something. A float such as ``1e20``
    is refused rather than rounded.
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValueError(f"{limit!r} is not a whole number (-1 means unlimited)")
    if limit < -1 or limit > _INT64_MAX:
        raise ValueError(f"{limit} is out of range: 0 to 2**63-1, or -1 for unlimited")
    return limit


UlimitName = Annotated[str, AfterValidator(_ulimit_name)]
UlimitValue = Annotated[int, BeforeValidator(_ulimit_value)]


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
    aging_interval: Period = Field(
        1800.0, description="Seconds of waiting after which a queued request gains priority."
    )
    aging_step: int = Field(
        1,
        ge=0,
        le=1_000_000,
        strict=True,
        description="Priority points gained per aging interval (so nobody starves).",
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
    ulimits: dict[UlimitName, UlimitValue] = Field(
        default_factory=lambda: {"stack": 67108864},
        description="ulimits for user containers (soft = hard). AIME also sets memlock: -1 "
        "(pinned memory for RDMA/NCCL); add it where the engine may raise that limit.",
    )
    stop_timeout: WholeSeconds = Field(
        10, description="Seconds between SIGTERM and SIGKILL when stopping a container."
    )

    @field_validator("ulimits")
    @classmethod
    def _nofile(cls, v: dict[str, int]) -> dict[str, int]:
        if v.get("nofile") == -1:
            # The kernel caps open files at fs.nr_open; runc fails to set "unlimited".
            raise ValueError("nofile cannot be -1 (unlimited) on Linux; give a number")
        return v


class EnforcementSettings(_Section):
    interval: Period = Field(
        60.0, description="Seconds between enforcement passes (the systemd timer's period)."
    )
    busy_share: Share = Field(
        0.8,
        ge=0,
        le=1,
        description="Share of GPU equivalents allocated above which the server counts as busy.",
    )
    busy_factor: Share = Field(
        0.5, gt=0, le=1, description="Idle timeouts are multiplied by this on a busy server."
    )
    sigterm_grace: WholeSeconds = Field(
        60, description="Seconds a container gets after SIGTERM before SIGKILL."
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
        "ds01-admin",
        description="Linux group whose members are DS01 administrators (null: only root and "
        "sudo). Read only from a configuration file that only root can change.",
    )
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    build: BuildSettings = Field(default_factory=BuildSettings)
    container: ContainerSettings = Field(default_factory=ContainerSettings)
    enforcement: EnforcementSettings = Field(default_factory=EnforcementSettings)

    # Not file keys (the loader refuses them in a file):
    # set when the default state dir could not be used (laptop case);
    state_dir_fallback: bool = Field(False, exclude=True)
    # whether the settings may decide who is an administrator: True for the built-in
    # defaults and for files only root can change (ds01.config.trust), False otherwise;
    trusted: bool = Field(True, exclude=True)
    # whether the files these settings name (limits, members files, GPU inventory) must
    # pass the same root-only check before they are read (a non-root caller on a machine
    # with a system installation).
    require_trusted_files: bool = Field(False, exclude=True)

    @field_validator("admin_group")
    @classmethod
    def _admin_group(cls, v: str | None) -> str | None:
        if v is not None and not _GROUP.match(v):
            raise ValueError(
                f"{v!r} is not a Linux group name (empty, or with spaces, ':', ',' or '/'); "
                "give the group's name, or null for no admin group"
            )
        return v

    def effective_admin_group(self) -> str | None:
        """The admin group, or ``None`` when these settings are not trusted to name one."""
        return self.admin_group if self.trusted else None

    def workspace_base(self, user: str, home: str) -> Path:
        """The directory holding ``user``'s projects."""
        text = self.workspace_root.replace("{user}", user)
        if text == "~" or text.startswith("~/"):
            text = home + text[1:]
        return Path(text)


#: Settings fields that are not configuration: a file naming them is refused.
INTERNAL_KEYS = ("state_dir_fallback", "trusted", "require_trusted_files")


def config_path() -> Path:
    """The configuration file this process uses (``$DS01_CONFIG`` or the default)."""
    env = os.environ.get("DS01_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH
