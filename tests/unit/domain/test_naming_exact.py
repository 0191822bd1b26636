"""Names, exactly: every refusal's message, hint and code, the length limit on and either
side of it, tag splitting, and the Docker-safe image name component with its hash.

Expected values are written out by hand; the hash suffixes are the first six hex digits of
``sha256`` of the original text (``printf '%s' 'a b' | sha256sum``).
"""

from __future__ import annotations

import pytest

from ds01.domain.naming import (
    MAX_NAME_LENGTH,
    container_tag,
    docker_safe_component,
    project_image_name,
    split_tag,
    validate_name,
)
from ds01.errors import EXIT_BAD_INPUT, UsageError


def _refusal(name: str, **kwargs: str) -> UsageError:
    with pytest.raises(UsageError) as err:
        validate_name(name, **kwargs)
    assert err.value.exit_code == EXIT_BAD_INPUT
    return err.value


# --- validate_name: each refusal, default wording ("container name")


def test_an_empty_name_is_refused_with_a_hint() -> None:
    err = _refusal("")
    assert err.message == "The container name is empty."
    assert err.hint == "Give a name such as 'my-project'."
    assert err.code == "bad_input"


def test_an_empty_name_names_what_was_empty() -> None:
    assert _refusal("", what="project name").message == "The project name is empty."


def test_characters_docker_refuses_are_listed_sorted_and_quoted() -> None:
    err = _refusal("a#b c")
    assert err.message == (
        "The container name 'a#b c' contains characters Docker does not allow: ' ' '#'."
    )
    assert err.hint == "Use letters, digits, '_', '.' and '-' only."
    assert err.code == "invalid_name"


def test_one_refused_character_is_named_once() -> None:
    err = _refusal("a##b", what="image name")
    assert err.message == "The image name 'a##b' contains characters Docker does not allow: '#'."


@pytest.mark.parametrize(("name", "first"), [("-ab", "'-'"), ("_x", "'_'"), (".a", "'.'")])
def test_a_name_must_start_with_a_letter_or_digit(name: str, first: str) -> None:
    err = _refusal(name)
    assert err.message == (
        f"The container name {name!r} must start with a letter or a digit, not {first}."
    )
    assert err.hint is None
    assert err.code == "invalid_name"


def test_the_tag_separator_is_refused_inside_a_name() -> None:
    err = _refusal("a._.b")
    assert err.message == (
        "The container name 'a._.b' must not contain '._.': DS01 and AIME use it "
        "to separate the name from the user id."
    )
    assert err.hint is None
    assert err.code == "invalid_name"


def test_the_length_limit_is_64() -> None:
    assert MAX_NAME_LENGTH == 64


@pytest.mark.parametrize("length", [1, 63, 64])
def test_names_up_to_64_characters_are_accepted(length: int) -> None:
    name = "a" * length
    assert validate_name(name) == name


@pytest.mark.parametrize("length", [65, 200])
def test_names_over_64_characters_are_refused(length: int) -> None:
    err = _refusal("a" * length)
    assert err.message == (
        f"The container name is {length} characters long; at most 64 are allowed."
    )
    assert err.hint is None
    assert err.code == "invalid_name"


# --- container_tag / split_tag


def test_container_tag_joins_name_and_uid() -> None:
    assert container_tag("pt", 1000) == "pt._.1000"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("pt._.1000", ("pt", 1000)),
        ("/pt._.1000", ("pt", 1000)),  # Docker's API lists names with a leading slash
        ("//pt._.7", ("pt", 7)),
        ("/Xavier._.1000", ("Xavier", 1000)),  # only slashes are stripped, not an X
        (" pt._.1000", (" pt", 1000)),  # nor spaces
        ("pt._.1000/", ("pt._.1000/", None)),  # a trailing slash is not stripped
        ("a._.b._.1000", ("a._.b", 1000)),  # the last separator splits
        ("pt", ("pt", None)),
        ("/pt", ("pt", None)),
        ("1000", ("1000", None)),  # digits without a separator are a legacy name
        ("pt._.abc", ("pt._.abc", None)),  # a separator without a uid is a legacy name
        ("pt._.", ("pt._.", None)),
    ],
)
def test_split_tag(tag: str, expected: tuple[str, int | None]) -> None:
    assert split_tag(tag) == expected


# --- docker_safe_component / project_image_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice", "alice"),  # nothing changed: no hash
        ("a.b_c-d", "a.b_c-d"),
        ("a b", "a-b-c8687a"),  # a run of refused characters becomes one '-'
        ("_abc", "abc-999d81"),  # leading separators stripped
        ("a..b", "a-b-f62b42"),  # runs of separators collapse to one '-'
        ("@@", "x-3330e5"),  # nothing left: "x"
        ("A", "a-559aea"),  # lower-cased: changed, so hashed
    ],
)
def test_docker_safe_component(text: str, expected: str) -> None:
    assert docker_safe_component(text) == expected


def test_project_image_name() -> None:
    assert project_image_name("pt", "alice") == "pt-alice-image:latest"
    assert project_image_name("My Proj", "a b") == "my-proj-87f66d-a-b-c8687a-image:latest"
