"""Package tiers, exactly: refusals as users see them (message, hint, code), the notes
de-duplication prints and their bound, the custom tier's edits, and the duplicate rule's
outcome for every branch (left out, override, conflict) of pip and apt entries alike.

Every expected value is written out by hand from the rules in ds01.domain.packages.
"""

from __future__ import annotations

import pytest

from ds01.domain.package_specs import AptSpec, PipSpec
from ds01.domain.packages import (
    CustomTier,
    Duplicate,
    Override,
    PackagePlan,
    Tier,
    TierName,
    UseCase,
    _words,
    parse_use_case,
    plan_packages,
)
from ds01.errors import EXIT_BAD_INPUT, UsageError

PIP = (
    "Give each package as a PEP 508 requirement without spaces, e.g. 'pandas' or "
    "'numpy>=1.26,<3'; separate packages with spaces."
)
APT = "Give Debian package names such as 'ffmpeg' or 'libsndfile1=1.2.0-1'."
REQUIREMENTS = (
    "Keep one requirement per line, such as 'pandas>=2' or 'torch==2.5.1'; remove option "
    "lines, URLs and environment markers."
)
NOT_DEBIAN = (
    "not a Debian package name (lower-case letters, digits, '+', '-', '.'; at least "
    "two characters; no ':arch' or '/release' suffix)"
)
REMOVE_HINT = (
    "--remove takes packages added with --pip/--apt/--add-pip/--add-apt. "
    "To drop a base or use-case package, create the image again without it."
)
CUSTOM, BASE, SYSTEM = TierName.CUSTOM, TierName.BASE, TierName.SYSTEM


def _refusal(call: object, *args: object, **kwargs: object) -> UsageError:
    assert callable(call)
    with pytest.raises(UsageError) as err:
        call(*args, **kwargs)
    assert err.value.exit_code == EXIT_BAD_INPUT
    return err.value


def test_words_splits_on_any_whitespace() -> None:
    assert _words(" a  b\tc\nd ") == ("a", "b", "c", "d")
    assert _words("") == ()


# --- --type


def test_parse_use_case_reads_case_and_spaces() -> None:
    assert parse_use_case(" CV ") is UseCase.CV
    assert parse_use_case("none") is UseCase.NONE


def test_an_unknown_use_case_lists_the_choices() -> None:
    err = _refusal(parse_use_case, "bogus")
    assert err.message == "Unknown --type 'bogus'."
    assert err.hint == "Choose one of: ml, cv, nlp, rl, audio, ts, llm, none."
    assert err.code == "bad_type"


# --- the custom tier


def test_adding_an_invalid_apt_entry_is_refused_with_apt_advice() -> None:
    err = _refusal(CustomTier().added, apt=["ffmpeg", "a"])
    assert err.message == (
        "Some packages can't be added; nothing was written or built:\n"
        f"  --add-apt 'a': {NOT_DEBIAN}"
    )
    assert err.hint == APT
    assert err.code == "invalid_package"
    assert err.details["invalid_total"] == 1


def test_adding_an_invalid_pip_entry_gets_pip_advice_only() -> None:
    err = _refusal(CustomTier().added, pip=[""], apt=["ffmpeg"])
    assert err.message == (
        "Some packages can't be added; nothing was written or built:\n  --add-pip '': it is empty"
    )
    assert err.hint == PIP


def test_adding_invalid_pip_and_apt_entries_gets_both_advices() -> None:
    err = _refusal(CustomTier().added, pip=[""], apt=["a"])
    assert err.message == (
        "Some packages can't be added; nothing was written or built:\n"
        "  --add-pip '': it is empty\n"
        f"  --add-apt 'a': {NOT_DEBIAN}"
    )
    assert err.hint == f"{PIP} {APT}"


def test_removing_keeps_the_other_kind() -> None:
    tier = CustomTier(
        pip=(PipSpec("pandas", "pandas"), PipSpec("numpy", "numpy")),
        apt=(AptSpec("ffmpeg"), AptSpec("git")),
    )
    assert tier.removed(["Pandas"]) == CustomTier(
        pip=(PipSpec("numpy", "numpy"),), apt=(AptSpec("ffmpeg"), AptSpec("git"))
    )
    assert tier.removed(["git"]) == CustomTier(
        pip=(PipSpec("pandas", "pandas"), PipSpec("numpy", "numpy")), apt=(AptSpec("ffmpeg"),)
    )


