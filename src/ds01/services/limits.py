"""The resource policy as services use it: loaded each command, resolved per user."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ds01.adapters.cgroups import AggregateResult, CgroupManager
from ds01.domain.containers import Limits
from ds01.errors import DS01Error, EngineError, ErrorCode, RefusedError
from ds01.serialize import JSON_OMIT_NONE
from ds01.services.container.lookup import all_containers

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.domain.policy import ResolvedLimits
    from ds01.domain.resolved_limits import LimitItem
    from ds01.services.context import AppContext

__all__ = [
    "AppliedLimits",
    "ContainerLimits",
    "LimitsReport",
    "UserLimitsResult",
    "apply_aggregate",
    "apply_user_limits",
    "describe_limits",
    "limits_for",
    "limits_for_user",
    "plan_container_limits",
]


def limits_for(ctx: AppContext, actor: Actor) -> ResolvedLimits:
    """The limits that apply to ``actor`` (their Linux groups decide ``unix_group`` rules)."""
    return ctx.policy.resolve(actor.name, actor.groups)


def limits_for_user(ctx: AppContext, user: str) -> ResolvedLimits:
    """Limits of any user by name (admins, ``ds01 limits USER``, enforcement)."""
    return limits_for(ctx, ctx.accounts.actor(user))


@dataclass(frozen=True)
class LimitsReport:
    """``ds01 limits --json``: a user's resolved limits, the Docker keyword arguments they
    mean, and where their containers go in the cgroup tree (see docs/resource-limits.md)."""

    user: str
    group: str
    group_via: str
    limits: Mapping[str, LimitItem]
    docker: Mapping[str, int]
    cgroup_driver: str
    cgroup_parent: str

    @classmethod
    def of(cls, resolved: ResolvedLimits, driver: str) -> LimitsReport:
        return cls(
            user=resolved.user,
            group=resolved.group,
            group_via=resolved.group_via,
            limits=resolved.limit_items(),
            docker=resolved.docker_create_kwargs(),
            cgroup_driver=driver,
            cgroup_parent=resolved.cgroup_parent(driver),
        )


def describe_limits(
    ctx: AppContext, actor: Actor, user: str | None
) -> tuple[LimitsReport, ResolvedLimits]:
    """``ds01 limits``: the caller's limits, or (admins) another user's."""
    if user is not None and user != actor.name and not actor.is_admin:
        raise RefusedError(
            "Only administrators may look at other users' limits.",
            hint="Drop the user name to see your own.",
            code=ErrorCode.NOT_ADMIN,
        )
    resolved = limits_for_user(ctx, user) if user else limits_for(ctx, actor)
    return LimitsReport.of(resolved, ctx.engine.cgroup_driver()), resolved


@dataclass(frozen=True)
class AppliedLimits:
    """The limits a new container got (``container create --json``: ``limits``).
    ``aggregate_applied`` is there only once the user's combined limit was tried."""

    group: str
    cgroup_parent: str | None
    nano_cpus: int | None
    memory: int | None
    memory_swap: int | None
    shm_size: int | None
    pids_limit: int | None
    aggregate_applied: bool | None = field(default=None, metadata=JSON_OMIT_NONE)


@dataclass(frozen=True)
class ContainerLimits:
    """What one new container gets: Docker limits plus its parent cgroup."""

    resolved: ResolvedLimits
    limits: Limits
    driver: str
    aggregate: AggregateResult | None = None

    def applied(self) -> AppliedLimits:
        """What the container gets, flat, as create reports it."""
        return AppliedLimits(
            group=self.resolved.group,
            cgroup_parent=self.limits.cgroup_parent,
            nano_cpus=self.limits.nano_cpus,
            memory=self.limits.memory,
            memory_swap=self.limits.memory_swap,
            shm_size=self.limits.shm_size,
            pids_limit=self.limits.pids_limit,
            aggregate_applied=None if self.aggregate is None else self.aggregate.applied,
        )


