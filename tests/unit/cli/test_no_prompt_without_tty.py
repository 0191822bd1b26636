"""Without a terminal no command ever asks anything: a missing argument exits 2 naming it.

Every command of the real application that takes an argument is run without it, in
process, with stdin that is not a terminal and every way of asking (DS01's prompts,
rich's, ``input``) replaced by a trap. The commands are found by walking the command tree,
so a command added later is covered without touching this file. Docker is pointed at a
socket that does not exist: a missing argument must be reported before anything needs
the engine.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

import ds01
from ds01.cli.main import build_app, main
from tests.unit.cli.test_cli_help import ANSI, COMMANDS

#: Arguments that may be left out by design (the command then acts on the caller).
OPTIONAL_BY_DESIGN = {
    ("limits",): "user",
    ("check-limits",): "user",
    ("admin", "apply-limits"): "users",
}


#: Commands of ``ds01.cli.container`` list the user's containers for the picker before
#: they know whether there is a terminal, so without Docker they exit 1 ("cannot reach
#: the Docker engine") instead of 2 naming NAME. They still never prompt. Fix there:
#: compute the choices only when ``interactive()`` (see ``ds01.cli.guided.need``).
class Prompted(BaseException):
    """Raised by every way of asking; a BaseException so nothing on the way catches it."""


def _trap(*_args: Any, **_kwargs: Any) -> Any:
    raise Prompted("a command asked for input without a terminal")


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import rich.prompt

    import ds01.cli.prompts

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    for name in ("pick", "ask", "confirm"):
        monkeypatch.setattr(ds01.cli.prompts, name, _trap)
    monkeypatch.setattr(rich.prompt.PromptBase, "ask", classmethod(_trap))
    monkeypatch.setattr("builtins.input", _trap)
    config = tmp_path / "ds01.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"workspace_root: {tmp_path / 'ws'}\n"
        f"catalog: {tmp_path / 'no-catalog.repo'}\n"
        "gpu: {inventory: none, runtime: none}\n"
    )
    monkeypatch.setenv("DS01_CONFIG", str(config))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


def _argument(command: Any) -> Any | None:
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    return arguments[0] if arguments else None


TAKES_ARGUMENT = [path for path, cmd in COMMANDS.items() if path and _argument(cmd) is not None]


def _case(path: tuple[str, ...]) -> Any:
    return pytest.param(path, id=" ".join(path))


def test_the_tree_has_the_commands_that_take_names() -> None:
    for path in [("container", "deploy"), ("container", "retire"), ("project", "init")]:
        assert path in TAKES_ARGUMENT


@pytest.mark.parametrize("path", [_case(p) for p in TAKES_ARGUMENT])
def test_missing_argument_exits_2_naming_it(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    argument = _argument(COMMANDS[path])
    assert argument is not None, path
    code = main(list(path))  # a prompt would raise Prompted through main()
    err = " ".join(ANSI.sub("", capsys.readouterr().err).split())
    if OPTIONAL_BY_DESIGN.get(path) == argument.name:
        # It ran for the caller without asking, and reached the engine, which is missing
        # here: exit 1 saying so (a crash or a usage error would say something else).
        assert code == 1, err
        assert err.startswith("error: Cannot reach the Docker engine:"), err
        assert "Missing argument" not in err
        return
    assert code == 2, err
    # DS01's own message says NAME; click's (for required arguments) says 'name', or the
    # argument's metavar when it has one ('ID' for entry_id).
    shown = {argument.name, argument.human_readable_name.strip("{}[]<>.")}
    wanted = "|".join(re.escape(name) for name in sorted(shown))
    assert re.search(rf"Missing argument '?({wanted})'?", err, re.IGNORECASE), err


@pytest.mark.parametrize(
    "argv",
    [
        ["container", "retire", "my-thesis"],
        ["container-retire", "my-thesis", "--save-packages"],
    ],
)
def test_retire_without_a_terminal_needs_yes(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--yes" in err


def test_run_needs_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["container", "run", "my-thesis"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "needs a terminal" in err and "container exec my-thesis" in err


def test_user_setup_without_a_terminal_only_checks(capsys: pytest.CaptureFixture[str]) -> None:
    # As root: the checks run (Docker is unreachable here, which is a failed check: exit 1).
    code = main(["user-setup"])
    out = capsys.readouterr().out
    assert code == 1
    assert "Docker engine" in out and "not reachable" in out
    assert "SSH key" in out and "Workspace" in out


def test_user_setup_json_lists_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code = main(["user-setup", "--quick", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["ok"] is False
    keys = [c["key"] for c in data["checks"]]
    assert keys == ["docker", "limits", "gpus", "workspace", "ssh"]
    assert {c["status"] for c in data["checks"]} <= {"ok", "warn", "fail"}


def test_a_real_process_with_stdin_from_dev_null_exits_2() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(ds01.__file__).resolve().parents[1]),
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "NO_COLOR": "1",
    }
    for argv in (["container-deploy"], ["project", "launch"], ["project-init"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ds01.cli.main", *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Missing argument NAME" in proc.stderr


def test_the_application_builds_the_same_tree_twice() -> None:
    # Registration happens at import and in build_app: building again adds nothing twice.
    again = typer.main.get_command(build_app())
    assert isinstance(again, TyperGroup), type(again)
    assert sorted(again.commands) == sorted(COMMANDS[()].commands)
