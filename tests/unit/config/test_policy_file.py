"""The resource-limits file: loading, located errors, aliases, membership, and the YAML layer."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from ds01.config.limits import DEFAULT_POLICY_PATH, load_policy, parse_policy
from ds01.config.yaml_source import (
    dotted,
    line_for,
    load_model,
    load_yaml_with_lines,
    parse_yaml_with_lines,
    validate_located,
)
from ds01.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "resource-limits.yaml"
FILE = Path("/srv/policy/resource-limits.yaml")
GiB = 1024**3


def _error(text: str, path: Path = FILE) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_policy(text, path=path)
    assert err.value.exit_code == 2
    return err.value


# ----------------------------------------------------------------------------- the example


def test_example_file_loads_cleanly() -> None:
    policy_file = load_policy(EXAMPLE)
    assert policy_file.warnings == ()
    assert set(policy_file.policy.groups) == {"student", "researcher", "faculty", "admin"}
    student = policy_file.resolve("alice", ["ds01-students"])
    assert (student.group, student.group_via) == ("student", "unix_group ds01-students")
    assert student.allow_full_gpu is False
    assert student.aggregate.memory == 64 * GiB
    thesis = policy_file.resolve("m.schmidt@students.hertie-school.org", ["ds01-students"])
    assert thesis.allow_full_gpu is True and thesis.sources["allow_full_gpu"] == "user"
    assert thesis.aggregate.memory == 96 * GiB and thesis.aggregate.cpus == 24
    assert thesis.idle_timeout_s == 1800 and thesis.sources["idle_timeout"] == "group:student"
    admin = policy_file.resolve("root2", ["ds01-admin", "ds01-students"])
    assert admin.group == "admin" and admin.max_cpus is None and admin.idle_timeout_s is None
    assert policy_file.resolve("nobody").group == "student"


# ----------------------------------------------------------------------------- located errors

INVALID = [
    # (name, text, line, key, fragment of the message)
    (
        "unknown key",
        "defaults:\n  max_cpus: 4\n  max_cpu: 4\n",
        3,
        "defaults.max_cpu",
        "did you mean 'max_cpus'",
    ),
    ("wrong type", "defaults:\n  allow_full_gpu: maybe\n", 2, "defaults.allow_full_gpu", "boolean"),
    (
        "negative size",
        "default_group: s\ngroups:\n  s:\n    memory: -1g\n",
        4,
        "groups.s.memory",
        "negative",
    ),
    ("nonsense size", "defaults:\n  shm_size: 12 parsecs\n", 2, "defaults.shm_size", "not a size"),
    ("zero size", "users:\n  bob:\n    memory: 0\n", 3, "users.bob.memory", "zero"),
    ("tiny memory", "defaults:\n  memory: 1m\n", 2, "defaults.memory", "minimum"),
    ("bare duration", "defaults:\n  idle_timeout: 30\n", 2, "defaults.idle_timeout", "no unit"),
    (
        "bad duration",
        "defaults:\n  max_runtime: soon\n",
        2,
        "defaults.max_runtime",
        "not a duration",
    ),
    ("cpus zero", "defaults:\n  max_cpus: 0\n", 2, "defaults.max_cpus", "too small"),
    ("cpus nan", "defaults:\n  max_cpus: .nan\n", 2, "defaults.max_cpus", "finite"),
    (
        "bool count",
        "defaults:\n  max_containers: yes\n",
        2,
        "defaults.max_containers",
        "whole number",
    ),
    ("pids zero", "defaults:\n  pids_limit: 0\n", 2, "defaults.pids_limit", "minimum"),
    (
        "negative gpus",
        "defaults:\n  max_gpu_equivalents: -1\n",
        2,
        "defaults.max_gpu_equivalents",
        "negative",
    ),
    (
        "bad profile",
        "defaults:\n  allowed_mig_profiles: [1g.18gb, big]\n",
        2,
        "defaults.allowed_mig_profiles",
        "'big'",
    ),
    (
        "null setting",
        "defaults:\n  priority: null\n",
        2,
        "defaults.priority",
        "null is not allowed",
    ),
    ("null shm", "defaults:\n  shm_size: ~\n", 2, "defaults.shm_size", "null is not allowed"),
    (
        "percent",
        "defaults:\n  idle:\n    gpu_threshold: 150\n",
        3,
        "defaults.idle.gpu_threshold",
        "percentage",
    ),
    (
        "aggregate key",
        "defaults:\n  aggregate:\n    cpu: 4\n",
        3,
        "defaults.aggregate.cpu",
        "did you mean 'cpus'",
    ),
    ("top-level key", "defaults: {}\ngroup: {}\n", 2, "group", "unknown key"),
    (
        "two groups",
        "default_group: a\ngroups:\n  a:\n    members: [bob]\n  b:\n    members: [x, bob]\n",
        6,
        "groups.b.members[1]",
        "also listed in groups.a.members",
    ),
    ("missing default group", "groups:\n  a: {}\n", 1, "default_group", "default_group is missing"),
    (
        "undefined default group",
        "default_group: zz\ngroups:\n  a:\n",
        1,
        "default_group",
        "'zz' is not defined",
    ),
    (
        "users group undefined",
        "users:\n  bob:\n    group: nope\n",
        3,
        "users.bob.group",
        "'nope' is not defined",
    ),
    (
        "precedence unknown",
        "membership_precedence: [a, b]\ndefault_group: a\ngroups:\n  a: {}\n",
        1,
        "membership_precedence[1]",
        "'b' is not defined",
    ),
    (
        "bad group name",
        "default_group: phd students\ngroups:\n  phd students: {}\n",
        3,
        "groups.phd students",
        "not a valid group name",
    ),
    (
        "shared unix group",
        "default_group: a\ngroups:\n  a: {unix_group: x}\n  b: {unix_group: x}\n",
        4,
        "groups.b.unix_group",
        "also used by a",
    ),
    (
        "swap below memory",
        "defaults:\n  memory_swap: 32g\ngroups:\n  r:\n    memory: 64g\ndefault_group: r\n",
        5,
        "groups.r.memory",
        "less than memory",
    ),
    (
        "duplicate key",
        "defaults:\n  memory: 32g\n  memory: 16g\n",
        3,
        "defaults.memory",
        "duplicate key",
    ),
    (
        "legacy and new",
        "defaults:\n  max_gpu_equivalents: 1\n  max_mig_instances: 2\n",
        3,
        "defaults.max_mig_instances",
        "keep only max_gpu_equivalents",
    ),
    (
        "legacy bad value",
        "defaults:\n  max_gpus_per_user: lots\n",
        2,
        "defaults.max_gpus_per_user",
        "GPU equivalents",
    ),
    (
        "legacy hours",
        "defaults:\n  idle_timeout_h: half\n",
        2,
        "defaults.idle_timeout_h",
        "number of hours",
    ),
    (
        "legacy dropped",
        "groups:\n  a:\n    policies:\n      idle_detection_window: 3\ndefault_group: a\n",
        4,
        "groups.a.policies.idle_detection_window",
        "idle.window",
    ),
    ("not a mapping", "- a\n- b\n", 1, "", "must be a mapping"),
    ("groups is a list", "groups: [a, b]\n", 1, "groups", "dictionary"),
    (
        "members not a list",
        "default_group: a\ngroups:\n  a:\n    members: bob\n",
        4,
        "groups.a.members",
        "tuple",
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "line", "key", "fragment"), INVALID, ids=[c[0] for c in INVALID]
)
def test_every_invalid_file_is_rejected_with_a_located_message(
    name: str, text: str, line: int, key: str, fragment: str
) -> None:
    error = _error(text)
    where = f"{FILE}:{line}: "
    assert where in error.message, error.message
    if key:
        assert f"{where}{key}: " in error.message, error.message
    assert fragment in error.message, error.message
    problems = error.details["problems"]
    assert any(p["line"] == line and p["key"] == key for p in problems), problems
    assert error.hint


def test_yaml_syntax_error_is_located() -> None:
    error = _error("defaults:\n  memory: 32g\n   shm: [\n")
    assert f"{FILE}:3: YAML syntax error" in error.message


@pytest.mark.parametrize(
    "text",
    ["a: 1\n---\nb: 2\n", "defaults: !!python/object:os.system {}\n", "defaults: [unclosed\n"],
)
def test_other_yaml_failures_name_the_file(text: str) -> None:
    error = _error(text)
    assert str(FILE) in error.message


def test_all_problems_are_reported_at_once() -> None:
    error = _error("defaults:\n  max_cpu: 4\n  memory: lots\nusers:\n  bob:\n    idle_timeout: 5\n")
    assert "3 problems" in error.message
    for line, key in [
        (2, "defaults.max_cpu"),
        (3, "defaults.memory"),
        (6, "users.bob.idle_timeout"),
    ]:
        assert f"{FILE}:{line}: {key}: " in error.message


_BAD_VALUES = [
    ("memory", "-4g"),
    ("memory", "lots"),
    ("shm_size", "0"),
    ("max_cpus", "-2"),
    ("pids_limit", "many"),
    ("idle_timeout", "45"),
    ("max_runtime", "-1h"),
    ("allow_full_gpu", "sometimes"),
    ("max_gpu_equivalents", "-0.5"),
    ("unknown_limit", "3"),
]


@given(
    st.sampled_from(_BAD_VALUES),
    st.sampled_from(["defaults", "group", "user"]),
    st.integers(min_value=0, max_value=6),
)
def test_a_bad_value_anywhere_is_reported_at_its_line(
    bad: tuple[str, str], where: str, padding: int
) -> None:
    key, value = bad
    fillers = [f"  # filler {i}" for i in range(padding)]
    if where == "defaults":
        head, prefix, indent = ["defaults:"], "defaults", "  "
    elif where == "group":
        head, prefix, indent = ["default_group: g", "groups:", "  g:"], "groups.g", "    "
        fillers = ["    # filler"] * padding
    else:
        head, prefix, indent = ["users:", "  x.y@example.org:"], "users.x.y@example.org", "    "
        fillers = ["    # filler"] * padding
    lines = [*head, *fillers, f"{indent}{key}: {value}"]
    error = _error("\n".join(lines) + "\n")
    assert f"{FILE}:{len(lines)}: {prefix}.{key}: " in error.message, error.message


# ----------------------------------------------------------------------------- empty sections


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only comments\n",
        "users:\n",
        "users:\n  # nobody yet\n",
        "groups:\nusers:\ndefaults:\n",
        "defaults:\n  aggregate:\n  idle:\n",
        "user_overrides:\n",
    ],
)
def test_empty_sections_are_empty(text: str) -> None:
    policy_file = parse_policy(text, path=FILE)
    resolved = policy_file.resolve("alice")
    assert resolved.group == "default"
    assert set(resolved.sources.values()) == {"builtin"}


def test_empty_group_body_and_null_members() -> None:
    text = "default_group: s\ngroups:\n  s:\n  r:\n    members:\n    aggregate:\n"
    policy_file = parse_policy(text, path=FILE)
    assert policy_file.policy.groups["s"].limits == {}
    assert policy_file.policy.groups["r"].members == frozenset()
    assert policy_file.resolve("bob").group == "s"


def test_numeric_user_names_are_names() -> None:
    text = (
        "default_group: s\ngroups:\n  s:\n    members: [228755]\nusers:\n  1234:\n    max_cpus: 2\n"
    )
    policy_file = parse_policy(text, path=FILE)
    assert "228755" in policy_file.policy.groups["s"].members
    assert policy_file.resolve("1234").max_cpus == 2


# ----------------------------------------------------------------------------- aliases


def test_legacy_keys_are_read_with_a_warning() -> None:
    text = (
        "defaults:\n"
        "  max_mig_instances: 2\n"
        "  max_gpu_slots_per_container: 3\n"
        "  cpus: 4\n"
        "  max_containers_per_user: 6\n"
        "  idle_timeout_h: 0.5\n"
        "  max_runtime_h: 24\n"
        "  gpu_hold_after_stop_h: 0.25\n"
        "  container_hold_after_stop_h: null\n"
        "  aggregate:\n"
        "    cpu_quota: 800%\n"
        "    memory_max: 96g\n"
        "    tasks_max: 12288\n"
        "  policies:\n"
        "    gpu_idle_threshold: 7\n"
        "    network_idle_threshold: 2m\n"
        "user_overrides:\n"
        "  bob:\n"
        "    max_gpus_per_user: 3\n"
        "    max_mig_per_container: 2\n"
    )
    policy_file = parse_policy(text, path=FILE)
    resolved = policy_file.resolve("alice")
    assert resolved.max_gpu_equivalents == 2
    assert resolved.max_gpus_per_container == 3
    assert resolved.max_cpus == 4
    assert resolved.max_containers == 6
    assert resolved.idle_timeout_s == 1800
    assert resolved.max_runtime_s == 86400
    assert resolved.gpu_hold_after_stop_s == 900
    assert resolved.container_hold_after_stop_s is None
    assert resolved.aggregate.cpus == 8 and resolved.aggregate.memory == 96 * GiB
    assert resolved.aggregate.pids == 12288
    assert resolved.idle.gpu_threshold == 7 and resolved.idle.network_threshold_bytes == 2 * 1024**2
    bob = policy_file.resolve("bob")
    assert bob.max_gpu_equivalents == 3 and bob.max_gpus_per_container == 2
    warnings = "\n".join(policy_file.warnings)
    for line, old, new in [
        (2, "defaults.max_mig_instances", "max_gpu_equivalents"),
        (3, "defaults.max_gpu_slots_per_container", "max_gpus_per_container"),
        (4, "defaults.cpus", "max_cpus"),
        (6, "defaults.idle_timeout_h", "idle_timeout (idle_timeout: 30m)"),
        (11, "defaults.aggregate.cpu_quota", "cpus"),
        (14, "defaults.policies", "idle"),
        (15, "defaults.policies.gpu_idle_threshold", "gpu_threshold"),
        (17, "user_overrides", "users"),
        (19, "user_overrides.bob.max_gpus_per_user", "max_gpu_equivalents"),
    ]:
        assert f"{FILE}:{line}: {old} is a deprecated name; use {new}" in warnings, warnings
    assert len(policy_file.warnings) == 17


def test_exact_gpu_equivalents() -> None:
    policy_file = parse_policy("defaults:\n  max_gpu_equivalents: 3/7\n", path=FILE)
    assert policy_file.resolve("a").max_gpu_equivalents == Fraction(3, 7)
    tenth = parse_policy("defaults:\n  max_gpu_equivalents: 0.1\n", path=FILE)
    assert tenth.resolve("a").max_gpu_equivalents == Fraction(1, 10)


# ----------------------------------------------------------------------------- members files


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_members_file_relative_to_the_policy_file(tmp_path: Path) -> None:
    _write(tmp_path / "groups" / "r.members", "# researchers\nbob\n  carol   # PhD\n\n")
    policy_path = _write(
        tmp_path / "limits.yaml",
        "default_group: s\ngroups:\n  s: {}\n  r:\n    members_file: groups/r.members\n",
    )
    policy_file = load_policy(policy_path)
    assert policy_file.policy.groups["r"].file_members == frozenset({"bob", "carol"})
    assert policy_file.resolve("carol").group_via == "members_file"
    assert policy_file.resolve("dave").group == "s"


def test_missing_members_file_is_an_error_not_an_empty_group(tmp_path: Path) -> None:
    policy_path = _write(
        tmp_path / "limits.yaml", "default_group: r\ngroups:\n  r:\n    members_file: r.members\n"
    )
    with pytest.raises(ConfigError) as err:
        load_policy(policy_path)
    assert f"{policy_path}:4: groups.r.members_file: members file" in err.value.message
    assert str(tmp_path / "r.members") in err.value.message


def test_bad_line_in_members_file_is_located_there(tmp_path: Path) -> None:
    members = _write(tmp_path / "r.members", "bob\nalice smith\n")
    policy_path = _write(
        tmp_path / "limits.yaml", "default_group: r\ngroups:\n  r:\n    members_file: r.members\n"
    )
    with pytest.raises(ConfigError) as err:
        load_policy(policy_path)
    assert f"{members}:2: groups.r.members_file: 'alice smith'" in err.value.message


def test_user_in_two_members_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.members", "bob\n")
    second = _write(tmp_path / "b.members", "x\ny\nbob\n")
    text = (
        "default_group: a\ngroups:\n"
        "  a: {members_file: a.members}\n"
        "  b: {members_file: b.members}\n"
    )
    policy_path = _write(tmp_path / "limits.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_policy(policy_path)
    assert f"{second}:3: groups.b.members_file: user 'bob'" in err.value.message
    ruled = _write(tmp_path / "ruled.yaml", text + "membership_precedence: [b]\n")
    assert load_policy(ruled).resolve("bob").group == "b"
    pinned = _write(tmp_path / "pinned.yaml", text + "users:\n  bob: {group: a}\n")
    assert load_policy(pinned).resolve("bob").group == "a"


def test_inline_members_beat_a_members_file_with_a_warning(tmp_path: Path) -> None:
    _write(tmp_path / "s.members", "bob\n")
    policy_path = _write(
        tmp_path / "limits.yaml",
        "default_group: s\ngroups:\n  s:\n    members_file: s.members\n  r:\n    members: [bob]\n",
    )
    policy_file = load_policy(policy_path)
    assert policy_file.resolve("bob").group == "r"
    assert any("'bob'" in w and "r applies" in w for w in policy_file.warnings)


def test_inline_conflict_settled_by_precedence_or_user_entry() -> None:
    base = "default_group: a\ngroups:\n  a: {members: [bob]}\n  b: {members: [bob]}\n"
    assert (
        parse_policy(base + "membership_precedence: [b, a]\n", path=FILE).resolve("bob").group
        == "b"
    )
    assert parse_policy(base + "users:\n  bob: {group: a}\n", path=FILE).resolve("bob").group == "a"


# ----------------------------------------------------------------------------- missing file


def test_missing_policy_file_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load_policy(missing, referenced_by="resource_limits in /etc/ds01/ds01.yaml:7")
    assert str(missing) in err.value.message
    assert "resource_limits in /etc/ds01/ds01.yaml:7" in err.value.message


def test_builtin_policy_when_allowed(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    policy_file = load_policy(missing, missing_ok=True)
    assert policy_file.path is None and "built-in" in policy_file.warnings[0]
    assert load_policy(None).resolve("a").sources["memory"] == "builtin"
    assert str(DEFAULT_POLICY_PATH) == "/etc/ds01/resource-limits.yaml"


def test_a_directory_is_not_a_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        load_policy(tmp_path)


# ----------------------------------------------------------------------------- yaml_source


def test_line_map_covers_keys_and_items() -> None:
    text = "a:\n  b: 1\n  c:\n    - x\n    - y: 2\nd: 3\n"
    data, lines = parse_yaml_with_lines(text, filename="t.yaml")
    assert data == {"a": {"b": 1, "c": ["x", {"y": 2}]}, "d": 3}
    assert lines[("a",)] == 1 and lines[("a", "b")] == 2 and lines[("a", "c")] == 3
    assert lines[("a", "c", 0)] == 4 and lines[("a", "c", 1)] == 5
    assert lines[("a", "c", 1, "y")] == 5 and lines[("d",)] == 6
    assert line_for(lines, ("a", "c", 1, "missing")) == 5
    assert line_for(lines, ("zzz",)) == 1
    assert dotted(("a", "c", 1, "y")) == "a.c[1].y"


def test_anchors_and_merge_keys_still_locate() -> None:
    text = "base: &b\n  memory: 1g\ngroups:\n  x:\n    <<: *b\n    cpus: 2\n"
    data, lines = parse_yaml_with_lines(text, filename="t.yaml")
    assert data["groups"]["x"] == {"memory": "1g", "cpus": 2}
    assert lines[("groups", "x", "cpus")] == 6
    assert line_for(lines, ("groups", "x", "memory")) == 4


class _Tiny(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    port: int = 80


class _TinyDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = 80


def test_validate_located_for_any_model(tmp_path: Path) -> None:
    path = _write(tmp_path / "ds01.yaml", "name: x\nprot: 8080\n")
    data, lines = load_yaml_with_lines(path)
    with pytest.raises(ConfigError) as err:
        validate_located(_Tiny, data, path=path, line_map=lines)
    assert f"{path}:2: prot: unknown key (did you mean 'port'?)" in err.value.message
    missing = _write(tmp_path / "m.yaml", "port: x\n")
    data, lines = load_yaml_with_lines(missing)
    with pytest.raises(ConfigError) as err:
        validate_located(_Tiny, data, path=missing, line_map=lines)
    assert f"{missing}:1: name: required key is missing" in err.value.message
    assert f"{missing}:1: port: " in err.value.message and "(got 'x')" in err.value.message
    assert validate_located(_Tiny, {"name": "ok"}, path=path, line_map={}).port == 80


def test_load_model_for_any_config(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.yaml", "# nothing set yet\n")
    assert load_model(empty, _TinyDefaults, what="DS01 configuration").port == 80
    bad = _write(tmp_path / "bad.yaml", "port: 8080\nname: x\nextra: 1\n")
    with pytest.raises(ConfigError) as err:
        load_model(bad, _Tiny, what="DS01 configuration")
    assert f"{bad}:3: extra: unknown key" in err.value.message
    with pytest.raises(ConfigError, match=r"The DS01 configuration .* does not exist \(set by"):
        load_model(tmp_path / "none.yaml", _Tiny, what="DS01 configuration", referenced_by="X")


def test_hyphenated_group_names_are_fine() -> None:
    text = (
        "default_group: ds01t-students\ngroups:\n  ds01t-students: {unix_group: ds01t-students}\n"
    )
    resolved = parse_policy(text, path=FILE).resolve("alice", ["ds01t-students"])
    assert resolved.group == "ds01t-students"
    assert resolved.cgroup_parent("systemd").startswith("ds01-ds01t_students.")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_yaml_with_lines(path)
