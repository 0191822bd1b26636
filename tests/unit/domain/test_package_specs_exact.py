"""Package entries, exactly: every refusal reason, message, hint and code as users see them,
and the bounds (entry length, excerpt length, reasons cut at 160 characters, 8 refused
characters named, 20 offenders listed) on, below and above each limit.

Every expected text is written out by hand from the rules in ds01.domain.package_specs.
"""

from __future__ import annotations

import pytest

from ds01.domain.package_specs import (
    AptSpec,
    PipSpec,
    excerpt,
    hint_for,
    parse_apt_specs,
    parse_pip_specs,
    parse_requirements,
    plain_excerpt,
    refuse_entries,
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
DIRECT = (
    "direct references ('name @ URL' or a file path) are refused: DS01 installs "
    "only named packages from the package index"
)
MARKERS = (
    "environment markers ('; python_version ...') are not supported: the image has "
    "exactly one Python, so give the version you want instead"
)


def _pip_refusal(entries: list[str]) -> UsageError:
    with pytest.raises(UsageError) as err:
        parse_pip_specs(entries)
    assert err.value.exit_code == EXIT_BAD_INPUT
    return err.value


def _pip_reason(entry: str) -> str:
    err = _pip_refusal([entry])
    assert err.details["invalid_total"] == 1
    reason = err.details["invalid"][0]["reason"]
    assert isinstance(reason, str)
    return reason


def _apt_reason(entry: str) -> str:
    with pytest.raises(UsageError) as err:
        parse_apt_specs([entry])
    reason = err.value.details["invalid"][0]["reason"]
    assert isinstance(reason, str)
    return reason


def _requirements_refusal(text: str, **kwargs: str) -> UsageError:
    with pytest.raises(UsageError) as err:
        parse_requirements(text, **kwargs)
    return err.value


# --- excerpt / plain_excerpt


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "''"),
        ("a", "'a'"),
        ("a" * 40, "'" + "a" * 40 + "'"),
        ("a" * 41, "'" + "a" * 40 + "…'"),
        ("x\nRUN", "'x\\nRUN'"),
        # an escape counts as what it shows: 39 a's and "\n" (2 shown) do not fit in 40
        ("a" * 39 + "\n", "'" + "a" * 39 + "…'"),
    ],
)
def test_excerpt(text: str, expected: str) -> None:
    assert excerpt(text) == expected


def test_plain_excerpt_keeps_its_limit() -> None:
    assert plain_excerpt("a" * 50, 45) == "a" * 45 + "…"
    assert plain_excerpt("a" * 50) == "a" * 40 + "…"
    assert plain_excerpt("req.txt") == "req.txt"


# --- pip entries: every reason


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("x" * 201, "it is longer than 200 characters"),
        ("-e", "pip options are not accepted, only package requirements"),
        (" --pre", "pip options are not accepted, only package requirements"),
        ("a@b", DIRECT),
        ("http://x", DIRECT),
        ("a;b", MARKERS),
        ("pandas>=2 ", "it contains spaces; write it without them, e.g. 'pandas>=2'"),
        (
            "a>b<c>",
            "it is not a valid PEP 508 requirement "
            "(Expected semicolon (after name with no version specifier) or end)",
        ),
        # packaging's first line (85 characters) cut to 80
        (
            "a==1.*.2",
            "it is not a valid PEP 508 requirement (Expected comma (within version "
            "specifier), semicolon (after version specifier) o…)",
        ),
        # '===' takes any text, and packaging renders it as given: a '(' is refused there
        ("a===(x", "its canonical form 'a===(x' is not safe to write"),
    ],
)
def test_pip_refusal_reasons(entry: str, reason: str) -> None:
    assert _pip_reason(entry) == reason


def test_a_200_character_pip_entry_is_long_enough() -> None:
    assert parse_pip_specs(["x" * 200]) == (PipSpec(name="x" * 200, text="x" * 200),)


