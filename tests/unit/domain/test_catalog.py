"""AIME's ml_images.repo: both real files, lookups, messages, malformed lines, round trips."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.domain.arch import ALL_ARCHS, CUDA_ARCHS
from ds01.domain.catalog import (
    FALLBACK_SOURCE,
    Catalog,
    CatalogEntry,
    fallback_catalog,
    image_reference_problem,
    parse_catalog,
    render_catalog,
    split_framework_label,
    version_sort_key,
)
from ds01.errors import EXIT_BAD_INPUT, ConfigError, UsageError


@pytest.fixture
def v2_text(aime_dir: Path) -> str:
    return (aime_dir / "ml_images.v2.repo").read_text()


@pytest.fixture
def v2(v2_text: str) -> Catalog:
    return parse_catalog(v2_text, "ml_images.v2.repo")


@pytest.fixture
def v1(aime_dir: Path) -> Catalog:
    return parse_catalog((aime_dir / "ml_images.v1.repo").read_text(), "ml_images.v1.repo")


def per_arch(catalog: Catalog) -> Counter[tuple[str, str]]:
    return Counter((arch, e.framework) for e in catalog.entries for arch in e.archs)


def small(text: str) -> Catalog:
    return parse_catalog(text, "test.repo")


# --- the real files ----------------------------------------------------------------------


def test_v2_parses_completely_with_the_reference_counts(v2_text: str, v2: Catalog) -> None:
    lines = [line for line in v2_text.splitlines() if line.strip()]
    assert len(lines) == 117
    # 117 lines; line 108 only repeats line 107's CUDA_AMPERE entry, so it is dropped.
    assert len(v2.entries) == 116
    assert sum(1 for e in v2.entries if len(e.archs) > 1) == 12  # reference §3.2
    assert Counter(e.framework for e in v2.entries) == {
        "Pytorch": 76,
        "Tensorflow": 34,  # 35 lines in the file, one of them the dead duplicate
        "Mxnet": 5,
        "ROCM": 1,
    }
    # Reference §3.2 counts the expanded lists before removing the duplicate (51 on
    # CUDA_AMPERE, 19 of them Tensorflow); the catalog holds one fewer there.
    reference = Counter(
        {
            ("CUDA_AMPERE", "Pytorch"): 31,
            ("CUDA_AMPERE", "Tensorflow"): 19,
            ("CUDA_AMPERE", "Mxnet"): 1,
            ("CUDA_ADA", "Pytorch"): 25,
            ("CUDA_ADA", "Tensorflow"): 11,
            ("CUDA", "Pytorch"): 8,
            ("CUDA", "Tensorflow"): 10,
            ("CUDA", "Mxnet"): 4,
            ("CUDA_BLACKWELL", "Pytorch"): 7,
            ("ROCM5", "Pytorch"): 5,
            ("ROCM5", "Tensorflow"): 1,
            ("ROCM5", "ROCM"): 1,
            ("ROCM6", "Pytorch"): 5,
            ("ROCM6", "Tensorflow"): 1,
        }
    )
    assert sum(reference.values()) == 129
    reference[("CUDA_AMPERE", "Tensorflow")] -= 1
    assert per_arch(v2) == reference
    totals = Counter(arch for e in v2.entries for arch in e.archs)
    assert totals == {
        "CUDA_AMPERE": 50,
        "CUDA_ADA": 36,
        "CUDA": 22,
        "CUDA_BLACKWELL": 7,
        "ROCM5": 7,
        "ROCM6": 6,
    }
    assert v2.archs == ("CUDA", "CUDA_ADA", "CUDA_AMPERE", "CUDA_BLACKWELL", "ROCM5", "ROCM6")
    assert v2.frameworks() == ("Mxnet", "Pytorch", "ROCM", "Tensorflow")


def test_v2_duplicate_keeps_the_first_and_warns_with_both_lines(v2: Catalog) -> None:
    assert len(v2.warnings) == 1
    warning = v2.warnings[0]
    assert "Tensorflow 1.15.4-nvidia" in warning and "CUDA_AMPERE" in warning
    assert "line 107" in warning and "line 108" in warning

    entry = v2.lookup("Tensorflow", "1.15.4-nvidia", "CUDA_AMPERE")
    assert entry.line == 107
    assert entry.image == "aimehub/tensorflow-1.15.4-nvidia"
    assert entry.archs == ("CUDA", "CUDA_AMPERE")
    assert all(e.line != 108 for e in v2.entries)


def test_v2_entries_keep_file_order_and_line_numbers(v2: Catalog) -> None:
    first = v2.entries[0]
    assert (first.framework, first.version, first.archs, first.line) == (
        "Pytorch",
        "2.9.1",
        ("CUDA_BLACKWELL",),
        1,
    )
    assert first.image == "aimehub/pytorch-2.9.1-cuda12.8.1"
    lines = [e.line for e in v2.entries]
    assert lines == sorted(lines)
    rocm = v2.lookup("rocm", "5.4.2", "ROCM5")
    assert rocm.image == "rocm/dev-ubuntu-20.04:5.4.2-complete"


def test_v1_parses_completely_with_the_reference_counts(v1: Catalog) -> None:
    assert len(v1.entries) == 75
    assert v1.warnings == ()
    assert all(len(e.archs) == 1 for e in v1.entries)  # v1 has no lists
    # Reference §3.4: Pytorch ADA 18 / AMPERE 10 / CUDA 8; Tensorflow ADA 11 / AMPERE 13 /
    # CUDA 10; Mxnet CUDA 4 / AMPERE 1.
    assert per_arch(v1) == {
        ("CUDA_ADA", "Pytorch"): 18,
        ("CUDA_AMPERE", "Pytorch"): 10,
        ("CUDA", "Pytorch"): 8,
        ("CUDA_ADA", "Tensorflow"): 11,
        ("CUDA_AMPERE", "Tensorflow"): 13,
        ("CUDA", "Tensorflow"): 10,
        ("CUDA", "Mxnet"): 4,
        ("CUDA_AMPERE", "Mxnet"): 1,
    }
    assert v1.archs == ("CUDA", "CUDA_ADA", "CUDA_AMPERE")


def test_every_v1_entry_is_also_in_v2(v1: Catalog, v2: Catalog) -> None:
    v2_keys = {(e.framework, e.version, a) for e in v2.entries for a in e.archs}
    for entry in v1.entries:
        assert (entry.framework, entry.version, entry.archs[0]) in v2_keys


# --- lookups -----------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["Pytorch", "pytorch", "PYTORCH", " torch "])
def test_framework_matches_case_insensitively_and_by_alias(v2: Catalog, framework: str) -> None:
    entry = v2.lookup(framework, "2.4.0", "CUDA_ADA")
    assert entry.framework == "Pytorch"
    assert entry.image == "aimehub/pytorch-2.4.0-cuda12.1"
    assert entry.framework_label == "Pytorch-2.4.0"


def test_tf_alias_and_lower_case_arch(v2: Catalog) -> None:
    entry = v2.lookup("tf", "2.14.0", "cuda_ampere")
    assert entry.image == "aimehub/tensorflow-2.14.0-cuda11.8"
    assert entry.archs == ("CUDA_ADA", "CUDA_AMPERE")


def test_version_matches_exactly(v2: Catalog) -> None:
    plain = v2.lookup("Pytorch", "2.8.0", "CUDA_ADA")
    aime = v2.lookup("Pytorch", "2.8.0-aime", "CUDA_ADA")
    assert plain.image == "aimehub/pytorch-2.8.0-cuda12.6.3"
    assert aime.image == "aimehub/pytorch-2.8.0-aime-cuda12.6.3"
    with pytest.raises(UsageError, match=r"Pytorch has no version '2.8.0-AIME' for CUDA_ADA"):
        v2.lookup("Pytorch", "2.8.0-AIME", "CUDA_ADA")


@pytest.mark.parametrize(
    ("framework", "arch", "version"),
    [
        ("Pytorch", "CUDA_BLACKWELL", "2.9.1"),
        ("Pytorch", "CUDA_ADA", "2.8.0"),
        ("Pytorch", "CUDA_AMPERE", "2.7.1"),
        ("Pytorch", "CUDA", "1.7.0"),
        ("Pytorch", "ROCM6", "2.6.0"),
        ("Pytorch", "ROCM5", "2.2.0"),
        ("Tensorflow", "CUDA_ADA", "2.16.1"),
        ("Tensorflow", "CUDA_AMPERE", "2.14.0"),
        ("Tensorflow", "CUDA", "2.4.0"),
        ("Mxnet", "CUDA", "1.6.0"),
        ("ROCM", "ROCM5", "5.4.2"),
    ],
)
def test_newest_per_arch(v2: Catalog, framework: str, arch: str, version: str) -> None:
    assert v2.newest(framework, arch).version == version
    assert v2.lookup(framework.lower(), None, arch) == v2.newest(framework, arch)


def test_newest_overall_matches_the_reference(v2: Catalog) -> None:
    def newest_anywhere(framework: str) -> CatalogEntry:
        return max(v2.entries_for(framework), key=lambda e: version_sort_key(e.version))

    assert newest_anywhere("Pytorch").version == "2.9.1"
    assert newest_anywhere("Pytorch").archs == ("CUDA_BLACKWELL",)
    assert newest_anywhere("Tensorflow").version == "2.16.1"


def test_newest_prefers_the_plain_release_then_the_earlier_line() -> None:
    catalog = small(
        "Pytorch, 2.8.0-aime, [CUDA_ADA], aimehub/a\n"
        "Pytorch, 2.8.0-nvidia, [CUDA_ADA], aimehub/b\n"
        "Pytorch, 2.8.0, [CUDA_ADA], aimehub/c\n"
        "Pytorch, 2.7.9, [CUDA_ADA], aimehub/d\n"
        "Pytorch, 2.8.0-aime, [CUDA], aimehub/e\n"
        "Pytorch, 2.8.0-nvidia, [CUDA], aimehub/f\n"
    )
    assert catalog.newest("pytorch", "CUDA_ADA").image == "aimehub/c"
    assert catalog.newest("pytorch", "CUDA").image == "aimehub/e"


def test_version_order() -> None:
    versions = [
        "nightly",
        "1.9.0",
        "1.13.1-aime",
        "1.13.1",
        "1.14.0a-nvidia",
        "1.14.0",
        "2.1.2-amd",
        "2.1.2",
        "2.9.1",
        "2.10.0",
    ]
    scrambled = versions[1::2] + versions[::2]
    assert sorted(scrambled, key=version_sort_key) == versions
    assert version_sort_key("2.4") == version_sort_key("2.4.0")
    assert version_sort_key("2.0.0rc1") < version_sort_key("2.0.0")
    assert version_sort_key("2.0.0b1") < version_sort_key("2.0.0rc1")


# --- messages ----------------------------------------------------------------------------


def test_unknown_framework_lists_the_closest_for_that_arch(v2: Catalog) -> None:
    with pytest.raises(UsageError) as err:
        v2.lookup("pytorc", "2.4.0", "CUDA_ADA")
    e = err.value
    assert e.exit_code == EXIT_BAD_INPUT
    assert e.code == "unknown_framework"
    assert "Closest: Pytorch" in e.message
    assert e.hint is not None and "ds01 catalog list --arch CUDA_ADA" in e.hint
    assert e.details["closest"] == ["Pytorch"]


def test_unknown_framework_suggests_only_what_the_arch_has(v2: Catalog) -> None:
    # "mxnt" looks like Mxnet, but Mxnet has nothing for CUDA_ADA.
    with pytest.raises(UsageError) as err:
        v2.lookup("mxnt", None, "CUDA_ADA")
    assert "Mxnet" not in err.value.message
    assert "Pytorch, Tensorflow" in err.value.message
    assert "Mxnet" not in err.value.details["closest"]


def test_known_framework_missing_on_the_arch_says_where_it_exists(v2: Catalog) -> None:
    with pytest.raises(UsageError) as err:
        v2.lookup("mxnet", None, "CUDA_ADA")
    assert err.value.code == "unknown_framework"
    assert "Mxnet has no images for CUDA_ADA" in err.value.message
    assert "CUDA, CUDA_AMPERE" in err.value.message


def test_unknown_version_lists_nearby_versions_for_that_arch(v2: Catalog) -> None:
    with pytest.raises(UsageError) as err:
        v2.lookup("Pytorch", "2.4", "CUDA_ADA")
    e = err.value
    assert e.code == "unknown_version"
    assert e.details["closest"][0] == "2.4.0"
    assert "2.4.0" in e.message
    assert e.hint is not None
    assert "ds01 catalog list --framework Pytorch --arch CUDA_ADA" in e.hint


def test_unknown_version_names_the_arch_that_has_it(v2: Catalog) -> None:
    with pytest.raises(UsageError) as err:
        v2.lookup("torch", "2.9.1", "CUDA_ADA")
    e = err.value
    assert "exists for CUDA_BLACKWELL" in e.message
    assert e.details["closest"][:2] == ["2.8.0", "2.8.0-aime"]
    ada_versions = {x.version for x in v2.entries_for("Pytorch", "CUDA_ADA")}
    assert set(e.details["closest"]) <= ada_versions


def test_unknown_arch_lists_the_catalog_archs(v2: Catalog) -> None:
    with pytest.raises(UsageError) as err:
        v2.lookup("Pytorch", None, "CUDA_HOPPER")
    assert err.value.code == "unknown_arch"
    for arch in v2.archs:
        assert arch in err.value.message


# --- listing -----------------------------------------------------------------------------


def test_entries_for_filters_and_keeps_file_order(v2: Catalog) -> None:
    ada = v2.entries_for("PyTorch", "CUDA_ADA")
    assert len(ada) == 25
    assert [e.line for e in ada] == sorted(e.line for e in ada)
    assert all(e.framework == "Pytorch" and "CUDA_ADA" in e.archs for e in ada)
    assert len(v2.entries_for(arch="ROCM6")) == 6
    assert len(v2.entries_for("tf")) == 34
    assert v2.entries_for() == v2.entries
    assert v2.entries_for("Mxnet", "CUDA_ADA") == ()
    assert v2.frameworks("CUDA_BLACKWELL") == ("Pytorch",)


def test_entries_for_rejects_typos(v2: Catalog) -> None:
    with pytest.raises(UsageError) as err:
        v2.entries_for("tensorflw")
    assert "Tensorflow" in err.value.details["closest"]
    with pytest.raises(UsageError, match=r"no images for architecture 'GFX'"):
        v2.entries_for(arch="GFX")


def test_framework_label_round_trip() -> None:
    entry = CatalogEntry("Pytorch", "2.1.0-aime", ("CUDA_ADA",), "aimehub/x", 1)
    assert entry.framework_label == "Pytorch-2.1.0-aime"
    assert split_framework_label(entry.framework_label) == ("Pytorch", "2.1.0-aime")
    assert split_framework_label("custom") is None


def test_alias_does_not_shadow_a_real_framework_of_that_name() -> None:
    catalog = small("tf, 1.0, [CUDA], example/tf\nTensorflow, 2.0, [CUDA], example/tensorflow\n")
    assert catalog.lookup("tf", None, "CUDA").image == "example/tf"
    assert catalog.lookup("TF", None, "CUDA").image == "example/tf"


# --- tolerance and malformed lines -------------------------------------------------------


def test_comments_blank_lines_whitespace_crlf_and_bom_are_tolerated() -> None:
    text = (
        "\ufeff# AIME catalog, trimmed\r\n"
        "\r\n"
        "   \t\r\n"
        "  Pytorch ,2.4.0,  [ CUDA_ADA ; CUDA_AMPERE ] ,\taimehub/pytorch-2.4.0-cuda12.1 \r\n"
        "    # Pytorch, 2.3.0, [CUDA_ADA], disabled/line\r\n"
        "Tensorflow, 2.14.0, CUDA_AMPERE, aimehub/tensorflow-2.14.0-cuda11.8"
    )
    catalog = small(text)
    assert [(e.framework, e.version, e.archs, e.image, e.line) for e in catalog.entries] == [
        ("Pytorch", "2.4.0", ("CUDA_ADA", "CUDA_AMPERE"), "aimehub/pytorch-2.4.0-cuda12.1", 4),
        ("Tensorflow", "2.14.0", ("CUDA_AMPERE",), "aimehub/tensorflow-2.14.0-cuda11.8", 6),
    ]
    assert catalog.warnings == ()


def test_empty_catalog_parses_to_nothing() -> None:
    catalog = small("# nothing yet\n\n")
    assert catalog.entries == () and catalog.archs == ()
    with pytest.raises(
        UsageError, match=r"no images for architecture 'CUDA'. Architectures in it: none"
    ):
        catalog.lookup("Pytorch", None, "CUDA")


def test_v2_list_without_brackets_is_read_like_aime_does() -> None:
    catalog = small("Pytorch, 2.0.1, CUDA_ADA;CUDA_AMPERE, aimehub/pytorch-2.0.1-cuda11.8\n")
    assert catalog.entries[0].archs == ("CUDA_ADA", "CUDA_AMPERE")


def test_an_arch_repeated_on_one_line_is_kept_once_with_a_warning() -> None:
    catalog = small("Pytorch, 1.7.0, [CUDA;CUDA], aimehub/pytorch-1.7.0-cuda\n")
    assert catalog.entries[0].archs == ("CUDA",)
    assert len(catalog.warnings) == 1 and "line 1" in catalog.warnings[0]


def test_partial_duplicate_keeps_the_new_archs_of_the_later_line() -> None:
    catalog = small(
        "Pytorch, 2.0.0, [CUDA_ADA], img/one\npytorch, 2.0.0, [CUDA_ADA;CUDA_AMPERE], img/two\n"
    )
    assert [(e.image, e.archs) for e in catalog.entries] == [
        ("img/one", ("CUDA_ADA",)),
        ("img/two", ("CUDA_AMPERE",)),
    ]
    assert "line 1" in catalog.warnings[0] and "line 2" in catalog.warnings[0]


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("Pytorch, 2.4.0, [CUDA_ADA]", "found 3"),
        ("Pytorch, 2.4.0, [CUDA_ADA], aimehub/x, extra", "found 5"),
        ("Pytorch, 2.4.0, [CUDA_ADA], aimehub/x,", "found 5"),
        ("Pytorch, , [CUDA_ADA], aimehub/x", "field 2 (version) is empty"),
        (", 2.4.0, [CUDA_ADA], aimehub/x", "field 1 (framework) is empty"),
        ("Pytorch, 2.4.0, [CUDA_ADA], ", "field 4 (image) is empty"),
        ("Pytorch, 2.4.0, [], aimehub/x", "architecture list is empty"),
        ("Pytorch, 2.4.0, [CUDA_ADA;], aimehub/x", "not an architecture name"),
        ("Pytorch, 2.4.0, [cuda_ada], aimehub/x", "upper case"),
        ("Pytorch, 2.4.0, [CUDA-ADA], aimehub/x", "not an architecture name"),
        ("Pytorch, 2.4.0, [CUDA_ADA, aimehub/x", "unbalanced"),
        ("Pytorch, 2.4.0, CUDA_ADA], aimehub/x", "unbalanced"),
        ("Pytorch, 2.4.0, [[CUDA_ADA]], aimehub/x", "unbalanced"),
        ("Pytorch, 2.4.0, [CUDA_ADA, CUDA_AMPERE], aimehub/x", "separated by ';'"),
        ("Pytorch, 2.4.0, [CUDA_ADA], aimehub/PyTorch", "lower case"),
        ("Pytorch, 2.4.0, [CUDA_ADA], aimehub/py torch", "whitespace"),
        ("Pytorch, 2.4.0, [CUDA_ADA], aimehub/x:-bad", "tag"),
        ("Pytorch, 2.4.0, [CUDA_ADA], aimehub/x # comment", "whitespace"),
        ("Pytorch, 2.4.0, [CUDA_ADA], aimehub/x#y", "not valid"),
        ("Py-torch, 2.4.0, [CUDA_ADA], aimehub/x", "ambiguous"),
        ("Pytorch, 2.4 .0, [CUDA_ADA], aimehub/x", "version"),
    ],
)
def test_malformed_line_names_file_and_line_and_shows_it(bad_line: str, problem: str) -> None:
    text = f"# header\n\n{bad_line}\nPytorch, 2.3.0, [CUDA_ADA], aimehub/ok\n"
    with pytest.raises(ConfigError) as err:
        parse_catalog(text, "/opt/aime-ml-containers/ml_images.repo")
    e = err.value
    assert e.exit_code == EXIT_BAD_INPUT
    assert e.code == "bad_catalog"
    assert "/opt/aime-ml-containers/ml_images.repo, line 3" in e.message
    assert bad_line.strip() in e.message
    assert problem in e.message
    assert e.details == {
        "file": "/opt/aime-ml-containers/ml_images.repo",
        "line": 3,
        "text": bad_line.rstrip(),
    }


@pytest.mark.parametrize(
    "reference",
    [
        "ubuntu",
        "aimehub/pytorch-2.9.1-cuda12.8.1",
        "rocm/dev-ubuntu-20.04:5.4.2-complete",
        "pytorch/pytorch:2.5.1-cuda11.8-cudnn9-runtime",
        "localhost:5000/team/image:v1",
        "Registry.Example.com/a__b/c---d:TAG_1",
        "[::1]:5000/foo",
        "ghcr.io/org/img@sha256:" + "a" * 64,
    ],
)
def test_valid_image_references(reference: str) -> None:
    assert image_reference_problem(reference) is None


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "upper/Case",
        "a/-b",
        "a//b",
        "a/b:",
        "a/b:" + "t" * 129,
        "a/b@sha256:short",
        "a" * 64,
        "a/" + "b" * 260,
        "bad_host_/x",
        "a/b.",
    ],
)
def test_invalid_image_references(reference: str) -> None:
    assert image_reference_problem(reference) is not None


# --- fallback ----------------------------------------------------------------------------


def test_fallback_offers_the_plans_docker_hub_images_on_every_cuda_arch() -> None:
    catalog = fallback_catalog(missing_path="/opt/aime-ml-containers/ml_images.repo")
    assert catalog.source == FALLBACK_SOURCE == "builtin Docker Hub fallback"
    assert len(catalog.warnings) == 1
    assert "/opt/aime-ml-containers/ml_images.repo" in catalog.warnings[0]
    assert "fallback" in catalog.warnings[0] or "instead" in catalog.warnings[0]
    assert set(catalog.archs) == set(CUDA_ARCHS)
    for arch in CUDA_ARCHS:
        assert catalog.lookup("tf", None, arch).image == "tensorflow/tensorflow:2.14.0-gpu"
        torch = catalog.lookup("pytorch", None, arch)
        assert torch.image == "pytorch/pytorch:2.5.1-cuda11.8-cudnn9-runtime"
        assert torch.framework_label == "Pytorch-2.5.1"
    with pytest.raises(UsageError) as err:
        catalog.lookup("pytorch", None, "ROCM6")
    assert err.value.code == "unknown_arch"
    for entry in catalog.entries:
        assert image_reference_problem(entry.image) is None


def test_fallback_without_a_path_still_warns() -> None:
    assert "not found" in fallback_catalog().warnings[0]


# --- round trip --------------------------------------------------------------------------

_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _word(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    return st.builds(
        lambda a, b: a + b,
        st.sampled_from(first),
        st.text(alphabet=rest, max_size=max_rest),
    )


_frameworks = _word(_UPPER + _UPPER.lower(), _UPPER + _LOWER + "_.+", 11)
_versions = st.builds(
    lambda nums, pre, variant: ".".join(map(str, nums)) + pre + variant,
    st.lists(st.integers(0, 20), min_size=1, max_size=3),
    st.sampled_from(["", "a", "rc1"]),
    st.sampled_from(["", "-aime", "-nvidia", "-amd", "-jlab"]),
)
_archs = st.sampled_from(ALL_ARCHS) | _word(_UPPER, _UPPER + "0123456789_", 9)
# A first path component with a "." would be read as a registry host, so only later
# components (and single-component names) get dots.
_separators = st.sampled_from(["_", "__", "-", "--"])
_alnum = st.text(alphabet=_LOWER, min_size=1, max_size=8)
_first_component = st.builds(lambda a, s, b: a + s + b, _alnum, _separators, _alnum) | _alnum
_component = st.builds(lambda a, s, b: a + s + b, _alnum, _separators | st.just("."), _alnum)
_tags = _word(_UPPER + _LOWER + "_", _UPPER + _LOWER + "_.-", 15)
_images = st.builds(
    lambda first, rest, tag: "/".join([first, *rest]) + (f":{tag}" if tag else ""),
    _first_component,
    st.lists(_component | _alnum, max_size=2),
    st.none() | _tags,
)
_entry_fields = st.tuples(
    _frameworks, _versions, st.lists(_archs, min_size=1, max_size=4, unique=True), _images
)
_padding = st.sampled_from(["", " ", "  ", "\t", " \t "])
_noise = st.sampled_from(["", "   ", "# a comment", "  # Pytorch, 1.0, [CUDA], x/y"])


@st.composite
def rendered_catalogs(draw: st.DrawFn, style: str) -> tuple[str, list[tuple[str, str, str, str]]]:
    """Random valid entries written as a catalog with random padding, comments and blanks;
    returns the text and the (framework, version, arch, image) rows it must give back."""
    fields = draw(st.lists(_entry_fields, max_size=12, unique_by=lambda f: (f[0].casefold(), f[1])))
    lines: list[str] = []
    rows: list[tuple[str, str, str, str]] = []
    for framework, version, archs, image in fields:
        groups = [archs] if style == "v2" else [[arch] for arch in archs]
        for group in groups:
            lines.append(draw(_noise))
            arch_field = f"[{';'.join(group)}]" if style == "v2" else group[0]
            pad = [draw(_padding) for _ in range(8)]
            lines.append(
                f"{pad[0]}{framework}{pad[1]},{pad[2]}{version}{pad[3]},{pad[4]}"
                f"{arch_field}{pad[5]},{pad[6]}{image}{pad[7]}"
            )
            rows.extend((framework, version, arch, image) for arch in group)
    return "\n".join(lines), rows


def _rows(catalog: Catalog) -> list[tuple[str, str, str, str]]:
    return [(e.framework, e.version, a, e.image) for e in catalog.entries for a in e.archs]


@given(rendered_catalogs("v2"))
def test_v2_round_trip(case: tuple[str, list[tuple[str, str, str, str]]]) -> None:
    text, rows = case
    catalog = parse_catalog(text, "random.repo")
    assert _rows(catalog) == rows
    assert catalog.warnings == ()
    # Rendering what was parsed and parsing again gives the same entries.
    again = parse_catalog(render_catalog(catalog.entries), "random.repo")
    assert [(e.framework, e.version, e.archs, e.image) for e in again.entries] == [
        (e.framework, e.version, e.archs, e.image) for e in catalog.entries
    ]


@given(rendered_catalogs("v1"))
def test_v1_round_trip(case: tuple[str, list[tuple[str, str, str, str]]]) -> None:
    text, rows = case
    catalog = parse_catalog(text, "random.repo")
    assert _rows(catalog) == rows
    assert all(len(e.archs) == 1 for e in catalog.entries)
    again = parse_catalog(render_catalog(catalog.entries, style="v1"), "random.repo")
    assert _rows(again) == rows
