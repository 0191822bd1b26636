"""Options several commands share, declared once so they read and behave the same."""

from __future__ import annotations

import typer

__all__ = [
    "APT_OPTION",
    "ARCH_OPTION",
    "CPU_ONLY_OPTION",
    "GPUS_OPTION",
    "GPU_PROFILE_OPTION",
    "KEEP_RUNNING_OPTION",
    "PIP_OPTION",
    "WAIT_OPTION",
]

ARCH_OPTION = typer.Option(None, "--arch", help="Catalog architecture (default: from GPU).")
GPUS_OPTION = typer.Option(None, "--gpus", min=1, help="Number of whole devices.")
GPU_PROFILE_OPTION = typer.Option(None, "--gpu-profile", help="A MIG slice, e.g. 3g.20gb.")
CPU_ONLY_OPTION = typer.Option(False, "--cpu-only", help="No GPU.")
WAIT_OPTION = typer.Option(False, "--wait", help="Queue the request if no GPU is free.")
KEEP_RUNNING_OPTION = typer.Option(
    False, "--keep-running", help="Keep the container running after the shell exits."
)
PIP_OPTION = typer.Option(None, "--pip", help='Your pip packages: "pkg pkg>=1.2 ...".')
APT_OPTION = typer.Option(None, "--apt", help='Your Debian packages: "pkg ...".')
