"""A progress bar for ``docker pull``, fed by Docker's per-layer progress events."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

__all__ = ["LiveDisplay", "PullProgress"]


class LiveDisplay:
    """A live display (a rich ``Progress``, made on the first event) that stops when the
    ``with`` block ends, so that nothing printed afterwards is drawn over; leaving twice
    is harmless."""

    _progress: Any = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


class PullProgress(LiveDisplay):
    """One bar per image layer; silent when disabled or when nothing is pulled."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def update(self, event: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            from ds01.cli.output import console

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                console=console(stderr=True),
                transient=True,
            )
            self._progress.start()
        layer = str(event.get("id") or "")
        status = str(event.get("status") or "")
        detail = event.get("progressDetail") or {}
        if not layer:
            self._progress.console.print(status)
            return
        task = self._tasks.get(layer)
        if task is None:
            task = self._progress.add_task(f"{layer} {status}", total=None)
            self._tasks[layer] = task
        total, current = detail.get("total"), detail.get("current")
        self._progress.update(
            task, description=f"{layer} {status}", total=total or None, completed=current or 0
        )
