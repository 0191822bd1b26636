"""Leftover boundaries and words, written out: the device-UUID rule's explanation, slice
names for logins with several '@', runs of '_', over-long and non-ASCII names, device
look-up by UUID, and the verdict on a missing sample."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ds01.domain.devices import Device, Inventory, device_uuid_problem
from ds01.domain.idle import Activity, Assessment, assess_sample
from ds01.domain.slices import slice_component


def test_device_uuid_problem_words() -> None:
    assert device_uuid_problem("GPU-1") is None
    assert device_uuid_problem("a" * 128) is None  # 128 characters: the limit
    expected = (
        "a device UUID holds only letters, digits and '_', '.', ':', '/', '-' (at most 128 "
        "characters, starting with a letter or digit), e.g. "
        "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d"
    )
    assert device_uuid_problem("a" * 129) == expected
    assert device_uuid_problem("a,b") == expected


@pytest.mark.parametrize(
    ("name", "component"),
    [
        ("a@b@c", "a.2b5ed2699e"),  # the part before the first '@', hashed: not unique alone
        ("__a__b__", "__a__b__"),  # already a valid component: kept
        ("x" * 40 + "_y", "x" * 21 + ".b6f04cc774"),  # readable part cut to 21
        ("Ünï.cödé@x", "n_c_d.ff713d798f"),
        ("a.b", "a_b.2e7336dc8e"),
    ],
)
def test_slice_components(name: str, component: str) -> None:
    assert slice_component(name) == component


def test_an_empty_name_has_no_slice() -> None:
    with pytest.raises(ValueError, match=r"^cannot build a slice name from an empty user or"):
        slice_component("")


def test_inventory_finds_a_device_by_uuid() -> None:
    whole = Device("GPU-1", 0, "A100", 40960, slices=7, total_slices=7)
    inv = Inventory(devices=(whole,))
    assert inv.device("GPU-1") is whole
    assert inv.device("GPU-2") is None


def test_no_sample_is_unmeasured_on_every_signal() -> None:
    verdict = assess_sample(
        None,
        gpu_threshold=5.0,
        cpu_threshold=2.0,
        network_threshold_bytes=1 << 20,
        network_threshold_per=timedelta(minutes=1),
    )
    assert verdict == Assessment(Activity.UNMEASURED, (), ("gpu", "cpu", "network"))
