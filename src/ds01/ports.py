"""The small contracts DS01's services depend on, one per external system.

Adapters in ``ds01.adapters`` implement them; services receive them through their
constructors (never through module-level globals), so tests can hand in a different
implementation without patching import paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from ds01.domain.devices import Inventory

__all__ = ["Clock", "EventSink", "GpuInventory", "Notifier"]


class Clock(Protocol):
    """Where services get the time. Tests inject a controllable one."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class GpuInventory(Protocol):
    """A source of GPU facts: NVML, nvidia-smi, a JSON file, or nothing.

    ``read()`` returns a fresh snapshot each call; it raises
    :class:`ds01.errors.GpuQueryError` when the source exists but cannot be read.
    """

    name: str

    def read(self) -> Inventory:
        """A snapshot of the GPUs and allocatable devices."""
        ...


class Notifier(Protocol):
    """Tells a user something: their terminals first, a file as fallback."""

    def notify(self, user: str, message: str, *, fallback_dir: str | None = None) -> list[str]:
        """Deliver ``message``; return where it went (tty paths or file paths)."""
        ...


class EventSink(Protocol):
    """Append-only record of what DS01 did."""

    def record(
        self,
        *,
        actor: str,
        action: str,
        target: str | None,
        result: str,
        details: dict[str, Any] | None = None,
    ) -> None: ...

    def query(self, *, user: str | None = None, limit: int | None = None) -> Iterator[Any]: ...