def plan_container_limits(ctx: AppContext, actor: Actor) -> ContainerLimits:
    """Per-container limits and the cgroup parent; nothing is written yet."""
    resolved = limits_for(ctx, actor)
    info = ctx.engine.info()
    driver = str(info.get("CgroupDriver", "cgroupfs"))
    if driver not in ("systemd", "cgroupfs"):
        raise EngineError(
            f"The Docker engine reports the cgroup driver {driver!r}; DS01 knows systemd "
            "and cgroupfs.",
            hint="Check 'docker info' and the engine's exec-opts (native.cgroupdriver).",
        )
    parent = resolved.cgroup_parent(driver)
    kwargs = resolved.docker_create_kwargs()
    host_cpus = int(info.get("NCPU") or 0)
    if host_cpus and kwargs.get("nano_cpus", 0) > host_cpus * 1_000_000_000:
        # Docker refuses more CPUs than the host has; a policy written for the big server
        # must still work on a smaller one (the limit is then the whole machine).
        ctx.warnings.append(
            f"Your CPU limit ({resolved.display('max_cpus')}) is more than this host has; "
            f"using all {host_cpus}."
        )
        kwargs["nano_cpus"] = host_cpus * 1_000_000_000
    aggregate_cpus = resolved.aggregate.cpus
    if aggregate_cpus is not None and kwargs.get("nano_cpus", 0) > aggregate_cpus * 1e9:
        # One container can never use more than all of the user's together, and cgroup v1
        # refuses a child CPU quota above its parent's.
        kwargs["nano_cpus"] = round(aggregate_cpus * 1_000_000_000)
    limits = Limits(
        nano_cpus=kwargs.get("nano_cpus"),
        memory=kwargs.get("mem_limit"),
        memory_swap=kwargs.get("memswap_limit"),
        shm_size=kwargs.get("shm_size"),
        pids_limit=kwargs.get("pids_limit"),
        cgroup_parent=parent,
    )
    return ContainerLimits(resolved, limits, driver)


def apply_aggregate(ctx: AppContext, planned: ContainerLimits) -> ContainerLimits:
    """Prepare the user's parent cgroup with the aggregate limit (needs root).

    Applied even when unlimited (by root): a limit the policy no longer has must be
    lifted from the user's parent cgroup, not left behind.
    """
    resolved = planned.resolved
    manager = CgroupManager(planned.driver)
    if resolved.aggregate.is_unlimited and not manager.privileged:
        return planned
    parent = planned.limits.cgroup_parent or resolved.cgroup_parent(planned.driver)
    result = manager.apply(parent, resolved.slice_chain()[-1], resolved.aggregate)
    if not result.applied and not resolved.aggregate.is_unlimited:
        ctx.warnings.append(
            f"Your combined limit ({result.where}) is not in place yet: {result.reason}. "
            "Per-container limits still apply."
        )
    return replace(planned, aggregate=result)


@dataclass(frozen=True)
class UserLimitsResult:
    """One user's line of ``ds01 admin apply-limits``: whether their combined limit is in
    place, on which cgroup, and why not."""

    user: str
    applied: bool
    where: str | None
    reason: str


def apply_user_limits(
    ctx: AppContext, actor: Actor, users: Collection[str] | None = None
) -> list[UserLimitsResult]:
    """Prepare every user's parent cgroup with their aggregate limit (admins, as root).

    Without ``users``: everyone who has a DS01 or AIME container. The enforcement timer
    runs this each pass, so a policy edit reaches running users within a minute.
    """
    if not actor.is_admin:
        raise RefusedError("Only administrators may apply limits.", code=ErrorCode.NOT_ADMIN)
    if users is None:
        users = sorted({c.owner for c in all_containers(ctx.engine) if c.owner})
    out: list[UserLimitsResult] = []
    for user in users:
        try:
            owner = ctx.accounts.actor(user)
            applied = apply_aggregate(ctx, plan_container_limits(ctx, owner))
        except DS01Error as exc:
            out.append(UserLimitsResult(user, False, None, exc.message))
            continue
        result = applied.aggregate
        out.append(
            UserLimitsResult(
                user=user,
                applied=bool(result and result.applied),
                where=result.where if result else None,
                reason=result.reason if result else "no aggregate limit",
            )
        )
    return out