def test_removing_what_is_not_there_names_it() -> None:
    tier = CustomTier(pip=(PipSpec("pandas", "pandas"),))
    err = _refusal(tier.removed, ["pandas", "scipy", "numpy"])
    assert err.message == "Not in this image's custom tier: 'scipy', 'numpy'"
    assert err.hint == REMOVE_HINT
    assert err.code == "not_in_custom_tier"


def test_twenty_missing_names_are_all_listed() -> None:
    names = [f"p{i}" for i in range(20)]
    err = _refusal(CustomTier().removed, names)
    assert err.message == "Not in this image's custom tier: " + ", ".join(
        f"'p{i}'" for i in range(20)
    )


def test_missing_names_past_twenty_are_counted() -> None:
    names = [f"p{i}" for i in range(21)]
    err = _refusal(CustomTier().removed, names)
    listed = ", ".join(f"'p{i}'" for i in range(20))
    assert err.message == f"Not in this image's custom tier: {listed} and 1 more"
    names = [f"p{i}" for i in range(23)]
    err = _refusal(CustomTier().removed, names)
    assert err.message == f"Not in this image's custom tier: {listed} and 3 more"


# --- PackagePlan


def test_a_tier_the_plan_lacks_is_none() -> None:
    plan = plan_packages()
    assert plan.tier(TierName.REQUIREMENTS) is None
    assert plan.tier(TierName.CUSTOM) == Tier(CUSTOM, ("custom",))


def _plan(duplicates: list[Duplicate], overrides: tuple[Override, ...] = ()) -> PackagePlan:
    return PackagePlan(tiers=(), duplicates=tuple(duplicates), overrides=overrides)


def test_a_note_for_an_entry_left_out_once() -> None:
    assert _plan([Duplicate("pandas", CUSTOM, BASE)]).notes() == [
        "pandas (custom tier) is installed by the base tier already; left out."
    ]


def test_a_note_counts_repeats_of_an_entry_left_out() -> None:
    assert _plan([Duplicate("pandas", CUSTOM, BASE)] * 2).notes() == [
        "pandas (custom tier, named 2 times) is installed by the base tier already; left out."
    ]
    assert _plan([Duplicate("pandas", CUSTOM, BASE)] * 1234).notes() == [
        "pandas (custom tier, named 1,234 times) is installed by the base tier already; left out."
    ]


def test_a_note_counts_repeats_within_one_tier_with_the_first() -> None:
    assert _plan([Duplicate("git", CUSTOM, CUSTOM)]).notes() == [
        "git is named 2 times in the custom tier; installed once."
    ]
    assert _plan([Duplicate("git", CUSTOM, CUSTOM)] * 1500).notes() == [
        "git is named 1,501 times in the custom tier; installed once."
    ]


def test_a_note_for_an_override() -> None:
    plan = _plan([], (Override("pandas==2.2", CUSTOM, BASE),))
    assert plan.notes() == ["pandas==2.2 (custom tier) changes what the base tier installs."]


def _many(n: int) -> PackagePlan:
    return _plan([Duplicate(f"p{i}", CUSTOM, BASE) for i in range(n)])


def _note(i: int) -> str:
    return f"p{i} (custom tier) is installed by the base tier already; left out."


def test_ten_notes_are_all_shown() -> None:
    assert _many(10).notes() == [_note(i) for i in range(10)]


def test_notes_past_ten_are_counted() -> None:
    assert _many(11).notes() == [*(_note(i) for i in range(10)), "... and 1 more such notes."]
    assert _many(13).notes() == [*(_note(i) for i in range(10)), "... and 3 more such notes."]
    assert _many(5).notes(limit=3) == [*(_note(i) for i in range(3)), "... and 2 more such notes."]


# --- plan_packages: refusals


def test_requirements_and_a_use_case_are_refused_together() -> None:
    err = _refusal(plan_packages, use_case=UseCase.CV, requirements="pandas\n")
    assert err.message == (
        "--requirements replaces the use-case tier, so --type cv can't be used with it."
    )
    assert err.hint == "Give either --requirements FILE or --type, not both."
    assert err.code == "conflicting_flags"


