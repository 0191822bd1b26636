"""What the in-memory engine reports as Docker would word it: list status texts, ``top``
rows and ``stats`` samples. Pure functions of the engine's state and the time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ds01.domain.containers import ContainerState

__all__ = ["human_duration", "list_status", "stats_sample", "top_rows"]

#: The init Docker runs as pid 1 of a container made with ``init: true`` (DS01's all are).
DOCKER_INIT = "/sbin/docker-init --"


def human_duration(d: timedelta) -> str:
    """Docker's wording of a duration (go-units ``HumanDuration``)."""
    seconds = int(d.total_seconds())
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(d.total_seconds() / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(d.total_seconds() / 3600) // 24 // 365} years"


def list_status(
    state: ContainerState,
    exit_code: int,
    started_at: datetime | None,
    finished_at: datetime | None,
    now: datetime,
) -> str:
    """The ``Status`` column of ``docker ps -a``."""
    if state is ContainerState.CREATED:
        return "Created"
    if state is ContainerState.RUNNING and started_at is not None:
        return f"Up {human_duration(now - started_at)}"
    if state is ContainerState.PAUSED and started_at is not None:
        return f"Up {human_duration(now - started_at)} (Paused)"
    if state is ContainerState.EXITED and finished_at is not None:
        return f"Exited ({exit_code}) {human_duration(now - finished_at)} ago"
    return state.value.capitalize()


def top_rows(
    user: str, pid: int, started_at: datetime, main: str, sessions: Sequence[tuple[int, str]]
) -> list[dict[str, str]]:
    """``docker top``'s rows (``ps -ef`` columns): docker-init, the main command under it,
    then the sessions."""
    uid = user.split(":", 1)[0] or "root"
    stime = started_at.strftime("%H:%M")

    def row(p: int, ppid: int, cmd: str) -> dict[str, str]:
        return {
            "UID": uid,
            "PID": str(p),
            "PPID": str(ppid),
            "C": "0",
            "STIME": stime,
            "TTY": "?",
            "TIME": "00:00:00",
            "CMD": cmd,
        }

    rows = [row(pid, pid - 1, f"{DOCKER_INIT} {main}"), row(pid + 1, pid, main)]
    rows += [row(p, pid, cmd) for p, cmd in sessions]
    return rows


def stats_sample(
    container_id: str, name: str, now: datetime, memory_limit: int, processes: int | None
) -> dict[str, Any]:
    """One ``docker stats`` sample of an idle container; a stopped one reads as Docker's
    (empty memory and pids, zero CPU)."""
    read = now.isoformat().replace("+00:00", "Z")
    if processes is None:
        cpu: dict[str, Any] = {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}
        return {
            "id": container_id,
            "name": "/" + name,
            "read": read,
            "preread": read,
            "cpu_stats": cpu,
            "precpu_stats": cpu,
            "memory_stats": {},
            "pids_stats": {},
        }
    usage = {"total_usage": 0, "percpu_usage": [0]}
    return {
        "id": container_id,
        "name": "/" + name,
        "read": read,
        "preread": read,
        "cpu_stats": {"cpu_usage": usage, "system_cpu_usage": 0, "online_cpus": 1},
        "precpu_stats": {"cpu_usage": usage, "system_cpu_usage": 0, "online_cpus": 1},
        "memory_stats": {"usage": 0, "limit": memory_limit, "stats": {}},
        "pids_stats": {"current": processes},
    }
