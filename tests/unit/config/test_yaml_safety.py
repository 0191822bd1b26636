"""YAML alias bombs, recursive aliases and deep nesting (issue 10, finding 8).

Every YAML file DS01 reads goes through :func:`ds01.config.yaml_source.parse_yaml_with_lines`.
A bomb must be refused from the event stream: the node tree is never composed and no
Python value is built, so refusing it costs what reading its text costs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.config import yaml_source
from ds01.config.limits import load_policy, parse_policy
from ds01.config.loader import load_settings
from ds01.config.trust import TrustContext
from ds01.config.yaml_guard import MAX_ALIAS_EXPANSION, MAX_DEPTH, check_aliases
from ds01.config.yaml_source import parse_yaml_with_lines
from ds01.errors import ConfigError

ROOT = TrustContext(caller_uid=0, system_install=None)


def bomb(levels: int = 9, width: int = 9, top: str = "") -> str:
    """The classic "billion laughs": each level repeats the previous one ``width`` times."""
    lines = [top] if top else []
    lines.append("l0: &l0 [" + ", ".join(['"lol"'] * width) + "]")
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


class _NeverCompose(yaml_source._Loader):  # type: ignore[misc,valid-type]
    def get_single_node(self) -> object:
        raise AssertionError("the bomb reached the composer")


@pytest.fixture
def never_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml_source, "_Loader", _NeverCompose)


def test_a_nine_level_bomb_is_refused_before_anything_is_built(never_compose: None) -> None:
    with pytest.raises(ConfigError) as err:
        parse_yaml_with_lines(bomb(), filename="bomb.yaml")
    assert err.value.exit_code == 2
    message = err.value.message
    # Refused at the alias that crosses the bound, with its file, line and key: levels
    # 1-3 repeat 90 + 819 + 7,380 nodes, level 4's first item 7,381 more.
    assert message.startswith("bomb.yaml:5: l4[0]: alias *l3 repeats 7,381 nodes")
    assert f"more than {MAX_ALIAS_EXPANSION:,}" in message
    assert err.value.hint and "aliases" in err.value.hint
    assert err.value.details["problems"][0]["line"] == 5


def test_a_merge_key_bomb_is_refused(never_compose: None) -> None:
    text = "a0: &a0 {x: 1, y: 2, z: 3}\n"
    for level in range(1, 12):
        text += f"a{level}: &a{level} {{<<: [*a{level - 1}, *a{level - 1}], k{level}: 1}}\n"
    with pytest.raises(ConfigError) as err:
        parse_yaml_with_lines(text, filename="merge.yaml")
    assert "an alias bomb?" in err.value.message


def test_a_recursive_alias_is_refused(never_compose: None) -> None:
    with pytest.raises(ConfigError) as err:
        parse_yaml_with_lines("groups:\n  x: &x\n    - *x\n", filename="r.yaml")
    assert "r.yaml:3: groups.x[0]: alias *x refers to a node that contains it" in (
        err.value.message
    )


def test_modest_aliases_and_merge_keys_still_work() -> None:
    text = (
        "base: &base {memory: 16g, max_cpus: 4}\n"
        "groups:\n"
        "  a: {<<: *base, priority: 1}\n"
        "  b: {<<: *base, priority: 2}\n"
        "  c: &members [x, y]\n"
        "  d: *members\n"
    )
    data, lines = parse_yaml_with_lines(text, filename="ok.yaml")
    assert data["groups"]["b"] == {"memory": "16g", "max_cpus": 4, "priority": 2}
    assert data["groups"]["d"] == ["x", "y"]
    assert lines[("groups", "b", "priority")] == 4


def test_the_bound_counts_repeated_nodes_not_aliases() -> None:
    one_block = "b: &b [" + ", ".join(["1"] * 99) + "]\n"  # 100 nodes
    just_below = one_block + "u: [" + ", ".join(["*b"] * (MAX_ALIAS_EXPANSION // 100)) + "]\n"
    assert check_aliases(just_below) is None
    over = one_block + "u: [" + ", ".join(["*b"] * (MAX_ALIAS_EXPANSION // 100 + 1)) + "]\n"
    finding = check_aliases(over)
    assert finding is not None and finding.key == f"u[{MAX_ALIAS_EXPANSION // 100}]"
    assert finding.line == 2


def test_files_without_aliases_skip_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    from ds01.config import yaml_guard

    monkeypatch.setattr(yaml_guard, "_scan", lambda _loader: pytest.fail("scanned"))
    assert check_aliases("a: [1, 2]\nb: {c: 'x & y'}\n") is None


def test_deep_nesting_is_a_located_error_not_a_traceback() -> None:
    text = "[" * 999 + "]" * 999  # libyaml's own limit is 1000
    with pytest.raises(ConfigError) as err:
        parse_yaml_with_lines(text, filename="deep.yaml")
    assert f"nested more than {MAX_DEPTH} levels deep" in err.value.message
    assert err.value.message.startswith("deep.yaml:1: [0][0]")
    nested = "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, MAX_DEPTH + 5))
    with pytest.raises(ConfigError) as err:
        parse_yaml_with_lines(nested, filename="block.yaml")
    assert "block.yaml:" in err.value.message and "levels deep" in err.value.message


def test_a_bomb_in_the_policy_file_exits_2(tmp_path: Path, never_compose: None) -> None:
    policy = tmp_path / "resource-limits.yaml"
    policy.write_text(bomb(top="defaults: {max_cpus: 2}"))
    with pytest.raises(ConfigError) as err:
        load_policy(policy)
    assert str(policy) in err.value.message and "alias bomb" in err.value.message
    with pytest.raises(ConfigError, match=r"\(an alias bomb\?\)$") as err:
        parse_policy(bomb(), path=policy)
    assert err.value.message.startswith(f"{policy}:")


def test_a_bomb_in_ds01_yaml_exits_2(tmp_path: Path, never_compose: None) -> None:
    config = tmp_path / "ds01.yaml"
    config.write_text(
        "container:\n  allowed_mount_roots: &r [" + ", ".join(['"~"'] * 9) + "]\n" + bomb()
    )
    with pytest.raises(ConfigError) as err:
        load_settings(config, trust=ROOT)
    assert err.value.exit_code == 2 and str(config) in err.value.message
