"""Phases and explanations for the wizards and orchestrators (``--guided``).

Every wizard and orchestrator runs in numbered phases ("(1/3) Image"). A :class:`Guide`
prints each phase header as the phase starts; with ``--guided`` it also explains what is
about to happen (what an image is, why there are limits, what happens to the GPU), from
:mod:`ds01.cli.help_text`. A guide only prints: it never asks anything, so ``--guided``
works the same with or without a terminal (the existing DS01 needed one).

Services receive the guide as their *narrator* (any object with ``phase`` and ``note``),
so they say where they are without knowing about terminals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Guide", "choose", "need"]


class _Values(dict[str, str]):
    """Placeholders a text names but the guide does not know stay as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Guide:
    """Prints phase headers, and with ``guided`` an explanation for each phase.

    ``values`` fill the placeholders of the explanations (``{name}``, ``{workspace}``).
    ``quiet`` silences everything (``--json`` output must stay parseable).
    """

    def __init__(
        self,
        *,
        guided: bool = False,
        quiet: bool = False,
        values: Mapping[str, str] | None = None,
        console: Console | None = None,
        before_print: Callable[[], None] | None = None,
    ) -> None:
        self.guided = guided
        self.quiet = quiet
        self.values = _Values(values or {})
        self._console = console
        #: Called before anything is printed: closes a live progress display first.
        self.before_print = before_print
        self._explained: set[str] = set()

    @property
    def console(self) -> Console:
        if self._console is None:
            from ds01.cli.output import console

            self._console = console()
        return self._console

    def _print(self, text: str, style: str | None = None) -> None:
        if self.quiet:
            return
        if self.before_print is not None:
            self.before_print()
        from rich.markup import escape

        body = escape(text)
        self.console.print(f"[{style}]{body}[/{style}]" if style else body, soft_wrap=False)

    def phase(self, number: int, total: int, title: str, topic: str | None = None) -> None:
        """Start phase ``number`` of ``total``; explain ``topic`` when guided."""
        if self.quiet:
            return
        if self.before_print is not None:
            self.before_print()
        from rich.markup import escape

        self.console.print(f"\n[bold cyan]({number}/{total})[/bold cyan] [bold]{escape(title)}[/]")
        if topic:
            self.explain(topic)

    def explain(self, topic: str) -> None:
        """The explanation of ``topic`` (guided mode only; each topic once per run)."""
        if not self.guided or self.quiet or topic in self._explained:
            return
        from ds01.cli.help_text import TOPICS

        text = TOPICS.get(topic)
        if text is None:
            return
        self._explained.add(topic)
        self._print(text.format_map(self.values), "italic")

    def note(self, text: str) -> None:
        """A line of progress inside a phase."""
        self._print(f"  {text}")

    def ok(self, text: str) -> None:
        self._print(f"  ✓ {text}", "green")

    def warn(self, text: str) -> None:
        self._print(f"  ! {text}", "yellow")


def choose(title: str, options: Sequence[tuple[str, str]], *, default: str | None = None) -> str:
    """Pick one option's key by number or key (case-insensitive), with its description
    shown. Terminal only: callers check :func:`ds01.cli.common.interactive` first."""
    from rich.markup import escape

    from ds01.cli.output import console
    from ds01.cli.prompts import ask

    out = console()
    out.print(f"[bold]{escape(title)}[/bold]")
    width = max((len(key) for key, _ in options), default=0)
    for i, (key, description) in enumerate(options, 1):
        out.print(f"  {i}) {escape(key.ljust(width))}  {escape(description)}")
    keys = {key.lower(): key for key, _ in options}
    while True:
        answer = ask("Number or name", default=default).strip()
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            return options[int(answer) - 1][0]
        if answer.lower() in keys:
            return keys[answer.lower()]
        out.print(f"[red]Please enter a number between 1 and {len(options)}, or a name.[/red]")


def need(value: str | None, name: str, choices: Callable[[], list[str]]) -> str:
    """A required argument: on a terminal a picker over ``choices()`` (computed only
    then: listing may need Docker), without one exit 2 naming the argument."""
    from ds01.cli.common import require

    return require(value, name, choices=choices)
