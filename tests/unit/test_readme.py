"""The README stays true: every command, configuration key, exit code and --json key."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel
from typer.core import TyperGroup

from ds01.cli.main import build_app
from ds01.config.settings import Settings
from ds01.domain.containers import ContainerInfo, ContainerState
from ds01.errors import UsageError
from ds01.serialize import to_json
from ds01.services.container.operations import ContainerView, StatsView

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_keys(annotation, f"{prefix}{name}."))
        else:
            out.append(f"{prefix}{name}")
    return out


@pytest.mark.parametrize("key", _keys(Settings))
def test_every_configuration_key_is_documented(key: str) -> None:
    assert f"`{key}`" in README or f"`{key}`," in README, key


def _commands(group: TyperGroup, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        out.append(path)
        if isinstance(cmd, TyperGroup):
            out.extend(_commands(cmd, path + " "))
    return out


def _root() -> TyperGroup:
    root = typer.main.get_command(build_app())
    if not isinstance(root, TyperGroup):
        raise TypeError(f"ds01's application is a {type(root).__name__}, not a command group")
    return root


COMMANDS = _commands(_root())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_documented(command: str) -> None:
    # Hyphenated aliases are documented by name too (e.g. `container-create`).
    assert re.search(rf"`{re.escape(command)}[ `\]]", README), command


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4])
def test_every_exit_code_is_documented(code: int) -> None:
    assert re.search(rf"^\| {code} \|", README, re.MULTILINE)


def _documented_keys(command: str) -> str:
    row = re.search(rf"^\| `{re.escape(command)}`[^|]*\| (.*) \|$", README, re.MULTILINE)
    assert row, f"no JSON row for {command}"
    return row.group(1)


def test_json_keys_of_container_list_and_stats_are_documented() -> None:
    info = ContainerInfo("id", "x._.1", "img", ContainerState.RUNNING, "Up", {}, datetime.now(UTC))
    for command, keys in (
        ("container list", to_json(ContainerView.of(info))),
        ("container stats", to_json(StatsView("x", "x._.1", 1.0, 1, 2, 3, ()))),
    ):
        row = _documented_keys(command)
        for key in keys:
            assert f"`{key}`" in row, (command, key)


def test_error_json_keys_are_documented() -> None:
    error = UsageError("m", hint="h", details={"a": 1}).to_dict()
    for key in error:
        assert key in README
