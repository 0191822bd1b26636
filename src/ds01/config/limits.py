"""The resource-limits file: schema, membership checks, loading.

``load_policy(path)`` reads the YAML file (and every ``members_file`` it names), checks
it, and returns a :class:`PolicyFile`: the validated model, the plain-data
:class:`ds01.domain.policy.Policy` that :func:`ds01.domain.policy.resolve` works on, and
the deprecation warnings found (collected, never printed here). Anything wrong is one
:class:`ConfigError` (exit 2) listing every problem as ``FILE:LINE: key: what``.

The file is re-read by every command, so loading stays cheap: the C YAML parser, one
pydantic validation, no subprocesses. Membership by Linux group is checked at
resolution, from the caller's group list. docs/resource-limits.md describes every key.
Old key names are renamed before validation, by :mod:`ds01.config.limits_legacy`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    StrictBool,
    ValidationError,
)

from ds01.config.limits_legacy import _BLOCKS, _normalise, _Reader
from ds01.config.yaml_source import (
    KeyPath,
    LineMap,
    Problem,
    dotted,
    errors_to_problems,
    load_yaml_with_lines,
    parse_yaml_with_lines,
    problems_error,
)
from ds01.domain.policy import (
    BUILTIN_DEFAULTS,
    SOURCE_BUILTIN,
    SOURCE_DEFAULT,
    GroupRule,
    LimitValue,
    Policy,
    ResolvedLimits,
    UserRule,
    choose_by_precedence,
    consistency_problems,
    group_source,
    merge_layers,
    resolve,
)
from ds01.domain.units import (
    parse_count,
    parse_cpus,
    parse_duration,
    parse_gpu_equivalents,
    parse_mig_profiles,
    parse_percent,
    parse_size,
)

__all__ = [
    "DEFAULT_POLICY_PATH",
    "AggregateSection",
    "GroupSection",
    "IdleSection",
    "LimitsSection",
    "PolicyFile",
    "PolicyModel",
    "UserSection",
    "builtin_policy",
    "load_policy",
    "parse_policy",
]

DEFAULT_POLICY_PATH = Path("/etc/ds01/resource-limits.yaml")
_HINT = "See docs/resource-limits.md for every key, its units and examples."
# Group names appear in labels, messages and (escaped, see ds01.domain.slices) in slice
# names; keep them to characters that need no quoting anywhere.
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DOCKER_MIN_MEMORY = 6 * 1024**2
# Vets a members file before it is read (ds01.config.trust): raises, or the path to read.
TrustCheck = Callable[[Path], Path] | None

# --------------------------------------------------------------------------- value types
# Each validator turns the YAML value into its final type (bytes, seconds, Fraction) or
# raises ValueError with a message that names the value; pydantic attaches the key path.


def _not_null(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        if value is None:
            raise ValueError("null is not allowed here: this key has no 'unlimited'; give a value")
        return check(value)

    return validate


def _nullable(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        return None if value is None else check(value)

    return validate


def _memory(value: Any) -> int:
    size = parse_size(value)
    if size < _DOCKER_MIN_MEMORY:
        raise ValueError(f"{value!r} is below Docker's minimum memory limit of 6m")
    return size


def _v(check: Callable[[Any], Any], *, nullable: bool = True) -> BeforeValidator:
    return BeforeValidator(_nullable(check) if nullable else _not_null(check))


Cpus = Annotated[float | None, _v(parse_cpus)]
Memory = Annotated[int | None, _v(_memory)]
Size = Annotated[int | None, _v(parse_size)]
ShmSize = Annotated[int | None, _v(parse_size, nullable=False)]
Count0 = Annotated[int | None, _v(parse_count)]
Count1 = Annotated[int | None, _v(partial(parse_count, minimum=1))]
Equivalents = Annotated[InstanceOf[Fraction] | None, _v(parse_gpu_equivalents)]
Profiles = Annotated[tuple[str, ...] | None, _v(parse_mig_profiles)]
Duration = Annotated[int | None, _v(parse_duration)]
HoldDuration = Annotated[int | None, _v(partial(parse_duration, allow_zero=True))]
Flag = Annotated[StrictBool | None, _v(lambda v: v, nullable=False)]
Priority = Annotated[int | None, _v(parse_count, nullable=False)]
GpuPercent = Annotated[float | None, _v(parse_percent, nullable=False)]
CpuPercent = Annotated[float | None, _v(partial(parse_percent, maximum=None), nullable=False)]
NetSize = Annotated[int | None, _v(partial(parse_size, allow_zero=True), nullable=False)]
Window = Annotated[int | None, _v(parse_duration, nullable=False)]

# --------------------------------------------------------------------------- models


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AggregateSection(_Section):
    """Limits on all of one user's containers together (their parent cgroup)."""

    cpus: Cpus = Field(
        None, description="CPUs for all the user's containers together; null: unlimited."
    )
    memory: Memory = Field(
        None,
        description="Memory for all the user's containers together (a size, e.g. 96g); "
        "null: unlimited.",
    )
    pids: Count1 = Field(
        None,
        description="Processes and threads of all the user's containers together; null: unlimited.",
    )


