"""Every command's ``--help``, the two spellings of each command, completion and colour.

The commands are found by walking the click command tree of the real application, so a
command added later is covered without touching this file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

import ds01
from ds01.cli.main import build_app, main

ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: SGR parameters that set a colour (foreground, background, 256/true colour, bright).
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")

#: The spellings users of the existing DS01 type (issue 6), and what each stands for.
ALIASES = {
    "image-create": ("image", "create"),
    "image-list": ("image", "list"),
    "image-update": ("image", "update"),
    "image-delete": ("image", "delete"),
    "container-create": ("container", "create"),
    "container-deploy": ("container", "deploy"),
    "container-run": ("container", "run"),
    "container-open": ("container", "open"),
    "container-start": ("container", "start"),
    "container-stop": ("container", "stop"),
    "container-retire": ("container", "retire"),
    "container-remove": ("container", "remove"),
    "container-list": ("container", "list"),
    "container-stats": ("container", "stats"),
    "project-init": ("project", "init"),
    "project-launch": ("project", "launch"),
    "user-setup": ("user", "setup"),
    "check-limits": ("limits",),
}


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _walk(sub, (*path, name))


ROOT = typer.main.get_command(build_app())
COMMANDS = dict(_walk(ROOT))


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


def _first_line(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "ds01")
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    out = " ".join(ANSI.sub("", capsys.readouterr().out).split())
    assert f"Usage: ds01 {' '.join(path)}".rstrip() in out
    command = COMMANDS[path]
    summary = _first_line(command.help)
    assert summary, f"'ds01 {' '.join(path)}' has no help text"
    assert summary[:60] in out
    for param in command.params:
        if param.param_type_name == "option" and not param.hidden:
            assert param.help, f"option {param.opts} of 'ds01 {' '.join(path)}' has no help"
            assert param.opts[0] in out


def test_short_help_flag_works_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for path in COMMANDS:
        assert main([*path, "-h"]) == 0, path
    assert "Usage:" in capsys.readouterr().out


def _implementation(command: Any) -> Any:
    return getattr(command.callback, "__wrapped__", command.callback)


@pytest.mark.parametrize(("alias", "target"), ALIASES.items(), ids=list(ALIASES))
def test_both_spellings_run_one_implementation(alias: str, target: tuple[str, ...]) -> None:
    assert (alias,) in COMMANDS, f"the alias {alias} is missing"
    assert target in COMMANDS, f"'ds01 {' '.join(target)}' is missing"
    spelled, canonical = COMMANDS[(alias,)], COMMANDS[target]
    # typer wraps each registration of a function; both wrap the same one.
    assert _implementation(spelled) is _implementation(canonical)
    assert [p.name for p in spelled.params] == [p.name for p in canonical.params]


def test_list_stats_and_limits_commands_offer_json() -> None:
    for path in [("container", "list"), ("container", "stats"), ("image", "list"), ("limits",)]:
        assert "--json" in {o for p in COMMANDS[path].params for o in p.opts}, path


def test_wizards_and_orchestrators_offer_guided_mode() -> None:
    for path in [
        ("user", "setup"),
        ("project", "init"),
        ("project", "launch"),
        ("container", "deploy"),
        ("container", "retire"),
    ]:
        assert "--guided" in {o for p in COMMANDS[path].params for o in p.opts}, path


def test_shell_completion_is_offered(capsys: pytest.CaptureFixture[str]) -> None:
    options = {o for p in ROOT.params for o in p.opts}
    assert {"--install-completion", "--show-completion"} <= options
    assert main(["--help"]) == 0
    assert "--install-completion" in capsys.readouterr().out


#: The environment of a ``ds01`` run in a subprocess: this source tree, nothing else.
BASE_ENV = {
    "PATH": "/usr/bin:/bin",
    "COLUMNS": "120",
    "PYTHONPATH": str(Path(ds01.__file__).resolve().parents[1]),
}


def _run_cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ds01.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        env=BASE_ENV,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_no_colour_when_output_is_not_a_terminal() -> None:
    out = _run_cli("container", "--help")
    assert "Usage:" in out
    assert not ANSI.search(out)


def test_colour_on_a_terminal_but_never_with_no_color() -> None:
    pexpect = pytest.importorskip("pexpect")
    command = f"{sys.executable} -m ds01.cli.main container --help"
    env = {**BASE_ENV, "TERM": "xterm-256color"}
    coloured = pexpect.run(command, env=env, encoding="utf-8", timeout=60)
    assert COLOUR.search(coloured), "expected colour on a terminal (rich's default)"
    plain = pexpect.run(command, env={**env, "NO_COLOR": "1"}, encoding="utf-8", timeout=60)
    assert "Usage:" in ANSI.sub("", plain)
    assert not COLOUR.search(plain)
