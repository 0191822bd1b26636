"""Exact tests of the device rules moved into the domain (devices_for_gpu,
merge_processes, aime_devices) and of the resolved-limits helpers (gpu_quota,
check_container_count, display_value): every field, message and boundary written out."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import pytest

from ds01.domain.aime_devices import aime_devices
from ds01.domain.containers import ContainerInfo, ContainerState
from ds01.domain.devices import (
    Device,
    Gpu,
    GpuProcess,
    Inventory,
    MigInstance,
    devices_for_gpu,
    merge_processes,
)
from ds01.domain.gpu_request import GpuQuota
from ds01.domain.policy import Policy, resolve
from ds01.domain.resolved_limits import check_container_count, display_value
from ds01.errors import ConfigError, GpuQueryError, RefusedError

P1 = GpuProcess(101, 500, "python")


def test_a_gpu_without_mig_is_one_device_with_its_own_figures() -> None:
    gpu = Gpu(
        index=3,
        uuid="GPU-a",
        name="NVIDIA H200",
        memory_mib=143771,
        total_slices=7,
        utilization_gpu=42,
        memory_used_mib=615,
        processes=(P1,),
    )
    assert devices_for_gpu(gpu) == (
        Device(
            uuid="GPU-a",
            gpu_index=3,
            name="NVIDIA H200",
            memory_mib=143771,
            slices=7,
            total_slices=7,
            mig_profile=None,
            parent_uuid=None,
            utilization_gpu=42,
            memory_used_mib=615,
            processes=(P1,),
        ),
    )


def test_a_gpu_that_cannot_do_mig_counts_as_one_slice_of_one() -> None:
    (device,) = devices_for_gpu(Gpu(index=0, uuid="GPU-b", name="T4", memory_mib=15360))
    assert (device.slices, device.total_slices) == (1, 1)


def test_a_mig_gpu_offers_exactly_its_instances() -> None:
    gpu = Gpu(
        index=1, uuid="GPU-m", name="A100", memory_mib=40960, mig_enabled=True, total_slices=7
    )
    small = MigInstance("MIG-1", "1g.5gb", 1, 4864, utilization_gpu=None, memory_used_mib=13)
    big = MigInstance("MIG-3", "3g.20gb", 3, 19968, processes=(P1,))
    assert devices_for_gpu(gpu, (small, big)) == (
        Device("MIG-1", 1, "A100", 4864, 1, 7, "1g.5gb", "GPU-m", None, 13, ()),
        Device("MIG-3", 1, "A100", 19968, 3, 7, "3g.20gb", "GPU-m", None, None, (P1,)),
    )
    assert devices_for_gpu(gpu, ()) == ()


def test_contradicting_backends_are_errors_not_guesses() -> None:
    off = Gpu(index=2, uuid="GPU-x", name="A100", memory_mib=40960)
    with pytest.raises(
        GpuQueryError, match=r"^GPU 2 \(GPU-x\) reports MIG instances but MIG mode is off$"
    ) as caught:
        devices_for_gpu(off, (MigInstance("MIG-9", "1g.5gb", 1, 4864),))
    assert caught.value.hint == (
        "Check `nvidia-smi -L` and `nvidia-smi --query-gpu=mig.mode.current`."
    )
    unknown = Gpu(index=4, uuid="GPU-y", name="A100", memory_mib=40960, mig_enabled=True)
    with pytest.raises(
        GpuQueryError,
        match=r"^GPU 4 \(GPU-y\) has MIG enabled but its MIG profiles could not be read, "
        r"so its slice count is unknown$",
    ) as caught:
        devices_for_gpu(unknown)
    assert caught.value.hint == "Check that `nvidia-smi mig -lgip` lists the GPU's profiles."


def test_merge_processes_keeps_the_first_report_but_not_an_empty_name() -> None:
    merged = merge_processes(
        [GpuProcess(30, 100, ""), GpuProcess(10, 5, "a")],
        [GpuProcess(30, 999, "train"), GpuProcess(10, 7, "b"), GpuProcess(20, None, "")],
    )
    assert merged == (
        GpuProcess(10, 5, "a"),
        GpuProcess(20, None, ""),
        GpuProcess(30, 100, "train"),
    )
    assert merge_processes() == ()


# -- aime_devices -----------------------------------------------------------------------

WHOLE0 = Gpu(index=0, uuid="GPU-0", name="H200", memory_mib=1)
MIGGED1 = Gpu(index=1, uuid="GPU-1", name="H200", memory_mib=1, mig_enabled=True, total_slices=7)
WHOLE2 = Gpu(index=2, uuid="GPU-2", name="H200", memory_mib=1)
INV = Inventory(
    gpus=(WHOLE2, MIGGED1, WHOLE0),  # not in index order: the label's count is by index
    devices=(
        *devices_for_gpu(WHOLE0),
        *devices_for_gpu(
            MIGGED1, (MigInstance("MIG-a", "1g", 1, 1), MigInstance("MIG-b", "3g", 3, 1))
        ),
        *devices_for_gpu(WHOLE2),
    ),
)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("all", ("GPU-0", "MIG-a", "MIG-b", "GPU-2")),
        ('"all"', ("GPU-0", "MIG-a", "MIG-b", "GPU-2")),
        (" all ", ("GPU-0", "MIG-a", "MIG-b", "GPU-2")),
        ("0", ()),
        ("1", ("GPU-0",)),
        ("2", ("GPU-0", "MIG-a", "MIG-b")),
        ("9", ("GPU-0", "MIG-a", "MIG-b", "GPU-2")),
        ("device=2", ("GPU-2",)),
        ("device=1", ("MIG-a", "MIG-b")),
        ("device=GPU-1", ("MIG-a", "MIG-b")),
        ("device=0,2", ("GPU-0", "GPU-2")),
        ("device=0;2", ("GPU-0", "GPU-2")),
        ("device= 0 , MIG-b", ("GPU-0", "MIG-b")),
        ("device=MIG-b,1", ("MIG-b", "MIG-a")),
        ("device=0,0", ("GPU-0",)),
        ("device=7,GPU-nope", ()),
        ('"device=2"', ("GPU-2",)),
        ("", ()),
        ("none", ()),
        ("-1", ()),
    ],
)
def test_aime_gpus_label_means_these_devices(label: str, expected: tuple[str, ...]) -> None:
    assert aime_devices(label, INV) == expected


def test_a_mig_gpu_without_instances_stands_for_nothing() -> None:
    empty = Gpu(index=0, uuid="GPU-e", name="H200", memory_mib=1, mig_enabled=True, total_slices=7)
    whole = Gpu(index=1, uuid="GPU-w", name="H200", memory_mib=1)
    inventory = Inventory(gpus=(empty, whole), devices=devices_for_gpu(whole))
    assert aime_devices("all", inventory) == ("GPU-w",)
    assert aime_devices("1", inventory) == ()
    assert aime_devices("device=0,1", inventory) == ("GPU-w",)
    # Only quotes and blanks around the label are dropped, nothing else.
    assert aime_devices("X2X", inventory) == ()


# -- resolved limits --------------------------------------------------------------------


def test_gpu_quota_carries_each_gpu_limit() -> None:
    limits = resolve(
        Policy(
            defaults={
                "max_gpu_equivalents": Fraction(3, 2),
                "max_gpus_per_container": 2,
                "allow_full_gpu": False,
                "allowed_mig_profiles": ("1g.18gb", "3g.71gb"),
                "priority": 7,
            }
        ),
        "alice",
    )
    assert limits.gpu_quota() == GpuQuota(
        max_gpu_equivalents=Fraction(3, 2),
        max_gpus_per_container=2,
        allow_full_gpu=False,
        allowed_mig_profiles=("1g.18gb", "3g.71gb"),
        priority=7,
    )


def _info(name: str, uid: int, state: ContainerState) -> ContainerInfo:
    return ContainerInfo(
        id=f"id-{name}",
        tag=f"{name}._.{uid}",
        image="img",
        state=state,
        status=state.value,
        created=datetime(2026, 12, 1, tzinfo=UTC),
        labels={},
    )


def test_container_count_on_below_and_above_the_cap() -> None:
    limits = resolve(Policy(defaults={"max_containers": 2}), "alice")
    one = [_info("a", 1000, ContainerState.RUNNING)]
    two = [*one, _info("b", 1000, ContainerState.EXITED)]
    check_container_count(limits, one)  # 1 + 1 = 2: on the cap
    check_container_count(limits, [], adding=2)
    with pytest.raises(RefusedError) as caught:
        check_container_count(limits, two)
    error = caught.value
    assert error.message == (
        "You have 2 containers and may have at most 2 (group default): a (running), b (exited)."
    )
    assert error.hint == (
        "Remove one you no longer need: 'ds01 container remove NAME' (stopped ones count too)."
    )
    assert (error.code, error.exit_code) == ("container_limit", 3)
    assert error.details == {"held": 2, "allowed": 2, "containers": ["a._.1000", "b._.1000"]}
    with pytest.raises(RefusedError, match=r"^You have 1 containers and may have at most 2"):
        check_container_count(limits, one, adding=2)
    unlimited = resolve(Policy(defaults={"max_containers": None}), "alice")
    check_container_count(unlimited, two * 50)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("allowed_mig_profiles", None, "any"),
        ("memory", None, "unlimited"),
        ("allow_full_gpu", True, "yes"),
        ("allow_full_gpu", False, "no"),
        ("allowed_mig_profiles", ("1g.18gb", "3g.71gb"), "1g.18gb, 3g.71gb"),
        ("allowed_mig_profiles", (), "none"),
        ("max_gpu_equivalents", Fraction(1, 3), "0.3333"),
        ("max_gpu_equivalents", Fraction(2), "2"),
        ("memory", 32 * 1024**3, "32g"),
        ("idle_timeout", 5400, "1h30m"),
        ("max_cpus", 2.5, "2.5"),
        ("max_cpus", 2.0, "2"),
        ("aggregate.cpus", 16.0, "16"),
        ("no_such_key", 2.0, "2.0"),
        ("idle.gpu_threshold", 5.0, "5%"),
        ("max_containers", 3, "3"),
    ],
)
def test_display_value(key: str, value: object, shown: str) -> None:
    assert display_value(key, value) == shown  # type: ignore[arg-type]


def test_inconsistent_limits_name_where_each_value_came_from() -> None:
    # memory from the built-in defaults, memory_swap from the file's defaults (a policy
    # made in code has no file, so its places read "built-in" too).
    with pytest.raises(ConfigError) as caught:
        resolve(Policy(defaults={"memory_swap": 1024**3}), "alice")
    assert caught.value.message == (
        "built-in: the limits of user 'alice' (group default) are inconsistent: "
        "memory_swap 1g is less than memory 32g; Docker refuses that (memory_swap is memory "
        "plus swap). Set it to at least memory, or leave it out for no swap. Values: memory "
        "from builtin (built-in), memory_swap from default (built-in)."
    )
