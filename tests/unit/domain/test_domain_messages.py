"""What users and admins read: the exact message, hint and code of every allocation
outcome and of the domain's validation errors, and the boundaries of the numeric rules
beside them (per-container cap, quota, policy durations and warning levels, aggregate
CPU floors, aging windows). A hint must say what to do, so its words are asserted."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction

import pytest

from ds01.domain.allocation import NoFit, Refusal, decide
from ds01.domain.devices import parse_equivalents
from ds01.domain.gpu_request import GpuQuota, GpuRequest, Holding, RequestKind, to_equivalents
from ds01.domain.lifecycle import ContainerPolicy
from ds01.domain.policy import AggregateLimits
from ds01.domain.queue import Aging
from ds01.errors import DS01Error
from tests.unit.domain.test_allocation import full_gpu, holding, inventory, mig_gpu

INV = inventory(full_gpu(0), mig_gpu(1, ["1g.5gb", "3g.20gb"]))
MIN = timedelta(minutes=1)
US = timedelta(microseconds=1)
WAIT = (
    "Add --wait to queue the request, or try again later (`ds01 gpu status` shows who holds what)."
)

# --------------------------------------------------------------------------- allocation


@pytest.mark.parametrize(
    ("request_", "quota", "holdings", "message", "hint", "details"),
    [
        (
            GpuRequest.gpus(3),
            GpuQuota(max_gpus_per_container=2),
            [],
            "3 GPUs in one container is more than u's limit of 2 GPU devices per container.",
            "Ask for at most 2 (--gpus 2), or spread the work over several containers.",
            {"held": 0.0, "held_exact": "0", "asked": 3.0, "asked_exact": "3", "allowed": 2.0,
             "allowed_exact": "2", "unit": "devices"},
        ),
        (  # exactly on the cap is allowed; one above is refused (the 1-device wording)
            GpuRequest.gpus(2),
            GpuQuota(max_gpus_per_container=1),
            [],
            "2 GPUs in one container is more than u's limit of 1 GPU device per container.",
            "Ask for at most 1 (--gpus 1), or spread the work over several containers.",
            {"held": 0.0, "held_exact": "0", "asked": 2.0, "asked_exact": "2", "allowed": 1.0,
             "allowed_exact": "1", "unit": "devices"},
        ),
        (
            GpuRequest.gpus(1),
            GpuQuota(max_gpus_per_container=0),
            [],
            "1 GPU in one container is more than u's limit of 0 GPU devices per container.",
            "Create the container with --cpu-only.",
            {"held": 0.0, "held_exact": "0", "asked": 1.0, "asked_exact": "1", "allowed": 0.0,
             "allowed_exact": "0", "unit": "devices"},
        ),
        (
            GpuRequest.gpus(1),
            GpuQuota(allow_full_gpu=False, allowed_mig_profiles=()),
            [],
            "u's policy allows neither full GPUs nor any MIG profile.",
            "Create the container with --cpu-only, or ask an administrator for GPU access.",
            {"allowed_profiles": []},
        ),
        (
            GpuRequest.mig("2g.10gb"),
            GpuQuota(allowed_mig_profiles=("1g.5gb", "3g.20gb")),
            [],
            "u may not use MIG profile 2g.10gb; allowed: 1g.5gb, 3g.20gb.",
            "Ask for one of the allowed profiles with --gpu-profile, or use --gpus 1.",
            {"allowed_profiles": ["1g.5gb", "3g.20gb"]},
        ),
        (
            GpuRequest.mig("2g.10gb"),
            GpuQuota(allowed_mig_profiles=()),
            [],
            "u may not use MIG profile 2g.10gb; allowed: none.",
            "Use --gpus N instead of --gpu-profile.",
            {"allowed_profiles": []},
        ),
        (  # 3/7 held + the lightest device 1/7 = 4/7 > 1/2
            GpuRequest.gpus(1),
            GpuQuota(max_gpu_equivalents=Fraction(1, 2)),
            [holding("u", "X", eq=Fraction(3, 7))],
            "u holds 0.4286 (3/7) GPU equivalents; 1 GPU needs at least 0.1429 (1/7) more, "
            "and the limit is 0.5 (1/2).",
            "Remove or stop a container you no longer need (`ds01 gpu status` shows what you "
            "hold), or ask for less.",
            {"held": 0.4286, "held_exact": "3/7", "asked": 0.1429, "asked_exact": "1/7",
             "allowed": 0.5, "allowed_exact": "1/2", "unit": "equivalents"},
        ),
    ],
)  # fmt: skip
def test_refusals_say_exactly_what_and_what_to_do(  # noqa: PLR0917 (a pytest table)
    request_: GpuRequest,
    quota: GpuQuota,
    holdings: list[Holding],
    message: str,
    hint: str,
    details: dict[str, object],
) -> None:
    decision = decide(request_, "u", quota, INV, holdings)
    assert isinstance(decision, Refusal)
    assert (decision.message, decision.hint, decision.details()) == (message, hint, details)
    error = decision.to_error()
    assert (str(error), error.hint, error.code, error.exit_code) == (
        message,
        hint,
        decision.reason.value,
        3,
    )


def test_the_quota_boundary_exactly() -> None:
    """held + lightest = limit is allowed; a limit 1/28 lower refuses."""
    held = [holding("u", "X", eq=Fraction(2, 7))]
    on = decide(GpuRequest.gpus(1), "u", GpuQuota(max_gpu_equivalents=Fraction(3, 7)), INV, held)
    assert not isinstance(on, Refusal | NoFit)
    assert on.uuids == ("MIG-01-00",) and on.equivalents == Fraction(1, 7)
    below = GpuQuota(max_gpu_equivalents=Fraction(3, 7) - Fraction(1, 28))
    refused = decide(GpuRequest.gpus(1), "u", below, INV, held)
    assert isinstance(refused, Refusal) and refused.reason.value == "gpu_quota_exceeded"
    assert (refused.held, refused.asked, refused.allowed) == (
        Fraction(2, 7),
        Fraction(1, 7),
        Fraction(11, 28),
    )


@pytest.mark.parametrize(
    ("request_", "quota", "holdings", "message", "hint", "counts", "code", "exit_code"),
    [
        (
            GpuRequest.gpus(3),
            GpuQuota(),
            [],
            "3 GPUs can never fit on this machine: it offers 1 full GPUs, MIG instances "
            "1g.5gb, 3g.20gb, of which at most 2 could serve this request.",
            "Ask for fewer or smaller devices (`ds01 gpu status` lists them).",
            (3, 2, 0),
            "gpu_request_never_fits",
            2,
        ),
        (
            GpuRequest.gpus(3),
            GpuQuota(allow_full_gpu=False),
            [],
            "3 GPUs can never fit on this machine (you may use MIG instances only): it offers "
            "1 full GPUs, MIG instances 1g.5gb, 3g.20gb, of which at most 2 could serve this "
            "request.",
            "Ask for fewer or smaller devices (`ds01 gpu status` lists them).",
            (3, 2, 0),
            "gpu_request_never_fits",
            2,
        ),
        (
            GpuRequest.gpus(1),
            GpuQuota(allowed_mig_profiles=()),
            [holding("v", "GPU-0000")],
            "No free GPU fits 1 GPU now: 0 of the 1 devices it could use are free.",
            WAIT,
            (1, 1, 0),
            "no_free_gpu",
            4,
        ),
        (  # free devices exist, but each is heavier than what the quota leaves (2/7)
            GpuRequest.gpus(1),
            GpuQuota(max_gpu_equivalents=Fraction(3, 7)),
            [holding("v", "MIG-01-00", eq=Fraction(1, 7)), holding("u", "Y", eq=Fraction(1, 7))],
            "No free GPU fits 1 GPU now: 1 usable devices are free, but any 1 of them would put "
            "u over the GPU quota (0.1429 (1/7) held, limit 0.4286 (3/7)); lighter ones are in "
            "use.",
            WAIT,
            (1, 2, 1),
            "no_free_gpu",
            4,
        ),
    ],
)
def test_no_fit_says_exactly_why(  # noqa: PLR0917 (pytest passes the table positionally)
    request_: GpuRequest,
    quota: GpuQuota,
    holdings: list[Holding],
    message: str,
    hint: str,
    counts: tuple[int, int, int],
    code: str,
    exit_code: int,
) -> None:
    decision = decide(request_, "u", quota, INV, holdings)
    assert isinstance(decision, NoFit)
    assert (decision.message, decision.hint) == (message, hint)
    assert (decision.asked, decision.usable, decision.free) == counts
    error = decision.to_error()
    assert (str(error), error.hint, error.code, error.exit_code) == (message, hint, code, exit_code)
    assert error.details == dict(zip(("asked", "usable", "free"), counts, strict=True))


# --------------------------------------------------------------------------- requests


def _error(call: object) -> DS01Error:
    assert callable(call)
    with pytest.raises(DS01Error) as info:
        call()
    return info.value


@pytest.mark.parametrize(
    ("call", "message", "hint", "code"),
    [
        (
            lambda: GpuRequest.gpus(0),
            "--gpus takes a whole number of GPUs, 1 or more, not 0.",
            "Use --gpus 1 or more, or --cpu-only for a container without GPUs.",
            "invalid_gpu_request",
        ),
        (
            lambda: GpuRequest.mig("nope"),
            "'nope' is not a MIG profile.",
            "Name one as `nvidia-smi mig -lgip` lists it, e.g. 1g.10gb or 3g.40gb.",
            "invalid_gpu_request",
        ),
        (
            lambda: GpuRequest.decode("gpus:x"),
            "'gpus:x' is not a stored GPU request.",
            None,
            "invalid_gpu_request",
        ),
        (
            lambda: GpuQuota(max_gpu_equivalents=Fraction(-1, 7)),
            "max_gpu_equivalents must not be negative, not -1/7.",
            None,
            "bad_config",
        ),
        (
            lambda: GpuQuota(max_gpus_per_container=-1),
            "max_gpus_per_container must be a whole number ≥ 0, not -1.",
            None,
            "bad_config",
        ),
        (
            lambda: GpuQuota(allowed_mig_profiles=("big", "1g.5gb", "x")),
            "allowed_mig_profiles names no MIG profile: big, x.",
            None,
            "bad_config",
        ),
        (
            lambda: to_equivalents("lots"),
            "GPU equivalents must be a number such as 1, 0.5 or 3/7, not 'lots'.",
            None,
            "bad_config",
        ),
        (
            lambda: to_equivalents(True),
            "GPU equivalents must be a number, not True.",
            None,
            "bad_config",
        ),
        (
            lambda: ContainerPolicy(max_runtime=timedelta(0)),
            "Lifecycle policy max_runtime must be positive, got 0:00:00.",
            "Use a duration such as 30m or 24h, or null for never.",
            "bad_config",
        ),
        (
            lambda: ContainerPolicy(idle_timeout=10 * MIN, idle_window=10 * MIN + US),
            "The idle window (0:10:00.000001) is longer than the idle timeout (0:10:00); a "
            "container could never be warned.",
            "Make the idle window a small part of the timeout, e.g. 5m for 30m.",
            "bad_config",
        ),
        (
            lambda: ContainerPolicy(idle_warn_at=(0, 50)),
            "Lifecycle policy idle_warn_at must be distinct percentages between 0 and 100, "
            "got (0, 50).",
            "For example (80, 95).",
            "bad_config",
        ),
        (
            lambda: Aging(interval=timedelta(0)),
            "The queue aging interval must be positive, not 0:00:00.",
            None,
            "bad_config",
        ),
        (
            lambda: Aging(step=-1),
            "The queue aging step must not be negative, not -1.",
            None,
            "bad_config",
        ),
    ],
)
def test_validation_errors_exactly(call: object, message: str, hint: str | None, code: str) -> None:
    error = _error(call)
    assert (str(error), error.hint, error.code) == (message, hint, code)


def test_request_kinds_normalise_their_fields() -> None:
    """Whatever was passed, a request keeps only what its kind means."""
    devices = GpuRequest(RequestKind.DEVICES, count=2, profile="1g.5gb")
    assert (devices.count, devices.profile) == (2, None)
    profile = GpuRequest(RequestKind.PROFILE, count=5, profile="MIG 1G.5GB")
    assert (profile.count, profile.profile, profile.devices_asked) == (1, "1g.5gb", 1)
    cpu = GpuRequest(RequestKind.CPU_ONLY, count=3, profile="1g.5gb")
    assert (cpu.count, cpu.profile, cpu.devices_asked) == (0, None, 0)
    assert [r.encode() for r in (devices, profile, cpu)] == ["gpus:2", "profile:1g.5gb", "cpu-only"]
    assert [r.describe() for r in (devices, profile, cpu)] == ["2 GPUs", "MIG 1g.5gb", "no GPU"]
    assert Holding("c", "u", (), Fraction(0)).since is None
    assert Holding("c", "u", (), Fraction(0)).state == "running"


def test_quota_limits_at_zero_and_the_cap_at_zero_are_valid() -> None:
    assert GpuQuota(max_gpu_equivalents=Fraction(0)).max_gpu_equivalents == Fraction(0)
    assert GpuQuota(max_gpus_per_container=0).max_gpus_per_container == 0
    assert to_equivalents(0.1) == Fraction(1, 10)  # the decimal written, not its float
    assert to_equivalents(" 3/7 ") == Fraction(3, 7)


def test_equivalents_read_back_from_labels_are_bounded_to_denominator_64() -> None:
    assert parse_equivalents("0.4286") == Fraction(3, 7)
    assert parse_equivalents(" 3/7 ") == Fraction(3, 7)
    assert parse_equivalents("1/64") == Fraction(1, 64)
    assert parse_equivalents("1/65") == Fraction(1, 64)  # just above the bound: rounded


# --------------------------------------------------------------------------- policy numbers


def test_lifecycle_boundaries() -> None:
    assert ContainerPolicy(idle_timeout=10 * MIN, idle_window=10 * MIN).idle_window == 10 * MIN
    assert ContainerPolicy(max_runtime=US).max_runtime == US
    assert ContainerPolicy(idle_warn_at=(1, 99)).idle_warn_at == (1, 99)
    for bad in ((0,), (100,), (80, 80), (-1,)):
        with pytest.raises(DS01Error, match=r"^Lifecycle policy idle_warn_at must be distinct"):
            ContainerPolicy(idle_warn_at=bad)


@pytest.mark.parametrize(
    ("cpus", "systemd", "v1_quota", "v2"),
    [
        (0.001, "1%", "1000", "1000 100000"),  # below the floors
        (0.004, "1%", "1000", "1000 100000"),
        (0.01, "1%", "1000", "1000 100000"),  # exactly on both floors
        (0.0101, "1%", "1010", "1010 100000"),  # just above the cgroup floor
        (0.02, "2%", "2000", "2000 100000"),  # above the systemd floor
        (1.5, "150%", "150000", "150000 100000"),
    ],
)
def test_aggregate_cpu_floors(cpus: float, systemd: str, v1_quota: str, v2: str) -> None:
    limits = AggregateLimits(cpus=cpus, memory=None, pids=None)
    assert limits.systemd_properties() == {
        "CPUQuota": systemd,
        "MemoryMax": "infinity",
        "TasksMax": "infinity",
    }
    assert limits.cgroup_v1_files() == {
        "cpu/cpu.cfs_period_us": "100000",
        "cpu/cpu.cfs_quota_us": v1_quota,
        "memory/memory.limit_in_bytes": "-1",
        "pids/pids.max": "max",
    }
    assert limits.cgroup_v2_files() == {"cpu.max": v2, "memory.max": "max", "pids.max": "max"}


def test_aggregate_memory_and_pids_written_exactly() -> None:
    limits = AggregateLimits(cpus=None, memory=2**30, pids=64)
    assert limits.cgroup_v2_files() == {
        "cpu.max": "max 100000",
        "memory.max": "1073741824",
        "pids.max": "64",
    }
    assert limits.systemd_properties() == {
        "CPUQuota": "",
        "MemoryMax": "1073741824",
        "TasksMax": "64",
    }


@pytest.mark.parametrize(
    ("gap", "step", "window"),
    [(-1, 1, 0), (0, 1, 0), (1, 1, 1), (2, 1, 2), (3, 2, 2), (4, 2, 2), (5, 2, 3)],
)
def test_aging_overtake_window(gap: int, step: int, window: int) -> None:
    """ceil(gap / step) intervals; nothing for a gap of zero or less."""
    assert Aging(30 * MIN, step).overtake_window(gap) == window * 30 * MIN
    assert Aging(30 * MIN, 0).overtake_window(1) is None
    assert Aging(30 * MIN, 0).overtake_window(0) == timedelta(0)


@pytest.mark.parametrize(
    ("waited", "bonus"),
    [(-MIN, 0), (timedelta(0), 0), (30 * MIN - US, 0), (30 * MIN, 2), (60 * MIN - US, 2),
     (60 * MIN, 4)],
)  # fmt: skip
def test_aging_bonus_on_its_boundaries(waited: timedelta, bonus: int) -> None:
    assert Aging(30 * MIN, 2).bonus(waited) == bonus


def test_holding_hold_expires_exactly_at_stop_plus_hold() -> None:
    stop = datetime(2025, 1, 1, 12, 0)
    h = Holding("c", "u", ("g",), Fraction(1), state="exited", finished_at=stop)
    assert not h.hold_expired(stop + 10 * MIN - US, 10 * MIN)
    assert h.hold_expired(stop + 10 * MIN, 10 * MIN)
    assert not h.hold_expired(stop + 10**6 * MIN, None)  # None: held for ever
    running = Holding("c", "u", ("g",), Fraction(1), finished_at=stop)
    assert not running.hold_expired(stop + 10**6 * MIN, 10 * MIN)
    undated = Holding("c", "u", ("g",), Fraction(1), state="dead")
    assert not undated.hold_expired(stop + 10**6 * MIN, 10 * MIN)
