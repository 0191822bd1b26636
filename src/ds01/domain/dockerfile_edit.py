"""Editing Dockerfiles: the custom tier of one DS01 wrote, and a user's own Dockerfile.

Pure text in, text out, built on the sections :mod:`ds01.domain.dockerfile` renders.
``image update`` reads the packages between the custom-tier markers
(:func:`read_custom_tier`) and rewrites only those lines (:func:`replace_custom_tier`), so
every layer above them stays cached. ``image create --dockerfile`` appends DS01's block to
a user's own file (:func:`wrap_user_dockerfile`), between markers of its own, so wrapping
again replaces the block instead of adding a second one. :func:`dockerfile_base_image` and
:func:`images_referenced` read which images a Dockerfile builds on.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from ds01.domain.dockerfile import (
    _APT_HEAD,
    _APT_TAIL,
    _BUILD_SETTINGS,
    _FINALE,
    _PIP_ENVIRONMENT,
    _PIP_HEAD,
    _RUNTIME_ENV,
    CUSTOM_BEGIN,
    CUSTOM_END,
    ImageSpec,
    _ca_section,
    _custom_inner,
    _custom_section,
    _join,
    _owner_labels,
    _package_tiers,
    _user_section,
)
from ds01.domain.dockerfile_refs import read_dockerfile
from ds01.domain.labels import LIST_SEPARATOR, L
from ds01.domain.packages import CustomTier, parse_apt_specs, parse_pip_specs
from ds01.errors import ErrorCode, UsageError

__all__ = [
    "USER_BLOCK_BEGIN",
    "USER_BLOCK_END",
    "dockerfile_base_image",
    "images_referenced",
    "read_custom_tier",
    "replace_custom_tier",
    "wrap_user_dockerfile",
]

USER_BLOCK_BEGIN = "# >>> ds01 user setup (added by ds01 after your Dockerfile) >>>"
USER_BLOCK_END = "# <<< ds01 user setup <<<"

# ------------------------------------------------------------------ custom-tier editing

_MARKER_HINT = (
    "Put the two lines '{begin}' and '{end}', each on its own line and once, where your own "
    "packages should be installed (after the other RUN lines), then run the command again. "
    "Or write a fresh Dockerfile with `ds01 image create NAME --no-build`."
)


def _marker_span(lines: Sequence[str], begin: str, end: str, what: str) -> tuple[int, int]:
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    hint = _MARKER_HINT.format(begin=begin, end=end)
    if not starts and not ends:
        raise UsageError(
            f"This Dockerfile has no {what} section.", hint=hint, code=ErrorCode.NO_MARKERS
        )
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0]:
        raise UsageError(
            f"The {what} markers are damaged: '{begin}' appears {len(starts)} time(s) and "
            f"'{end}' {len(ends)} time(s); each must appear once, in that order.",
            hint=hint,
            code=ErrorCode.BAD_MARKERS,
        )
    return starts[0], ends[0]


def _instructions(lines: Sequence[str], first_number: int) -> list[tuple[int, str]]:
    """Join continuation lines as Docker's parser does (backslash and newline removed, nothing
    added); skip comment and blank lines, inside continuations too."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for offset, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not pending:
            start = first_number + offset
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        out.append((start, "".join([*pending, line])))
        pending = []
    if pending:
        out.append((start, "".join(pending)))
    return out


def _parse_section(lines: Sequence[str], first_number: int) -> tuple[CustomTier, list[str] | None]:
    pip: list[str] = []
    apt: list[str] = []
    tiers: list[str] | None = None
    for number, text in _instructions(lines, first_number):
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise _unreadable(number, text) from exc
        if not words:
            raise _unreadable(number, text)
        keyword, args = words[0].upper(), tuple(words[1:])
        n_head, n_tail = len(_APT_HEAD), len(_APT_TAIL)
        if keyword == "RUN" and args[: len(_PIP_HEAD)] == _PIP_HEAD:
            pip += args[len(_PIP_HEAD) :]
        elif keyword == "RUN" and args[:n_head] == _APT_HEAD and args[-n_tail:] == _APT_TAIL:
            apt += args[n_head:-n_tail]
        elif keyword == "LABEL" and len(args) == 1 and args[0].startswith(f"{L.IMAGE_TIERS}="):
            value = args[0].partition("=")[2].replace(",", LIST_SEPARATOR)
            tiers = [t for t in value.split(LIST_SEPARATOR) if t]
        else:
            raise _unreadable(number, text)
    source = "the Dockerfile's custom tier"
    return CustomTier(
        pip=parse_pip_specs(pip, source=source), apt=parse_apt_specs(apt, source=source)
    ), tiers


def _unreadable(number: int, text: str) -> UsageError:
    shown = text if len(text) <= 100 else text[:97] + "..."
    return UsageError(
        f"Line {number} of the Dockerfile, inside the ds01 custom tier, is not something "
        f"ds01 can edit: {shown!r}",
        hint="Between the custom-tier markers keep only comments and the 'RUN apt-get "
        "update && apt-get install -y --no-install-recommends ...' and 'RUN python3 -m pip "
        "install --no-cache-dir ...' lines; move anything else above or below the markers.",
        code=ErrorCode.CUSTOM_TIER_UNREADABLE,
    )


def read_custom_tier(text: str) -> CustomTier:
    """The packages of the custom tier of a Dockerfile DS01 wrote (and the user may have
    edited). Exits 2 if the markers are missing or damaged, or the section holds anything
    but DS01's apt/pip lines, or a package there is invalid."""
    lines = text.splitlines(keepends=True)
    begin, end = _marker_span(lines, CUSTOM_BEGIN, CUSTOM_END, "ds01 custom tier")
    custom, _ = _parse_section(lines[begin + 1 : end], begin + 2)
    return custom


