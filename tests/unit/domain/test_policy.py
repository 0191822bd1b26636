"""Resolution of limits (pure): layers, null, membership order, Docker arguments."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.domain.policy import (
    BUILTIN_DEFAULTS,
    KEY_KINDS,
    LIMIT_KEYS,
    NO_GROUP,
    NON_NULLABLE_KEYS,
    AggregateLimits,
    GroupRule,
    LimitValue,
    Policy,
    UserRule,
    choose_by_precedence,
    display_value,
    find_group,
    merge_layers,
    resolve,
)
from ds01.errors import ConfigError
from ds01.serialize import to_json
from ds01.services.limits import LimitsReport

GiB = 1024**3

# ----------------------------------------------------------------------------- strategies

_KIND_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "cpus": st.floats(min_value=0.01, max_value=512, allow_nan=False),
    "size": st.integers(min_value=6 * 1024**2, max_value=2**45),
    "count": st.integers(min_value=0, max_value=10**6),
    "equivalents": st.fractions(min_value=0, max_value=64, max_denominator=7),
    "bool": st.booleans(),
    "profiles": st.lists(st.sampled_from(["1g.18gb", "2g.35gb", "3g.71gb", "7g.141gb"])).map(tuple),
    "duration": st.integers(min_value=1, max_value=10**7),
    "percent": st.floats(min_value=0, max_value=100, allow_nan=False),
}
# memory_swap is left to its own tests: a random swap below a random memory is an
# (intended) error, which would drown the properties below.
_RANDOM_KEYS = [k for k in LIMIT_KEYS if k != "memory_swap"]


def _value_for(key: str) -> st.SearchStrategy[LimitValue]:
    values = _KIND_VALUES[KEY_KINDS[key]]
    return values if key in NON_NULLABLE_KEYS else st.one_of(st.none(), values)


@st.composite
def layers(draw: st.DrawFn) -> dict[str, LimitValue]:
    keys = draw(st.lists(st.sampled_from(_RANDOM_KEYS), unique=True, max_size=10))
    return {key: draw(_value_for(key)) for key in keys}


def _policy(
    defaults: dict[str, LimitValue] | None = None,
    group: dict[str, LimitValue] | None = None,
    user: dict[str, LimitValue] | None = None,
) -> Policy:
    return Policy(
        defaults=defaults or {},
        groups={"g": GroupRule("g", group or {}, members=frozenset({"alice"}))},
        users={} if user is None else {"alice": UserRule("alice", user)},
        default_group="g",
    )


# ----------------------------------------------------------------------------- properties


@given(layers(), layers(), layers())
def test_an_override_changes_only_the_keys_it_names(
    defaults: dict[str, LimitValue], group: dict[str, LimitValue], user: dict[str, LimitValue]
) -> None:
    without = resolve(_policy(defaults, group), "alice")
    with_override = resolve(_policy(defaults, group, user), "alice")
    for key in _RANDOM_KEYS:
        if key in user:
            assert with_override.values[key] == user[key]
            assert with_override.sources[key] == "user"
        else:
            assert with_override.values[key] == without.values[key], key
            assert with_override.sources[key] == without.sources[key], key
    assert with_override.group == without.group == "g"


@given(layers(), layers(), layers())
def test_the_last_layer_naming_a_key_wins_and_null_stays_unlimited(
    defaults: dict[str, LimitValue], group: dict[str, LimitValue], user: dict[str, LimitValue]
) -> None:
    resolved = resolve(_policy(defaults, group, user), "alice")
    stack = [
        ("builtin", BUILTIN_DEFAULTS),
        ("default", defaults),
        ("group:g", group),
        ("user", user),
    ]
    for key in _RANDOM_KEYS:
        source, layer = next((s, layer) for s, layer in reversed(stack) if key in layer)
        assert resolved.sources[key] == source
        assert resolved.values[key] == layer[key]
        if layer[key] is None:
            # null set at any layer and not named again above it: unlimited to the end.
            assert resolved.limit_items()[key].value is None


@given(layers(), layers(), st.lists(st.sampled_from(["u1", "u2", "u3", "x"]), max_size=4))
def test_resolution_is_deterministic(
    group_a: dict[str, LimitValue], group_b: dict[str, LimitValue], unix: list[str]
) -> None:
    policy = Policy(
        groups={
            "a": GroupRule("a", group_a, unix_group="u1"),
            "b": GroupRule("b", group_b, unix_group="u2"),
        },
        default_group="a",
        membership_precedence=("b", "a"),
    )
    first = resolve(policy, "bob", unix)
    again = resolve(policy, "bob", list(reversed(unix)))
    assert first == again
    assert resolve(policy, "bob", frozenset(unix)) == first


@given(layers())
def test_memory_swap_unset_means_no_swap(layer: dict[str, LimitValue]) -> None:
    resolved = resolve(_policy(group=layer), "alice")
    assert resolved.memory_swap == resolved.memory
    assert resolved.sources["memory_swap"] == "builtin"
    kwargs = resolved.docker_create_kwargs()
    if resolved.memory is not None:
        assert kwargs["memswap_limit"] == kwargs["mem_limit"] == resolved.memory
    else:
        assert "mem_limit" not in kwargs and "memswap_limit" not in kwargs


# ----------------------------------------------------------------------------- examples


def test_override_sits_on_top_of_the_group_not_the_defaults() -> None:
    # The existing DS01 gave overridden users the defaults plus the override; the
    # group's own limits must survive for every key the override does not name.
    policy = _policy(
        defaults={"max_cpus": 4.0, "memory": 8 * GiB},
        group={"max_cpus": 32.0, "memory": 64 * GiB, "max_containers": 5},
        user={"max_containers": 9},
    )
    resolved = resolve(policy, "alice")
    assert resolved.max_cpus == 32.0 and resolved.sources["max_cpus"] == "group:g"
    assert resolved.memory == 64 * GiB
    assert resolved.max_containers == 9 and resolved.sources["max_containers"] == "user"
    assert resolved.group == "g"


def test_null_survives_every_layer() -> None:
    group_null = resolve(_policy(defaults={"max_cpus": 4.0}, group={"max_cpus": None}), "alice")
    assert group_null.max_cpus is None and group_null.sources["max_cpus"] == "group:g"
    untouched = resolve(
        _policy(defaults={"max_cpus": 4.0}, group={"max_cpus": None}, user={"memory": GiB}),
        "alice",
    )
    assert untouched.max_cpus is None and untouched.sources["max_cpus"] == "group:g"
    user_null = resolve(
        _policy(group={"max_gpu_equivalents": 2}, user={"max_gpu_equivalents": None}), "alice"
    )
    assert (
        user_null.max_gpu_equivalents is None and user_null.sources["max_gpu_equivalents"] == "user"
    )
    assert user_null.limit_items()["max_gpu_equivalents"].display == "unlimited"
    restored = resolve(_policy(group={"idle_timeout": None}, user={"idle_timeout": 600}), "alice")
    assert restored.idle_timeout_s == 600


def test_aggregate_merges_key_by_key() -> None:
    policy = _policy(
        group={"aggregate.cpus": 24.0, "aggregate.memory": 64 * GiB, "aggregate.pids": 8192},
        user={"aggregate.memory": 96 * GiB},
    )
    resolved = resolve(policy, "alice")
    assert resolved.aggregate == AggregateLimits(cpus=24.0, memory=96 * GiB, pids=8192)
    assert resolved.sources["aggregate.cpus"] == "group:g"
    assert resolved.sources["aggregate.memory"] == "user"


def test_builtin_policy_when_there_is_no_file() -> None:
    resolved = resolve(Policy(), "anyone")
    assert resolved.group == NO_GROUP and resolved.group_via == "no groups defined"
    assert set(resolved.sources.values()) == {"builtin"}
    assert resolved.max_cpus == 8.0 and resolved.memory == 32 * GiB
    assert resolved.shm_size == 8 * GiB and resolved.memory_swap == resolved.memory
    assert resolved.max_gpu_equivalents == Fraction(1)
    assert resolved.aggregate.is_unlimited
    assert resolved.cgroup_parent("systemd") == "ds01-default-anyone.slice"


def test_every_key_has_a_builtin_value_except_derived_swap() -> None:
    assert set(BUILTIN_DEFAULTS) == set(LIMIT_KEYS) - {"memory_swap"}
    assert NON_NULLABLE_KEYS.issubset(LIMIT_KEYS)


# ----------------------------------------------------------------------------- membership


def _membership_policy(**extra: Any) -> Policy:
    return Policy(
        groups={
            "student": GroupRule("student", unix_group="ds01-students"),
            "researcher": GroupRule(
                "researcher", file_members=frozenset({"bob", "carol"}), unix_group="ds01-res"
            ),
            "faculty": GroupRule("faculty", members=frozenset({"carol", "dave"})),
            "admin": GroupRule("admin", members=frozenset({"dave"})),
        },
        users={"erin": UserRule("erin", {}, group="admin")},
        default_group="student",
        **extra,
    )


def test_membership_lookup_order() -> None:
    policy = _membership_policy(membership_precedence=("admin",))
    # users.<name>.group beats everything, even unix groups that say otherwise.
    assert find_group(policy, "erin", ["ds01-res"]).group == "admin"
    assert find_group(policy, "erin", ["ds01-res"]).via == "users.erin.group"
    # inline members beat a members file: carol is in faculty inline, researcher by file.
    assert find_group(policy, "carol", ["ds01-students"]).group == "faculty"
    assert find_group(policy, "carol", []).via == "members"
    # a members file beats a unix group.
    assert find_group(policy, "bob", ["ds01-students"]).group == "researcher"
    assert find_group(policy, "bob", []).via == "members_file"
    # a unix group beats the default group.
    assert find_group(policy, "frank", ["ds01-res"]).group == "researcher"
    assert find_group(policy, "frank", ["ds01-res"]).via == "unix_group ds01-res"
    # nothing matches: default_group.
    assert find_group(policy, "gina", []).group == "student"
    assert find_group(policy, "gina", []).via == "default_group"


def test_two_groups_in_one_step_need_a_rule() -> None:
    # dave is inline in faculty and admin: precedence decides...
    assert find_group(_membership_policy(membership_precedence=("admin",)), "dave").group == "admin"
    assert (
        find_group(_membership_policy(membership_precedence=("faculty", "admin")), "dave").group
        == "faculty"
    )
    # ...and without one it is an error, never a guess.
    with pytest.raises(ConfigError, match="several groups") as err:
        find_group(_membership_policy(), "dave")
    assert err.value.exit_code == 2
    assert "membership_precedence" in (err.value.hint or "")
    # precedence that names neither candidate does not decide either.
    with pytest.raises(
        ConfigError,
        match=(
            r"user 'dave' is in several groups .* membership_precedence does not say which "
            r"one applies"
        ),
    ):
        find_group(_membership_policy(membership_precedence=("student",)), "dave")


def test_two_unix_groups_are_checked_at_resolution() -> None:
    policy = _membership_policy(membership_precedence=("admin",))
    with pytest.raises(ConfigError, match="unix_group"):
        find_group(policy, "henry", ["ds01-students", "ds01-res"])
    ordered = _membership_policy(membership_precedence=("researcher", "student"))
    assert find_group(ordered, "henry", ["ds01-students", "ds01-res"]).group == "researcher"


def test_choose_by_precedence() -> None:
    assert choose_by_precedence(["a"], []) == "a"
    assert choose_by_precedence(["a", "b"], ["b"]) == "b"
    assert choose_by_precedence(["a", "b"], ["c", "a", "b"]) == "a"
    assert choose_by_precedence(["a", "b"], ["c"]) is None


def test_membership_errors_name_the_file_and_line() -> None:
    policy = Policy(
        groups={"a": GroupRule("a")},
        users={"x": UserRule("x", group="nope")},
        default_group="a",
        source="/etc/ds01/resource-limits.yaml",
        lines={"users.x.group": 12},
    )
    with pytest.raises(ConfigError, match=r"resource-limits.yaml:12: users\.x\.group"):
        find_group(policy, "x")
    no_default = Policy(groups={"a": GroupRule("a")})
    with pytest.raises(ConfigError, match="default_group"):
        find_group(no_default, "x")
    bad_default = Policy(groups={"a": GroupRule("a")}, default_group="b")
    with pytest.raises(ConfigError, match="not defined"):
        find_group(bad_default, "x")


# ----------------------------------------------------------------------------- docker


def test_docker_arguments() -> None:
    policy = _policy(
        defaults={"max_cpus": 16.0, "memory": 32 * GiB, "shm_size": 16 * GiB, "pids_limit": 4096}
    )
    resolved = resolve(policy, "alice")
    assert resolved.docker_create_kwargs() == {
        "nano_cpus": 16_000_000_000,
        "mem_limit": 34359738368,
        "memswap_limit": 34359738368,
        "shm_size": 17179869184,
        "pids_limit": 4096,
    }
    assert resolved.docker_cli_args(cgroup_parent="ds01-g-alice.slice") == [
        "--cpus=16",
        "--memory=32g",
        "--memory-swap=32g",
        "--shm-size=16g",
        "--pids-limit=4096",
        "--cgroup-parent=ds01-g-alice.slice",
    ]


def test_unlimited_values_are_omitted_and_null_swap_is_minus_one() -> None:
    unlimited = resolve(
        _policy(group={"max_cpus": None, "memory": None, "pids_limit": None}), "alice"
    )
    assert unlimited.docker_create_kwargs() == {"shm_size": 8 * GiB}
    assert unlimited.docker_cli_args() == ["--shm-size=8g"]
    swap = resolve(_policy(group={"memory": 2 * GiB, "memory_swap": None}), "alice")
    assert swap.docker_create_kwargs()["memswap_limit"] == -1
    assert "--memory-swap=-1" in swap.docker_cli_args()
    more = resolve(_policy(group={"memory": 2 * GiB, "memory_swap": 3 * GiB}), "alice")
    assert more.docker_create_kwargs()["memswap_limit"] == 3 * GiB
    half = resolve(_policy(group={"max_cpus": 0.5}), "alice")
    assert half.docker_create_kwargs()["nano_cpus"] == 500_000_000
    assert "--cpus=0.5" in half.docker_cli_args()


def test_swap_below_memory_is_an_error_naming_both_sources() -> None:
    policy = Policy(
        defaults={"memory_swap": 32 * GiB},
        groups={"r": GroupRule("r", {"memory": 64 * GiB})},
        default_group="r",
        source="/etc/ds01/resource-limits.yaml",
        lines={"defaults.memory_swap": 3, "groups.r.memory": 9},
    )
    with pytest.raises(ConfigError) as err:
        resolve(policy, "alice")
    message = err.value.message
    assert "memory_swap 32g is less than memory 64g" in message
    assert "resource-limits.yaml:3" in message and "resource-limits.yaml:9" in message


def test_json_form_is_stable_and_serialisable() -> None:
    resolved = resolve(
        _policy(
            group={"max_gpu_equivalents": Fraction(3, 7), "allowed_mig_profiles": ("3g.71gb",)}
        ),
        "alice",
    )
    data = to_json(LimitsReport.of(resolved, "systemd"))
    assert list(data) == [
        "user", "group", "group_via", "limits", "docker", "cgroup_driver", "cgroup_parent",
    ]  # fmt: skip
    assert list(data["limits"]) == list(LIMIT_KEYS)
    for entry in data["limits"].values():
        assert set(entry) == {"value", "display", "source"}
    assert data["limits"]["max_gpu_equivalents"]["value"] == pytest.approx(3 / 7, abs=1e-4)
    assert data["limits"]["allowed_mig_profiles"]["value"] == ["3g.71gb"]
    assert data["limits"]["idle_timeout"] == {"value": 3600, "display": "1h", "source": "builtin"}
    json.dumps(data)


def test_aggregate_outputs_for_systemd_and_cgroupfs() -> None:
    limits = AggregateLimits(cpus=24.0, memory=64 * GiB, pids=8192)
    assert limits.systemd_properties() == {
        "CPUQuota": "2400%",
        "MemoryMax": str(64 * GiB),
        "TasksMax": "8192",
    }
    assert limits.cgroup_v1_files() == {
        "cpu/cpu.cfs_period_us": "100000",
        "cpu/cpu.cfs_quota_us": "2400000",
        "memory/memory.limit_in_bytes": str(64 * GiB),
        "pids/pids.max": "8192",
    }
    assert limits.cgroup_v2_files() == {
        "cpu.max": "2400000 100000",
        "memory.max": str(64 * GiB),
        "pids.max": "8192",
    }
    none = AggregateLimits()
    assert none.is_unlimited
    assert none.systemd_properties() == {
        "CPUQuota": "",
        "MemoryMax": "infinity",
        "TasksMax": "infinity",
    }
    assert none.cgroup_v1_files()["cpu/cpu.cfs_quota_us"] == "-1"
    assert none.cgroup_v2_files()["cpu.max"] == "max 100000"


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("memory", 32 * GiB, "32g"),
        ("memory", None, "unlimited"),
        ("allowed_mig_profiles", None, "any"),
        ("allowed_mig_profiles", (), "none"),
        ("allowed_mig_profiles", ("1g.18gb", "3g.71gb"), "1g.18gb, 3g.71gb"),
        ("idle_timeout", 5400, "1h30m"),
        ("max_cpus", 2.5, "2.5"),
        ("allow_full_gpu", False, "no"),
        ("max_gpu_equivalents", Fraction(1, 2), "0.5"),
        ("idle.gpu_threshold", 5.0, "5%"),
        ("pids_limit", 4096, "4096"),
    ],
)
def test_display_value(key: str, value: LimitValue, shown: str) -> None:
    assert display_value(key, value) == shown


def test_unknown_key_in_a_layer_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown limit key"):
        merge_layers([("default", {"max_cpu": 1})])


def test_wrong_type_from_a_loader_is_a_bug() -> None:
    with pytest.raises(TypeError, match="max_containers"):
        resolve(_policy(group={"max_containers": "3"}), "alice")  # type: ignore[dict-item]
