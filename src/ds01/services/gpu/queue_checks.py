"""What a queue pass trusts: rows vouched for by their owners' files, re-checked as at create.

A queue row is only an index in a database every DS01 user can write (stage 1). Before a
row takes part in a pass:

1. **who**: its owner's request file (:mod:`ds01.adapters.queue_requests`) must exist,
   be the owner's own and say exactly what the row says; otherwise the row is refused
   (failed with the reason, logged) and never reserves or takes a device;
2. **standing**: its priority is the owner's policy priority now, never the row's, and
   its ``enqueued_at`` is no earlier than the kernel's change time of that file;
3. **grant**: the container is re-decided exactly as ``container create`` decides it,
   for the owner and with the owner's rights (:func:`prepare_grant`): the name, the
   account (never root), the container count, the image's owner, and every mount
   re-resolved under the owner's roots with symlinks resolved as the owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds01.adapters.clock import SystemClock
from ds01.adapters.queue_requests import Unverifiable, read_request
from ds01.domain.allocation import GpuRequest
from ds01.domain.labels import ImageLabels
from ds01.domain.naming import container_tag, validate_name
from ds01.domain.queue import QueueEntry
from ds01.domain.resolved_limits import check_container_count
from ds01.errors import ErrorCode, RefusedError, UsageError
from ds01.services.container.lookup import own_containers, refuse_existing
from ds01.services.container.mounts import plan_mounts
from ds01.services.container.provisioning import CreateRequest, Prepared, ResolvedImage
from ds01.services.limits import apply_aggregate, limits_for, plan_container_limits

if TYPE_CHECKING:
    from ds01.adapters.queue_store import QueueRow
    from ds01.domain.allocation import GpuQuota
    from ds01.services.context import AppContext

__all__ = ["Checked", "Refused", "check_rows", "prepare_grant", "request_record"]

#: Bumped when the request file's fields change; a file of another version is refused.
VERSION = 1


@dataclass(frozen=True)
class Checked:
    """A row its owner's file vouches for, as the pass may use it."""

    row: QueueRow
    entry: QueueEntry  # policy priority, request and times as vouched for
    spec: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    """A row no process of its owner made: failed with ``reason``."""

    row: QueueRow
    reason: str


def request_record(
    *,
    entry_id: int,
    user: str,
    uid: int,
    request: GpuRequest,
    spec: dict[str, Any],
    enqueued_at: datetime,
) -> dict[str, Any]:
    """What ``create --wait`` writes into the owner's request file."""
    return {
        "version": VERSION,
        "id": entry_id,
        "user": user,
        "uid": uid,
        "request": request.encode(),
        "spec": spec,
        "enqueued_at": enqueued_at.isoformat(),
    }


def check_rows(
    ctx: AppContext, rows: list[QueueRow], quotas: dict[str, GpuQuota]
) -> tuple[list[Checked], list[Refused]]:
    """Split waiting rows (whose users have a policy) into vouched-for and refused ones.

    A row this process cannot check (it may not read the owner's directory) is in
    neither list: it takes no part in this pass and is left for one that can."""
    checked: list[Checked] = []
    refused: list[Refused] = []
    state_dir = Path(ctx.settings.state_dir)
    for row in rows:
        quota = quotas.get(row.entry.user)
        if quota is None:
            continue
        try:
            checked.append(_check(ctx, state_dir, row, quota))
        except Unverifiable as exc:
            if exc.definite:
                refused.append(Refused(row, exc.reason))
    return checked, refused


