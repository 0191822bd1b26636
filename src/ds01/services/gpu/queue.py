"""The GPU queue: requests that wait for a device, granted in fair order.

``container create --wait`` stores the prepared request when nothing fits now. Whenever
devices may have freed up (a container removed or stopped, every enforcement pass), a
pass runs under the host-wide lock: the queue is ordered by priority with aging (pure
:mod:`ds01.domain.queue`), each entry that fits is granted — its container is created for
its owner exactly as a direct create would — and the owner is told on their terminals
and in the event log. A direct create never jumps ahead of entries already waiting.

A row in the (user-writable) database counts only when its owner's request file vouches
for it, and is re-decided at grant as a create would be (:mod:`ds01.services.gpu.queue_checks`);
rows that fail are refused, logged (``queue.refuse``) and never reserve a device. A grant
is all or nothing: the entry is marked ``granting`` (with its container and the granting
process) before the container is made, ``granted`` only once it is complete; if that
last write fails the container is removed, and the next pass puts an entry whose grant
died back to waiting (or to ``granted`` when its container is complete).
"""

from __future__ import annotations

import contextlib
import json
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds01.adapters.create_journal import Creator, crash_point
from ds01.adapters.locks import ALLOCATION_LOCK, watch_lock
from ds01.adapters.notifier import TerminalNotifier
from ds01.adapters.queue_requests import discard_request, write_request
from ds01.adapters.queue_store import QueueStore
from ds01.domain.allocation import Allocation, GpuQuota, GpuRequest
from ds01.domain.containers import ContainerState
from ds01.domain.labels import L
from ds01.domain.queue import Aging, Grant, QueueEntry, QueueState, plan
from ds01.errors import DS01Error, ErrorCode, NotFoundError, RefusedError, UsageError
from ds01.serialize import json_key, to_json
from ds01.services.audit import audited
from ds01.services.container.mount_verify import may_verify
from ds01.services.container.provisioning import Prepared, finish, make_container
from ds01.services.gpu.allocation import allocation_lock, allocation_lock_path
from ds01.services.gpu.holdings import HoldingsService
from ds01.services.gpu.queue_checks import Checked, check_rows, prepare_grant, request_record
from ds01.services.gpu.queue_listing import QueueItem, queue_item
from ds01.services.limits import limits_for_user

if TYPE_CHECKING:
    from ds01.adapters.lock_holders import Holder
    from ds01.adapters.queue_store import QueueRow
    from ds01.domain.actor import Actor
    from ds01.domain.allocation import Holding
    from ds01.domain.devices import Inventory
    from ds01.services.context import AppContext

_INSTALL_HINT = (
    "An administrator repairs the state directory with: sudo scripts/install --state-only"
)


__all__ = ["QueueOutcome", "QueueService"]


@dataclass(frozen=True)
class QueueOutcome:
    """What one queue pass did to one entry."""

    entry_id: int = field(metadata=json_key("id"))
    user: str
    state: str  # granted | failed | expired
    container: str | None = None
    message: str | None = None