class IdleSection(_Section):
    """When a container holding GPUs counts as idle (lifecycle enforcement)."""

    gpu_threshold: GpuPercent = Field(
        None, description="GPU utilisation (%) below which the GPU counts as idle."
    )
    cpu_threshold: CpuPercent = Field(
        None, description="CPU use (% of one core) below which the container counts as idle."
    )
    network_threshold: NetSize = Field(
        None,
        description="Network traffic (received + sent) per minute below which the "
        "container counts as idle (a size, e.g. 1m).",
    )
    window: Window = Field(
        None,
        description="How long every signal must stay below its threshold before the "
        "container counts as idle (a duration, e.g. 5m).",
    )


class LimitsSection(_Section):
    """The limit keys shared by ``defaults``, ``groups.<name>`` and ``users.<name>``."""

    max_cpus: Cpus = Field(
        None, description="CPUs per container (docker --cpus); fractions allowed; null: unlimited."
    )
    memory: Memory = Field(
        None, description="Memory per container (docker --memory), e.g. 32g; null: unlimited."
    )
    memory_swap: Size = Field(
        None,
        description="Memory plus swap per container (docker --memory-swap); unset: equal "
        "to memory (no swap); null: unlimited swap.",
    )
    shm_size: ShmSize = Field(
        None,
        description="Shared memory (/dev/shm) per container (docker --shm-size); fixed at "
        "creation; null is not allowed.",
    )
    pids_limit: Count1 = Field(
        None, description="Processes/threads per container (docker --pids-limit); null: unlimited."
    )
    max_containers: Count0 = Field(
        None,
        description="Containers the user may have, in any state; 0 forbids creating any; "
        "null: unlimited.",
    )
    max_gpu_equivalents: Equivalents = Field(
        None,
        description="GPU equivalents the user may hold in total (a full GPU is 1, a MIG "
        "instance its share of the GPU); null: unlimited.",
    )
    max_gpus_per_container: Count0 = Field(
        None,
        description="Devices (full GPUs or MIG instances) one container may hold; null: unlimited.",
    )
    allow_full_gpu: Flag = Field(
        None, description="Whether the user may be given a whole (non-MIG) GPU."
    )
    allowed_mig_profiles: Profiles = Field(
        None,
        description="MIG profiles the user may be given, e.g. [1g.18gb, 3g.71gb]; "
        "null: any; []: none.",
    )
    priority: Priority = Field(None, description="Queue priority; higher is served first.")
    idle_timeout: Duration = Field(
        None, description="Stop a GPU container idle this long (a duration); null: never."
    )
    max_runtime: Duration = Field(
        None, description="Stop a GPU container running this long (a duration); null: never."
    )
    gpu_hold_after_stop: HoldDuration = Field(
        None,
        description="Keep a stopped container's GPUs reserved this long (a duration, 0 "
        "allowed); null: until the container is removed.",
    )
    container_hold_after_stop: HoldDuration = Field(
        None,
        description="Remove a stopped container after this long (a duration, 0 allowed); "
        "null: never.",
    )
    aggregate: AggregateSection | None = Field(
        None, description="Limits on all the user's containers together."
    )
    idle: IdleSection | None = Field(
        None, description="Idle-detection thresholds for lifecycle enforcement."
    )