def replace_custom_tier(text: str, custom: CustomTier) -> str:
    """``text`` with only the lines between the custom-tier markers replaced by ``custom``.

    Every byte outside the markers is kept, so every layer above the custom tier stays
    cached. The tiers label inside the section gains or loses ``custom``.
    """
    lines = text.splitlines(keepends=True)
    begin, end = _marker_span(lines, CUSTOM_BEGIN, CUSTOM_END, "ds01 custom tier")
    _, old_tiers = _parse_section(lines[begin + 1 : end], begin + 2)
    tiers = None
    if old_tiers is not None:
        tiers = [t for t in old_tiers if t != "custom"] + ([] if custom.empty else ["custom"])
    newline = "\r\n" if lines[begin].endswith("\r\n") else "\n"
    inner = [line + newline for line in _custom_inner(custom, tiers)]
    return "".join([*lines[: begin + 1], *inner, *lines[end:]])


# ------------------------------------------------------------------ a user's Dockerfile

_FROM = re.compile(r"\s*FROM\s+(.+)", re.IGNORECASE)
_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S*)\s*")


def _check_user_dockerfile(lines: Sequence[str]) -> None:
    meaningful = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not meaningful:
        raise UsageError(
            "The Dockerfile is empty.",
            hint="Give a Dockerfile with at least a FROM line.",
            code=ErrorCode.BAD_DOCKERFILE,
        )
    for line in lines:
        directive = _DIRECTIVE.fullmatch(line.strip())
        if directive is None:
            break
        if directive.group(1).lower() == "escape" and directive.group(2) != "\\":
            raise UsageError(
                "The Dockerfile changes the escape character; DS01 can't add its steps to it.",
                hint="Remove the '# escape=' line (Linux images use the default '\\').",
                code=ErrorCode.BAD_DOCKERFILE,
            )
    if not any(_FROM.match(line) for line in meaningful):
        raise UsageError(
            "The Dockerfile has no FROM line.",
            hint="Start it with 'FROM <image>'.",
            code=ErrorCode.BAD_DOCKERFILE,
        )


def dockerfile_base_image(text: str, build_args: Mapping[str, str] | None = None) -> str | None:
    """The image the final stage of a Dockerfile builds on, following stage names and
    resolving build arguments (:func:`~ds01.domain.dockerfile_refs.read_dockerfile`);
    ``None`` when it can't be told (the build refuses such a file)."""
    try:
        return read_dockerfile(text, build_args).final_base
    except UsageError:
        return None


def images_referenced(text: str, build_args: Mapping[str, str] | None = None) -> list[str]:
    """The images a Dockerfile's build reads files from (``FROM``, ``--from=``, a mount's
    ``from=``), build arguments resolved, in order, each once.

    Stage names and stage numbers are left out: those are not images the engine has under
    that name. What cannot be resolved as every builder would is refused (exit 2). Which of
    them a user may build on is for the caller to decide (the engine knows whose an image
    is; this text doesn't).
    """
    return read_dockerfile(text, build_args).refs()


def wrap_user_dockerfile(text: str, spec: ImageSpec) -> str:
    """A user's own Dockerfile (``--dockerfile``) followed by DS01's block: the same build
    settings, CA certificates, user setup, custom tier (unless the file already has one),
    environment and labels as a DS01-rendered image, appended after the final stage. The
    plan's other tiers are rendered too when not empty: pass ``system_tools=True`` to get
    sudo on a base that lacks it, ``jupyter=False, datascience=False`` for none of tier 2.
    The user's own ``WORKDIR`` and ``CMD`` stay in force.

    Refused (exit 2): an empty file, one with no ``FROM``, one that changes the escape
    character. Wrapping a file that already carries DS01's block replaces that block, so
    wrapping twice gives the same text as wrapping once.
    """
    lines = text.removeprefix("\ufeff").splitlines(keepends=True)
    _check_user_dockerfile(lines)
    if any(line.strip() in (USER_BLOCK_BEGIN, USER_BLOCK_END) for line in lines):
        begin, end = _marker_span(lines, USER_BLOCK_BEGIN, USER_BLOCK_END, "ds01 user setup")
        lines = lines[:begin] + lines[end + 1 :]
    has_custom = any(line.strip() in (CUSTOM_BEGIN, CUSTOM_END) for line in lines)
    if has_custom:
        _marker_span(lines, CUSTOM_BEGIN, CUSTOM_END, "ds01 custom tier")
    custom = ""
    if not has_custom:
        # "dockerfile" stands where "framework" does in a rendered image's tiers label.
        tiers = ["dockerfile", *spec.plan.tier_labels()[1:]]
        custom = _custom_section(spec.plan.custom, tiers)
    # The tiers label lives in the custom section, where `image update` keeps it current.
    block = [
        f"{USER_BLOCK_BEGIN}\n# DS01's steps run as root, whatever user your stage ended with.\n"
        "USER root",
        _BUILD_SETTINGS,
        _ca_section(spec.network),
        _PIP_ENVIRONMENT,
        *_package_tiers(spec.plan),
        _user_section(spec.user),
        custom,
        _RUNTIME_ENV,
        _owner_labels(spec, skip=(L.IMAGE_TIERS,)),
        f"{_FINALE}\nUSER {spec.user.uid}:{spec.user.gid}\n{USER_BLOCK_END}",
    ]
    return "".join(lines).rstrip("\r\n") + "\n\n" + _join(block)
