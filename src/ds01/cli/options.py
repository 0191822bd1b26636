"""Options several commands share, declared once so they read and behave the same.

Two rules every command follows, because hostile or mistyped values must be refused with
exit 2 before they reach a service (finding 10 of issue 10):

- An option given with an empty value (``--image ""``, ``-w ""``) is refused, never read
  as "not given": the default it would silently fall back to is not what was typed.
  :func:`not_empty` is the callback that does it; :func:`text_option` declares such an
  option.
- Whole numbers have bounds (``min``/``max``), so a value such as
  ``99999999999999999999`` is a usage error, not an overflow in SQLite or the engine.
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = [
    "APT_OPTION",
    "ARCH_OPTION",
    "CPU_ONLY_OPTION",
    "DATA_OPTION",
    "GPUS_OPTION",
    "GPU_PROFILE_OPTION",
    "IMAGE_OPTION",
    "KEEP_RUNNING_OPTION",
    "MAX_EVENTS",
    "MAX_GPUS",
    "MAX_ID",
    "MAX_STOP_SECONDS",
    "MODELS_OPTION",
    "PIP_OPTION",
    "WAIT_OPTION",
    "WORKSPACE_OPTION",
    "not_empty",
    "text_option",
]

#: More devices than any server holds; bounds ``--gpus`` so it stays a small number.
MAX_GPUS = 1024
#: SQLite's (and Docker's) largest integer: ids and counts beyond it cannot exist.
MAX_ID = 2**63 - 1
#: ``events --limit``: more rows than one screen or script can use at once.
MAX_EVENTS = 1_000_000
#: ``container stop -t``: one day of grace is already more than any shutdown needs.
MAX_STOP_SECONDS = 86_400


def not_empty(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """Refuse an option or argument given as an empty (or blank) string (exit 2).

    ``None`` (not given) passes: only a value that was typed and is empty is refused, so
    ``--image ""`` cannot quietly mean "the default image".
    """
    values = value if isinstance(value, list | tuple) else [value]
    for item in values:
        if isinstance(item, str) and not item.strip():
            raise typer.BadParameter(
                "is empty. Give a value, or leave the option out to get the default."
            )
    return value


def text_option(*names: str, help: str, metavar: str | None = None) -> Any:
    """A string option (default: not given) that refuses an empty value."""
    return typer.Option(None, *names, help=help, metavar=metavar, callback=not_empty)


ARCH_OPTION = text_option("--arch", help="Catalog architecture (default: from GPU).")
GPUS_OPTION = typer.Option(None, "--gpus", min=1, max=MAX_GPUS, help="Number of whole devices.")
GPU_PROFILE_OPTION = text_option("--gpu-profile", help="A MIG slice, e.g. 3g.20gb.")
CPU_ONLY_OPTION = typer.Option(False, "--cpu-only", help="No GPU.")
IMAGE_OPTION = text_option("--image", help="Any local or pullable image instead.")
WORKSPACE_OPTION = text_option(
    "-w",
    "--workspace",
    help="Host directory mounted at /workspace (default: ~/workspace/NAME, created).",
)
DATA_OPTION = text_option("-d", "--data", help="Host directory mounted at /data.")
MODELS_OPTION = text_option("-m", "--models", help="Host directory mounted at /models.")
WAIT_OPTION = typer.Option(False, "--wait", help="Queue the request if no GPU is free.")
KEEP_RUNNING_OPTION = typer.Option(
    False, "--keep-running", help="Keep the container running after the shell exits."
)
PIP_OPTION = typer.Option(
    None, "--pip", help='Your pip packages: "pkg pkg>=1.2 ...".', callback=not_empty
)
APT_OPTION = typer.Option(
    None, "--apt", help='Your Debian packages: "pkg ...".', callback=not_empty
)
