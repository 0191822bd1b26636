"""Asking a person at a terminal: pickers and questions. Never used without a terminal."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ask", "confirm", "pick"]


def pick(name: str, choices: Sequence[str], *, default: str | None = None) -> str:
    """Choose one of ``choices`` by number or name; free text when there are none."""
    from rich.prompt import Prompt

    from ds01.cli.output import console

    out = console()
    if not choices:
        return Prompt.ask(f"{name}", console=out, default=default) or ""
    out.print(f"[bold]{name}[/bold]:")
    for i, choice in enumerate(choices, 1):
        out.print(f"  {i}) {choice}")
    while True:
        answer = Prompt.ask("Number or name", console=out, default=default)
        if answer is None:
            continue
        answer = answer.strip()
        if answer.isdigit() and 1 <= int(answer) <= len(choices):
            return choices[int(answer) - 1]
        if answer in choices:
            return answer
        out.print(f"[red]Please enter a number between 1 and {len(choices)}, or a name.[/red]")


def ask(question: str, *, default: str | None = None) -> str:
    from rich.prompt import Prompt

    from ds01.cli.output import console

    return Prompt.ask(question, console=console(), default=default) or ""


def confirm(question: str, *, default: bool = True) -> bool:
    from rich.prompt import Confirm

    from ds01.cli.output import console

    return bool(Confirm.ask(question, console=console(), default=default))