class GroupSection(LimitsSection):
    """``groups.<name>``: limits plus who belongs to the group."""

    description: str | None = Field(None, description="Free text for people; ignored by DS01.")
    members: tuple[str, ...] = Field((), description="User names listed inline.")
    members_file: str | None = Field(
        None,
        description="File with one user name per line ('#' starts a comment); a relative "
        "path is relative to this file's directory.",
    )
    unix_group: str | None = Field(
        None, description="Linux group whose members belong to this group."
    )


class UserSection(LimitsSection):
    """``users.<name>``: limit overrides on top of the user's group, and an optional group."""

    description: str | None = Field(None, description="Free text for people; ignored by DS01.")
    group: str | None = Field(
        None, description="Put the user in this group, whatever else lists them."
    )


class PolicyModel(_Section):
    """The whole resource-limits file."""

    defaults: LimitsSection = Field(
        default_factory=LimitsSection, description="Limits for everybody, below every group."
    )
    groups: dict[str, GroupSection] = Field(
        default_factory=dict, description="Groups by name: limits and members."
    )
    users: dict[str, UserSection] = Field(
        default_factory=dict, description="Per-user overrides by login name."
    )
    default_group: str | None = Field(
        None, description="Group of users no other rule places; required when groups are defined."
    )
    membership_precedence: tuple[str, ...] = Field(
        (),
        description="Group names, first wins, for a user that one lookup step finds in "
        "several groups.",
    )


_LIMIT_FIELDS = tuple(
    name for name in LimitsSection.model_fields if name not in ("aggregate", "idle")
)

# --------------------------------------------------------------------------- loading


def _layer(section: LimitsSection) -> dict[str, LimitValue]:
    """The keys a section names (dotted for blocks), with their validated values."""
    out: dict[str, LimitValue] = {}
    for name in _LIMIT_FIELDS:
        if name in section.model_fields_set:
            out[name] = getattr(section, name)
    for block in _BLOCKS:
        inner = getattr(section, block)
        if inner is not None:
            for name in inner.model_fields_set:
                out[f"{block}.{name}"] = getattr(inner, name)
    return out


@dataclass(frozen=True)
class _MembersFile:
    path: Path
    names: Mapping[str, int]  # user name -> line


def _read_members_file(
    reader: _Reader, policy_dir: Path, group: str, text_path: str, trust_check: TrustCheck
) -> _MembersFile:
    """The names in a members file, each with its line; problems go to the reader.

    A missing file is an error, not "no members": the existing DS01 ignored unreadable
    members files, and researchers silently got student limits for weeks.
    """
    at: KeyPath = ("groups", group, "members_file")
    path = Path(text_path)
    if not path.is_absolute():
        path = policy_dir / path
    read = path if trust_check is None else trust_check(path)  # raises if others can write
    try:
        text = read.read_text(encoding="utf-8")
    except FileNotFoundError:
        reader.problem(at, f"members file {path} does not exist")
        return _MembersFile(path, {})
    except (OSError, UnicodeDecodeError) as exc:
        reader.problem(at, f"members file {path} cannot be read: {exc}")
        return _MembersFile(path, {})
    names: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        name = raw.split("#", 1)[0].strip()
        if not name:
            continue
        if len(name.split()) != 1:
            message = f"{name!r} is not one user name (one per line; '#' starts a comment)"
            reader.problems.append(Problem(str(path), number, dotted(at), message))
            continue
        names.setdefault(name, number)
    return _MembersFile(path, names)


def _check_names(reader: _Reader, model: PolicyModel) -> None:
    groups = model.groups
    if groups and model.default_group is None:
        reader.problem(
            ("groups",),
            "default_group is missing: set it to the group of users no other rule places "
            f"(one of {', '.join(groups)})",
            key="default_group",
        )
    if model.default_group is not None and model.default_group not in groups:
        reader.problem(("default_group",), f"group {model.default_group!r} is not defined")
    for index, name in enumerate(model.membership_precedence):
        if name not in groups:
            reader.problem(("membership_precedence", index), f"group {name!r} is not defined")
        elif name in model.membership_precedence[:index]:
            reader.problem(("membership_precedence", index), f"group {name!r} is listed twice")
    for name in groups:
        if not _GROUP_NAME.fullmatch(name):
            reader.problem(
                ("groups", name),
                f"{name!r} is not a valid group name: a letter or digit, then up to 63 "
                "letters, digits, '_', '.' or '-'",
            )
    for user, entry in model.users.items():
        if entry.group is not None and entry.group not in groups:
            reader.problem(("users", user, "group"), f"group {entry.group!r} is not defined")


