"""The GPU queue: requests that wait for a device, granted in fair order.

``container create --wait`` stores the prepared request when nothing fits now. Whenever
devices may have freed up (a container removed or stopped, every enforcement pass), a
pass runs under the host-wide lock: the queue is ordered by priority with aging (pure
:mod:`ds01.domain.queue`), each entry that fits is granted — its container is created for
its owner exactly as a direct create would — and the owner is told on their terminals
and in the event log. A direct create never jumps ahead of entries already waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds01.domain.allocation import Allocation, GpuQuota, GpuRequest
from ds01.domain.queue import Aging, Grant, QueueEntry, QueueState, Waiting, plan
from ds01.errors import DS01Error, RefusedError, UsageError
from ds01.services.gpus import GpuService, quota_from_limits

if TYPE_CHECKING:
    from ds01.adapters.queue_store import QueueRow, QueueStore
    from ds01.domain.actor import Actor
    from ds01.domain.allocation import Holding
    from ds01.domain.devices import Inventory
    from ds01.services.context import AppContext
    from ds01.services.create import Prepared

__all__ = ["QueueOutcome", "QueueService"]


@dataclass(frozen=True)
class QueueOutcome:
    """What one queue pass did to one entry."""

    entry_id: int
    user: str
    state: str  # granted | failed | expired
    container: str | None = None
    message: str | None = None


class QueueService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @property
    def store(self) -> QueueStore:
        from ds01.adapters.queue_store import QueueStore

        return QueueStore(self.ctx.state_db)

    def aging(self) -> Aging:
        q = self.ctx.settings.queue
        return Aging(interval=timedelta(seconds=q.aging_interval), step=q.aging_step)

    def _quotas(self, users: set[str]) -> dict[str, GpuQuota]:
        from ds01.services.limits import limits_for_user

        quotas: dict[str, GpuQuota] = {}
        for user in sorted(users):
            try:
                quotas[user] = quota_from_limits(limits_for_user(self.ctx, user))
            except UsageError:
                continue  # the account is gone: its entries fail in the next pass
        return quotas

    # -- used by create, under the lock -------------------------------------------------

    def fits_behind_queue(
        self,
        user: str,
        request: GpuRequest,
        quota: GpuQuota,
        inventory: Inventory,
        holdings: list[Holding],
    ) -> Allocation | None:
        """The allocation ``request`` gets if it joined the queue now, if granted at once."""
        rows = self.store.waiting()
        quotas = self._quotas({r.entry.user for r in rows})
        entries = [r.entry for r in rows if r.entry.user in quotas]
        quotas[user] = quota
        now = self.ctx.clock.now()
        virtual = QueueEntry(
            id=max((e.id for e in entries), default=0) + 1,
            user=user,
            request=request,
            spec="",
            priority=quota.priority,
            enqueued_at=now,
        )
        status = plan(
            [*entries, virtual], now, inventory, holdings, quotas, aging=self.aging()
        ).status(virtual.id)
        return status.allocation if isinstance(status, Grant) else None

    def enqueue(self, prepared: Prepared) -> int:
        spec: dict[str, Any] = {
            "name": prepared.req.name,
            "image": prepared.image.ref,
            "framework": prepared.image.framework_label,
            "arch": prepared.image.arch,
            "custom": prepared.image.custom,
            "workspace": str(prepared.workspace),
            "data": str(prepared.data) if prepared.data else None,
            "models": str(prepared.models) if prepared.models else None,
            "interface": prepared.req.interface,
        }
        return self.store.add(
            user=prepared.actor.name,
            request=prepared.request,
            spec=spec,
            priority=prepared.limits.resolved.priority,
            now=self.ctx.clock.now(),
        )

    # -- the commands ---------------------------------------------------------------------

    def listing(self, actor: Actor, *, all_users: bool = False) -> list[dict[str, Any]]:
        """Waiting entries with position and why they wait (own ones; admins: all)."""
        rows = self.store.waiting()
        gpus = GpuService(self.ctx)
        inventory = gpus.read_inventory()
        holdings = gpus.holdings().in_force
        quotas = self._quotas({r.entry.user for r in rows})
        known = [r for r in rows if r.entry.user in quotas]
        now = self.ctx.clock.now()
        queue_plan = plan(
            [r.entry for r in known], now, inventory, holdings, quotas, aging=self.aging()
        )
        out = []
        for row in known:
            if not (all_users and actor.is_admin) and row.entry.user != actor.name:
                continue
            item = row.to_dict()
            status = queue_plan.status(row.entry.id)
            if isinstance(status, Waiting):
                item.update(
                    position=status.position,
                    why=status.why.value,
                    detail=status.detail,
                    effective_priority=status.effective_priority,
                )
            elif isinstance(status, Grant):
                item.update(
                    position=status.position,
                    why="granted_next_pass",
                    detail="A device is free for it; it is granted in the next pass.",
                    effective_priority=None,
                )
            out.append(item)
        return out

    def cancel(self, actor: Actor, entry_id: int) -> QueueRow:
        from ds01.services.audit import audited

        row = self.store.get(entry_id)
        if row.entry.user != actor.name and not actor.is_admin:
            raise RefusedError(
                f"Queue entry {entry_id} belongs to {row.entry.user}, not you.",
                code="not_owner",
            )
        with audited(self.ctx, actor, "queue.cancel", f"queue:{entry_id}", owner=row.entry.user):
            if not self.store.set_state(
                entry_id,
                QueueState.CANCELLED,
                now=self.ctx.clock.now(),
                message=f"cancelled by {actor.name}",
            ):
                raise UsageError(
                    f"Queue entry {entry_id} is no longer waiting ({row.entry.state.value}).",
                    code="not_waiting",
                )
        return row

    # -- the pass -------------------------------------------------------------------------

    def process(self) -> list[QueueOutcome]:
        """Grant every waiting entry that fits now, in fair order; expire stale ones."""
        from ds01.services.create import CreateService

        if not self.store.waiting():
            return []
        creator = CreateService(self.ctx)
        outcomes: list[QueueOutcome] = []
        granted: list[tuple[Prepared, QueueRow]] = []
        with creator.lock():
            now = self.ctx.clock.now()
            rows = self._expire(self.store.waiting(), outcomes)
            gpus = GpuService(self.ctx)
            inventory = gpus.read_inventory()
            holdings = gpus.holdings(now).in_force
            quotas = self._quotas({r.entry.user for r in rows})
            by_id = {r.entry.id: r for r in rows}
            for row in rows:
                if row.entry.user not in quotas:
                    outcomes.append(self._fail(row, "the owner's account no longer exists"))
            known = [r.entry for r in rows if r.entry.user in quotas]
            queue_plan = plan(known, now, inventory, holdings, quotas, aging=self.aging())
            for waiting in queue_plan.waiting:
                if waiting.why.value == "never":
                    outcomes.append(self._fail(by_id[waiting.entry.id], waiting.detail))
            for grant in queue_plan.grants:
                row = by_id[grant.entry.id]
                try:
                    prepared = self._prepare(row)
                    creator.make_container(prepared, grant.allocation)
                except DS01Error as exc:
                    outcomes.append(self._fail(row, exc.message))
                    continue
                granted.append((prepared, row))
        for prepared, row in granted:
            outcomes.append(self._granted(creator, prepared, row))
        return outcomes

    def _expire(self, rows: list[QueueRow], outcomes: list[QueueOutcome]) -> list[QueueRow]:
        max_wait = self.ctx.settings.queue.max_wait
        if not max_wait:
            return rows
        now = self.ctx.clock.now()
        kept = []
        for row in rows:
            if now - row.entry.enqueued_at >= timedelta(seconds=max_wait):
                message = f"expired after waiting {int(max_wait // 3600)} h"
                self.store.set_state(row.entry.id, QueueState.EXPIRED, now=now, message=message)
                self._tell(
                    row,
                    f"Your queued request #{row.entry.id} ({row.spec.get('name')}) "
                    f"{message}; create it again when you need it.",
                )
                outcomes.append(
                    QueueOutcome(row.entry.id, row.entry.user, "expired", message=message)
                )
            else:
                kept.append(row)
        return kept

    def _prepare(self, row: QueueRow) -> Prepared:
        from ds01.adapters.identity import actor_for_user
        from ds01.domain.naming import container_tag
        from ds01.services.create import CreateRequest, CreateService, Prepared, ResolvedImage
        from ds01.services.limits import plan_container_limits

        spec = row.spec
        owner = actor_for_user(row.entry.user)
        creator = CreateService(self.ctx)
        name = str(spec["name"])
        tag = container_tag(name, owner.uid)
        creator.refuse_existing(name, tag)
        info = self.ctx.engine.image(str(spec["image"]))
        if info is None:
            raise UsageError(f"The image {spec['image']} is no longer on this host.")
        return Prepared(
            actor=owner,
            req=CreateRequest(name=name, interface="queue"),
            tag=tag,
            request=row.entry.request,
            image=ResolvedImage(
                str(spec["image"]),
                str(spec["framework"]),
                spec.get("arch"),
                bool(spec.get("custom")),
                info,
            ),
            info=info,
            workspace=Path(spec["workspace"]),
            data=Path(spec["data"]) if spec.get("data") else None,
            models=Path(spec["models"]) if spec.get("models") else None,
            limits=plan_container_limits(self.ctx, owner),
            queue_id=row.entry.id,
        )

    def _granted(self, creator: Any, prepared: Prepared, row: QueueRow) -> QueueOutcome:
        from ds01.services.audit import audited

        now = self.ctx.clock.now()
        owner = prepared.actor
        with audited(
            self.ctx, owner, "queue.grant", prepared.tag, owner=owner.name, by=self._by()
        ) as audit:
            creator.finish(prepared)
            allocation = prepared.allocation
            audit.add(queue_id=row.entry.id, gpus=list(allocation.uuids) if allocation else [])
            self.store.set_state(row.entry.id, QueueState.GRANTED, now=now, container=prepared.tag)
        name = prepared.req.name
        self._tell(
            row,
            f"Your queued request #{row.entry.id} was granted: container {name!r} "
            f"now holds its GPU. Open it with: ds01 container open {name}",
        )
        return QueueOutcome(row.entry.id, owner.name, "granted", container=prepared.tag)

    def _fail(self, row: QueueRow, why: str) -> QueueOutcome:
        now = self.ctx.clock.now()
        self.store.set_state(row.entry.id, QueueState.FAILED, now=now, message=why)
        self.ctx.events.record(
            actor=row.entry.user,
            action="queue.fail",
            target=f"queue:{row.entry.id}",
            result="failed",
            details={"message": why, "by": self._by()},
        )
        self._tell(
            row,
            f"Your queued request #{row.entry.id} ({row.spec.get('name')}) could "
            f"not be granted: {why}",
        )
        return QueueOutcome(row.entry.id, row.entry.user, "failed", message=why)

    def _by(self) -> str | None:
        try:
            return self.ctx.actor.name
        except DS01Error:
            return None

    def _tell(self, row: QueueRow, message: str) -> None:
        from ds01.adapters.notifier import TerminalNotifier

        TerminalNotifier().notify(row.entry.user, message, fallback_dir=row.spec.get("workspace"))


def process_queue_quietly(ctx: AppContext) -> list[QueueOutcome]:
    """A queue pass after something freed devices; its failures only become warnings."""
    try:
        return QueueService(ctx).process()
    except DS01Error as exc:
        ctx.warnings.append(f"The GPU queue could not be processed now: {exc.message}")
        return []
