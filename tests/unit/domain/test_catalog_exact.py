"""Catalog errors, version ordering, image references and framework labels written out:
the words, hints and details users get for an unknown framework, version or architecture
(close, far, present elsewhere), and each parsing rule on and around its limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ds01.domain.catalog import (
    image_reference_problem,
    parse_catalog,
    split_framework_label,
    version_sort_key,
)
from ds01.errors import DS01Error

TEXT = """Pytorch, 2.4.0, [CUDA_ADA], aimehub/pytorch-2.4.0-cuda12.1
Pytorch, 2.5.1, [CUDA_ADA;CUDA_AMPERE], aimehub/pytorch-2.5.1-cuda12.4
Pytorch, 2.5.1-aime, [CUDA_ADA], aimehub/pytorch-2.5.1-aime-cuda12.4
Pytorch, 2.6.0, [CUDA_BLACKWELL], aimehub/pytorch-2.6.0-cuda12.8
Tensorflow, 2.16.1, [CUDA_ADA], aimehub/tensorflow-2.16.1-cuda12.3
Mxnet, 1.9.1, [CUDA], aimehub/mxnet-1.9.1-cuda11.2
"""
CAT = parse_catalog(TEXT, "test.repo")
CALLS: dict[str, Callable[[], object]] = {
    "fw_close": lambda: CAT.lookup("pytorc", None, "CUDA_ADA"),
    "fw_far": lambda: CAT.lookup("qqq", None, "CUDA_ADA"),
    "fw_elsewhere": lambda: CAT.lookup("Mxnet", None, "CUDA_ADA"),
    "fw_noarch": lambda: CAT.entries_for(framework="tensorflw"),
    "fw_noarch_far": lambda: CAT.entries_for(framework="qqq"),
    "ver_close": lambda: CAT.lookup("Pytorch", "2.4", "CUDA_ADA"),
    "ver_elsewhere": lambda: CAT.lookup("Pytorch", "2.6.0", "CUDA_ADA"),
    "arch": lambda: CAT.lookup("Pytorch", None, "CUDA_HOPPER"),
}
EXPECTED = {
    "fw_close": (
        "Unknown framework 'pytorc' for CUDA_ADA in test.repo. Closest: Pytorch.",
        "See what exists with: ds01 catalog list --arch CUDA_ADA",
        "unknown_framework",
        {"framework": "pytorc", "arch": "CUDA_ADA", "closest": ["Pytorch"]},
    ),
    "fw_far": (
        "Unknown framework 'qqq' for CUDA_ADA in test.repo. Frameworks for CUDA_ADA: Pytorch, "
        "Tensorflow.",
        "See what exists with: ds01 catalog list --arch CUDA_ADA",
        "unknown_framework",
        {"framework": "qqq", "arch": "CUDA_ADA", "closest": []},
    ),
    "fw_elsewhere": (
        "Mxnet has no images for CUDA_ADA in the catalog (test.repo); it has some for CUDA. "
        "Frameworks for CUDA_ADA: Pytorch, Tensorflow.",
        "See what exists with: ds01 catalog list --arch CUDA_ADA",
        "unknown_framework",
        {"framework": "Mxnet", "arch": "CUDA_ADA", "closest": ["Pytorch", "Tensorflow"]},
    ),
    "fw_noarch": (
        "Unknown framework 'tensorflw' in test.repo. Closest: Tensorflow.",
        "See what exists with: ds01 catalog list",
        "unknown_framework",
        {"framework": "tensorflw", "arch": None, "closest": ["Tensorflow"]},
    ),
    "fw_noarch_far": (
        "Unknown framework 'qqq' in test.repo. Frameworks: Mxnet, Pytorch, Tensorflow.",
        "See what exists with: ds01 catalog list",
        "unknown_framework",
        {"framework": "qqq", "arch": None, "closest": []},
    ),
    "ver_close": (
        "Pytorch has no version '2.4' for CUDA_ADA in test.repo. Closest: 2.4.0, 2.5.1-aime.",
        "See what exists with: ds01 catalog list --framework Pytorch --arch CUDA_ADA",
        "unknown_version",
        {
            "framework": "Pytorch",
            "version": "2.4",
            "arch": "CUDA_ADA",
            "closest": ["2.4.0", "2.5.1-aime"],
            "other_archs": [],
        },
    ),
    "ver_elsewhere": (
        "Pytorch has no version '2.6.0' for CUDA_ADA in test.repo. Closest: 2.5.1, 2.5.1-aime, "
        "2.4.0. Version 2.6.0 exists for CUDA_BLACKWELL.",
        "See what exists with: ds01 catalog list --framework Pytorch --arch CUDA_ADA",
        "unknown_version",
        {
            "framework": "Pytorch",
            "version": "2.6.0",
            "arch": "CUDA_ADA",
            "closest": ["2.5.1", "2.5.1-aime", "2.4.0"],
            "other_archs": ["CUDA_BLACKWELL"],
        },
    ),
    "arch": (
        "The catalog (test.repo) has no images for architecture 'CUDA_HOPPER'. Architectures in "
        "it: CUDA, CUDA_ADA, CUDA_AMPERE, CUDA_BLACKWELL.",
        "Pass --arch (or set MLC_ARCH) to one of: CUDA, CUDA_ADA, CUDA_AMPERE, CUDA_BLACKWELL.",
        "unknown_arch",
        {
            "arch": "CUDA_HOPPER",
            "valid": ["CUDA", "CUDA_ADA", "CUDA_AMPERE", "CUDA_BLACKWELL"],
            "catalog": "test.repo",
        },
    ),
}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_catalog_errors_exactly(case: str) -> None:
    with pytest.raises(DS01Error) as info:
        CALLS[case]()
    error = info.value
    assert (str(error), error.hint, error.code, error.details) == EXPECTED[case]


@pytest.mark.parametrize(
    ("version", "key"),
    [
        ("", (0, (), 0, 0, 0)),
        ("x", (0, (), 0, 0, 0)),
        ("2.5.1", (1, (2, 5, 1), 4, 0, 1)),
        ("2.5.1-aime", (1, (2, 5, 1), 4, 0, 0)),
        ("2.5.1rc1", (1, (2, 5, 1), 3, 1, 1)),
        ("2.5.1rc", (1, (2, 5, 1), 3, 0, 1)),
        ("2.5.1a2.post", (1, (2, 5, 1), 1, 2, 0)),
        ("2.5.1-rc1", (1, (2, 5, 1), 4, 0, 0)),
        ("2.5.1rcx", (1, (2, 5, 1), 4, 0, 0)),
        ("2.5", (1, (2, 5), 4, 0, 1)),
    ],
)
def test_version_sort_keys(version: str, key: tuple[object, ...]) -> None:
    assert version_sort_key(version) == key


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("", "the image name is empty"),
        ("Debian", "the repository name 'Debian' must be lower case"),
        ("localhost/x", None),
        ("LocalHost/x", None),
        ("my.registry:5000/a/b:tag", None),
        ("a" * 255, None),
        ("a" * 256, "the image name is 256 characters long; at most 255 are allowed"),
        (
            "x:-bad",
            "the tag '-bad' is not valid (letters, digits, '_', '.', '-'; not starting with '.' "
            "or '-'; at most 128 characters)",
        ),
        ("reg.io/ns/a:b", None),
        (
            "a/b:c:d",
            "the repository name component 'b:c' is not valid (lower-case letters and digits, "
            "separated by '.', '_', '__' or '-')",
        ),
        ("registry.example/UPPER/x", "the repository name 'UPPER/x' must be lower case"),
    ],
)
def test_image_reference_problems(reference: str, problem: str | None) -> None:
    assert image_reference_problem(reference) == problem


@pytest.mark.parametrize(
    ("label", "split"),
    [
        ("Pytorch-2.5.1", ("Pytorch", "2.5.1")),
        ("Pytorch-", None),
        ("-2.5.1", None),
        ("Pytorch", None),
        ("Py-torch-2", ("Py", "torch-2")),
    ],
)
def test_framework_labels(label: str, split: tuple[str, str] | None) -> None:
    assert split_framework_label(label) == split