def _check_membership(
    reader: _Reader, model: PolicyModel, files: Mapping[str, _MembersFile]
) -> None:
    """A user placed in two groups by one lookup step needs a rule; report those without."""
    groups = model.groups
    precedence = model.membership_precedence
    decided = {user for user, entry in model.users.items() if entry.group is not None}
    inline: dict[str, list[str]] = {}
    in_files: dict[str, list[str]] = {}
    for name, group in groups.items():
        for user in dict.fromkeys(group.members):
            inline.setdefault(user, []).append(name)
        for user in files[name].names if name in files else ():
            in_files.setdefault(user, []).append(name)

    def advice(user: str) -> str:
        return f"add membership_precedence: [...] (first listed wins) or users.{user}.group"

    for user, names in inline.items():
        if user in decided or choose_by_precedence(names, precedence) is not None:
            continue
        last = names[-1]
        others = ", ".join(f"groups.{n}.members" for n in names[:-1])
        index = groups[last].members.index(user)
        reader.problem(
            ("groups", last, "members", index),
            f"user {user!r} is also listed in {others}; {advice(user)}",
        )
    for user, names in in_files.items():
        if user in decided or user in inline:
            continue
        if choose_by_precedence(names, precedence) is not None:
            continue
        last_file = files[names[-1]]
        others = ", ".join(str(files[n].path) for n in names[:-1])
        message = f"user {user!r} is also listed in {others}; {advice(user)}"
        key = f"groups.{names[-1]}.members_file"
        line = last_file.names[user]
        reader.problems.append(Problem(str(last_file.path), line, key, message))
    for user, names in inline.items():
        elsewhere = [n for n in in_files.get(user, []) if n not in names]
        if elsewhere and user not in decided:
            chosen = choose_by_precedence(names, precedence) or names[0]
            reader.warnings.append(
                f"{reader.filename}:{reader.where(('groups', chosen, 'members'))}: user {user!r} "
                f"is in groups.{chosen}.members and in the members file of "
                f"{', '.join(elsewhere)}; {chosen} applies (inline members are looked up first)"
            )
    by_unix: dict[str, list[str]] = {}
    for name, group in groups.items():
        if group.unix_group is not None:
            by_unix.setdefault(group.unix_group, []).append(name)
    for unix, names in by_unix.items():
        if len(names) > 1 and choose_by_precedence(names, precedence) is None:
            reader.problem(
                ("groups", names[-1], "unix_group"),
                f"unix_group {unix!r} is also used by {', '.join(names[:-1])}, so its members "
                "would be in both; add membership_precedence: [...] (first listed wins)",
            )


def _check_consistency(reader: _Reader, policy: Policy) -> None:
    """Docker refuses memory_swap below memory: find it per group and per user entry.

    Each problem is reported at the layer that introduced it (a group that raises
    memory above the defaults' memory_swap, say). Users placed only by a unix group are
    checked at resolution, when their group is known.
    """
    base: list[tuple[str, Mapping[str, LimitValue]]] = [
        (SOURCE_BUILTIN, BUILTIN_DEFAULTS),
        (SOURCE_DEFAULT, policy.defaults),
    ]
    checks: list[tuple[KeyPath, list[tuple[str, Mapping[str, LimitValue]]]]] = [
        (("defaults",), base)
    ]
    for name, group in policy.groups.items():
        checks.append((("groups", name), [*base, (group_source(name), group.limits)]))
    for user, entry in policy.users.items():
        group_name = entry.group or _static_group(policy, user) or policy.default_group
        layers = list(base)
        if group_name is not None and group_name in policy.groups:
            layers.append((group_source(group_name), policy.groups[group_name].limits))
        checks.append((("users", user), [*layers, ("user", entry.limits)]))
    for at, layers in checks:
        top = layers[-1][1]
        if not {"memory", "memory_swap"} & set(top):
            continue  # any problem comes from a lower layer and is reported there
        values, sources = merge_layers(layers)
        values.setdefault("memory_swap", values["memory"])
        for key, message in consistency_problems(values):
            named = key if key in top else "memory"
            origin = ", ".join(
                f"{k} from {sources.get(k, SOURCE_BUILTIN)}" for k in ("memory", "memory_swap")
            )
            reader.problem((*at, named), f"{message} ({origin})")


