"""Leftover boundaries and words, written out: the device-UUID rule's explanation, and
slice names for logins with several '@', runs of '_', over-long and non-ASCII names."""

from __future__ import annotations

import pytest

from ds01.domain.devices import device_uuid_problem
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
