"""The notices owners read, written out word for word: idle and runtime warnings (final,
shortened by a busy server, held by the keep-alive), stops, exemptions, removals, GPU
releases and notes. Each says what happened and what to do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ds01.domain.lifecycle import (
    Action,
    Exempted,
    LimitKind,
    Note,
    ReleaseGpu,
    Remove,
    RemoveReason,
    Stop,
    Warn,
)
from ds01.domain.lifecycle_notices import render_notice

T = datetime(2025, 3, 3, 9, 5, tzinfo=UTC)
M = timedelta(minutes=1)
ACTIONS: dict[str, Action] = {
    "warn_idle": Warn(LimitKind.IDLE, 80, T, 5, 25 * M, 30 * M, "no GPU utilization for 25 min"),
    "warn_idle_final_busy": Warn(
        LimitKind.IDLE,
        95,
        T,
        2,
        28 * M,
        30 * M,
        "quiet for 28 min",
        final=True,
        shortened_by_busy=True,
    ),
    "warn_idle_keepalive": Warn(
        LimitKind.IDLE, 80, T, 5, 25 * M, 30 * M, "quiet", keep_alive_until=T
    ),
    "warn_runtime": Warn(
        LimitKind.RUNTIME, 75, T, 300, 18 * 60 * M, 24 * 60 * M, "running for 18 h of a 24 h limit"
    ),
    "stop_idle_busy": Stop(
        LimitKind.IDLE,
        "quiet for 30 min",
        timedelta(seconds=60),
        30 * M,
        30 * M,
        shortened_by_busy=True,
        gpu_released_after=15 * M,
        removed_after=30 * M,
    ),
    "stop_runtime": Stop(
        LimitKind.RUNTIME, "running for 24 h", timedelta(seconds=60), 24 * 60 * M, 24 * 60 * M
    ),
    "stop_silent": Stop(LimitKind.RUNTIME, "x", timedelta(seconds=60), M, M, announce=False),
    "exempt_until": Exempted(
        LimitKind.IDLE,
        "thesis deadline",
        datetime(2025, 3, 10, 18, 0, tzinfo=timezone(timedelta(hours=1), "CET")),
    ),
    "exempt_naive": Exempted(LimitKind.RUNTIME, "long run", datetime(2025, 3, 10, 18, 0)),
    "exempt_forever": Exempted(LimitKind.RUNTIME, "admin", None),
    "remove": Remove(RemoveReason.HOLD_EXPIRED, "stopped 31 min ago"),
    "release": ReleaseGpu("stopped 20 min ago", ("GPU-1",), 20 * M),
    "note": Note("note-x", "Something to know."),
}
EXPECTED: dict[str, str | None] = {
    "warn_idle": (
        "DS01 WARNING: your container 'thesis' is idle: no GPU utilization for 25 min.\n"
        "It will be stopped in 5 min (at 2025-03-03 09:05 UTC).\n"
        "To keep it: use it, or run `touch /workspace/.keep-alive` inside it (holds it for up to "
        "12 h from the touch).\n"
        "Finished with it? `ds01 container retire thesis` stops it, removes it and frees its GPU "
        "now."
    ),
    "warn_idle_final_busy": (
        "DS01 FINAL WARNING: your container 'thesis' is idle: quiet for 28 min.\n"
        "It will be stopped in 2 min (at 2025-03-03 09:05 UTC).\n"
        "The idle timeout is shortened to 30 min because the server is busy (most GPUs are "
        "allocated).\n"
        "To keep it: use it, or run `touch /workspace/.keep-alive` inside it (holds it for up to "
        "12 h from the touch).\n"
        "Finished with it? `ds01 container retire thesis` stops it, removes it and frees its GPU "
        "now."
    ),
    "warn_idle_keepalive": (
        "DS01 WARNING: your container 'thesis' is idle: quiet.\n"
        "It will be stopped in 5 min (at 2025-03-03 09:05 UTC).\n"
        "Your /workspace/.keep-alive file holds it until then.\n"
        "To keep it: use it, or run `touch /workspace/.keep-alive` inside it (holds it for up to "
        "12 h from the touch).\n"
        "Finished with it? `ds01 container retire thesis` stops it, removes it and frees its GPU "
        "now."
    ),
    "warn_runtime": (
        "DS01 WARNING: your container 'thesis' is running for 18 h of a 24 h limit.\n"
        "It will be stopped in 5 h (at 2025-03-03 09:05 UTC); the keep-alive file does not "
        "extend the runtime limit. Save your work; files under /workspace are kept.\n"
        "Finished with it? `ds01 container retire thesis` stops it, removes it and frees its GPU "
        "now."
    ),
    "stop_idle_busy": (
        "DS01: your container 'thesis' is being stopped now: it was idle (quiet for 30 min); the "
        "idle timeout was shortened to 30 min because the server is busy.\n"
        "Its processes get 1 min to exit after SIGTERM. Files under /workspace are kept. After "
        "the stop, its GPU is given back 15 min and the container is removed 30 min later.\n"
        "To continue: `ds01 container start thesis`."
    ),
    "stop_runtime": (
        "DS01: your container 'thesis' is being stopped now: it reached its runtime limit "
        "(running for 24 h).\n"
        "Its processes get 1 min to exit after SIGTERM. Files under /workspace are kept.\n"
        "To continue: `ds01 container start thesis`."
    ),
    "stop_silent": None,
    "exempt_until": (
        "DS01: your container 'thesis' reached its idle limit, but you are exempt from it "
        "(thesis deadline) until 2025-03-10 18:00 CET, so it keeps running."
    ),
    "exempt_naive": (
        "DS01: your container 'thesis' reached its runtime limit, but you are exempt from it "
        "(long run) until 2025-03-10 18:00, so it keeps running."
    ),
    "exempt_forever": (
        "DS01: your container 'thesis' reached its runtime limit, but you are exempt from it "
        "(admin) with no end date, so it keeps running."
    ),
    "remove": (
        "DS01: your container 'thesis' was removed: stopped 31 min ago. Your files under "
        "/workspace (your project directory on the host) are untouched."
    ),
    "release": (
        "DS01: the GPU of your stopped container 'thesis' was given back for others to use "
        "(stopped 20 min ago). Your files under /workspace are untouched."
    ),
    "note": ("DS01: container 'thesis': Something to know."),
}


@pytest.mark.parametrize("case", sorted(ACTIONS))
def test_notice_text(case: str) -> None:
    text = render_notice("thesis._.1001", ACTIONS[case], keep_alive_max=timedelta(hours=12))
    assert text == EXPECTED[case]
