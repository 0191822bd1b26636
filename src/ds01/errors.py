"""DS01's exception tree and the exit-code contract.

Every error a user can see is a :class:`DS01Error`. Its class decides the exit code
(DESIGN.md "Contracts"), its ``code`` is a stable machine-readable reason (printed under
``--json`` and recorded in the event log), its message says what happened and its
``hint`` says what to do about it::

    DS01Error                     exit 1  failed (engine, Docker, build)
    ├── EngineError               exit 1  the Docker engine refused or failed
    │   └── BuildError            exit 1  an image build failed
    ├── GpuQueryError             exit 1  NVML / nvidia-smi could not be read
    │   └── GpuUnavailableError   exit 1  no such GPU source on this host
    ├── UsageError                exit 2  bad input; nothing was changed
    │   ├── ConfigError           exit 2  a configuration or policy file is invalid
    │   └── NotFoundError         exit 2  the named container / image / project is unknown
    ├── RefusedError              exit 3  refused by policy, quota or ownership
    └── NoCapacityError           exit 4  nothing free now (queued, or lock not had in time)

Third-party exceptions (``docker.errors.*``, ``pynvml.NVMLError``, ``sqlite3.Error``) are
translated at the adapter edge with ``raise ... from exc``: nothing from those packages
escapes ``ds01.adapters``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_NO_CAPACITY",
    "EXIT_OK",
    "EXIT_REFUSED",
    "BuildError",
    "ConfigError",
    "DS01Error",
    "EngineError",
    "ErrorCode",
    "GpuQueryError",
    "GpuUnavailableError",
    "NoCapacityError",
    "NotFoundError",
    "RefusedError",
    "UsageError",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_NO_CAPACITY = 4


class ErrorCode(StrEnum):
    """Every machine-readable error code DS01 prints (``"error"`` under ``--json``).

    A ``StrEnum``: a member equals its plain string (``ErrorCode.QUOTA == "quota"``) and
    JSON writes it as that string, so the wire format is the value. The README's "Error
    codes" table lists each member with its exit code; tests/unit/test_error_codes.py
    fails when a member is missing there or a site passes a bare string.
    """

    ALREADY_QUEUED = "already_queued"
    AMBIGUOUS_MEMBERSHIP = "ambiguous_membership"
    BAD_CATALOG = "bad_catalog"
    BAD_CONFIG = "bad_config"
    BAD_DOCKERFILE = "bad_dockerfile"
    BAD_ENCODING = "bad_encoding"
    BAD_INPUT = "bad_input"
    BAD_LIFECYCLE_STATE = "bad_lifecycle_state"
    BAD_MARKERS = "bad_markers"
    BAD_PATH = "bad_path"
    BAD_PROJECT_DIR = "bad_project_dir"
    BAD_TYPE = "bad_type"
    BASE_NOT_YOURS = "base_not_yours"
    BUILD_FAILED = "build_failed"
    BUILD_TIMEOUT = "build_timeout"
    CANNOT_WRITE = "cannot_write"
    CONFIRMATION_NEEDED = "confirmation_needed"
    CONFLICT = "conflict"
    CONFLICTING_FLAGS = "conflicting_flags"
    CONTAINER_EXISTS = "container_exists"
    CONTAINER_LIMIT = "container_limit"
    CONTAINER_OUTDATED = "container_outdated"
    CONTAINER_RUNNING = "container_running"
    CONTEXT_UNREADABLE = "context_unreadable"
    CUSTOM_TIER_UNREADABLE = "custom_tier_unreadable"
    DELETE_INCOMPLETE = "delete_incomplete"
    DEVICE_GONE = "device_gone"
    DEVICE_REASSIGNED = "device_reassigned"
    DOCKERFILE_EXISTS = "dockerfile_exists"
    ENGINE_DOWN = "engine_down"
    ENGINE_FAILED = "engine_failed"
    FAILED = "failed"
    FORGED = "forged"
    GPU_QUERY_FAILED = "gpu_query_failed"
    GPU_QUOTA_EXCEEDED = "gpu_quota_exceeded"
    GPU_REQUEST_NEVER_FITS = "gpu_request_never_fits"
    GPU_UNAVAILABLE = "gpu_unavailable"
    IMAGE_HAS_OTHER_TAGS = "image_has_other_tags"
    IMAGE_IN_USE = "image_in_use"
    IMAGE_IS_BASE = "image_is_base"
    IMAGE_NAME_TAKEN = "image_name_taken"
    INVALID_GPU_REQUEST = "invalid_gpu_request"
    INVALID_IMAGE_SPEC = "invalid_image_spec"
    INVALID_NAME = "invalid_name"
    INVALID_PACKAGE = "invalid_package"
    KEEPALIVE_UNTRUSTED = "keepalive_untrusted"
    LOCK_TIMEOUT = "lock_timeout"
    MIG_PROFILE_NOT_ALLOWED = "mig_profile_not_allowed"
    MISSING_ARGUMENT = "missing_argument"
    MOUNT_CHANGED = "mount_changed"
    MOUNT_UNVERIFIED = "mount_unverified"
    NEEDS_TERMINAL = "needs_terminal"
    NO_ARCH = "no_arch"
    NO_CAPACITY = "no_capacity"
    NO_DOCKERFILE = "no_dockerfile"
    NO_FREE_GPU = "no_free_gpu"
    NO_GPU_ALLOWED = "no_gpu_allowed"
    NO_IMAGE = "no_image"
    NO_MARKERS = "no_markers"
    NO_PROJECT_DOCKERFILE = "no_project_dockerfile"
    NO_SSH_KEYGEN = "no_ssh_keygen"
    NO_SUCH_PATH = "no_such_path"
    NO_WORKSPACE_ROOT = "no_workspace_root"
    NOT_ADMIN = "not_admin"
    NOT_DS01_IMAGE = "not_ds01_image"
    NOT_FOUND = "not_found"
    NOT_IN_CUSTOM_TIER = "not_in_custom_tier"
    NOT_OWN_ACCOUNT = "not_own_account"
    NOT_OWNER = "not_owner"
    NOT_WAITING = "not_waiting"
    PASS_FAILED = "pass_failed"  # noqa: S105 (an error code, not a password)
    PATH_NOT_ALLOWED = "path_not_allowed"
    PER_CONTAINER_LIMIT = "per_container_limit"
    PULL_FAILED = "pull_failed"
    QUEUED_FIRST = "queued_first"
    QUOTA = "quota"
    REFUSED = "refused"
    RESERVED_LABEL = "reserved_label"
    ROOT_REFUSED = "root_refused"
    SSH_KEYGEN_FAILED = "ssh_keygen_failed"
    STATE_DIR_SQUATTED = "state_dir_squatted"
    SYMLINK_REFUSED = "symlink_refused"
    UNKNOWN_ARCH = "unknown_arch"
    UNKNOWN_CONTAINER = "unknown_container"
    UNKNOWN_EXEMPTION = "unknown_exemption"
    UNKNOWN_FRAMEWORK = "unknown_framework"
    UNKNOWN_GPU_ARCH = "unknown_gpu_arch"
    UNKNOWN_IMAGE = "unknown_image"
    UNKNOWN_PROJECT = "unknown_project"
    UNKNOWN_QUEUE_ENTRY = "unknown_queue_entry"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_VERSION = "unknown_version"
    UNRESOLVABLE_DOCKERFILE = "unresolvable_dockerfile"
    UNSAFE_LOCK = "unsafe_lock"
    UNTRUSTED_CONFIG = "untrusted_config"


class DS01Error(Exception):
    """Base of every error DS01 reports to a user."""

    exit_code: ClassVar[int] = EXIT_FAILED
    default_code: ClassVar[ErrorCode] = ErrorCode.FAILED

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: ErrorCode | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code: ErrorCode = code or self.default_code
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        """The error as the stable JSON object printed under ``--json``."""
        out: dict[str, Any] = {
            "error": self.code,
            "message": self.message,
            "exit_code": self.exit_code,
        }
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = self.details
        return out


class EngineError(DS01Error):
    """The Docker engine could not be reached or refused an operation."""

    default_code = ErrorCode.ENGINE_FAILED


class BuildError(EngineError):
    """An image build failed; ``details`` carries the failing step and log path."""

    default_code = ErrorCode.BUILD_FAILED


class GpuQueryError(DS01Error):
    """The GPU inventory (NVML, nvidia-smi, the JSON file) could not be read."""

    default_code = ErrorCode.GPU_QUERY_FAILED


class GpuUnavailableError(GpuQueryError):
    """The source does not exist on this host (no library, no driver, no nvidia-smi).

    Distinct from its parent so that ``gpu.inventory: auto`` can try the next source,
    while a source that exists but fails still stops the command.
    """

    default_code = ErrorCode.GPU_UNAVAILABLE


class UsageError(DS01Error):
    """Bad input: a name, a flag, a missing argument. Nothing was changed."""

    exit_code = EXIT_BAD_INPUT
    default_code = ErrorCode.BAD_INPUT


class ConfigError(UsageError):
    """A configuration or policy file is invalid; the message names file, line and key."""

    default_code = ErrorCode.BAD_CONFIG


class NotFoundError(UsageError):
    """The named object (container, image, project, queue entry) does not exist."""

    default_code = ErrorCode.NOT_FOUND


class RefusedError(DS01Error):
    """Refused by policy: a quota, a limit, or another user's container."""

    exit_code = EXIT_REFUSED
    default_code = ErrorCode.REFUSED


class NoCapacityError(DS01Error):
    """Nothing fits now: no free device, or the allocation lock was not had in time."""

    exit_code = EXIT_NO_CAPACITY
    default_code = ErrorCode.NO_CAPACITY
