"""Architecture choices written out: the catalog architecture and the reason users see,
for each compute-capability band (on and either side of its bounds), names when the
capability is unknown, AMD gfx targets, whole hosts (one, several, mixed generations,
mixed vendors, unrecognised GPUs, none) and overrides, with their exact errors."""

from __future__ import annotations

import pytest

from ds01.domain.arch import ArchChoice, ArchResolution, arch_for_gpu, host_arch
from ds01.domain.devices import Gpu
from ds01.errors import UsageError

HOPPER = (
    "AIME has no Hopper architecture; its CUDA_ADA images (CUDA 11.8-12.6, which know sm_90) "
    "serve H100/H200, as AIME's README lists them"
)
CAT = ["CUDA", "CUDA_ADA", "CUDA_AMPERE", "CUDA_BLACKWELL", "ROCM5", "ROCM6"]
ALL = "CUDA, CUDA_ADA, CUDA_AMPERE, CUDA_BLACKWELL, ROCM5, ROCM6"


def gpu(index: int, name: str, cc: tuple[int, int] | None = None, **kw: str | None) -> Gpu:
    return Gpu(index=index, uuid=f"GPU-{index}", name=name, memory_mib=1, compute_capability=cc,
               **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "cc", "arch", "reason"),
    [
        ("GTX 980", (5, 2), "CUDA", "GTX 980 (compute capability 5.2, older than Pascal) -> "
         "CUDA: AIME's oldest images, which may not support this GPU"),
        ("Tesla P100", (6, 0), "CUDA",
         "Tesla P100 (compute capability 6.0, Pascal/Volta/Turing) -> CUDA"),
        ("T4", (7, 5), "CUDA", "T4 (compute capability 7.5, Pascal/Volta/Turing) -> CUDA"),
        ("A100", (8, 0), "CUDA_AMPERE", "A100 (compute capability 8.0, Ampere) -> CUDA_AMPERE"),
        ("A10", (8, 6), "CUDA_AMPERE", "A10 (compute capability 8.6, Ampere) -> CUDA_AMPERE"),
        ("RTX 4090", (8, 9), "CUDA_ADA",
         "RTX 4090 (compute capability 8.9, Ada Lovelace) -> CUDA_ADA"),
        ("H100", (9, 0), "CUDA_ADA",
         f"H100 (compute capability 9.0, Hopper) -> CUDA_ADA: {HOPPER}"),
        ("B200", (10, 0), "CUDA_BLACKWELL",
         "B200 (compute capability 10.0, Blackwell) -> CUDA_BLACKWELL"),
        ("NVIDIA H100 80GB HBM3", None, "CUDA_ADA", "NVIDIA H100 80GB HBM3 (no compute "
         f"capability reported; the name says Hopper) -> CUDA_ADA: {HOPPER}"),
        ("NVIDIA A100", None, "CUDA_AMPERE",
         "NVIDIA A100 (no compute capability reported; the name says Ampere) -> CUDA_AMPERE"),
    ],
)  # fmt: skip
def test_nvidia_choices(name: str, cc: tuple[int, int] | None, arch: str, reason: str) -> None:
    assert arch_for_gpu(name, cc) == ArchChoice(arch, reason)


@pytest.mark.parametrize(
    ("name", "gfx", "arch", "reason"),
    [
        ("AMD Instinct MI300X", "gfx942", "ROCM6", "AMD Instinct MI300X (gfx942) -> ROCM6"),
        ("AMD Instinct MI100", "gfx908", "ROCM5", "AMD Instinct MI100 (gfx908) -> ROCM5"),
        ("AMD Radeon", "gfx90a", "ROCM6", "AMD Radeon (gfx90a) -> ROCM6"),
        ("Radeon RX 7900 XTX", "GFX1100", "ROCM6", "Radeon RX 7900 XTX (gfx1100) -> ROCM6"),
        ("AMD Instinct MI250X", None, "ROCM6",
         "AMD Instinct MI250X (no gfx target reported; by name) -> ROCM6"),
    ],
)  # fmt: skip
def test_amd_choices(name: str, gfx: str | None, arch: str, reason: str) -> None:
    assert arch_for_gpu(name, None, "amd", gfx) == ArchChoice(arch, reason)


def test_an_unknown_gpu_asks_for_arch() -> None:
    with pytest.raises(UsageError) as info:
        arch_for_gpu("Mystery", None, "amd", None)
    assert str(info.value) == (
        "Cannot tell which image architecture the GPU 'Mystery' runs (vendor amd, compute "
        "capability None, gfx None)."
    )
    assert info.value.hint == (
        "Pass --arch (or set MLC_ARCH) to one of: CUDA_BLACKWELL, CUDA_ADA, CUDA_AMPERE, CUDA, "
        "ROCM6, ROCM5."
    )
    assert info.value.code == "unknown_gpu_arch"