def _check(ctx: AppContext, state_dir: Path, row: QueueRow, quota: GpuQuota) -> Checked:
    user = row.entry.user
    if user.isdigit():
        raise Unverifiable(f"{user!r} is a uid; DS01 queues requests under account names")
    uid = ctx.accounts.uid(user)
    if uid is None:
        raise Unverifiable(f"there is no account {user!r}")
    if uid == 0:
        raise Unverifiable("root does not queue containers (DS01 never creates one as root)")
    found = read_request(state_dir, uid=uid, entry_id=row.entry.id)
    record = found.record
    expected = request_record(
        entry_id=row.entry.id,
        user=user,
        uid=uid,
        request=row.entry.request,
        spec=row.spec,
        enqueued_at=row.entry.enqueued_at,
    )
    differs = sorted(k for k in expected if record.get(k) != expected[k])
    if differs:
        raise Unverifiable(
            f"the row does not match its owner's request file ({', '.join(differs)} differ)"
        )
    enqueued = row.entry.enqueued_at
    if isinstance(ctx.clock, SystemClock):
        # The kernel set the file's change time when it was written; no user can set it
        # back. (An injected clock in tests lives in another time line: not compared.)
        written = datetime.fromtimestamp(found.written_at, UTC)
        enqueued = max(enqueued, written)
    entry = QueueEntry(
        id=row.entry.id,
        user=user,
        request=GpuRequest.decode(str(record["request"])),
        spec=row.entry.spec,
        priority=quota.priority,  # the policy's, never the row's
        enqueued_at=enqueued,
    )
    return Checked(row, entry, dict(record["spec"]))


def prepare_grant(ctx: AppContext, checked: Checked, *, creator: str) -> Prepared:
    """The container of a checked entry, decided as ``container create`` decides it.

    Raises exit 2 (name, mounts, image gone), 3 (policy, image of another user)."""
    spec = checked.spec
    owner = ctx.accounts.actor(checked.entry.user, admin_group=ctx.settings.effective_admin_group())
    if owner.uid == 0:
        raise RefusedError("DS01 never creates a container as root.", code=ErrorCode.ROOT_REFUSED)
    name = str(spec.get("name"))
    validate_name(name)
    tag = container_tag(name, owner.uid)
    refuse_existing(ctx.engine, name, tag)
    check_container_count(limits_for(ctx, owner), own_containers(ctx.engine, owner))
    image_ref = str(spec.get("image"))
    info = ctx.engine.image(image_ref)
    if info is None:
        raise UsageError(
            f"The image {image_ref} is no longer on this host.", code=ErrorCode.NO_IMAGE
        )
    baked = ImageLabels.decode(info.labels)
    if baked and baked.maintainer and baked.maintainer != owner.name and not owner.is_admin:
        raise RefusedError(
            f"The image {image_ref} belongs to {baked.maintainer}.",
            hint="Use a catalog framework or an image of your own.",
            code=ErrorCode.NOT_OWNER,
        )
    # As at create: every path resolved with the owner's rights, under the owner's roots;
    # the grant may run as root, which could read anything.
    mounts = plan_mounts(
        ctx.settings,
        owner,
        name=name,
        workspace=_path(spec, "workspace") or "",
        data=_path(spec, "data"),
        models=_path(spec, "models"),
        cwd=Path(owner.home),
    )
    for what, queued, now in (
        ("workspace", _path(spec, "workspace"), mounts.workspace),
        ("data", _path(spec, "data"), mounts.data),
        ("models", _path(spec, "models"), mounts.models),
    ):
        if queued is not None and str(now) != queued:
            raise UsageError(
                f"The {what} directory {queued} now leads to {now} (a link was put in its "
                "place since the request was queued); DS01 does not mount it like that.",
                hint="Queue the request again with the real directory.",
                code=ErrorCode.MOUNT_CHANGED,
            )
    framework = baked.framework if baked and baked.framework else str(spec.get("framework"))
    return Prepared(
        actor=owner,
        req=CreateRequest(name=name, interface="queue"),
        tag=tag,
        request=checked.entry.request,
        image=ResolvedImage(image_ref, framework, spec.get("arch"), bool(spec.get("custom")), info),
        info=info,
        workspace=mounts.workspace,
        data=mounts.data,
        models=mounts.models,
        limits=apply_aggregate(ctx, plan_container_limits(ctx, owner)),
        data_read_only=bool(spec.get("data_read_only")) or mounts.data_read_only,
        models_read_only=bool(spec.get("models_read_only")) or mounts.models_read_only,
        queue_id=checked.entry.id,
        creator=creator,
    )


def _path(spec: dict[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"The queued {key} directory is not a path.", code=ErrorCode.BAD_PATH)
    return value
