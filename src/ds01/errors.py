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


class DS01Error(Exception):
    """Base of every error DS01 reports to a user."""

    exit_code: ClassVar[int] = EXIT_FAILED
    default_code: ClassVar[str] = "failed"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code or self.default_code
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

    default_code = "engine_failed"


class BuildError(EngineError):
    """An image build failed; ``details`` carries the failing step and log path."""

    default_code = "build_failed"


class GpuQueryError(DS01Error):
    """The GPU inventory (NVML, nvidia-smi, the JSON file) could not be read."""

    default_code = "gpu_query_failed"


class GpuUnavailableError(GpuQueryError):
    """The source does not exist on this host (no library, no driver, no nvidia-smi).

    Distinct from its parent so that ``gpu.inventory: auto`` can try the next source,
    while a source that exists but fails still stops the command.
    """

    default_code = "gpu_unavailable"


class UsageError(DS01Error):
    """Bad input: a name, a flag, a missing argument. Nothing was changed."""

    exit_code = EXIT_BAD_INPUT
    default_code = "bad_input"


class ConfigError(UsageError):
    """A configuration or policy file is invalid; the message names file, line and key."""

    default_code = "bad_config"


class NotFoundError(UsageError):
    """The named object (container, image, project, queue entry) does not exist."""

    default_code = "not_found"


class RefusedError(DS01Error):
    """Refused by policy: a quota, a limit, or another user's container."""

    exit_code = EXIT_REFUSED
    default_code = "refused"


class NoCapacityError(DS01Error):
    """Nothing fits now: no free device, or the allocation lock was not had in time."""

    exit_code = EXIT_NO_CAPACITY
    default_code = "no_capacity"
