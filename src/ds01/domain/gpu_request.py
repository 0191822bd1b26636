"""The inputs of a GPU allocation: the request, the user's GPU quota, the holdings in force.

:func:`ds01.domain.allocation.decide` and the queue work on these. Each is validated when
it is built (a bad request is a :class:`UsageError`, exit 2; a bad policy value a
:class:`ConfigError`), so a decision never meets a malformed one. MIG profile names are
parsed and compared here too, in one normalized spelling. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction

from ds01.domain.labels import ContainerLabels
from ds01.errors import ConfigError, ErrorCode, UsageError

__all__ = [
    "STOPPED_STATES",
    "GpuQuota",
    "GpuRequest",
    "Holding",
    "MigShape",
    "RequestKind",
    "holdings_in_force",
    "normalize_profile",
    "parse_mig_profile",
    "to_equivalents",
    "user_equivalents",
]

# --------------------------------------------------------------------------- profiles

_PROFILE_SYNTAX = re.compile(
    r"^(?P<slices>[1-9]\d?)g\.(?P<mem>[1-9]\d{0,3})gb(?P<extras>(?:\+[a-z0-9]+)*)$"
)


@dataclass(frozen=True)
class MigShape:
    """What a MIG profile name promises: ``3g.20gb+me`` -> 3 slices, 20 GB, ``("me",)``."""

    slices: int
    memory_gb: int
    extras: tuple[str, ...] = ()


def normalize_profile(text: str) -> str:
    """``" MIG 3G.20GB "`` -> ``"3g.20gb"``: the spelling profiles are compared in."""
    cleaned = text.strip().lower()
    if cleaned.startswith("mig "):
        cleaned = cleaned[4:].strip()
    return cleaned


def parse_mig_profile(text: str) -> MigShape | None:
    """The shape a MIG profile name describes, or ``None`` if it is not one."""
    m = _PROFILE_SYNTAX.match(normalize_profile(text))
    if m is None:
        return None
    extras = tuple(e for e in m.group("extras").split("+") if e)
    return MigShape(int(m.group("slices")), int(m.group("mem")), extras)


def to_equivalents(value: Fraction | float | int | str) -> Fraction:
    """GPU equivalents from a config value, exactly: ``0.5`` -> 1/2, ``"3/7"`` -> 3/7."""
    if isinstance(value, bool):
        raise ConfigError(f"GPU equivalents must be a number, not {value!r}.")
    if isinstance(value, Fraction):
        return value
    try:
        # str() first so that 0.1 means one tenth, not the nearest binary float.
        return Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError) as exc:
        raise ConfigError(
            f"GPU equivalents must be a number such as 1, 0.5 or 3/7, not {value!r}."
        ) from exc


# --------------------------------------------------------------------------- request


class RequestKind(StrEnum):
    """What a create asks for: N whole devices, one MIG profile, or no GPU."""

    DEVICES = "devices"
    PROFILE = "profile"
    CPU_ONLY = "cpu-only"


@dataclass(frozen=True)
class GpuRequest:
    """One container's GPU request: ``--gpus N``, ``--gpu-profile P`` or ``--cpu-only``.

    Build it with :meth:`gpus`, :meth:`mig`, :meth:`cpu_only` or :meth:`from_flags`;
    invalid values raise :class:`UsageError` (exit 2). ``profile`` is kept normalized.
    """

    kind: RequestKind
    count: int = 0
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.kind is RequestKind.DEVICES:
            count = self.count
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise UsageError(
                    f"--gpus takes a whole number of GPUs, 1 or more, not {count!r}.",
                    hint="Use --gpus 1 or more, or --cpu-only for a container without GPUs.",
                    code=ErrorCode.INVALID_GPU_REQUEST,
                )
            object.__setattr__(self, "profile", None)
        elif self.kind is RequestKind.PROFILE:
            if self.profile is None or parse_mig_profile(self.profile) is None:
                raise UsageError(
                    f"{self.profile!r} is not a MIG profile.",
                    hint="Name one as `nvidia-smi mig -lgip` lists it, e.g. 1g.10gb or 3g.40gb.",
                    code=ErrorCode.INVALID_GPU_REQUEST,
                )
            object.__setattr__(self, "profile", normalize_profile(self.profile))
            object.__setattr__(self, "count", 1)
        else:
            object.__setattr__(self, "count", 0)
            object.__setattr__(self, "profile", None)

    @classmethod
    def gpus(cls, count: int) -> GpuRequest:
        """``--gpus N``: N devices (whole GPUs, or MIG instances for MIG-only users)."""
        return cls(RequestKind.DEVICES, count=count)

    @classmethod
    def mig(cls, profile: str) -> GpuRequest:
        """``--gpu-profile P``: one MIG instance of at least profile P."""
        return cls(RequestKind.PROFILE, profile=profile)

    @classmethod
    def cpu_only(cls) -> GpuRequest:
        """``--cpu-only``: no GPU at all (and CUDA sees none)."""
        return cls(RequestKind.CPU_ONLY)

    @property
    def devices_asked(self) -> int:
        """How many devices one container would hold: N, 1 for a profile, 0 CPU-only."""
        return self.count

    def describe(self) -> str:
        """Human form: ``2 GPUs``, ``MIG 3g.20gb``, ``no GPU``."""
        if self.kind is RequestKind.DEVICES:
            return f"{self.count} GPU" + ("s" if self.count != 1 else "")
        if self.kind is RequestKind.PROFILE:
            return f"MIG {self.profile}"
        return "no GPU"

    def encode(self) -> str:
        """Stable text form for storage (queue rows): ``gpus:2``, ``profile:3g.20gb``."""
        if self.kind is RequestKind.DEVICES:
            return f"gpus:{self.count}"
        if self.kind is RequestKind.PROFILE:
            return f"profile:{self.profile}"
        return "cpu-only"

    @classmethod
    def decode(cls, text: str) -> GpuRequest:
        """Inverse of :meth:`encode`; :class:`UsageError` on anything else."""
        kind, _, value = text.strip().partition(":")
        if kind == "gpus" and value.isdigit():
            return cls.gpus(int(value))
        if kind == "profile":
            return cls.mig(value)
        if kind == "cpu-only" and not value:
            return cls.cpu_only()
        raise UsageError(
            f"{text!r} is not a stored GPU request.", code=ErrorCode.INVALID_GPU_REQUEST
        )


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class GpuQuota:
    """A user's GPU policy, as resolved from the resource-limits file.

    ``None`` means unlimited / any. ``max_gpu_equivalents`` bounds the sum over all the
    user's containers in force; ``max_gpus_per_container`` counts devices (a profile
    request is one). ``allowed_mig_profiles=()`` allows no MIG instance.
    """

    max_gpu_equivalents: Fraction | None = None
    max_gpus_per_container: int | None = None
    allow_full_gpu: bool = True
    allowed_mig_profiles: tuple[str, ...] | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if self.max_gpu_equivalents is not None:
            value = to_equivalents(self.max_gpu_equivalents)
            if value < 0:
                raise ConfigError(f"max_gpu_equivalents must not be negative, not {value}.")
            object.__setattr__(self, "max_gpu_equivalents", value)
        cap = self.max_gpus_per_container
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise ConfigError(f"max_gpus_per_container must be a whole number ≥ 0, not {cap!r}.")
        if self.allowed_mig_profiles is not None:
            profiles = tuple(normalize_profile(p) for p in self.allowed_mig_profiles)
            bad = [p for p in profiles if parse_mig_profile(p) is None]
            if bad:
                raise ConfigError(f"allowed_mig_profiles names no MIG profile: {', '.join(bad)}.")
            object.__setattr__(self, "allowed_mig_profiles", profiles)

    def may_use_profile(self, profile: str) -> bool:
        """True when this user may hold a MIG instance of ``profile``."""
        if self.allowed_mig_profiles is None:
            return True
        return normalize_profile(profile) in self.allowed_mig_profiles

    @property
    def may_use_gpus(self) -> bool:
        """False when the policy leaves this user no kind of device at all."""
        return self.allow_full_gpu or self.allowed_mig_profiles != ()


# --------------------------------------------------------------------------- holdings

#: Docker states in which a container has stopped; its devices then stay held only for the
#: owner's ``gpu_hold_after_stop``. Every other state (created, running, paused,
#: restarting, removing, unknown) holds its devices unconditionally.
STOPPED_STATES = frozenset({"exited", "dead"})


@dataclass(frozen=True)
class Holding:
    """One existing container's claim on devices, read back from its labels.

    ``equivalents`` is what was charged (the label), which the quota uses even when a
    device has since vanished from the inventory. ``since`` is when it was allocated.
    """

    container: str
    user: str
    device_uuids: tuple[str, ...]
    equivalents: Fraction
    state: str = "running"
    finished_at: datetime | None = None
    since: datetime | None = None

    @property
    def stopped(self) -> bool:
        return self.state in STOPPED_STATES

    def hold_expired(self, now: datetime, hold_after_stop: timedelta | None) -> bool:
        """True once a stopped container's hold has run out (``None`` holds forever).

        A stopped container without a known stop time keeps its devices: releasing a
        hold we cannot date would risk handing its devices out twice.
        """
        if not self.stopped or hold_after_stop is None or self.finished_at is None:
            return False
        return now >= self.finished_at + hold_after_stop

    @classmethod
    def from_labels(
        cls,
        container: str,
        labels: ContainerLabels,
        *,
        state: str,
        finished_at: datetime | None = None,
    ) -> Holding:
        """The holding a container's decoded labels describe."""
        since: datetime | None = None
        if labels.gpu_allocated_at:
            try:
                since = datetime.fromisoformat(labels.gpu_allocated_at)
            except ValueError:
                since = None  # only informational ("since" in gpu status)
        return cls(
            container=container,
            user=labels.user,
            device_uuids=labels.gpu_uuids,
            equivalents=labels.gpu_equivalents,
            state=state,
            finished_at=finished_at,
            since=since,
        )


def holdings_in_force(
    holdings: Iterable[Holding],
    now: datetime,
    hold_after_stop_by_user: Mapping[str, timedelta | None],
    default_hold_after_stop: timedelta | None = None,
) -> list[Holding]:
    """The holdings that still keep their devices at ``now``.

    :func:`decide`, the queue and :func:`capacity_summary` treat every holding they are
    given as in force, so the service filters with this first; the ones dropped are the
    stopped containers the service should clean up.
    """
    return [
        h
        for h in holdings
        if not h.hold_expired(now, hold_after_stop_by_user.get(h.user, default_hold_after_stop))
    ]


def user_equivalents(holdings: Iterable[Holding], user: str) -> Fraction:
    """What ``user`` is charged now: the sum over their containers in force."""
    return sum((h.equivalents for h in holdings if h.user == user), Fraction(0))
