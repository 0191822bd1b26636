"""``ds01 image ...``: build, list, update and delete your custom images."""

from __future__ import annotations

import typer

app = typer.Typer(help="Your custom images, built on AIME framework bases.", no_args_is_help=True)
