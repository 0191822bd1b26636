"""Slice names and cgroupfs paths from LDAP-style user names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.domain.slices import (
    SLICE_ROOT,
    cgroup_parent,
    cgroupfs_path,
    group_slice,
    is_valid_slice_name,
    slice_chain,
    slice_component,
    user_slice,
)

# Names of the kinds LDAP/SSSD produce, plus anything else text can be.
ldap_names = st.from_regex(r"\A[a-zA-Z0-9._-]{1,40}(@[a-z0-9.-]{1,30})?\Z", fullmatch=True)
any_names = st.text(min_size=1, max_size=60)
user_names = st.one_of(ldap_names, any_names)


def test_plain_names_are_kept() -> None:
    assert user_slice("student", "alice") == "ds01-student-alice.slice"
    assert group_slice("student") == "ds01-student.slice"
    assert slice_component("Alice_01") == "Alice_01"


def test_chain_from_the_top() -> None:
    assert slice_chain("student", "alice") == (
        "ds01.slice",
        "ds01-student.slice",
        "ds01-student-alice.slice",
    )


@pytest.mark.parametrize(
    ("name", "readable"),
    [
        ("a.b@x", "a_b"),
        ("h.baker@hertie-school.lan", "h_baker"),
        ("228755@students.example", "228755"),
        ("jean-luc", "jean_luc"),
        ("@only-domain", "u"),
        ("---", "u"),
    ],
)
def test_lossy_names_get_a_hash(name: str, readable: str) -> None:
    component = slice_component(name)
    head, dot, digest = component.partition(".")
    assert (head, dot) == (readable, ".")
    assert len(digest) == 10 and all(c in "0123456789abcdef" for c in digest)


def test_names_that_differ_only_in_punctuation_differ() -> None:
    assert slice_component("a.b@x") != slice_component("a_b@x")
    assert slice_component("a.b@x") != slice_component("a.b@y")
    assert slice_component("a_b") != slice_component("a.b")


def test_long_names_are_shortened() -> None:
    long = "a" * 33
    assert len(slice_component("a" * 32)) == 32
    assert slice_component("a" * 32) == "a" * 32
    assert len(slice_component(long)) == 32
    assert slice_component(long).startswith("a" * 21 + ".")
    assert slice_component(long) != slice_component("a" * 34)


def test_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        slice_component("")


def test_cgroupfs_paths() -> None:
    assert cgroupfs_path("student", "alice") == "/ds01/student/alice"
    assert cgroupfs_path("student", "a.b@x") == "/ds01/student/a_b.03f2cbdf99"
    assert cgroup_parent("student", "alice", "cgroupfs") == "/ds01/student/alice"
    assert cgroup_parent("student", "alice", "systemd") == "ds01-student-alice.slice"
    with pytest.raises(ValueError, match="cgroup driver"):
        cgroup_parent("student", "alice", "other")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("ds01.slice", True),
        ("ds01-student-alice.slice", True),
        ("-.slice", True),
        ("ds01--x.slice", False),
        ("-ds01.slice", False),
        ("ds01-.slice", False),
        ("ds01-a@b.slice", False),
        ("ds01.service", False),
        (".slice", False),
        ("x" * 250 + ".slice", False),
    ],
)
def test_slice_name_rules(name: str, valid: bool) -> None:
    assert is_valid_slice_name(name) is valid


@given(user_names, user_names)
def test_distinct_users_never_collide(a: str, b: str) -> None:
    if a != b:
        assert slice_component(a) != slice_component(b)
        assert user_slice("student", a) != user_slice("student", b)
        assert cgroupfs_path("student", a) != cgroupfs_path("student", b)


@given(st.lists(user_names, min_size=2, max_size=30, unique=True))
def test_a_population_maps_one_to_one(names: list[str]) -> None:
    assert len({slice_component(n) for n in names}) == len(names)


@given(user_names, user_names)
def test_output_follows_systemd_rules(group: str, user: str) -> None:
    component = slice_component(user)
    assert "-" not in component
    assert 1 <= len(component) <= 32
    top, middle, leaf = slice_chain(group, user)
    assert top == SLICE_ROOT
    for name in (top, middle, leaf):
        assert is_valid_slice_name(name), name
    # systemd derives a slice's parent by dropping the last "-" part: the chain must be
    # exactly what systemd itself would derive, with no unexpected intermediate levels.
    assert leaf.count("-") == 2
    assert middle == leaf.rsplit("-", 1)[0] + ".slice"
    assert top == middle.rsplit("-", 1)[0] + ".slice"
    path = cgroupfs_path(group, user)
    assert path.count("/") == 3 and "//" not in path


@pytest.mark.parametrize(
    ("user", "component"),
    [
        ("a.b@x", "a_b.03f2cbdf99"),
        ("a.b@x.org", "a_b.76b246c433"),
        ("alice", "alice"),
    ],
)
def test_deterministic(user: str, component: str) -> None:
    # Literal values: a slice name must be the same in every process and every release
    # (existing slices and cgroups are found by it), not just equal within one run.
    assert slice_component(user) == component