class QueueService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @property
    def store(self) -> QueueStore:
        return QueueStore(self.ctx.state_db)

    def aging(self) -> Aging:
        q = self.ctx.settings.queue
        return Aging(interval=timedelta(seconds=q.aging_interval), step=q.aging_step)

    def _quotas(self, users: set[str]) -> dict[str, GpuQuota]:
        quotas: dict[str, GpuQuota] = {}
        for user in sorted(users):
            try:
                quotas[user] = limits_for_user(self.ctx, user).gpu_quota()
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
        checked, _ = check_rows(self.ctx, rows, quotas)  # a forged row reserves nothing
        entries = [c.entry for c in checked]
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
                    code=ErrorCode.ALREADY_QUEUED,
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
        return self.add(
            prepared.actor, prepared.request, spec, priority=prepared.limits.resolved.priority
        )

    def add(self, actor: Actor, request: GpuRequest, spec: dict[str, Any], *, priority: int) -> int:
        """Store an entry and its owner's request file (by the owner or root; the caller
        holds the allocation lock). ``priority`` is informational: passes use the policy's."""
        now = self.ctx.clock.now()
        entry_id = self.store.add(
            user=actor.name, request=request, spec=spec, priority=priority, now=now
        )
        record = request_record(
            entry_id=entry_id,
            user=actor.name,
            uid=actor.uid,
            request=request,
            spec=json.loads(json.dumps(spec)),
            enqueued_at=now,
        )
        try:
            # Under the allocation lock, like the row: no pass sees the row without it.
            write_request(
                Path(self.ctx.settings.state_dir),
                uid=actor.uid,
                gid=actor.gid,
                entry_id=entry_id,
                record=record,
            )
        except (DS01Error, OSError) as exc:
            why = exc.message if isinstance(exc, DS01Error) else str(exc)
            with contextlib.suppress(DS01Error):
                self.store.set_state(
                    entry_id, QueueState.FAILED, now=now, message="its request file was not written"
                )
            raise DS01Error(
                f"Cannot queue the request: its request file could not be written ({why}).",
                hint="Nothing was queued. " + _INSTALL_HINT,
            ) from exc
        return entry_id

    # -- the commands ---------------------------------------------------------------------

    def listing(self, actor: Actor, *, all_users: bool = False) -> list[QueueItem]:
        """Waiting entries with position and why they wait (own ones; admins: all)."""
        if all_users and not actor.is_admin:
            # As `container list --all`: asking for everyone's is refused, not narrowed.
            raise RefusedError(
                "Only administrators may list every user's queue entries.",
                hint="Drop --all to list your own.",
                code=ErrorCode.NOT_ADMIN,
            )
        rows = self.store.waiting()
        gpus = HoldingsService(self.ctx)
        inventory = self.ctx.inventory.read()
        holdings = gpus.holdings().in_force
        quotas = self._quotas({r.entry.user for r in rows})
        checked, refused = check_rows(self.ctx, rows, quotas)
        now = self.ctx.clock.now()
        queue_plan = plan(
            [c.entry for c in checked], now, inventory, holdings, quotas, aging=self.aging()
        )
        mine = [(c.row, c.entry) for c in checked] + [(r.row, None) for r in refused]
        reasons = {r.row.entry.id: r.reason for r in refused}
        return [
            queue_item(
                row,
                entry,
                queue_plan.status(row.entry.id),
                refused=reasons.get(row.entry.id),
            )
            for row, entry in sorted(mine, key=lambda x: x[0].entry.id)
            if (all_users and actor.is_admin) or row.entry.user == actor.name
        ]

    def cancel(self, actor: Actor, entry_id: int) -> QueueRow:
        row = self.store.get(entry_id)
        if row.entry.user != actor.name and not actor.is_admin:
            raise RefusedError(
                f"Queue entry {entry_id} belongs to {row.entry.user}, not you.",
                code=ErrorCode.NOT_OWNER,
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
                    code=ErrorCode.NOT_WAITING,
                )
        self._discard(row)
        return row

    # -- the pass -------------------------------------------------------------------------

    def process(self) -> list[QueueOutcome]:
        """Grant every waiting entry that fits now, in fair order; expire stale ones.

        Root's pass (every enforcement pass) first looks at who holds the lock, so that
        a process hogging it is ended once past its lease (:func:`watch_lock`)."""
        if os.geteuid() == 0:
            self._watch_lock()
        if not self.store.waiting() and not self.store.granting():
            return []
        outcomes: list[QueueOutcome] = []
        granted: list[tuple[Prepared, QueueRow]] = []
        with self._lock():
            self._settle_granting()
            now = self.ctx.clock.now()
            rows = self.store.waiting()
            if self.store.malformed:
                self.store.fail_malformed(self.store.malformed, now=now)
            quotas = self._quotas({r.entry.user for r in rows})
            for row in rows:
                if row.entry.user not in quotas:
                    outcomes.append(self._fail(row, "the owner's account no longer exists"))
            checked, refused = check_rows(self.ctx, rows, quotas)
            for bad in refused:
                outcomes.append(self._refuse(bad.row, bad.reason))
            checked = self._expire(checked, outcomes)
            gpus = HoldingsService(self.ctx)
            inventory = self.ctx.inventory.read()
            holdings = gpus.holdings(now).in_force
            by_id = {c.entry.id: c for c in checked}
            entries = [c.entry for c in checked]
            queue_plan = plan(entries, now, inventory, holdings, quotas, aging=self.aging())
            for waiting in queue_plan.waiting:
                if waiting.why.value == "never":
                    outcomes.append(self._fail(by_id[waiting.entry.id].row, waiting.detail))
            for grant in queue_plan.grants:
                item = by_id[grant.entry.id]
                if not self._may_grant(item.row):
                    continue  # stays waiting; its devices stay free for the next pass
                made = self._make(item, grant.allocation, outcomes)
                if made is not None:
                    granted.append((made, item.row))
        for prepared, row in granted:
            outcomes.append(self._complete(prepared, row))
        return outcomes

    def _lock(self) -> AbstractContextManager[float]:
        return allocation_lock(self.ctx)

    def _lock_path(self) -> Path:
        return allocation_lock_path(self.ctx)

    def _watch_lock(self) -> None:
        def ended(holder: Holder) -> None:
            self.ctx.events.record(
                actor=self._by() or "root",
                action="lock.end_holder",
                target=f"lock:{ALLOCATION_LOCK}",
                result="ok",
                owner=holder.user,
                details=to_json(holder),
            )

        try:
            watch_lock(self._lock_path(), on_end=ended)
        except (DS01Error, OSError) as exc:
            why = exc.message if isinstance(exc, DS01Error) else str(exc)
            self.ctx.warnings.append(f"Cannot look at the allocation lock: {why}")

    def _make(
        self, item: Checked, allocation: Allocation, out: list[QueueOutcome]
    ) -> Prepared | None:
        """Under the lock: re-decide, mark ``granting``, make the container."""
        row = item.row
        me = Creator.me().encode()
        try:
            prepared = prepare_grant(self.ctx, item, creator=me)
        except DS01Error as exc:
            out.append(self._fail(row, exc.message))
            return None
        # First the entry, then the container: a database that cannot take this write
        # (read-only, full) stops the pass before anything is made (raises).
        if not self.store.set_state(
            row.entry.id,
            QueueState.GRANTING,
            now=self.ctx.clock.now(),
            container=prepared.tag,
            message=me,
        ):
            return None  # no longer waiting: cancelled meanwhile
        try:
            make_container(self.ctx, prepared, allocation)
        except DS01Error as exc:
            self._remove_half_made(prepared)
            out.append(self._fail(row, exc.message, only_if=QueueState.GRANTING))
            return None
        return prepared

    def _complete(self, prepared: Prepared, row: QueueRow) -> QueueOutcome:
        """After the lock: start and verify, then mark ``granted``; or undo the container."""
        try:
            return self._granted(prepared, row)
        except DS01Error as exc:
            # finish() removed the container, or marking it granted failed and it was
            # removed: the entry records why (or, the database refusing, stays
            # 'granting' for the next pass to put back to waiting).
            try:
                return self._fail(row, exc.message, only_if=QueueState.GRANTING)
            except DS01Error:
                return QueueOutcome(row.entry.id, row.entry.user, "failed", message=exc.message)

    def _remove_half_made(self, prepared: Prepared) -> None:
        if prepared.created:
            with contextlib.suppress(DS01Error):
                self.ctx.engine.remove(prepared.tag, force=True)

    def _settle_granting(self) -> None:
        """Entries left ``granting`` by a pass that died or could not write the result:
        waiting again when their container is gone, granted when it is complete. A
        container still half-made is the recovery sweep's (it removes it; the entry
        then waits again at the next pass); a live granting process is left alone."""
        now = self.ctx.clock.now()
        for row in self.store.granting():
            maker = Creator.parse(row.message)
            if maker is not None and maker.alive():
                continue
            info = None
            if row.container:
                try:
                    info = self.ctx.engine.inspect(row.container).info
                except NotFoundError:
                    info = None
            if info is None:
                self.store.set_state(
                    row.entry.id,
                    QueueState.WAITING,
                    now=now,
                    message="its grant was interrupted; waiting again",
                    only_if=QueueState.GRANTING,
                )
            elif (
                info.state is not ContainerState.CREATED
                and info.owner == row.entry.user
                and info.labels.get(L.QUEUE_ID) == str(row.entry.id)
            ):
                self.store.set_state(
                    row.entry.id,
                    QueueState.GRANTED,
                    now=now,
                    container=row.container,
                    only_if=QueueState.GRANTING,
                )
                self._discard(row)

    def _may_grant(self, row: QueueRow) -> bool:
        """Only a process that can verify the new container's mounts grants it: root or
        the owner (see ds01.services.container.mount_verify.may_verify)."""
        uid = self.ctx.accounts.uid(row.entry.user)
        return True if uid is None else may_verify(uid)  # an account gone: failed by the pass

    def _expire(self, items: list[Checked], outcomes: list[QueueOutcome]) -> list[Checked]:
        max_wait = self.ctx.settings.queue.max_wait
        if not max_wait:
            return items
        now = self.ctx.clock.now()
        kept = []
        for item in items:
            row = item.row
            # The vouched-for time: a backdated row neither ages nor expires by its date.
            if now - item.entry.enqueued_at >= timedelta(seconds=max_wait):
                message = f"expired after waiting {int(max_wait // 3600)} h"
                self.store.set_state(row.entry.id, QueueState.EXPIRED, now=now, message=message)
                self._discard(row)
                self._tell(
                    row,
                    f"Your queued request #{row.entry.id} ({row.spec.get('name')}) "
                    f"{message}; create it again when you need it.",
                )
                outcomes.append(
                    QueueOutcome(row.entry.id, row.entry.user, "expired", message=message)
                )
            else:
                kept.append(item)
        return kept

    def _prepare(self, row: QueueRow) -> Prepared:
        """The container of one waiting row, checked against its owner's file and
        re-decided as at create (a pass's first half; tests drive it directly)."""
        quotas = self._quotas({row.entry.user})
        checked, refused = check_rows(self.ctx, [row], quotas)
        if not checked:
            why = refused[0].reason if refused else "it cannot be checked by this process"
            raise RefusedError(
                f"Queue entry {row.entry.id} is refused: {why}.", code=ErrorCode.FORGED
            )
        return prepare_grant(self.ctx, checked[0], creator=Creator.me().encode())

    def _granted(self, prepared: Prepared, row: QueueRow) -> QueueOutcome:
        owner = prepared.actor
        with audited(
            self.ctx, owner, "queue.grant", prepared.tag, owner=owner.name, by=self._by()
        ) as audit:
            finish(self.ctx, prepared)
            allocation = prepared.allocation
            audit.add(queue_id=row.entry.id, gpus=list(allocation.uuids) if allocation else [])
            crash_point("queue-granted")
            try:
                self.store.set_state(
                    row.entry.id,
                    QueueState.GRANTED,
                    now=self.ctx.clock.now(),
                    container=prepared.tag,
                    only_if=QueueState.GRANTING,
                )
            except DS01Error:
                # Not recorded, not granted: the container goes, the entry (still
                # 'granting') waits again at the next pass.
                self._remove_half_made(prepared)
                raise
        self._discard(row)
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
        self._discard(row)
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

    def _refuse(self, row: QueueRow, why: str) -> QueueOutcome:
        """A row its owner's ds01 did not make: failed, and logged as a refusal."""
        message = f"refused: {why}"
        now = self.ctx.clock.now()
        self.store.set_state(row.entry.id, QueueState.FAILED, now=now, message=message)
        self.ctx.events.record(
            actor=self._by() or "ds01",
            action="queue.refuse",
            target=f"queue:{row.entry.id}",
            result="refused",
            owner=row.entry.user,
            details={
                "message": why,
                "claimed_user": row.entry.user,
                "name": row.spec.get("name"),
                "request": row.entry.request.describe(),
                "row_priority": row.entry.priority,
            },
        )
        return QueueOutcome(row.entry.id, row.entry.user, "failed", message=message)

    def _discard(self, row: QueueRow) -> None:
        """The request file of an entry that no longer waits (owner's or root's pass)."""
        uid = self.ctx.accounts.uid(row.entry.user)
        if uid is None:
            return
        discard_request(Path(self.ctx.settings.state_dir), uid=uid, entry_id=row.entry.id)

    def _by(self) -> str | None:
        try:
            return self.ctx.actor.name
        except DS01Error:
            return None

    def _tell(self, row: QueueRow, message: str) -> None:
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
