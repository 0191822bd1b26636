"""Resource policy: which group a user is in, and the limits that apply, with provenance.

Plain data in, plain data out. The loader (:mod:`ds01.config.limits`) reads the YAML file
and any members files and hands over a :class:`Policy`; nothing here reads files, the
system's group database or the clock.

**Layers.** Every limit key is looked up in four layers, later ones winning:
``builtin`` (:data:`BUILTIN_DEFAULTS`) ← ``default`` (the file's ``defaults``) ←
``group:<name>`` (the user's group) ← ``user`` (``users.<name>``). A layer changes only
the keys it names; a key it sets to ``None`` (YAML ``null``) becomes unlimited and stays
so unless a later layer names it again. Nested blocks (``aggregate``, ``idle``) merge key
by key, because their keys are flattened to dotted names (``aggregate.memory``).
The user layer sits *on top of* the user's group: the existing DS01 dropped the group
limits for users with an override, which gave them the defaults instead.

**Membership** (:func:`find_group`), first step that finds a group decides:

1. ``users.<name>.group``, when the user's entry names a group;
2. the groups whose inline ``members`` list the user;
3. the groups whose ``members_file`` lists the user;
4. the groups whose ``unix_group`` the user belongs to;
5. ``default_group``; with no groups defined at all, the pseudo-group ``default``.

When one step finds several groups, ``membership_precedence`` (a list of group names)
decides: the first listed one among them wins. If it lists none of them, that is a
configuration error (exit 2), never a silent guess.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ds01.domain.limit_keys import (
    BUILTIN_DEFAULTS,
    KEY_KINDS,
    LIMIT_KEYS,
    NO_GROUP,
    NON_NULLABLE_KEYS,
    SOURCE_BUILTIN,
    SOURCE_DEFAULT,
    SOURCE_USER,
    Layer,
    LimitValue,
)
from ds01.domain.resolved_limits import AggregateLimits, IdlePolicy, ResolvedLimits, display_value
from ds01.domain.units import format_size
from ds01.errors import ConfigError, ErrorCode

__all__ = [
    "BUILTIN_DEFAULTS",
    "KEY_KINDS",
    "LIMIT_KEYS",
    "NON_NULLABLE_KEYS",
    "NO_GROUP",
    "SOURCE_BUILTIN",
    "SOURCE_DEFAULT",
    "SOURCE_USER",
    "AggregateLimits",
    "GroupRule",
    "IdlePolicy",
    "LimitValue",
    "Membership",
    "Policy",
    "ResolvedLimits",
    "UserRule",
    "choose_by_precedence",
    "consistency_problems",
    "display_value",
    "find_group",
    "group_source",
    "merge_layers",
    "resolve",
]


def group_source(name: str) -> str:
    """The provenance string for a value that came from group ``name``."""
    return f"group:{name}"


@dataclass(frozen=True)
class GroupRule:
    """One ``groups.<name>`` entry: its limits and who belongs to it.

    ``file_members`` is the content of the group's members file, read by the loader;
    ``members_file`` is its path, kept for messages only.
    """

    name: str
    limits: Layer = field(default_factory=dict)
    members: frozenset[str] = frozenset()
    file_members: frozenset[str] = frozenset()
    members_file: str | None = None
    unix_group: str | None = None


@dataclass(frozen=True)
class UserRule:
    """One ``users.<name>`` entry: an optional explicit group and limit overrides."""

    name: str
    limits: Layer = field(default_factory=dict)
    group: str | None = None


@dataclass(frozen=True)
class Policy:
    """A whole resource policy as plain data.

    ``source`` names the file (or ``built-in``) and ``lines`` maps dotted keys such as
    ``groups.student.memory`` to their line, so errors found at resolution time can
    still point into the file.
    """

    defaults: Layer = field(default_factory=dict)
    groups: Mapping[str, GroupRule] = field(default_factory=dict)
    users: Mapping[str, UserRule] = field(default_factory=dict)
    default_group: str | None = None
    membership_precedence: tuple[str, ...] = ()
    source: str = "built-in"
    lines: Mapping[str, int] = field(default_factory=dict)

    def where(self, dotted_key: str) -> str:
        """``FILE:LINE`` for a key when its line is known, else the file name."""
        line = self.lines.get(dotted_key)
        return f"{self.source}:{line}" if line is not None else self.source


@dataclass(frozen=True)
class Membership:
    """The group a user's limits come from and which lookup step found it.

    ``via`` is one of ``users.<name>.group``, ``members``, ``members_file``,
    ``unix_group <name>``, ``default_group`` or ``no groups defined``.
    """

    group: str
    via: str


def choose_by_precedence(candidates: Sequence[str], precedence: Sequence[str]) -> str | None:
    """The group that wins among ``candidates`` (all found by one lookup step).

    One candidate wins alone; several are ordered by ``precedence`` (first listed wins);
    ``None`` when precedence names none of them: the caller reports the conflict.
    """
    if len(candidates) == 1:
        return candidates[0]
    for name in precedence:
        if name in candidates:
            return name
    return None


def find_group(policy: Policy, user: str, unix_groups: Collection[str] = ()) -> Membership:
    """The group whose limits apply to ``user`` (lookup order in the module docstring).

    ``unix_groups`` are the Linux group names the user belongs to. Raises
    :class:`ConfigError` when a step finds several groups that ``membership_precedence``
    does not order, or when no group applies and ``default_group`` is not set.
    """
    entry = policy.users.get(user)
    if entry is not None and entry.group is not None:
        if entry.group not in policy.groups:
            raise ConfigError(
                f"{policy.where(f'users.{user}.group')}: users.{user}.group names group "
                f"{entry.group!r}, which is not defined under groups.",
                hint="Define the group or correct the name.",
            )
        return Membership(entry.group, f"users.{user}.group")

    unix = frozenset(unix_groups)
    steps: tuple[tuple[str, Callable[[GroupRule], bool]], ...] = (
        ("members", lambda g: user in g.members),
        ("members_file", lambda g: user in g.file_members),
        ("unix_group", lambda g: g.unix_group is not None and g.unix_group in unix),
    )
    for via, claims in steps:
        candidates = [name for name, rule in policy.groups.items() if claims(rule)]
        if not candidates:
            continue
        chosen = choose_by_precedence(candidates, policy.membership_precedence)
        if chosen is None:
            listed = ", ".join(
                f"{name} ({policy.where(f'groups.{name}.{via}')})" for name in candidates
            )
            raise ConfigError(
                f"{policy.source}: user {user!r} is in several groups through {via}: "
                f"{listed}, and membership_precedence does not say which one applies.",
                hint=(
                    "Add membership_precedence: [group, ...] to the policy file (first listed "
                    f"wins), or give the user an entry users.{user}.group."
                ),
                code=ErrorCode.AMBIGUOUS_MEMBERSHIP,
            )
        if via == "unix_group":
            return Membership(chosen, f"unix_group {policy.groups[chosen].unix_group}")
        return Membership(chosen, via)

    if policy.default_group is not None:
        if policy.default_group not in policy.groups:
            raise ConfigError(
                f"{policy.where('default_group')}: default_group {policy.default_group!r} "
                "is not defined under groups.",
                hint="Define the group or correct default_group.",
            )
        return Membership(policy.default_group, "default_group")
    if not policy.groups:
        return Membership(NO_GROUP, "no groups defined")
    raise ConfigError(
        f"{policy.source}: user {user!r} is in no group and default_group is not set.",
        hint="Set default_group to the group for everybody not listed elsewhere.",
    )


def merge_layers(
    layers: Iterable[tuple[str, Layer]],
) -> tuple[dict[str, LimitValue], dict[str, str]]:
    """Merge ``(source, layer)`` pairs, later ones winning key by key.

    Returns the values and, for each key, the source of the layer that set it. A key a
    layer does not name is inherited; a key it names as ``None`` is unlimited.
    """
    values: dict[str, LimitValue] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for key, value in layer.items():
            if key not in KEY_KINDS:
                raise ValueError(f"unknown limit key {key!r} in layer {source!r}")
            values[key] = value
            sources[key] = source
    return values, sources


def consistency_problems(values: Mapping[str, LimitValue]) -> list[tuple[str, str]]:
    """Combinations Docker would refuse, as ``(key, message)`` pairs; empty when fine."""
    memory = values.get("memory")
    swap = values.get("memory_swap")
    if isinstance(memory, int) and isinstance(swap, int) and swap < memory:
        return [
            (
                "memory_swap",
                f"memory_swap {format_size(swap)} is less than memory {format_size(memory)}; "
                "Docker refuses that (memory_swap is memory plus swap). Set it to at least "
                "memory, or leave it out for no swap",
            )
        ]
    return []


def resolve(policy: Policy, user: str, unix_groups: Collection[str] = ()) -> ResolvedLimits:
    """The limits for ``user``: builtin ← defaults ← their group ← their ``users`` entry.

    Deterministic: the same policy, user and set of unix groups always give the same
    result (the order of ``unix_groups`` does not matter). Raises :class:`ConfigError`
    when membership is ambiguous or the merged limits are inconsistent.
    """
    membership = find_group(policy, user, unix_groups)
    layers: list[tuple[str, Layer]] = [
        (SOURCE_BUILTIN, BUILTIN_DEFAULTS),
        (SOURCE_DEFAULT, policy.defaults),
    ]
    group_rule = policy.groups.get(membership.group)
    if group_rule is not None:
        layers.append((group_source(group_rule.name), group_rule.limits))
    user_rule = policy.users.get(user)
    if user_rule is not None:
        layers.append((SOURCE_USER, user_rule.limits))
    values, sources = merge_layers(layers)
    if "memory_swap" not in values:
        # Unset swap means "no swap": Docker's own default would allow as much swap as
        # memory again, which on a shared server thrashes everybody's disk.
        values["memory_swap"] = values["memory"]
        sources["memory_swap"] = SOURCE_BUILTIN

    problems = consistency_problems(values)
    if problems:
        details = "; ".join(message for _, message in problems)
        origin = ", ".join(
            f"{key} from {sources[key]} ({_where_for(policy, key, sources[key], user)})"
            for key in ("memory", "memory_swap")
        )
        raise ConfigError(
            f"{policy.source}: the limits of user {user!r} (group {membership.group}) are "
            f"inconsistent: {details}. Values: {origin}.",
            hint="Set memory_swap next to memory in the same group or users entry.",
        )
    return _build(user, membership, values, sources)


def _where_for(policy: Policy, key: str, source: str, user: str) -> str:
    if source == SOURCE_DEFAULT:
        return policy.where(f"defaults.{key}")
    if source == SOURCE_USER:
        return policy.where(f"users.{user}.{key}")
    if source.startswith("group:"):
        return policy.where(f"groups.{source.removeprefix('group:')}.{key}")
    return "built-in"


def _build(
    user: str,
    membership: Membership,
    values: dict[str, LimitValue],
    sources: dict[str, str],
) -> ResolvedLimits:
    return ResolvedLimits(
        user=user,
        group=membership.group,
        group_via=membership.via,
        max_cpus=_typed(values, "max_cpus"),
        memory=_typed(values, "memory"),
        memory_swap=_typed(values, "memory_swap"),
        shm_size=_typed(values, "shm_size"),
        pids_limit=_typed(values, "pids_limit"),
        max_containers=_typed(values, "max_containers"),
        max_gpu_equivalents=_typed(values, "max_gpu_equivalents"),
        max_gpus_per_container=_typed(values, "max_gpus_per_container"),
        allow_full_gpu=_typed(values, "allow_full_gpu"),
        allowed_mig_profiles=_typed(values, "allowed_mig_profiles"),
        priority=_typed(values, "priority"),
        idle_timeout_s=_typed(values, "idle_timeout"),
        max_runtime_s=_typed(values, "max_runtime"),
        gpu_hold_after_stop_s=_typed(values, "gpu_hold_after_stop"),
        container_hold_after_stop_s=_typed(values, "container_hold_after_stop"),
        aggregate=AggregateLimits(
            cpus=_typed(values, "aggregate.cpus"),
            memory=_typed(values, "aggregate.memory"),
            pids=_typed(values, "aggregate.pids"),
        ),
        idle=IdlePolicy(
            gpu_threshold=_typed(values, "idle.gpu_threshold"),
            cpu_threshold=_typed(values, "idle.cpu_threshold"),
            network_threshold_bytes=_typed(values, "idle.network_threshold"),
            window_s=_typed(values, "idle.window"),
        ),
        values=dict(values),
        sources=dict(sources),
    )


def _typed(values: Mapping[str, LimitValue], key: str) -> Any:
    """``values[key]`` checked against the key's kind (and cpus/percent made float).

    A wrong type here is a bug in whoever built the Policy (the loader validates what
    people write), so it raises TypeError rather than a user-facing error.
    """
    value = values[key]
    if value is None and key not in NON_NULLABLE_KEYS:
        return None
    kind = KEY_KINDS[key]
    if isinstance(value, bool) and kind != "bool":
        raise TypeError(f"limit {key!r} should be of kind {kind}, got {value!r}")
    if kind in ("cpus", "percent") and isinstance(value, int | float):
        return float(value)
    if kind in ("size", "count", "duration") and isinstance(value, int):
        return value
    if kind == "equivalents" and isinstance(value, Fraction | int):
        return Fraction(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "profiles" and isinstance(value, tuple) and all(isinstance(p, str) for p in value):
        return value
    raise TypeError(f"limit {key!r} should be of kind {kind}, got {value!r}")
