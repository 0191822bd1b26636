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
        name = prepared.req.name
        for row in self.store.waiting():
            if row.entry.user == prepared.actor.name and row.spec.get("name") == name:
                raise UsageError(
                    f"You already have a queued request for {name!r} (#{row.entry.id}).",
                    hint=f"Wait for it ('ds01 gpu queue'), or cancel it: "
                    f"ds01 gpu queue cancel {row.entry.id}",
                    code="already_queued",
                )
        spec: dict[str, Any] = {
            "name": prepared.req.name,
            "image": prepared.image.ref,
            "framework": prepared.image.framework_label,
            "arch": prepared.image.arch,
            "custom": prepared.image.custom,
            "workspace": str(prepared.workspace),
            "data": str(prepared.data) if prepared.data else None,
            "models": str(prepared.models) if prepared.models else None,
            "data_read_only": prepared.data_read_only,
            "models_read_only": prepared.models_read_only,
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
        if all_users and not actor.is_admin:
            # As `container list --all`: asking for everyone's is refused, not narrowed.
            raise RefusedError(
                "Only administrators may list every user's queue entries.",
                hint="Drop --all to list your own.",
                code="not_admin",
            )
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
                if not self._may_grant(row):
                    continue  # stays waiting; its devices stay free for the next pass
                try:
                    prepared = self._prepare(row)
                    creator.make_container(prepared, grant.allocation)
                except DS01Error as exc:
                    outcomes.append(self._fail(row, exc.message))
                    continue
                # Marked granted under the lock, with its container: a concurrent or later
                # pass never grants it twice nor mistakes its container for a name clash.
                self.store.set_state(
                    row.entry.id, QueueState.GRANTED, now=now, container=prepared.tag
                )
                granted.append((prepared, row))
        for prepared, row in granted:
            try:
                outcomes.append(self._granted(creator, prepared, row))
            except DS01Error as exc:
                # finish() removed the container again; the entry records why.
                outcomes.append(self._fail(row, exc.message, only_if=QueueState.GRANTED))
        return outcomes

    def _may_grant(self, row: QueueRow) -> bool:
        """Only a process that can verify the new container's mounts grants it: root or
        the owner (see ds01.services.mount_verify.may_verify)."""
        import pwd

        from ds01.services.mount_verify import may_verify

        try:
            return may_verify(pwd.getpwnam(row.entry.user).pw_uid)
        except KeyError:
            return True  # an account gone is failed by the pass as before

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
        from ds01.services.limits import apply_aggregate, plan_container_limits

        spec = row.spec
        owner = actor_for_user(row.entry.user)
        creator = CreateService(self.ctx)
        name = str(spec["name"])
        tag = container_tag(name, owner.uid)
        creator.refuse_existing(name, tag)
        from ds01.services.containers import ContainerService
        from ds01.services.limits import check_container_count, limits_for
        from ds01.services.mounts import check_unchanged

        check_container_count(
            limits_for(self.ctx, owner), ContainerService(self.ctx).own_containers(owner)
        )

        # The paths were checked when the request was queued; they must still be the same
        # real directories now (the state file is writable by users in stage 1).
        check_unchanged(str(spec[k]) for k in ("workspace", "data", "models") if spec.get(k))
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
            limits=apply_aggregate(self.ctx, plan_container_limits(self.ctx, owner)),
            data_read_only=bool(spec.get("data_read_only")),
            models_read_only=bool(spec.get("models_read_only")),
            queue_id=row.entry.id,
        )

    def _granted(self, creator: Any, prepared: Prepared, row: QueueRow) -> QueueOutcome:
        from ds01.services.audit import audited

        owner = prepared.actor
        with audited(
            self.ctx, owner, "queue.grant", prepared.tag, owner=owner.name, by=self._by()
        ) as audit:
            creator.finish(prepared)
            allocation = prepared.allocation
            audit.add(queue_id=row.entry.id, gpus=list(allocation.uuids) if allocation else [])
        name = prepared.req.name
        self._tell(
            row,
            f"Your queued request #{row.entry.id} was granted: container {name!r} "
            f"now holds its GPU. Open it with: ds01 container open {name}",
        )
        return QueueOutcome(row.entry.id, owner.name, "granted", container=prepared.tag)

    def _fail(
        self, row: QueueRow, why: str, *, only_if: QueueState = QueueState.WAITING
    ) -> QueueOutcome:
        now = self.ctx.clock.now()
        self.store.set_state(row.entry.id, QueueState.FAILED, now=now, message=why, only_if=only_if)
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
    except Exception as exc:  # the caller's own operation succeeded: report, don't fail it
        ctx.warnings.append(
            f"The GPU queue could not be processed now ({type(exc).__name__}: {exc}); "
            "the next enforcement pass will retry."
        )
    return []
