"""The notices a container's owner gets for lifecycle actions: warnings, stops, removals.

:func:`ds01.domain.lifecycle.decide` chooses the actions; the service turns each into a
message with :func:`render_notice` and delivers it (terminals of the owner, or the notice
file). Each notice says what happens, when, why, and what the owner can do about it.
Pure text formatting: datetimes are shown as given, nothing reads the clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ds01.domain.idle import format_duration
from ds01.domain.lifecycle import (
    Action,
    Exempted,
    LimitKind,
    ReleaseGpu,
    Remove,
    Stop,
    Warn,
)
from ds01.domain.naming import split_tag

__all__ = [
    "KEEP_ALIVE_COMMAND",
    "render_notice",
    "render_stop",
    "render_warning",
]

#: What the owner runs inside a container to keep it from being stopped as idle.
KEEP_ALIVE_COMMAND = "touch /workspace/.keep-alive"


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} {value.tzname() or ''}".rstrip()


def render_notice(
    container_name: str, action: Action, *, keep_alive_max: timedelta = timedelta(hours=24)
) -> str | None:
    """The message the owner gets for ``action``; None when there is nothing to tell.

    ``container_name`` is the Docker name (``<name>._.<uid>``); messages use the part
    the user typed. Plain text, several lines, for terminals and the fallback file.
    """
    name = split_tag(container_name)[0]
    retire = (
        f"Finished with it? `ds01 container retire {name}` stops it, removes it and "
        "frees its GPU now."
    )
    if isinstance(action, Warn):
        return render_warning(name, action, keep_alive_max=keep_alive_max) + "\n" + retire
    if isinstance(action, Stop):
        return render_stop(name, action) if action.announce else None
    if isinstance(action, Exempted):
        until = f"until {_when(action.until)}" if action.until else "with no end date"
        return (
            f"DS01: your container '{name}' reached its {action.kind.value} limit, but you "
            f"are exempt from it ({action.reason}) {until}, so it keeps running."
        )
    if isinstance(action, Remove):
        return (
            f"DS01: your container '{name}' was removed: {action.detail}. Your files under "
            "/workspace (your project directory on the host) are untouched."
        )
    if isinstance(action, ReleaseGpu):
        return (
            f"DS01: the GPU of your stopped container '{name}' was given back for others to "
            f"use ({action.reason}). Your files under /workspace are untouched."
        )
    return f"DS01: container '{name}': {action.message}"


def render_warning(
    name: str, warn: Warn, *, keep_alive_max: timedelta = timedelta(hours=24)
) -> str:
    """A warning: what is happening, when the stop comes, and how to avoid it."""
    head = "FINAL WARNING" if warn.final else "WARNING"
    left = format_duration(timedelta(minutes=warn.minutes_left))
    lines = []
    if warn.kind is LimitKind.IDLE:
        lines.append(f"DS01 {head}: your container '{name}' is idle: {warn.reason}.")
        lines.append(f"It will be stopped in {left} (at {_when(warn.deadline)}).")
        if warn.shortened_by_busy:
            lines.append(
                f"The idle timeout is shortened to {format_duration(warn.limit)} because "
                "the server is busy (most GPUs are allocated)."
            )
        if warn.keep_alive_until is not None:
            lines.append("Your /workspace/.keep-alive file holds it until then.")
        lines.append(
            f"To keep it: use it, or run `{KEEP_ALIVE_COMMAND}` inside it "
            f"(holds it for up to {format_duration(keep_alive_max)} from the touch)."
        )
    else:
        lines.append(f"DS01 {head}: your container '{name}' is {warn.reason}.")
        lines.append(
            f"It will be stopped in {left} (at {_when(warn.deadline)}); the keep-alive file "
            "does not extend the runtime limit. Save your work; files under /workspace "
            "are kept."
        )
    return "\n".join(lines)


def render_stop(name: str, stop: Stop) -> str:
    """The stop notice: why, the grace period, and what happens to files and the GPU."""
    if stop.kind is LimitKind.IDLE:
        why = f"it was idle ({stop.reason})"
        if stop.shortened_by_busy:
            why += (
                f"; the idle timeout was shortened to {format_duration(stop.limit)} "
                "because the server is busy"
            )
    else:
        why = f"it reached its runtime limit ({stop.reason})"
    later = []
    if stop.gpu_released_after is not None:
        later.append(f"its GPU is given back {format_duration(stop.gpu_released_after)}")
    if stop.removed_after is not None:
        later.append(f"the container is removed {format_duration(stop.removed_after)}")
    after = f" After the stop, {' and '.join(later)} later." if later else ""
    return "\n".join(
        [
            f"DS01: your container '{name}' is being stopped now: {why}.",
            f"Its processes get {format_duration(stop.grace)} to exit after SIGTERM. "
            f"Files under /workspace are kept.{after}",
            f"To continue: `ds01 container start {name}`.",
        ]
    )
