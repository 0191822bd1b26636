"""GPU -> catalog architecture, and the host-level choice (flag > MLC_ARCH > detection)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.domain.arch import (
    ALL_ARCHS,
    CUDA,
    CUDA_ADA,
    CUDA_AMPERE,
    CUDA_ARCHS,
    CUDA_BLACKWELL,
    ROCM5,
    ROCM6,
    arch_for_gpu,
    host_arch,
    match_arch,
)
from ds01.domain.devices import Gpu
from ds01.errors import EXIT_BAD_INPUT, UsageError


def make_gpu(
    name: str,
    cc: tuple[int, int] | None = None,
    *,
    index: int = 0,
    vendor: str = "nvidia",
    gfx: str | None = None,
) -> Gpu:
    return Gpu(
        index=index,
        uuid=f"GPU-{index:08d}",
        name=name,
        memory_mib=1024,
        compute_capability=cc,
        vendor=vendor,
        gfx=gfx,
    )


# Real products with the compute capability NVML reports for them.
NVIDIA_TABLE: list[tuple[str, tuple[int, int], str]] = [
    ("NVIDIA H200", (9, 0), CUDA_ADA),
    ("NVIDIA H100 80GB HBM3", (9, 0), CUDA_ADA),
    ("NVIDIA A100-SXM4-80GB", (8, 0), CUDA_AMPERE),
    ("NVIDIA A10G", (8, 6), CUDA_AMPERE),
    ("NVIDIA GeForce RTX 3090", (8, 6), CUDA_AMPERE),
    ("NVIDIA RTX A6000", (8, 6), CUDA_AMPERE),
    ("NVIDIA GeForce RTX 4090", (8, 9), CUDA_ADA),
    ("NVIDIA L40S", (8, 9), CUDA_ADA),
    ("NVIDIA RTX 6000 Ada Generation", (8, 9), CUDA_ADA),
    ("NVIDIA GeForce RTX 5090", (12, 0), CUDA_BLACKWELL),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", (12, 0), CUDA_BLACKWELL),
    ("NVIDIA B200", (10, 0), CUDA_BLACKWELL),
    ("Tesla V100-SXM2-32GB", (7, 0), CUDA),
    ("Quadro RTX 6000", (7, 5), CUDA),
    ("NVIDIA GeForce RTX 2080 Ti", (7, 5), CUDA),
    ("Tesla T4", (7, 5), CUDA),
    ("NVIDIA GeForce GTX 1080 Ti", (6, 1), CUDA),
]

AMD_TABLE: list[tuple[str, str, str]] = [
    ("AMD Instinct MI100", "gfx908", ROCM5),
    ("AMD Radeon VII", "gfx906", ROCM5),
    ("AMD Instinct MI250X", "gfx90a", ROCM6),
    ("AMD Instinct MI300X", "gfx942", ROCM6),
    ("AMD Radeon RX 7900 XTX", "gfx1100", ROCM6),
    ("AMD Radeon RX 9070 XT", "gfx1201", ROCM6),
]


def test_h200_from_the_real_capture_gets_cuda_ada(h200_dir: Path) -> None:
    data = json.loads((h200_dir / "busy-nvml.json").read_text())
    raw = data["gpus"][0]
    major, minor = raw["compute_capability"]
    gpu = make_gpu(raw["name"], (int(major), int(minor)))
    assert gpu.compute_capability == (9, 0)

    choice = arch_for_gpu(gpu.name, gpu.compute_capability)

    assert choice.arch == CUDA_ADA
    assert "Hopper" in choice.reason
    assert "NVIDIA H200" in choice.reason


@pytest.mark.parametrize(("name", "cc", "arch"), NVIDIA_TABLE)
def test_nvidia_by_compute_capability(name: str, cc: tuple[int, int], arch: str) -> None:
    choice = arch_for_gpu(name, cc)
    assert choice.arch == arch
    assert f"{cc[0]}.{cc[1]}" in choice.reason


@pytest.mark.parametrize(("name", "cc", "arch"), NVIDIA_TABLE)
def test_product_name_gives_the_same_arch_when_capability_is_unknown(
    name: str, cc: tuple[int, int], arch: str
) -> None:
    choice = arch_for_gpu(name, None)
    assert choice.arch == arch == arch_for_gpu(name, cc).arch
    assert "no compute capability" in choice.reason


def test_capability_wins_over_a_misleading_name() -> None:
    # A renamed/virtualised device: the hardware's capability is the truth.
    assert arch_for_gpu("NVIDIA A100", (8, 9)).arch == CUDA_ADA


@pytest.mark.parametrize(
    ("cc", "arch"),
    [((11, 0), CUDA_BLACKWELL), ((10, 3), CUDA_BLACKWELL), ((8, 7), CUDA_AMPERE), ((6, 0), CUDA)],
)
def test_other_capabilities(cc: tuple[int, int], arch: str) -> None:
    assert arch_for_gpu("some GPU", cc).arch == arch


def test_pre_pascal_gets_the_oldest_images_with_a_caveat() -> None:
    choice = arch_for_gpu("GeForce GTX TITAN X", (5, 2))
    assert choice.arch == CUDA
    assert "may not support" in choice.reason


@pytest.mark.parametrize(("name", "gfx", "arch"), AMD_TABLE)
def test_amd_by_gfx_target(name: str, gfx: str, arch: str) -> None:
    choice = arch_for_gpu(name, None, vendor="amd", gfx=gfx)
    assert choice.arch == arch
    assert gfx in choice.reason


@pytest.mark.parametrize(("name", "gfx", "arch"), AMD_TABLE)
def test_amd_by_name_when_gfx_is_unknown(name: str, gfx: str, arch: str) -> None:
    assert arch_for_gpu(name, None, vendor="amd").arch == arch


@pytest.mark.parametrize(
    ("name", "cc", "vendor", "gfx"),
    [
        ("Mystery Accelerator 9000", None, "nvidia", None),
        ("AMD Radeon RX Vega 64", None, "amd", "gfx900"),
        ("Something", None, "amd", None),
    ],
)
def test_unrecognisable_gpu_is_a_usage_error(
    name: str, cc: tuple[int, int] | None, vendor: str, gfx: str | None
) -> None:
    with pytest.raises(UsageError) as err:
        arch_for_gpu(name, cc, vendor=vendor, gfx=gfx)
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert err.value.code == "unknown_gpu_arch"
    assert err.value.hint is not None and "--arch" in err.value.hint


def test_match_arch_is_case_insensitive_and_returns_catalog_spelling() -> None:
    assert match_arch(" cuda_ada ", ALL_ARCHS) == CUDA_ADA
    assert match_arch("HOPPER", ALL_ARCHS) is None


# --- host_arch ---------------------------------------------------------------------------

H200 = make_gpu("NVIDIA H200", (9, 0))
A100 = make_gpu("NVIDIA A100-SXM4-80GB", (8, 0), index=1)
V100 = make_gpu("Tesla V100-SXM2-32GB", (7, 0), index=2)
MI300X = make_gpu("AMD Instinct MI300X", None, index=3, vendor="amd", gfx="gfx942")


def test_flag_beats_env_beats_detection() -> None:
    by_flag = host_arch([H200], flag="CUDA_BLACKWELL", env="CUDA", catalog_archs=ALL_ARCHS)
    assert (by_flag.arch, by_flag.source) == (CUDA_BLACKWELL, "flag")
    assert "MLC_ARCH=CUDA" in by_flag.reason  # says what it overrode

    by_env = host_arch([H200], flag=None, env="CUDA", catalog_archs=ALL_ARCHS)
    assert (by_env.arch, by_env.source) == (CUDA, "MLC_ARCH")

    detected = host_arch([H200], flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert (detected.arch, detected.source) == (CUDA_ADA, "detected")
    assert "Hopper" in detected.reason


def test_override_is_matched_case_insensitively() -> None:
    result = host_arch([], flag="cuda_ampere", env=None, catalog_archs=ALL_ARCHS)
    assert result.arch == CUDA_AMPERE


def test_blank_env_counts_as_unset() -> None:
    result = host_arch([A100], flag=None, env="  ", catalog_archs=ALL_ARCHS)
    assert (result.arch, result.source) == (CUDA_AMPERE, "detected")


@pytest.mark.parametrize(("flag", "env"), [("HOPPER", None), (None, "CUDA_HOPPER"), ("", None)])
def test_override_not_in_catalog_lists_the_valid_archs(flag: str | None, env: str | None) -> None:
    with pytest.raises(UsageError) as err:
        host_arch([H200], flag=flag, env=env, catalog_archs=CUDA_ARCHS)
    assert err.value.code == "unknown_arch"
    shown = err.value.message + (err.value.hint or "")
    for arch in CUDA_ARCHS:
        assert arch in shown
    assert ROCM6 not in shown


def test_override_valid_for_ds01_but_absent_from_this_catalog_is_refused() -> None:
    with pytest.raises(
        UsageError,
        match=r"--arch ROCM6 names architecture 'ROCM6', which the catalog does not have",
    ):
        host_arch([], flag=ROCM6, env=None, catalog_archs=CUDA_ARCHS)


def test_no_gpu_and_no_override_gives_none_with_the_archs_to_pass() -> None:
    result = host_arch([], flag=None, env=None, catalog_archs=[CUDA_ADA, CUDA, ROCM5])
    assert result.arch is None
    assert result.source == "none"
    assert "--arch" in result.reason
    assert "CUDA, CUDA_ADA, ROCM5" in result.reason


def test_mixed_generations_pick_the_oldest_and_say_why() -> None:
    result = host_arch([H200, A100], flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert (result.arch, result.source) == (CUDA_AMPERE, "detected")
    assert "oldest" in result.reason
    assert "CUDA_ADA" in result.reason and "CUDA_AMPERE" in result.reason

    three = host_arch([A100, V100, H200], flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert three.arch == CUDA


def test_identical_gpus_are_summarised() -> None:
    gpus = [make_gpu("NVIDIA H200", (9, 0), index=i) for i in range(8)]
    result = host_arch(gpus, flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert result.arch == CUDA_ADA
    assert result.reason.startswith("8 GPUs")


def test_nvidia_preferred_over_amd_on_a_mixed_host() -> None:
    result = host_arch([MI300X, A100], flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert result.arch == CUDA_AMPERE
    assert "AMD GPUs ignored" in result.reason

    amd_only = host_arch([MI300X], flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert amd_only.arch == ROCM6


def test_unrecognised_gpus_are_reported_not_fatal() -> None:
    odd = make_gpu("Mystery Accelerator", None, index=5)
    only_odd = host_arch([odd], flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert only_odd.arch is None and only_odd.source == "none"
    assert "Mystery Accelerator" in only_odd.reason and "--arch" in only_odd.reason

    with_known = host_arch([odd, A100], flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert with_known.arch == CUDA_AMPERE
    assert "not recognised" in with_known.reason


def test_detected_arch_missing_from_catalog_is_kept_with_a_note() -> None:
    result = host_arch([MI300X], flag=None, env=None, catalog_archs=CUDA_ARCHS)
    assert result.arch == ROCM6
    assert "no ROCM6 images" in result.reason


_GENERATION_ORDER = {CUDA: 0, CUDA_AMPERE: 1, CUDA_ADA: 2, CUDA_BLACKWELL: 3}


@given(st.lists(st.sampled_from(NVIDIA_TABLE), min_size=1, max_size=6))
def test_detection_picks_an_arch_every_gpu_can_run(
    rows: list[tuple[str, tuple[int, int], str]],
) -> None:
    gpus = [make_gpu(name, cc, index=i) for i, (name, cc, _) in enumerate(rows)]
    result = host_arch(gpus, flag=None, env=None, catalog_archs=ALL_ARCHS)
    assert result.arch in {arch for _, _, arch in rows}
    assert all(_GENERATION_ORDER[result.arch] <= _GENERATION_ORDER[arch] for _, _, arch in rows)