def test_eight_refused_characters_are_all_named() -> None:
    # sorted by code point: " # $ % & ' ^ `
    assert _pip_reason("a\"#$%&'^`") == (
        "it contains characters that can't go on a Dockerfile line: "
        "'\"' '#' '$' '%' '&' \"'\" '^' '`'"
    )


def test_a_ninth_refused_character_is_counted() -> None:
    assert _pip_reason("a\"#$%&'^`|") == (
        "it contains characters that can't go on a Dockerfile line: "
        "'\"' '#' '$' '%' '&' \"'\" '^' '`' and 1 more"
    )


def test_a_pip_refusal_as_users_see_it() -> None:
    err = _pip_refusal(["ok", "a;b", "-x"])
    assert err.message == (
        "Some pip packages can't be used; nothing was written or built:\n"
        f"  --pip 'a;b': {MARKERS}\n"
        "  --pip '-x': pip options are not accepted, only package requirements"
    )
    assert err.hint == PIP
    assert err.code == "invalid_package"
    assert err.details == {
        "invalid": [
            {"entry": "--pip 'a;b'", "reason": MARKERS},
            {
                "entry": "--pip '-x'",
                "reason": "pip options are not accepted, only package requirements",
            },
        ],
        "invalid_total": 2,
    }


def test_a_pip_refusal_names_its_source() -> None:
    with pytest.raises(UsageError) as err:
        parse_pip_specs([""], source="--add-pip")
    assert err.value.message == (
        "Some pip packages can't be used; nothing was written or built:\n"
        "  --add-pip '': it is empty"
    )


# --- apt entries: every reason


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "it is empty"),
        ("a" * 201, "it is longer than 200 characters"),
        ("FFMPEG", "Debian package names are lower case: 'ffmpeg'"),
        ("FFmpeg", "Debian package names are lower case: 'ffmpeg'"),
        ("a", NOT_DEBIAN),
        ("pkg:amd64", NOT_DEBIAN),
        ("FF MPEG", NOT_DEBIAN),  # lower-casing does not make it a name
        (
            "foo=bar",
            "'bar' is not a Debian version ([epoch:]upstream[-revision], starting with a digit)",
        ),
        ("foo=", "'' is not a Debian version ([epoch:]upstream[-revision], starting with a digit)"),
    ],
)
def test_apt_refusal_reasons(entry: str, reason: str) -> None:
    assert _apt_reason(entry) == reason


def test_apt_entries_accepted() -> None:
    assert parse_apt_specs(["ffmpeg", "libsndfile1=1.2.0-1", "a" * 200]) == (
        AptSpec("ffmpeg"),
        AptSpec("libsndfile1", "1.2.0-1"),
        AptSpec("a" * 200),
    )


def test_an_apt_refusal_as_users_see_it() -> None:
    with pytest.raises(UsageError) as err:
        parse_apt_specs(["ok1", "a"])
    assert err.value.message == (
        f"Some apt packages can't be used; nothing was written or built:\n  --apt 'a': {NOT_DEBIAN}"
    )
    assert err.value.hint == APT
    assert err.value.code == "invalid_package"


# --- hints


@pytest.mark.parametrize(
    ("kinds", "hint"),
    [
        ({}, PIP),
        ({"pip": True}, PIP),
        ({"apt": True}, APT),
        ({"requirements": True}, REQUIREMENTS),
        ({"pip": True, "apt": True}, f"{PIP} {APT}"),
        ({"apt": True, "requirements": True}, f"{APT} {REQUIREMENTS}"),
        ({"pip": True, "apt": True, "requirements": True}, f"{PIP} {APT} {REQUIREMENTS}"),
    ],
)
def test_hint_for(kinds: dict[str, bool], hint: str) -> None:
    assert hint_for(**kinds) == hint


# --- refuse_entries: bounds


def _refuse(problems: list[tuple[str, str]]) -> UsageError:
    with pytest.raises(UsageError) as err:
        refuse_entries("Nope", problems, "Do this.")
    return err.value


def test_a_reason_of_160_characters_is_shown_whole() -> None:
    err = _refuse([("e", "r" * 160)])
    assert err.details["invalid"] == [{"entry": "e", "reason": "r" * 160}]
    assert err.message == "Nope; nothing was written or built:\n  e: " + "r" * 160


