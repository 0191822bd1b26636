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

from ds01.domain.devices import format_equivalents
from ds01.domain.slices import cgroup_parent, slice_chain
from ds01.domain.units import format_cpus, format_duration, format_size
from ds01.errors import ConfigError

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

#: A limit value: ``None`` is unlimited; sizes are bytes, durations whole seconds,
#: GPU equivalents exact fractions, MIG profiles a tuple of profile names.
LimitValue = int | float | bool | Fraction | tuple[str, ...] | None
#: The keys one layer names (dotted for nested blocks), and only those.
Layer = Mapping[str, LimitValue]

SOURCE_BUILTIN = "builtin"
SOURCE_DEFAULT = "default"
SOURCE_USER = "user"
#: The group of everybody when the policy defines no groups at all.
NO_GROUP = "default"

#: Every limit key and how its value is written for people.
KEY_KINDS: Mapping[str, str] = {
    "max_cpus": "cpus",
    "memory": "size",
    "memory_swap": "size",
    "shm_size": "size",
    "pids_limit": "count",
    "max_containers": "count",
    "max_gpu_equivalents": "equivalents",
    "max_gpus_per_container": "count",
    "allow_full_gpu": "bool",
    "allowed_mig_profiles": "profiles",
    "priority": "count",
    "idle_timeout": "duration",
    "max_runtime": "duration",
    "gpu_hold_after_stop": "duration",
    "container_hold_after_stop": "duration",
    "aggregate.cpus": "cpus",
    "aggregate.memory": "size",
    "aggregate.pids": "count",
    "idle.gpu_threshold": "percent",
    "idle.cpu_threshold": "percent",
    "idle.network_threshold": "size",
    "idle.window": "duration",
}
LIMIT_KEYS: tuple[str, ...] = tuple(KEY_KINDS)
#: Keys that are settings rather than limits: ``null`` (unlimited) means nothing for them.
NON_NULLABLE_KEYS: frozenset[str] = frozenset(
    {
        "shm_size",
        "allow_full_gpu",
        "priority",
        "idle.gpu_threshold",
        "idle.cpu_threshold",
        "idle.network_threshold",
        "idle.window",
    }
)

#: What applies when neither the file's ``defaults`` nor any other layer names a key (and
#: everything, when there is no policy file). Chosen for a shared server: one container
#: cannot take the machine, a GPU is not held for hours by nobody. ``memory_swap`` is
#: absent on purpose: unset, it equals ``memory`` (no swap), see :func:`resolve`.
BUILTIN_DEFAULTS: Mapping[str, LimitValue] = {
    "max_cpus": 8.0,
    "memory": 32 * 1024**3,
    "shm_size": 8 * 1024**3,
    "pids_limit": 4096,
    "max_containers": 3,
    "max_gpu_equivalents": Fraction(1),
    "max_gpus_per_container": 1,
    "allow_full_gpu": True,
    "allowed_mig_profiles": None,
    "priority": 10,
    "idle_timeout": 3600,
    "max_runtime": 24 * 3600,
    "gpu_hold_after_stop": 15 * 60,
    "container_hold_after_stop": 3600,
    "aggregate.cpus": None,
    "aggregate.memory": None,
    "aggregate.pids": None,
    "idle.gpu_threshold": 5.0,
    "idle.cpu_threshold": 2.0,
    "idle.network_threshold": 1024**2,
    "idle.window": 300,
}


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
                code="ambiguous_membership",
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


@dataclass(frozen=True)
class AggregateLimits:
    """Limits on all of one user's containers together (their parent cgroup).

    Each ``None`` is unlimited. The ``*_properties`` / ``*_files`` methods give exactly
    what to write, so applying them is a loop over a dict.
    """

    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None

    @property
    def is_unlimited(self) -> bool:
        return self.cpus is None and self.memory is None and self.pids is None

    def systemd_properties(self) -> dict[str, str]:
        """``[Slice]`` settings for a drop-in: ``CPUQuota``, ``MemoryMax``, ``TasksMax``.

        Unlimited values are written explicitly (empty ``CPUQuota``, ``infinity``) so a
        drop-in rewritten after the policy relaxed also lifts the old limit.
        """
        return {
            "CPUQuota": "" if self.cpus is None else f"{max(1, round(self.cpus * 100))}%",
            "MemoryMax": "infinity" if self.memory is None else str(self.memory),
            "TasksMax": "infinity" if self.pids is None else str(self.pids),
        }

    def cgroup_v1_files(self, cfs_period_us: int = 100_000) -> dict[str, str]:
        """Controller files under cgroup v1 (path relative to the cgroup's directories)."""
        quota = -1 if self.cpus is None else max(1000, round(self.cpus * cfs_period_us))
        return {
            "cpu/cpu.cfs_period_us": str(cfs_period_us),
            "cpu/cpu.cfs_quota_us": str(quota),
            "memory/memory.limit_in_bytes": "-1" if self.memory is None else str(self.memory),
            "pids/pids.max": "max" if self.pids is None else str(self.pids),
        }

    def cgroup_v2_files(self, cfs_period_us: int = 100_000) -> dict[str, str]:
        """Interface files under cgroup v2 (in the cgroup's single directory)."""
        quota = "max" if self.cpus is None else str(max(1000, round(self.cpus * cfs_period_us)))
        return {
            "cpu.max": f"{quota} {cfs_period_us}",
            "memory.max": "max" if self.memory is None else str(self.memory),
            "pids.max": "max" if self.pids is None else str(self.pids),
        }


