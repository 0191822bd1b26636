"""Labels written out: every field of a DS01 container and image encoded to the exact
label set AIME and DS01 read, decoded back, and the fallbacks (legacy ``ds01.*`` labels,
missing and empty values) decoded to what they mean."""

from __future__ import annotations

from fractions import Fraction

from ds01.domain.labels import LEGACY, ContainerLabels, ImageLabels, L

FULL = ContainerLabels(
    name="proj", user="alice", framework="Pytorch-2.5.1", arch="CUDA_ADA",
    work_mount="/home/alice/workspace/proj", data_mount="/data/alice", models_mount=None,
    gpus="device=MIG-1;MIG-2", uid=1000, group="students", custom_image="ds01-1000/proj:latest",
    image="aimehub/x:1", created_at="2025-01-01T12:00:00+00:00", gpu_uuids=("MIG-1", "MIG-2"),
    gpu_equivalents=Fraction(2, 7), gpu_profile="1g.5gb",
    gpu_allocated_at="2025-01-01T12:00:01+00:00", queue_id="17", interface="cli",
    creator="c-123", journal="j-9", ds01_managed=True, mlc_version="4",
)  # fmt: skip
FULL_LABELS = {
    "aime.mlc": "alice",
    "aime.mlc.NAME": "proj",
    "aime.mlc.USER": "alice",
    "aime.mlc.ARCH": "CUDA_ADA",
    "aime.mlc.MLC_VERSION": "4",
    "aime.mlc.WORK_MOUNT": "/home/alice/workspace/proj",
    "aime.mlc.DATA_MOUNT": "/data/alice",
    "aime.mlc.MODELS_MOUNT": "-",
    "aime.mlc.FRAMEWORK": "Pytorch-2.5.1",
    "aime.mlc.GPUS": "device=MIG-1;MIG-2",
    "aime.mlc.DS01_MANAGED": "true",
    "aime.mlc.GPU_UUIDS": "MIG-1;MIG-2",
    "aime.mlc.GPU_EQUIVALENTS": "2/7",
    "aime.mlc.DS01_UID": "1000",
    "aime.mlc.DS01_GROUP": "students",
    "aime.mlc.CUSTOM_IMAGE": "ds01-1000/proj:latest",
    "aime.mlc.DS01_IMAGE": "aimehub/x:1",
    "aime.mlc.DS01_CREATED_AT": "2025-01-01T12:00:00+00:00",
    "aime.mlc.GPU_PROFILE": "1g.5gb",
    "aime.mlc.GPU_ALLOCATED_AT": "2025-01-01T12:00:01+00:00",
    "aime.mlc.DS01_QUEUE_ID": "17",
    "aime.mlc.DS01_INTERFACE": "cli",
    "aime.mlc.DS01_CREATOR": "c-123",
    "aime.mlc.DS01_JOURNAL": "j-9",
}


def test_every_container_field_encodes_and_decodes_exactly() -> None:
    assert FULL.encode() == FULL_LABELS
    assert ContainerLabels.decode(FULL_LABELS) == FULL


def test_a_bare_container_encodes_placeholders() -> None:
    bare = ContainerLabels(name="x", user="bob", framework="custom")
    assert bare.encode() == {
        "aime.mlc": "bob",
        "aime.mlc.NAME": "x",
        "aime.mlc.USER": "bob",
        "aime.mlc.ARCH": "",
        "aime.mlc.MLC_VERSION": "4",
        "aime.mlc.WORK_MOUNT": "-",
        "aime.mlc.DATA_MOUNT": "-",
        "aime.mlc.MODELS_MOUNT": "-",
        "aime.mlc.FRAMEWORK": "custom",
        "aime.mlc.GPUS": "0",
        "aime.mlc.DS01_MANAGED": "true",
        "aime.mlc.GPU_UUIDS": "",
        "aime.mlc.GPU_EQUIVALENTS": "0",
    }
    decoded = ContainerLabels.decode(bare.encode())
    assert decoded is not None
    assert (decoded.arch, decoded.work_mount, decoded.uid, decoded.gpus) == (None, None, None, "0")


def test_missing_and_empty_values_decode_to_nothing() -> None:
    decoded = ContainerLabels.decode({L.USER: "carol", L.DATA_MOUNT: "", L.WORK_MOUNT: "-"})
    assert decoded == ContainerLabels(name="", user="carol", framework="", gpus="")


def test_legacy_ds01_labels_are_read() -> None:
    legacy = {
        LEGACY.USER: "dave",
        LEGACY.NAME: "old",
        LEGACY.CREATED_AT: "2024-01-01T00:00:00",
        LEGACY.GPU_UUIDS: "GPU-a,GPU-b",
        LEGACY.MANAGED: "true",
    }
    decoded = ContainerLabels.decode(legacy)
    assert decoded == ContainerLabels(
        name="old", user="dave", framework="", gpus="", created_at="2024-01-01T00:00:00",
        gpu_uuids=("GPU-a", "GPU-b"), gpu_equivalents=Fraction(2), ds01_managed=True,
    )  # fmt: skip


IMAGE = ImageLabels(
    custom_image="ds01-1000/proj:latest", maintainer="alice", base_image="aimehub/x:1",
    framework="Pytorch-2.5.1", tiers=("framework", "custom"), project="proj", uid=1000,
    gid=100, user="alice",
)  # fmt: skip


def test_image_labels_exactly() -> None:
    assert IMAGE.encode() == {
        "aime.mlc.CUSTOM_IMAGE": "ds01-1000/proj:latest",
        "aime.mlc.MAINTAINER": "alice",
        "aime.mlc.BASE_IMAGE": "aimehub/x:1",
        "aime.mlc.FRAMEWORK": "Pytorch-2.5.1",
        "aime.mlc.DS01_TIERS": "framework;custom",
        "aime.mlc.DS01_PROJECT": "proj",
        "aime.mlc.DS01_USER_UID": "1000",
        "aime.mlc.DS01_USER_GID": "100",
        "aime.mlc.DS01_USER_NAME": "alice",
    }
    assert ImageLabels.decode(IMAGE.encode()) == IMAGE
    bare = ImageLabels("c", "m", "b", "f", (), "p", uid=None, gid=None, user=None)
    assert bare.encode() == {
        "aime.mlc.CUSTOM_IMAGE": "c",
        "aime.mlc.MAINTAINER": "m",
        "aime.mlc.BASE_IMAGE": "b",
        "aime.mlc.FRAMEWORK": "f",
        "aime.mlc.DS01_TIERS": "",
        "aime.mlc.DS01_PROJECT": "p",
    }


def test_image_labels_fall_back_and_refuse_non_numbers() -> None:
    labels = dict(IMAGE.encode())
    del labels[L.BAKED_GID]
    labels[LEGACY.GROUP_ID] = "55"
    labels[L.BAKED_UID] = "x1"
    decoded = ImageLabels.decode(labels)
    assert decoded is not None
    assert (decoded.uid, decoded.gid) == (None, 55)
