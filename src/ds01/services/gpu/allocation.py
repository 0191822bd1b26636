"""The allocation step shared by ``container create``, the queue and ``container start``.

One host-wide lock (:func:`allocation_lock`) orders every decision that hands out
devices; one check (:func:`check_and_decide`) decides a request the same way before the
lock (to refuse early, before a pull) and under it (where the answer counts).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.adapters.locks import ALLOCATION_LOCK, LOCK_DIR, host_lock
from ds01.adapters.queue_store import QueueStore
from ds01.domain.allocation import Decision, NoFit, NoFitReason, Refusal, decide
from ds01.domain.gpu_request import RequestKind
from ds01.domain.resolved_limits import check_container_count
from ds01.services.container.lookup import own_containers
from ds01.services.gpu.holdings import HoldingsService

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.domain.allocation import GpuRequest, Holding
    from ds01.domain.devices import Inventory
    from ds01.domain.gpu_request import GpuQuota
    from ds01.domain.resolved_limits import ResolvedLimits
    from ds01.services.context import AppContext

__all__ = [
    "Considered",
    "allocation_lock",
    "allocation_lock_path",
    "check_and_decide",
    "waiting_requests",
]


def allocation_lock_path(ctx: AppContext) -> Path:
    return Path(ctx.settings.state_dir) / LOCK_DIR / ALLOCATION_LOCK


def allocation_lock(ctx: AppContext) -> AbstractContextManager[float]:
    """The host-wide lock around decide-and-create (never skipped; exit 4 on timeout)."""
    return host_lock(allocation_lock_path(ctx), timeout=ctx.settings.gpu.lock_timeout)


def waiting_requests(ctx: AppContext, actor: Actor) -> int:
    """The actor's queued requests: each becomes a container when granted."""
    return sum(1 for r in QueueStore(ctx.state_db).waiting() if r.entry.user == actor.name)


@dataclass(frozen=True)
class Considered:
    """A GPU request that passed the policy checks, with what it was decided against.

    ``decision`` is an :class:`~ds01.domain.allocation.Allocation`, or a :class:`NoFit`
    that may clear later (never one that cannot: that was refused).
    """

    decision: Decision
    quota: GpuQuota
    inventory: Inventory
    holdings: list[Holding]


def check_and_decide(
    ctx: AppContext,
    actor: Actor,
    request: GpuRequest,
    resolved: ResolvedLimits,
    *,
    adding: int,
) -> Considered | None:
    """Container count, GPU policy and quota, and a placement against the holdings now.

    Raises exit 3 (container count, policy, quota) or exit 2 (can never fit); a request
    that fits nowhere *now* comes back as a :class:`NoFit` for the caller to queue or
    refuse. ``None`` for a CPU-only request, which has nothing to place.
    """
    check_container_count(resolved, own_containers(ctx.engine, actor), adding=adding)
    if request.kind is RequestKind.CPU_ONLY:
        return None
    quota = resolved.gpu_quota()
    inventory = ctx.inventory.read()
    holdings = HoldingsService(ctx).holdings().in_force
    decision = decide(request, actor.name, quota, inventory, holdings)
    if isinstance(decision, Refusal):
        raise decision.to_error()
    if isinstance(decision, NoFit) and decision.reason is NoFitReason.NEVER:
        raise decision.to_error()
    return Considered(decision, quota, inventory, holdings)
