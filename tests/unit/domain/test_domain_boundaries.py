"""Every threshold in the domain on, just below and just above its boundary, exactly.

Written against mutation testing (scripts/mutation): each boundary is checked on both sides
and at the value itself, with exact fractions (``Fraction(4, 5)``, never ``Fraction(0.8)``,
which is not 4/5), so that ``>`` turned into ``>=`` (or the limit moved by one) fails here.
Label decoding is checked whole (every field of the decoded object against a literal), for
current, legacy, missing and malformed labels.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from ds01.domain.idle import (
    NOT_BUSY,
    Activity,
    Busy,
    Sample,
    assess_sample,
    busy_factor,
)
from ds01.domain.labels import LEGACY, ContainerLabels, ImageLabels, L
from ds01.domain.package_specs import _MAX_ENTRY, _Rejected, apt_spec, pip_spec

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
MIB = 1024 * 1024


def _verdict(
    gpu: float | None = 0.0, cpu: float | None = 0.0, net: int | None = 0, span: timedelta = MIN
) -> tuple[Activity, tuple[str, ...]]:
    sample = Sample(
        start=T0, end=T0 + span, gpu_util_percent=gpu, cpu_percent=cpu, network_bytes=net
    )
    a = assess_sample(
        sample,
        gpu_threshold=5.0,
        cpu_threshold=2.0,
        network_threshold_bytes=MIB,
        network_threshold_per=MIN,
    )
    return a.activity, a.busy_signals


# ------------------------------------------------------------------------ idle thresholds


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        (4.999, (Activity.QUIET, ())),
        (5.0, (Activity.BUSY, ("gpu",))),
        (5.001, (Activity.BUSY, ("gpu",))),
    ],
)
def test_gpu_threshold_is_reached_at_exactly_the_threshold(
    gpu: float, expected: tuple[Activity, tuple[str, ...]]
) -> None:
    assert _verdict(gpu=gpu) == expected


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        (1.999, (Activity.QUIET, ())),
        (2.0, (Activity.BUSY, ("cpu",))),
        (2.001, (Activity.BUSY, ("cpu",))),
    ],
)
def test_cpu_threshold_is_reached_at_exactly_the_threshold(
    cpu: float, expected: tuple[Activity, tuple[str, ...]]
) -> None:
    assert _verdict(cpu=cpu) == expected


@pytest.mark.parametrize(
    ("net", "span", "expected"),
    [
        (MIB - 1, MIN, (Activity.QUIET, ())),
        (MIB, MIN, (Activity.BUSY, ("network",))),
        (MIB + 1, MIN, (Activity.BUSY, ("network",))),
        # A rate: 2 MiB over two minutes is exactly 1 MiB per minute; one byte less is not.
        (2 * MIB - 1, 2 * MIN, (Activity.QUIET, ())),
        (2 * MIB, 2 * MIN, (Activity.BUSY, ("network",))),
    ],
)
def test_network_threshold_is_reached_at_exactly_the_rate(
    net: int, span: timedelta, expected: tuple[Activity, tuple[str, ...]]
) -> None:
    assert _verdict(net=net, span=span) == expected


def test_every_signal_at_its_threshold_is_named_in_order() -> None:
    assert _verdict(gpu=5.0, cpu=2.0, net=MIB) == (Activity.BUSY, ("gpu", "cpu", "network"))


# ------------------------------------------------------------------------- busy server


@pytest.mark.parametrize(
    ("allocated", "total", "share", "busy"),
    [
        # 4 of 5 is exactly the share 4/5: not "above" it.
        (Fraction(4), Fraction(5), Fraction(4, 5), False),
        (Fraction(4) - Fraction(1, 7), Fraction(5), Fraction(4, 5), False),
        (Fraction(4) + Fraction(1, 7), Fraction(5), Fraction(4, 5), True),
        # Shares given as floats mean the decimal written in the config: 7 of 10 is exactly
        # 0.7 (whose binary float is a hair under 7/10), and 3 of 4 is exactly 0.75.
        (Fraction(7), Fraction(10), 0.7, False),
        (Fraction(7) + Fraction(1, 7), Fraction(10), 0.7, True),
        (Fraction(3), Fraction(4), 0.75, False),
        (Fraction(3) + Fraction(1, 7), Fraction(4), 0.75, True),
        (Fraction(4), Fraction(5), 0.8, False),
        # The ends of the allowed range.
        (Fraction(0), Fraction(8), 0.0, False),
        (Fraction(1, 7), Fraction(8), 0.0, True),
        (Fraction(8), Fraction(8), 1.0, False),
    ],
)
def test_busy_share_is_exclusive_and_exact(
    allocated: Fraction, total: Fraction, share: float | Fraction, busy: bool
) -> None:
    expected = Busy(0.5, True) if busy else NOT_BUSY
    assert busy_factor(allocated, total, share, 0.5) == expected  # type: ignore[arg-type]


def test_no_gpus_is_never_busy() -> None:
    assert busy_factor(Fraction(1), Fraction(0), 0.0, 0.5) == NOT_BUSY
    assert busy_factor(Fraction(1), Fraction(-1), 0.0, 0.5) == NOT_BUSY


@pytest.mark.parametrize(
    ("share", "factor", "match"),
    [
        (-0.001, 0.5, r"share must be between 0 and 1, got -0\.001"),
        (1.001, 0.5, r"share must be between 0 and 1, got 1\.001"),
        (0.8, 0.0, r"factor must be above 0 and at most 1, got 0\.0"),
        (0.8, 1.001, r"factor must be above 0 and at most 1, got 1\.001"),
    ],
)
def test_busy_configuration_just_outside_its_range_is_refused(
    share: float, factor: float, match: str
) -> None:
    from ds01.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        busy_factor(Fraction(1), Fraction(2), share, factor)


@pytest.mark.parametrize(("share", "factor"), [(0.0, 1.0), (1.0, 0.001), (1.0, 1.0)])
def test_busy_configuration_on_its_range_ends_is_accepted(share: float, factor: float) -> None:
    assert busy_factor(Fraction(1), Fraction(2), share, factor).is_busy is (share < 0.5)


# --------------------------------------------------------------------- package entries


def test_pip_entry_of_exactly_the_maximum_length_is_accepted() -> None:
    assert _MAX_ENTRY == 200
    assert pip_spec("a" * 200).name == "a" * 200


def test_pip_entry_one_over_the_maximum_is_refused() -> None:
    with pytest.raises(_Rejected, match=r"^it is longer than 200 characters$"):
        pip_spec("a" * 201)


def test_apt_entry_length_boundary() -> None:
    assert apt_spec("a" * 200).name == "a" * 200
    with pytest.raises(_Rejected, match=r"^it is longer than 200 characters$"):
        apt_spec("a" * 201)


# ------------------------------------------------------------------------ label decoding

UUID_A = "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d"
UUID_B = "GPU-0bd8a4a5-8b5c-4c44-9d6f-1f0a6b0c0f11"


def _labels(**extra: str) -> dict[str, str]:
    return {
        L.USER: "alice",
        L.NAME: "thesis",
        L.GPU_UUIDS: f"{UUID_A};{UUID_B}",
        **extra,
    }


def _charged(labels: dict[str, str]) -> Fraction:
    decoded = ContainerLabels.decode(labels)
    assert decoded is not None
    return decoded.gpu_equivalents


def test_a_container_without_an_equivalents_label_is_charged_one_per_device() -> None:
    assert _charged(_labels()) == Fraction(2)
    assert _charged(_labels(**{L.GPU_EQUIVALENTS: ""})) == Fraction(2)


@pytest.mark.parametrize("bad", ["abc", "1/0", "nan", "inf", "-1", "-3/7", "0", "0.0", "1/"])
def test_a_malformed_equivalents_label_is_charged_one_per_device(bad: str) -> None:
    assert _charged(_labels(**{L.GPU_EQUIVALENTS: bad})) == Fraction(2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3/7", Fraction(3, 7)), ("0.4286", Fraction(3, 7)), (" 1/2 ", Fraction(1, 2)), ("2", 2)],
)
def test_a_well_formed_equivalents_label_is_charged_as_written(
    text: str, expected: Fraction
) -> None:
    assert _charged(_labels(**{L.GPU_EQUIVALENTS: text})) == expected


def test_no_devices_and_a_zero_label_is_charged_nothing() -> None:
    labels = {L.USER: "alice", L.GPU_EQUIVALENTS: "0"}
    assert _charged(labels) == 0
    assert _charged({L.USER: "alice"}) == 0


def test_current_labels_decode_to_every_field() -> None:
    labels = {
        L.USER: "alice",
        L.OWNER: "ignored-owner",
        L.NAME: "thesis",
        L.FRAMEWORK: "Pytorch-2.8.0",
        L.ARCH: "CUDA_ADA",
        L.WORK_MOUNT: "/home/alice/workspace",
        L.DATA_MOUNT: "-",
        L.MODELS_MOUNT: "/models",
        L.GPUS: "1",
        L.UID: "1001",
        L.GROUP: "students",
        L.CUSTOM_IMAGE: "thesis-alice",
        L.IMAGE: "ds01/thesis-alice:latest",
        L.CREATED_AT: "2026-03-01T12:00:00+00:00",
        L.GPU_UUIDS: f" {UUID_A} ; {UUID_B};",
        L.GPU_EQUIVALENTS: "3/7",
        L.DS01_MANAGED: "true",
        L.MLC_VERSION: "4",
    }
    decoded = ContainerLabels.decode(labels)
    assert decoded is not None
    assert (decoded.user, decoded.name, decoded.framework, decoded.arch) == (
        "alice", "thesis", "Pytorch-2.8.0", "CUDA_ADA"
    )  # fmt: skip
    assert (decoded.work_mount, decoded.data_mount, decoded.models_mount) == (
        "/home/alice/workspace", None, "/models"
    )  # fmt: skip
    assert (decoded.gpus, decoded.uid, decoded.group) == ("1", 1001, "students")
    assert decoded.custom_image == "thesis-alice"
    assert decoded.gpu_uuids == (UUID_A, UUID_B)
    assert decoded.gpu_equivalents == Fraction(3, 7)
    assert decoded.ds01_managed is True
    assert decoded.mlc_version == "4"


def test_legacy_ds01_labels_decode_as_a_fallback() -> None:
    labels = {
        LEGACY.USER: "bob",
        LEGACY.MANAGED: "true",
        LEGACY.NAME: "old",
        LEGACY.FRAMEWORK: "TensorFlow-2.14",
        LEGACY.ARCH: "CUDA_AMPERE",
        LEGACY.CUSTOM_IMAGE: "old-bob",
        LEGACY.GPU_UUIDS: f"{UUID_A},{UUID_B}",  # commas, as earlier deployments wrote
        LEGACY.CREATED_AT: "2025-01-01T00:00:00+00:00",
        LEGACY.WORK_MOUNT: "/home/bob/workspace",
    }
    decoded = ContainerLabels.decode(labels)
    assert decoded is not None
    assert (decoded.user, decoded.name, decoded.framework, decoded.arch) == (
        "bob", "old", "TensorFlow-2.14", "CUDA_AMPERE"
    )  # fmt: skip
    assert decoded.custom_image == "old-bob"
    assert decoded.created_at == "2025-01-01T00:00:00+00:00"
    assert decoded.work_mount == "/home/bob/workspace"
    assert decoded.gpu_uuids == (UUID_A, UUID_B)
    assert decoded.gpu_equivalents == Fraction(2)  # no label: one per device
    assert decoded.ds01_managed is True


@pytest.mark.parametrize(
    ("labels", "user"),
    [
        ({L.OWNER: "owner"}, "owner"),
        ({LEGACY.USER: "legacy"}, "legacy"),
        ({L.USER: "", L.OWNER: "owner"}, "owner"),
        ({L.USER: "user", LEGACY.USER: "legacy"}, "user"),
    ],
)
def test_the_owner_is_the_first_non_empty_of_user_owner_legacy(
    labels: dict[str, str], user: str
) -> None:
    decoded = ContainerLabels.decode(labels)
    assert decoded is not None and decoded.user == user


def test_a_single_legacy_uuid_label_is_read() -> None:
    decoded = ContainerLabels.decode({LEGACY.USER: "bob", LEGACY.GPU_UUID: UUID_A})
    assert decoded is not None
    assert decoded.gpu_uuids == (UUID_A,) and decoded.gpu_equivalents == 1


def test_labels_of_nobody_are_not_a_container_of_ours() -> None:
    assert ContainerLabels.decode({}) is None
    assert ContainerLabels.decode({L.USER: ""}) is None


@pytest.mark.parametrize("uid", ["", "abc", "-1", "1.5"])
def test_a_malformed_uid_label_is_no_uid(uid: str) -> None:
    decoded = ContainerLabels.decode(_labels(**{L.UID: uid}))
    assert decoded is not None and decoded.uid is None


def test_image_labels_decode_current_and_legacy() -> None:
    current = ImageLabels.decode(
        {
            L.CUSTOM_IMAGE: "cv-alice",
            L.MAINTAINER: "alice",
            L.BASE_IMAGE: "aimehub/pytorch",
            L.IMAGE_FRAMEWORK: "Pytorch-2.8.0",
            L.IMAGE_TIERS: "base;cv,custom",
            L.IMAGE_PROJECT: "cv",
            L.BAKED_UID: "1001",
            L.BAKED_GID: "x",
            L.BAKED_USER: "alice",
        }
    )
    assert current == ImageLabels(
        "cv-alice", "alice", "aimehub/pytorch", "Pytorch-2.8.0", ("base", "cv", "custom"), "cv",
        1001, None, "alice",
    )  # fmt: skip
    legacy = ImageLabels.decode(
        {
            LEGACY.CUSTOM_IMAGE: "old",
            LEGACY.USER_ID: "7",
            LEGACY.GROUP_ID: "8",
            LEGACY.USERNAME: "u",
        }
    )
    assert legacy == ImageLabels("old", "", "", "", (), "", 7, 8, "u")
    assert ImageLabels.decode({LEGACY.USER_ID: "7"}) is None