def _static_group(policy: Policy, user: str) -> str | None:
    for names in (
        [n for n, g in policy.groups.items() if user in g.members],
        [n for n, g in policy.groups.items() if user in g.file_members],
    ):
        if names:
            return choose_by_precedence(names, policy.membership_precedence)
    return None


@dataclass(frozen=True)
class PolicyFile:
    """A loaded resource-limits file.

    ``path`` is ``None`` for the built-in policy. ``warnings`` are deprecation and
    membership notes as ``FILE:LINE: ...`` lines, for the caller to show where it fits.
    """

    path: Path | None
    model: PolicyModel
    policy: Policy
    warnings: tuple[str, ...] = ()

    def resolve(self, user: str, unix_groups: Collection[str] = ()) -> ResolvedLimits:
        """:func:`ds01.domain.policy.resolve` on this policy."""
        return resolve(self.policy, user, unix_groups)


def builtin_policy(note: str | None = None) -> PolicyFile:
    """The policy when there is no file: everybody in group ``default``, built-in limits."""
    return PolicyFile(None, PolicyModel(), Policy(), (note,) if note else ())


def load_policy(
    path: Path | None,
    *,
    referenced_by: str | None = None,
    missing_ok: bool = False,
    trust_check: TrustCheck = None,
) -> PolicyFile:
    """Load and check the resource-limits file at ``path``.

    ``path=None``, or a missing file with ``missing_ok`` (the default location that an
    admin never created), gives :func:`builtin_policy`. Otherwise a missing file is a
    :class:`ConfigError` that names ``referenced_by`` (the setting that points at it).
    ``trust_check`` vets every members file before it is read (it raises, or returns
    the path to read); ``path`` itself is vetted by the caller.
    """
    if path is None:
        return builtin_policy()
    if missing_ok and not path.exists():
        return builtin_policy(f"{path} does not exist; the built-in limits apply")
    data, lines = load_yaml_with_lines(
        path, what="resource-limits file", referenced_by=referenced_by
    )
    return _build(data, lines, path, trust_check)


def parse_policy(text: str, *, path: Path) -> PolicyFile:
    """Like :func:`load_policy` for YAML already in hand (members files still read from disk)."""
    data, lines = parse_yaml_with_lines(text, filename=str(path))
    return _build(data, lines, path)


def _build(data: Any, lines: LineMap, path: Path, trust_check: TrustCheck = None) -> PolicyFile:
    reader = _Reader(str(path), dict(lines), [], [], {})
    normalised = _normalise(reader, data)
    try:
        model = PolicyModel.model_validate(normalised)
    except ValidationError as exc:
        reader.problems.extend(
            errors_to_problems(
                reader.filename, exc, reader.lines, model=PolicyModel, display=reader.shown
            )
        )
        raise problems_error(reader.problems, hint=_HINT) from exc
    _check_names(reader, model)
    files = {
        name: _read_members_file(reader, path.parent, name, group.members_file, trust_check)
        for name, group in model.groups.items()
        if group.members_file is not None
    }
    _check_membership(reader, model, files)
    policy = Policy(
        defaults=_layer(model.defaults),
        groups={
            name: GroupRule(
                name=name,
                limits=_layer(group),
                members=frozenset(group.members),
                file_members=frozenset(files[name].names) if name in files else frozenset(),
                members_file=str(files[name].path) if name in files else None,
                unix_group=group.unix_group,
            )
            for name, group in model.groups.items()
        },
        users={
            user: UserRule(user, _layer(entry), entry.group) for user, entry in model.users.items()
        },
        default_group=model.default_group,
        membership_precedence=model.membership_precedence,
        source=str(path),
        lines={dotted(key): line for key, line in reader.lines.items() if key},
    )
    if not reader.problems:
        _check_consistency(reader, policy)
    if reader.problems:
        raise problems_error(reader.problems, hint=_HINT)
    return PolicyFile(path, model, policy, tuple(reader.warnings))