@pytest.mark.parametrize(
    ("gpus", "arch", "source", "reason"),
    [
        ([gpu(0, "A100", (8, 0))], "CUDA_AMPERE", "detected",
         "A100 (compute capability 8.0, Ampere) -> CUDA_AMPERE"),
        ([gpu(0, "A100", (8, 0)), gpu(1, "A100", (8, 0))], "CUDA_AMPERE", "detected",
         "2 GPUs, all: A100 (compute capability 8.0, Ampere) -> CUDA_AMPERE"),
        ([gpu(0, "RTX 4090", (8, 9)), gpu(1, "A100", (8, 0)), gpu(2, "B200", (10, 0))],
         "CUDA_AMPERE", "detected",
         "GPUs of different generations (GPU 0 RTX 4090: CUDA_ADA, GPU 1 A100: CUDA_AMPERE, "
         "GPU 2 B200: CUDA_BLACKWELL); using CUDA_AMPERE, the oldest, whose images run on all "
         "of them (GPU 1 A100: A100 (compute capability 8.0, Ampere) -> CUDA_AMPERE)"),
        ([gpu(0, "A100", (8, 0)), gpu(1, "AMD Instinct MI300X", vendor="amd", gfx="gfx942")],
         "CUDA_AMPERE", "detected",
         "A100 (compute capability 8.0, Ampere) -> CUDA_AMPERE; AMD GPUs ignored on a host "
         "with NVIDIA GPUs"),
        ([gpu(0, "A100", (8, 0)), gpu(1, "Mystery", vendor="amd")], "CUDA_AMPERE", "detected",
         "A100 (compute capability 8.0, Ampere) -> CUDA_AMPERE; not recognised and ignored: "
         "GPU 1 Mystery"),
        ([], None, "none", "No GPU found and no --arch or MLC_ARCH given; pass --arch with one "
         f"of: {ALL}."),
    ],
)  # fmt: skip
def test_host_choices(gpus: list[Gpu], arch: str | None, source: str, reason: str) -> None:
    resolved = host_arch(gpus, flag=None, env=None, catalog_archs=CAT)
    assert resolved == ArchResolution(arch, source, reason)  # type: ignore[arg-type]


def test_overrides_in_the_catalogs_spelling() -> None:
    assert host_arch([], flag="cuda_ada", env=None, catalog_archs=CAT) == ArchResolution(
        "CUDA_ADA", "flag", "--arch cuda_ada -> CUDA_ADA"
    )
    assert host_arch([], flag=None, env=" rocm6 ", catalog_archs=CAT) == ArchResolution(
        "ROCM6", "MLC_ARCH", "MLC_ARCH=rocm6 -> ROCM6"
    )


@pytest.mark.parametrize(
    ("flag", "env", "catalog", "message", "hint", "details"),
    [
        ("HOPPER", None, CAT,
         "--arch HOPPER names architecture 'HOPPER', which the catalog does not have. "
         f"Architectures in the catalog: {ALL}.", f"Use one of: {ALL}.",
         {"arch": "HOPPER", "source": "flag", "valid": CAT}),
        ("X", None, [],
         "--arch X names architecture 'X', which the catalog does not have. Architectures in "
         "the catalog: none (the catalog is empty).", "Use one of: none (the catalog is empty).",
         {"arch": "X", "source": "flag", "valid": []}),
        (None, "Y", ["CUDA"],
         "MLC_ARCH=Y names architecture 'Y', which the catalog does not have. Architectures in "
         "the catalog: CUDA.", "Use one of: CUDA.",
         {"arch": "Y", "source": "MLC_ARCH", "valid": ["CUDA"]}),
        (" ", None, CAT, "--arch was given an empty value.", f"Use one of: {ALL}.", {}),
    ],
)  # fmt: skip
def test_override_errors(  # noqa: PLR0917 (a pytest table)
    flag: str | None,
    env: str | None,
    catalog: list[str],
    message: str,
    hint: str,
    details: dict[str, object],
) -> None:
    with pytest.raises(UsageError) as info:
        host_arch([], flag=flag, env=env, catalog_archs=catalog)
    error = info.value
    assert (str(error), error.hint, error.code, error.details) == (
        message,
        hint,
        "unknown_arch",
        details,
    )
