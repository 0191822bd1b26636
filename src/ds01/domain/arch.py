"""GPU architecture: which of AIME's catalog architectures a host's GPUs run.

AIME's catalog files every image under an architecture name (``CUDA_BLACKWELL``,
``CUDA_ADA``, ``CUDA_AMPERE``, ``CUDA``, ``ROCM6``, ``ROCM5``). AIME guesses the host's
architecture from the CUDA toolkit *packages* installed with apt, so a host with only the
driver and the container toolkit (enough to run GPU containers) cannot create anything,
and the answer reflects software, not hardware. DS01 asks the GPU itself: the compute
capability NVML reports (the product name when the capability is unknown), or the AMD
``gfx`` target.

NVIDIA mapping, by compute capability:

=============  ==================================  ================
capability     generation                          catalog arch
=============  ==================================  ================
10.x, 11.x,    Blackwell (B200, GB200, RTX 50x0,   CUDA_BLACKWELL
12.x           RTX PRO Blackwell)
9.0            Hopper (H100, H200, GH200)          CUDA_ADA (below)
8.9            Ada Lovelace (RTX 40x0, L40, L4)    CUDA_ADA
8.0, 8.6, 8.7  Ampere (A100, A30, RTX 30x0, A6000)  CUDA_AMPERE
6.x, 7.x       Pascal, Volta, Turing               CUDA
< 6            Maxwell and older                   CUDA (best effort)
=============  ==================================  ================

Hopper (compute capability 9.0) has no AIME architecture of its own. DS01 serves it with
``CUDA_ADA``, because:

- AIME's own README lists H100 and H200 under ``CUDA_ADA``, so a Hopper user coming from
  AIME (or reading AIME's documentation) expects exactly those images, and containers
  created by AIME on the same host carry ``aime.mlc.ARCH=CUDA_ADA``;
- the ``CUDA_ADA`` images carry CUDA 11.8 to 12.6. sm_90 is a native target from CUDA
  11.8 on, and the framework builds of that era (PyTorch cu118/cu12x, TensorFlow 2.12+)
  ship sm_90 code or PTX the driver compiles for sm_90 (PTX is forward compatible);
- ``CUDA_AMPERE`` images are mostly CUDA 11.1-11.7, which predate sm_90: they would run
  only through PTX JIT, if the build kept PTX at all;
- ``CUDA_BLACKWELL`` images need CUDA 12.8, i.e. a driver of the 570 series or newer;
  many Hopper servers run the 535/550 long-term drivers and could not start them. A
  Hopper host with a new driver can still ask for them with ``--arch CUDA_BLACKWELL``.

AMD mapping, by ``gfx`` target: gfx906 (Radeon VII, MI50/MI60) and gfx908 (MI100) get
``ROCM5`` (AIME's README puts Radeon VII and MI100 there; ROCm 6 deprecated gfx906);
gfx90a (MI210/MI250), gfx94x (MI300), gfx95x (MI350), gfx103x (W6800/V620), gfx11xx
(RX 7900) and gfx12xx (RX 9070) get ``ROCM6``.

:func:`host_arch` picks the architecture for the whole host: ``--arch`` first, then
``MLC_ARCH`` (AIME's variable; the caller reads the environment, this module does not),
then the GPUs. With several GPU generations on one host it picks the oldest, whose images
run on all of them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from ds01.domain.devices import Gpu
from ds01.errors import ErrorCode, UsageError

__all__ = [
    "ALL_ARCHS",
    "CUDA",
    "CUDA_ADA",
    "CUDA_AMPERE",
    "CUDA_ARCHS",
    "CUDA_BLACKWELL",
    "ROCM5",
    "ROCM6",
    "ROCM_ARCHS",
    "ArchChoice",
    "ArchResolution",
    "ArchSource",
    "arch_for_gpu",
    "host_arch",
    "match_arch",
]

CUDA_BLACKWELL = "CUDA_BLACKWELL"
CUDA_ADA = "CUDA_ADA"
CUDA_AMPERE = "CUDA_AMPERE"
CUDA = "CUDA"
ROCM6 = "ROCM6"
ROCM5 = "ROCM5"

#: NVIDIA architectures, newest first.
CUDA_ARCHS: tuple[str, ...] = (CUDA_BLACKWELL, CUDA_ADA, CUDA_AMPERE, CUDA)
#: AMD architectures, newest first.
ROCM_ARCHS: tuple[str, ...] = (ROCM6, ROCM5)
ALL_ARCHS: tuple[str, ...] = CUDA_ARCHS + ROCM_ARCHS

# Lower is older. Images built for an older generation run on the newer ones of the same
# vendor (CUDA binaries and PTX are forward compatible), never the other way round.
_GENERATION: dict[str, int] = {
    CUDA: 0,
    CUDA_AMPERE: 1,
    CUDA_ADA: 2,
    CUDA_BLACKWELL: 3,
    ROCM5: 0,
    ROCM6: 1,
}

ArchSource = Literal["flag", "MLC_ARCH", "detected", "none"]

_HOPPER_NOTE = (
    "AIME has no Hopper architecture; its CUDA_ADA images (CUDA 11.8-12.6, which know "
    "sm_90) serve H100/H200, as AIME's README lists them"
)


@dataclass(frozen=True)
class ArchChoice:
    """The catalog architecture one GPU runs, and why (for messages and ``--json``)."""

    arch: str
    reason: str


@dataclass(frozen=True)
class ArchResolution:
    """The architecture chosen for the host and where it came from.

    ``arch`` is ``None`` only with ``source="none"``: no override and no recognisable GPU.
    Catalog commands still work then; ``create`` turns it into an error using ``reason``,
    which names the ``--arch`` values the catalog offers.
    """

    arch: str | None
    source: ArchSource
    reason: str


# --- NVIDIA ------------------------------------------------------------------------------

# Product-name patterns for when NVML/nvidia-smi gave no compute capability. Checked in
# this order: "RTX PRO 6000 Blackwell" must not fall to the Turing "RTX 6000" rule, and
# "RTX 6000 Ada Generation" must not fall to it either.
_NVIDIA_NAMES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"BLACKWELL|\bRTX 50[5-9]0|\bG?B[1-3]00\b|\bGB10\b"),
        CUDA_BLACKWELL,
        "Blackwell",
    ),
    (re.compile(r"HOPPER|\bG?H[12]00\b|\bH800\b|\bH20\b"), CUDA_ADA, "Hopper"),
    (re.compile(r"\bADA\b|\bRTX 40[5-9]0|\bL40S?\b|\bL4\b|\bL20\b"), CUDA_ADA, "Ada Lovelace"),
    (
        re.compile(
            r"AMPERE|\bRTX 30[5-9]0|\bA(?:100|800|30|40|16|10G?|2)\b|\bRTX A\d{4}\b|"
            r"\bA[2-6]000\b"
        ),
        CUDA_AMPERE,
        "Ampere",
    ),
    (
        re.compile(
            r"VOLTA|TURING|PASCAL|\bV100|\bTITAN (?:V|RTX|XP?)\b|\bRTX 20[5-8]0|"
            r"\bGTX 16[5-6]0|\bGTX 10[5-8]0|\bQUADRO\b|\bT4\b|\bP(?:100|40|4)\b"
        ),
        CUDA,
        "Pascal/Volta/Turing",
    ),
)


def _nvidia_by_capability(name: str, major: int, minor: int) -> ArchChoice:
    cc = f"{name} (compute capability {major}.{minor}"
    if major >= 10:
        return ArchChoice(CUDA_BLACKWELL, f"{cc}, Blackwell) -> {CUDA_BLACKWELL}")
    if major == 9:
        return ArchChoice(CUDA_ADA, f"{cc}, Hopper) -> {CUDA_ADA}: {_HOPPER_NOTE}")
    if (major, minor) == (8, 9):
        return ArchChoice(CUDA_ADA, f"{cc}, Ada Lovelace) -> {CUDA_ADA}")
    if major == 8:
        return ArchChoice(CUDA_AMPERE, f"{cc}, Ampere) -> {CUDA_AMPERE}")
    if major >= 6:
        return ArchChoice(CUDA, f"{cc}, Pascal/Volta/Turing) -> {CUDA}")
    # AIME has nothing older than its CUDA images; they are the only candidates left.
    return ArchChoice(
        CUDA,
        f"{cc}, older than Pascal) -> {CUDA}: AIME's oldest images, which may not support this GPU",
    )


def _nvidia_by_name(name: str) -> ArchChoice | None:
    upper = name.upper()
    for pattern, arch, generation in _NVIDIA_NAMES:
        if pattern.search(upper):
            note = f": {_HOPPER_NOTE}" if generation == "Hopper" else ""
            return ArchChoice(
                arch,
                f"{name} (no compute capability reported; the name says {generation}) "
                f"-> {arch}{note}",
            )
    return None


# --- AMD ---------------------------------------------------------------------------------

_GFX = re.compile(r"gfx([0-9a-f]+)", re.IGNORECASE)
_AMD_NAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bMI(?:50|60|100)\b|RADEON VII|VEGA 20"), ROCM5),
    (re.compile(r"\bMI(?:2\d0|3\d\d)[AX]?\b|\bRX [79]\d{3}|\bW7\d00"), ROCM6),
)


def _amd_by_gfx(name: str, gfx: str) -> ArchChoice | None:
    m = _GFX.search(gfx)
    if m is None:
        return None
    target = m.group(1).lower()
    label = f"{name} (gfx{target})"
    if target in ("906", "908"):
        return ArchChoice(ROCM5, f"{label} -> {ROCM5}")
    if target == "90a" or re.fullmatch(r"9[45][0-9a-f]|103[0-9a-f]|1[12][0-9a-f]{2}", target):
        return ArchChoice(ROCM6, f"{label} -> {ROCM6}")
    return None


def _amd_by_name(name: str) -> ArchChoice | None:
    upper = name.upper()
    for pattern, arch in _AMD_NAMES:
        if pattern.search(upper):
            return ArchChoice(arch, f"{name} (no gfx target reported; by name) -> {arch}")
    return None


def _classify(
    name: str,
    compute_capability: tuple[int, int] | None,
    vendor: str,
    gfx: str | None,
) -> ArchChoice | None:
    if vendor.lower() == "amd":
        by_gfx = _amd_by_gfx(name, gfx) if gfx else None
        return by_gfx or _amd_by_name(name)
    if compute_capability is not None:
        return _nvidia_by_capability(name, *compute_capability)
    return _nvidia_by_name(name)


def arch_for_gpu(
    name: str,
    compute_capability: tuple[int, int] | None,
    vendor: str = "nvidia",
    gfx: str | None = None,
) -> ArchChoice:
    """The catalog architecture for one GPU (see the module docstring for the table).

    NVIDIA GPUs are mapped by ``compute_capability`` and, when that is unknown, by product
    name; AMD GPUs (``vendor="amd"``) by ``gfx`` target, then by name. A GPU that matches
    nothing raises :class:`UsageError` (exit 2) telling the user to pass ``--arch``.
    """
    choice = _classify(name, compute_capability, vendor, gfx)
    if choice is None:
        raise UsageError(
            f"Cannot tell which image architecture the GPU {name!r} runs "
            f"(vendor {vendor}, compute capability {compute_capability}, gfx {gfx}).",
            hint=f"Pass --arch (or set MLC_ARCH) to one of: {', '.join(ALL_ARCHS)}.",
            code=ErrorCode.UNKNOWN_GPU_ARCH,
        )
    return choice


def match_arch(value: str, archs: Collection[str]) -> str | None:
    """``value`` as spelled in ``archs``, compared case-insensitively; ``None`` if absent.

    Users type ``--arch cuda_ada``; AIME writes ``CUDA_ADA``. Accepting either costs
    nothing and the label written is always the catalog's spelling.
    """
    wanted = value.strip().casefold()
    for arch in archs:
        if arch.casefold() == wanted:
            return arch
    return None


def _override(value: str, source: ArchSource, shown: str, valid: Sequence[str]) -> ArchResolution:
    arch = match_arch(value, valid)
    if arch is None:
        listed = ", ".join(valid) or "none (the catalog is empty)"
        raise UsageError(
            f"{shown} names architecture {value.strip()!r}, which the catalog does not "
            f"have. Architectures in the catalog: {listed}.",
            hint=f"Use one of: {listed}.",
            code=ErrorCode.UNKNOWN_ARCH,
            details={"arch": value, "source": source, "valid": list(valid)},
        )
    return ArchResolution(arch, source, f"{shown} -> {arch}")


def _gpu_label(gpu: Gpu) -> str:
    return f"GPU {gpu.index} {gpu.name}"


def host_arch(
    gpus: Sequence[Gpu],
    *,
    flag: str | None,
    env: str | None,
    catalog_archs: Collection[str],
) -> ArchResolution:
    """Choose the architecture for this host: ``--arch``, then ``MLC_ARCH``, then GPUs.

    ``flag`` is the ``--arch`` value (``None`` when not given), ``env`` the value of
    ``MLC_ARCH`` read by the caller (``None`` or blank when unset). An override the
    catalog does not list raises :class:`UsageError` naming the valid ones; overrides are
    matched case-insensitively and returned in the catalog's spelling.

    Detection maps every GPU with :func:`arch_for_gpu`. With several generations it picks
    the oldest, since its images run on all of them, and says so in ``reason``. NVIDIA
    GPUs take precedence over AMD ones on a mixed host (a container gets one vendor's
    devices, and DS01 allocates NVIDIA devices). A detected arch the catalog lacks is
    still returned (it is the truth about the hardware; the catalog lookup then reports
    what exists), with a note in ``reason``.
    """
    valid = sorted(set(catalog_archs))
    listed = ", ".join(valid) or "none (the catalog is empty)"
    overridden = _overridden(flag, env, valid, listed)
    if overridden is not None:
        return overridden
    if not gpus:
        return ArchResolution(
            None,
            "none",
            f"No GPU found and no --arch or MLC_ARCH given; pass --arch with one of: {listed}.",
        )
    return _detected(gpus, valid, listed)


def _overridden(
    flag: str | None, env: str | None, valid: Sequence[str], listed: str
) -> ArchResolution | None:
    """``--arch``, else ``MLC_ARCH``, in the catalog's spelling; ``None`` when neither is
    given (a blank ``MLC_ARCH`` counts as unset, a blank ``--arch`` is an error)."""
    if flag is not None:
        if not flag.strip():
            raise UsageError(
                "--arch was given an empty value.",
                hint=f"Use one of: {listed}.",
                code=ErrorCode.UNKNOWN_ARCH,
            )
        resolution = _override(flag, "flag", f"--arch {flag.strip()}", valid)
        if env and env.strip():
            return ArchResolution(
                resolution.arch,
                "flag",
                f"{resolution.reason} (overrides MLC_ARCH={env.strip()})",
            )
        return resolution
    if env is not None and env.strip():
        return _override(env, "MLC_ARCH", f"MLC_ARCH={env.strip()}", valid)
    return None


def _detected(gpus: Sequence[Gpu], valid: Sequence[str], listed: str) -> ArchResolution:
    """The architecture of the host's GPUs: one vendor's, the oldest generation."""
    chosen: list[tuple[Gpu, ArchChoice]] = []
    unknown: list[Gpu] = []
    for gpu in gpus:
        choice = _classify(gpu.name, gpu.compute_capability, gpu.vendor, gpu.gfx)
        if choice is None:
            unknown.append(gpu)
        else:
            chosen.append((gpu, choice))

    unknown_note = ""
    if unknown:
        names = ", ".join(_gpu_label(g) for g in unknown)
        unknown_note = f"; not recognised and ignored: {names}"
    if not chosen:
        return ArchResolution(
            None,
            "none",
            f"Cannot tell the image architecture of {', '.join(_gpu_label(g) for g in unknown)}; "
            f"pass --arch with one of: {listed}.",
        )

    nvidia = [(g, c) for g, c in chosen if c.arch in CUDA_ARCHS]
    amd = [(g, c) for g, c in chosen if c.arch in ROCM_ARCHS]
    vendor_note = ""
    if nvidia and amd:
        vendor_note = "; AMD GPUs ignored on a host with NVIDIA GPUs"
    pick, reason = _oldest(nvidia or amd)
    reason += vendor_note + unknown_note
    if match_arch(pick.arch, valid) is None:
        reason += f"; the catalog has no {pick.arch} images (it has: {listed})"
    return ArchResolution(pick.arch, "detected", reason)


def _oldest(pool: Sequence[tuple[Gpu, ArchChoice]]) -> tuple[ArchChoice, str]:
    """The oldest generation in ``pool`` (its images run on all of them), and why."""
    gpu, pick = min(pool, key=lambda item: _GENERATION[item[1].arch])
    distinct = sorted({c.arch for _, c in pool}, key=lambda a: _GENERATION[a])
    if len(distinct) == 1:
        count = len(pool)
        prefix = f"{count} GPUs, all: " if count > 1 else ""
        return pick, f"{prefix}{pick.reason}"
    per_gpu = ", ".join(f"{_gpu_label(g)}: {c.arch}" for g, c in pool)
    return pick, (
        f"GPUs of different generations ({per_gpu}); using {pick.arch}, the oldest, "
        f"whose images run on all of them ({_gpu_label(gpu)}: {pick.reason})"
    )
