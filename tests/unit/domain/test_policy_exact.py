"""Policy errors written out: an undefined group named by a user entry or default_group,
no default group, ambiguous membership and memory_swap below memory, each with the file
and line it comes from, the hint saying what to change, and the code."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ds01.domain.policy import GroupRule, Policy, UserRule, find_group, resolve
from ds01.errors import DS01Error
from tests.unit.domain.test_policy import GiB, _membership_policy, _policy

AMBIGUOUS_HINT = (
    "Add membership_precedence: [group, ...] to the policy file (first listed wins), or give "
    "the user an entry users.dave.group."
)
SWAP_HINT = "Set memory_swap next to memory in the same group or users entry."
SWAP = (
    "the limits of user 'alice' (group g) are inconsistent: memory_swap 1g is less than "
    "memory 2g; Docker refuses that (memory_swap is memory plus swap). Set it to at least "
    "memory, or leave it out for no swap. Values: "
)

CASES: dict[str, tuple[Callable[[], object], tuple[str, str, str]]] = {
    "user_group": (
        lambda: find_group(
            Policy(groups={"a": GroupRule("a")}, users={"x": UserRule("x", group="nope")},
                   default_group="a", source="/etc/ds01/resource-limits.yaml",
                   lines={"users.x.group": 12}),
            "x",
        ),
        ("/etc/ds01/resource-limits.yaml:12: users.x.group names group 'nope', which is not "
         "defined under groups.", "Define the group or correct the name.", "bad_config"),
    ),
    "no_default": (
        lambda: find_group(Policy(groups={"a": GroupRule("a")}), "x"),
        ("built-in: user 'x' is in no group and default_group is not set.",
         "Set default_group to the group for everybody not listed elsewhere.", "bad_config"),
    ),
    "bad_default": (
        lambda: find_group(
            Policy(groups={"a": GroupRule("a")}, default_group="b", source="/p.yaml",
                   lines={"default_group": 3}),
            "x",
        ),
        ("/p.yaml:3: default_group 'b' is not defined under groups.",
         "Define the group or correct default_group.", "bad_config"),
    ),
    "ambiguous": (
        lambda: find_group(_membership_policy(), "dave"),
        ("built-in: user 'dave' is in several groups through members: faculty (built-in), "
         "admin (built-in), and membership_precedence does not say which one applies.",
         AMBIGUOUS_HINT, "ambiguous_membership"),
    ),
    "ambiguous_lines": (
        lambda: find_group(
            _membership_policy(source="/p.yaml",
                               lines={"groups.faculty.members": 7, "groups.admin.members": 9}),
            "dave",
        ),
        ("/p.yaml: user 'dave' is in several groups through members: faculty (/p.yaml:7), "
         "admin (/p.yaml:9), and membership_precedence does not say which one applies.",
         AMBIGUOUS_HINT, "ambiguous_membership"),
    ),
    "swap_below": (
        lambda: resolve(_policy(group={"memory": 2 * GiB, "memory_swap": 1 * GiB}), "alice"),
        ("built-in: " + SWAP + "memory from group:g (built-in), memory_swap from group:g "
         "(built-in).", SWAP_HINT, "bad_config"),
    ),
    "swap_lines": (
        lambda: resolve(
            Policy(groups={"g": GroupRule("g", limits={"memory": 2 * GiB})},
                   users={"alice": UserRule("alice", {"memory_swap": 1 * GiB}, group="g")},
                   default_group="g", source="/p.yaml",
                   lines={"users.alice.memory_swap": 4, "groups.g.memory": 2}),
            "alice",
        ),
        ("/p.yaml: " + SWAP + "memory from group:g (/p.yaml:2), memory_swap from user "
         "(/p.yaml:4).", SWAP_HINT, "bad_config"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_policy_errors_exactly(case: str) -> None:
    call, expected = CASES[case]
    with pytest.raises(DS01Error) as info:
        call()
    assert (str(info.value), info.value.hint, info.value.code) == expected


def test_swap_equal_to_memory_is_allowed() -> None:
    resolved = resolve(_policy(group={"memory": 2 * GiB, "memory_swap": 2 * GiB}), "alice")
    assert resolved.docker_cli_args() == [
        "--cpus=8",
        "--memory=2g",
        "--memory-swap=2g",
        "--shm-size=8g",
        "--pids-limit=4096",
    ]