def test_a_longer_reason_is_cut_to_159_characters_and_an_ellipsis() -> None:
    err = _refuse([("e", "r" * 161)])
    assert err.details["invalid"] == [{"entry": "e", "reason": "r" * 159 + "…"}]


def test_twenty_offenders_are_all_listed() -> None:
    problems = [(f"e{i}", "bad") for i in range(20)]
    err = _refuse(problems)
    assert err.message == "Nope; nothing was written or built:\n" + "\n".join(
        f"  e{i}: bad" for i in range(20)
    )
    assert len(err.details["invalid"]) == 20
    assert err.details["invalid_total"] == 20
    assert err.hint == "Do this."
    assert err.code == "invalid_package"
    assert err.exit_code == EXIT_BAD_INPUT


def test_offenders_past_twenty_are_counted() -> None:
    problems = [(f"e{i}", "bad") for i in range(22)]
    err = _refuse(problems)
    assert err.message == (
        "Nope; nothing was written or built:\n"
        + "\n".join(f"  e{i}: bad" for i in range(20))
        + "\n  ... and 2 more"
    )
    assert err.details["invalid"][19] == {"entry": "e19", "reason": "bad"}
    assert len(err.details["invalid"]) == 20
    assert err.details["invalid_total"] == 22


# --- requirements files


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            "pandas \\",
            "line continuations are not supported; put each requirement on one line "
            "(pip-compile: use --no-generate-hashes)",
        ),
        (
            "-r other.txt",
            "option line '-r' refused: nested requirement files are not followed: "
            "paste that file's lines here",
        ),
        (
            "--requirement=a.txt b",
            "option line '--requirement' refused: nested requirement files are not followed: "
            "paste that file's lines here",
        ),
        (
            "-c c.txt",
            "option line '-c' refused: constraint files are not supported: pin the versions "
            "in this file instead",
        ),
        (
            "-e .",
            "option line '-e' refused: editable installs need your source tree: install it "
            "inside the container",
        ),
        (
            "--index-url=http://x",
            "option line '--index-url' refused: index options are set by the administrator "
            "(build.pip_index_url)",
        ),
        ("--pre", "option line '--pre' refused: pip options are not applied by DS01"),
        ("--pre x y", "option line '--pre' refused: pip options are not applied by DS01"),
        ("pandas --hash=sha256:abc", "per-requirement options (such as --hash) are not supported"),
        ("pandas -H", "per-requirement options (such as --hash) are not supported"),
        ("pandas\t--hash", "per-requirement options (such as --hash) are not supported"),
        ("pandas @ https://x/y.whl", DIRECT),  # '@' alone is a direct reference
        ("file:x", "it contains characters that can't go on a Dockerfile line: ':'"),
        (
            "pkg @ file:///tmp/x.whl",
            "a direct reference to a local file (typical of 'pip freeze' in a conda "
            "environment); export with 'pip list --format=freeze' instead",
        ),
    ],
)
def test_requirements_line_reasons(line: str, reason: str) -> None:
    err = _requirements_refusal(f"ok\n{line}\n", filename="req.txt")
    assert err.details["invalid_total"] == 1
    assert err.details["invalid"][0]["entry"].startswith("req.txt:2 '")
    assert err.details["invalid"][0]["reason"] == reason


def test_a_requirements_refusal_as_users_see_it() -> None:
    err = _requirements_refusal("# pinned\n\n--pre\n")
    assert err.message == (
        "requirements.txt has lines DS01 can't use; nothing was written or built:\n"
        "  requirements.txt:3 '--pre': option line '--pre' refused: pip options are not "
        "applied by DS01"
    )
    assert err.hint == REQUIREMENTS
    assert err.code == "invalid_package"


def test_spaces_inside_a_requirements_line_are_allowed() -> None:
    assert parse_requirements("pandas >= 2  # the base\n") == (
        PipSpec(name="pandas", text="pandas>=2", specifier=">=2"),
    )