@pytest.mark.parametrize(
    ("kwargs", "listed", "hint"),
    [
        ({"pip": [""]}, "  --pip '': it is empty", PIP),
        ({"apt": ["a"]}, f"  --apt 'a': {NOT_DEBIAN}", APT),
        (
            {"requirements": "--pre\n"},
            "  requirements.txt:1 '--pre': option line '--pre' refused: pip options are not "
            "applied by DS01",
            REQUIREMENTS,
        ),
        (
            {"pip": [""], "apt": ["a"]},
            f"  --pip '': it is empty\n  --apt 'a': {NOT_DEBIAN}",
            f"{PIP} {APT}",
        ),
        (
            {"pip": [""], "requirements": "--pre\n", "requirements_name": "r.txt"},
            "  --pip '': it is empty\n"
            "  r.txt:1 '--pre': option line '--pre' refused: pip options are not applied by DS01",
            f"{PIP} {REQUIREMENTS}",
        ),
        (
            {"pip": [""], "apt": ["a"], "requirements": "--pre\n"},
            f"  --pip '': it is empty\n  --apt 'a': {NOT_DEBIAN}\n"
            "  requirements.txt:1 '--pre': option line '--pre' refused: pip options are not "
            "applied by DS01",
            f"{PIP} {APT} {REQUIREMENTS}",
        ),
    ],
)
def test_plan_refusals_advise_on_the_kinds_refused(
    kwargs: dict[str, object], listed: str, hint: str
) -> None:
    err = _refusal(plan_packages, **kwargs)
    assert err.message == f"Some packages can't be used; nothing was written or built:\n{listed}"
    assert err.hint == hint
    assert err.code == "invalid_package"


# --- plan_packages: the duplicate rule, branch by branch


def test_the_plan_remembers_its_use_case() -> None:
    assert plan_packages(use_case=UseCase.CV).use_case is UseCase.CV
    assert plan_packages().use_case is UseCase.NONE


def test_a_pip_override_names_its_tier_and_the_earlier_one() -> None:
    plan = plan_packages(pip=["pandas==2.2"])
    assert plan.overrides == (Override("pandas==2.2", CUSTOM, BASE),)
    assert plan.duplicates == ()


def test_an_override_repeated_in_its_tier_is_left_out_once() -> None:
    plan = plan_packages(pip=["pandas==2.2", "pandas==2.2"])
    assert plan.overrides == (Override("pandas==2.2", CUSTOM, BASE),)
    assert plan.duplicates == (Duplicate("pandas==2.2", CUSTOM, CUSTOM),)
    custom = plan.tier(CUSTOM)
    assert custom is not None
    assert [s.text for s in custom.pip] == ["pandas==2.2"]


def test_an_apt_override_names_its_tier_and_the_earlier_one() -> None:
    plan = plan_packages(apt=["curl=8.5.0-2"])
    assert plan.overrides == (Override("curl=8.5.0-2", CUSTOM, SYSTEM),)
    assert plan.duplicates == ()
    assert plan.custom == CustomTier(apt=(AptSpec("curl", "8.5.0-2"),))


def test_an_apt_override_repeated_in_its_tier_is_left_out_once() -> None:
    plan = plan_packages(apt=["curl=1.0", "curl=1.0"])
    assert plan.overrides == (Override("curl=1.0", CUSTOM, SYSTEM),)
    assert plan.duplicates == (Duplicate("curl=1.0", CUSTOM, CUSTOM),)
    assert plan.custom == CustomTier(apt=(AptSpec("curl", "1.0"),))


def test_an_unpinned_apt_repeat_after_a_pin_in_one_tier_is_left_out() -> None:
    plan = plan_packages(apt=["git=1.0", "git"])
    assert plan.duplicates == (Duplicate("git", CUSTOM, CUSTOM),)
    assert plan.custom == CustomTier(apt=(AptSpec("git", "1.0"),))


def test_an_unpinned_apt_entry_after_the_system_tier_is_left_out() -> None:
    plan = plan_packages(apt=["git"])
    assert plan.duplicates == (Duplicate("git", CUSTOM, SYSTEM),)
    assert plan.overrides == ()
    assert plan.custom == CustomTier()


def test_two_apt_versions_in_one_tier_are_refused() -> None:
    err = _refusal(plan_packages, apt=["ffmpeg=1.0", "ffmpeg=2.0"])
    assert err.message == (
        "Some packages are named twice with different versions; nothing was written or built:\n"
        "  ffmpeg=1.0 and ffmpeg=2.0: both in one tier"
    )
    assert err.hint == "Name each package once per tier."
    assert err.code == "invalid_package"
    assert err.details == {
        "invalid": [{"entry": "ffmpeg=1.0 and ffmpeg=2.0", "reason": "both in one tier"}],
        "invalid_total": 1,
    }


def test_two_pip_versions_in_one_tier_are_refused() -> None:
    err = _refusal(plan_packages, pip=["pandas==1.0", "pandas==2.0"])
    assert err.message == (
        "Some packages are named twice with different versions; nothing was written or built:\n"
        "  pandas==1.0 and pandas==2.0: both in the custom tier"
    )
    assert err.hint == "Name each package once per tier."
