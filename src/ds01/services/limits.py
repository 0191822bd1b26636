"""The resource policy as services use it: loaded each command, resolved per user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ds01.domain.containers import Limits
from ds01.errors import RefusedError

if TYPE_CHECKING:
    from ds01.adapters.cgroups import AggregateResult
    from ds01.domain.actor import Actor
    from ds01.domain.containers import ContainerInfo
    from ds01.domain.policy import ResolvedLimits
    from ds01.services.context import AppContext

__all__ = [
    "ContainerLimits",
    "check_container_count",
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
    from ds01.adapters.identity import actor_for_user

    return limits_for(ctx, actor_for_user(user))


def describe_limits(
    ctx: AppContext, actor: Actor, user: str | None
) -> tuple[dict[str, Any], ResolvedLimits]:
    """``ds01 limits``: the caller's limits, or (admins) another user's."""
    if user is not None and user != actor.name and not actor.is_admin:
        raise RefusedError(
            "Only administrators may look at other users' limits.",
            hint="Drop the user name to see your own.",
            code="not_admin",
        )
    resolved = limits_for_user(ctx, user) if user else limits_for(ctx, actor)
    data = resolved.to_dict()
    driver = ctx.engine.cgroup_driver()
    data["cgroup_driver"] = driver
    data["cgroup_parent"] = resolved.cgroup_parent(driver)
    return data, resolved


@dataclass(frozen=True)
class ContainerLimits:
    """What one new container gets: Docker limits plus its parent cgroup."""

    resolved: ResolvedLimits
    limits: Limits
    driver: str
    aggregate: AggregateResult | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group": self.resolved.group,
            "cgroup_parent": self.limits.cgroup_parent,
            "nano_cpus": self.limits.nano_cpus,
            "memory": self.limits.memory,
            "memory_swap": self.limits.memory_swap,
            "shm_size": self.limits.shm_size,
            "pids_limit": self.limits.pids_limit,
        }
        if self.aggregate is not None:
            out["aggregate_applied"] = self.aggregate.applied
        return out


def plan_container_limits(ctx: AppContext, actor: Actor) -> ContainerLimits:
    """Per-container limits and the user's parent cgroup (prepared with the aggregate)."""
    from ds01.adapters.cgroups import CgroupManager

    resolved = limits_for(ctx, actor)
    info = ctx.engine.info()
    driver = str(info.get("CgroupDriver", "cgroupfs"))
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
    aggregate = None
    manager = CgroupManager(driver)
    if not resolved.aggregate.is_unlimited or manager.privileged:
        # Applied even when unlimited (by root): a limit the policy no longer has must be
        # lifted from the user's parent cgroup, not left behind.
        aggregate = manager.apply(parent, resolved.slice_chain()[-1], resolved.aggregate)
        if not aggregate.applied and not resolved.aggregate.is_unlimited:
            ctx.warnings.append(
                f"Your combined limit ({aggregate.where}) is not in place yet: "
                f"{aggregate.reason}. Per-container limits still apply."
            )
    return ContainerLimits(resolved, limits, driver, aggregate)


def check_container_count(
    resolved: ResolvedLimits, existing: list[ContainerInfo], *, adding: int = 1
) -> None:
    """``max_containers`` counts containers in every state; exit 3 naming what to remove."""
    cap = resolved.max_containers
    if cap is None or len(existing) + adding <= cap:
        return
    names = ", ".join(f"{c.display_name} ({c.state.value})" for c in existing)
    raise RefusedError(
        f"You have {len(existing)} containers and may have at most {cap} "
        f"(group {resolved.group}): {names}.",
        hint="Remove one you no longer need: 'ds01 container remove NAME' "
        "(stopped ones count too).",
        code="container_limit",
        details={"held": len(existing), "allowed": cap, "containers": [c.tag for c in existing]},
    )