@dataclass(frozen=True)
class IdlePolicy:
    """When a container holding GPUs counts as idle (read by lifecycle enforcement).

    Idle means: over the last ``window_s`` seconds, GPU utilisation of its devices below
    ``gpu_threshold`` % AND CPU below ``cpu_threshold`` % (100 = one core busy) AND
    network traffic (received + sent) below ``network_threshold_bytes`` per minute.
    """

    gpu_threshold: float
    cpu_threshold: float
    network_threshold_bytes: int
    window_s: int


def display_value(key: str, value: LimitValue) -> str:
    """A value as a person reads it: ``32g``, ``24h``, ``unlimited``, ``any``."""
    if value is None:
        return "any" if key == "allowed_mig_profiles" else "unlimited"
    kind = KEY_KINDS.get(key, "")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(value) if value else "none"
    if isinstance(value, Fraction):
        return f"{format_equivalents(value):g}"
    if kind == "size" and isinstance(value, int):
        return format_size(value)
    if kind == "duration" and isinstance(value, int):
        return format_duration(value)
    if kind == "cpus":
        return format_cpus(float(value))
    if kind == "percent":
        return f"{float(value):g}%"
    return str(value)


def _json_value(value: LimitValue) -> Any:
    if isinstance(value, Fraction):
        return format_equivalents(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True)
class ResolvedLimits:
    """Every limit that applies to one user, with the source of each value.

    Sizes are bytes, durations seconds, ``None`` unlimited (for ``allowed_mig_profiles``:
    any profile; for the hold keys: kept indefinitely). ``sources`` maps every key of
    :data:`LIMIT_KEYS` to ``builtin``, ``default``, ``group:<name>`` or ``user``.
    """

    user: str
    group: str
    group_via: str
    max_cpus: float | None
    memory: int | None
    memory_swap: int | None
    shm_size: int
    pids_limit: int | None
    max_containers: int | None
    max_gpu_equivalents: Fraction | None
    max_gpus_per_container: int | None
    allow_full_gpu: bool
    allowed_mig_profiles: tuple[str, ...] | None
    priority: int
    idle_timeout_s: int | None
    max_runtime_s: int | None
    gpu_hold_after_stop_s: int | None
    container_hold_after_stop_s: int | None
    aggregate: AggregateLimits
    idle: IdlePolicy
    values: Mapping[str, LimitValue]
    sources: Mapping[str, str]

    def docker_create_kwargs(self) -> dict[str, int]:
        """Keyword arguments for the Docker SDK's ``containers.create``.

        ``nano_cpus``, ``mem_limit``, ``memswap_limit``, ``shm_size``, ``pids_limit``;
        unlimited ones are omitted (``shm_size`` never is: it cannot be unlimited).
        ``memswap_limit`` comes only with ``mem_limit`` (Docker refuses it alone): equal
        to memory when ``memory_swap`` is unset (no swap), ``-1`` when it is ``null``
        (unlimited swap).
        """
        out: dict[str, int] = {}
        if self.max_cpus is not None:
            out["nano_cpus"] = round(self.max_cpus * 1_000_000_000)
        if self.memory is not None:
            out["mem_limit"] = self.memory
            out["memswap_limit"] = -1 if self.memory_swap is None else self.memory_swap
        out["shm_size"] = self.shm_size
        if self.pids_limit is not None:
            out["pids_limit"] = self.pids_limit
        return out

    def docker_cli_args(self, cgroup_parent: str | None = None) -> list[str]:
        """The same limits as ``docker create`` flags (``ds01 limits --docker-args``)."""
        kwargs = self.docker_create_kwargs()
        args: list[str] = []
        if self.max_cpus is not None:
            args.append(f"--cpus={format_cpus(self.max_cpus)}")
        if "mem_limit" in kwargs:
            args.append(f"--memory={format_size(kwargs['mem_limit'])}")
            swap = kwargs["memswap_limit"]
            args.append(f"--memory-swap={'-1' if swap < 0 else format_size(swap)}")
        if "shm_size" in kwargs:
            args.append(f"--shm-size={format_size(kwargs['shm_size'])}")
        if "pids_limit" in kwargs:
            args.append(f"--pids-limit={kwargs['pids_limit']}")
        if cgroup_parent is not None:
            args.append(f"--cgroup-parent={cgroup_parent}")
        return args

    def cgroup_parent(self, driver: str) -> str:
        """Docker's cgroup parent for this user under ``driver`` (``systemd``/``cgroupfs``)."""
        return cgroup_parent(self.group, self.user, driver)

    def slice_chain(self) -> tuple[str, str, str]:
        """``ds01.slice`` → ``ds01-<group>.slice`` → ``ds01-<group>-<user>.slice``."""
        return slice_chain(self.group, self.user)

    def display(self, key: str) -> str:
        """One value as a person reads it (``32g``, ``24h``, ``unlimited``)."""
        return display_value(key, self.values[key])

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form printed by ``ds01 limits --json`` (see docs/resource-limits.md)."""
        return {
            "user": self.user,
            "group": self.group,
            "group_via": self.group_via,
            "limits": {
                key: {
                    "value": _json_value(self.values[key]),
                    "display": self.display(key),
                    "source": self.sources[key],
                }
                for key in LIMIT_KEYS
            },
            "docker": self.docker_create_kwargs(),
        }


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
