"""DS01's label namespaces in a Dockerfile (``domain/dockerfile_labels``), asserted exactly.

Every refusal is compared whole: message, hint, code and details, written out here by hand,
so a changed word, a dropped detail or a rule that stops one label too early fails a test.
"""

from __future__ import annotations

import pytest

from ds01.domain.dockerfile_labels import DESCRIPTIVE, check_labels, is_reserved
from ds01.domain.dockerfile_refs import LabelUse
from ds01.errors import EXIT_BAD_INPUT, UsageError

HINT = (
    "Remove that label: DS01 labels every image with its owner, project and user itself. "
    "Put your own labels under a namespace of yours (e.g. org.example.note=...)."
)
WHY = "labels under aime.mlc.* and ds01.* are DS01's: they say whose an image is"
ONBUILD_WHY = "an ONBUILD label would be set in a later build, whoever makes it"
OWN = {
    "aime.mlc.CUSTOM_IMAGE": "p-alice-image:latest",
    "aime.mlc.MAINTAINER": "alice",
    "aime.mlc.DS01_PROJECT": "p",
    "aime.mlc.DS01_USER_UID": "1000",
    "aime.mlc.DS01_USER_GID": "1000",
    "aime.mlc.DS01_USER_NAME": "alice",
    "aime.mlc.BASE_IMAGE": "cat",
}
PLACE = "Line 7 of the Dockerfile (LABEL)"


def _refusal(labels: list[LabelUse]) -> UsageError:
    with pytest.raises(UsageError) as info:
        check_labels(labels, OWN)
    assert info.value.exit_code == EXIT_BAD_INPUT
    return info.value


@pytest.mark.parametrize(
    ("key", "reserved"),
    [
        ("ds01", True),
        ("DS01", True),
        ("Ds01", True),
        ("ds01.", True),
        ("ds01.user", True),
        ("DS01.USER", True),
        ("aime.mlc", True),
        ("AIME.MLC", True),
        ("aime.mlc.MAINTAINER", True),
        ("aime.mlcx", True),  # AIME's prefix, as AIME reads it
        ("ds01x", False),
        ("ds0", False),
        ("xds01", False),
        ("aime.ml", False),
        ("org.example.aime.mlc", False),
        ("maintainer", False),
        ("", False),
    ],
)
def test_which_keys_are_ds01s(key: str, reserved: bool) -> None:
    assert is_reserved(key) is reserved


def test_descriptive_keys_are_exactly_these() -> None:
    assert frozenset({"aime.mlc.BASE_IMAGE", "aime.mlc.FRAMEWORK", "aime.mlc.DS01_TIERS"}) == (
        DESCRIPTIVE
    )


def test_a_forged_value_of_a_key_ds01_sets_is_refused_whole() -> None:
    error = _refusal([LabelUse("aime.mlc.MAINTAINER", "bob", PLACE)])
    assert error.message == (
        "Line 7 of the Dockerfile (LABEL) sets the label aime.mlc.MAINTAINER=bob "
        f"(DS01 sets 'alice' itself); {WHY}, and a Dockerfile may not set them."
    )
    assert error.hint == HINT
    assert error.code == "reserved_label"
    assert error.details == {"key": "aime.mlc.MAINTAINER", "value": "bob", "where": PLACE}


def test_a_reserved_key_ds01_does_not_set_names_no_value_of_ds01s() -> None:
    error = _refusal([LabelUse("aime.mlc.USER", "bob", PLACE)])
    assert error.message == (
        "Line 7 of the Dockerfile (LABEL) sets the label aime.mlc.USER=bob; "
        f"{WHY}, and a Dockerfile may not set them."
    )
    assert error.hint == HINT
    assert error.details == {"key": "aime.mlc.USER", "value": "bob", "where": PLACE}


def test_a_value_from_a_variable_shows_the_key_alone() -> None:
    error = _refusal([LabelUse("ds01.user", None, PLACE)])
    assert error.message == (
        f"Line 7 of the Dockerfile (LABEL) sets the label ds01.user; {WHY}, "
        "and a Dockerfile may not set them."
    )
    assert error.details == {"key": "ds01.user", "value": None, "where": PLACE}


def test_an_onbuild_label_is_refused_even_with_ds01s_own_value() -> None:
    where = "Line 3 of the Dockerfile (ONBUILD LABEL)"
    error = _refusal([LabelUse("aime.mlc.MAINTAINER", "alice", where, onbuild=True)])
    assert error.message == (
        "Line 3 of the Dockerfile (ONBUILD LABEL) sets the label aime.mlc.MAINTAINER=alice; "
        f"{ONBUILD_WHY}, and a Dockerfile may not set them."
    )
    assert error.hint == HINT
    assert error.code == "reserved_label"
    assert error.details == {"key": "aime.mlc.MAINTAINER", "value": "alice", "where": where}


def test_an_onbuild_descriptive_label_is_refused_too() -> None:
    error = _refusal([LabelUse("aime.mlc.FRAMEWORK", "x", PLACE, onbuild=True)])
    assert error.message.endswith(
        f"aime.mlc.FRAMEWORK=x; {ONBUILD_WHY}, and a Dockerfile may not set them."
    )


def test_every_label_is_checked_after_an_allowed_one() -> None:
    """DS01's own value, a descriptive key and a foreign key are passed over, and the
    forged label after them is still found."""
    labels = [
        LabelUse("aime.mlc.MAINTAINER", "alice", "Line 2 of the Dockerfile (LABEL)"),
        LabelUse("aime.mlc.DS01_TIERS", "anything", "Line 3 of the Dockerfile (LABEL)"),
        LabelUse("org.example.note", "x", "Line 4 of the Dockerfile (LABEL)"),
        LabelUse("aime.mlc.DS01_PROJECT", "q", "Line 5 of the Dockerfile (LABEL)"),
    ]
    error = _refusal(labels)
    assert error.details == {
        "key": "aime.mlc.DS01_PROJECT",
        "value": "q",
        "where": "Line 5 of the Dockerfile (LABEL)",
    }
    assert "(DS01 sets 'p' itself)" in error.message


def test_own_values_descriptive_and_foreign_labels_pass() -> None:
    check_labels(
        [
            LabelUse("aime.mlc.MAINTAINER", "alice", PLACE),
            LabelUse("aime.mlc.DS01_USER_UID", "1000", PLACE),
            LabelUse("aime.mlc.BASE_IMAGE", "stale", PLACE),
            LabelUse("aime.mlc.FRAMEWORK", None, PLACE),
            LabelUse("ds01x", "1", PLACE),
            LabelUse("org.example.owner", "bob", PLACE, onbuild=True),
        ],
        OWN,
    )
