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

A refusal names each offending entry by where it came from (the flag, or the requirements
file and line number) and a short :func:`excerpt` of it, never the whole entry: a
requirements file may be one the user can read but should not paste into an error, the
event log or a ``--json`` object. Reasons and the list of offenders are bounded too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from packaging.utils import canonicalize_name

from ds01.domain.package_specs import (
    EXCERPT_CHARS,
    MAX_LISTED,
    AptSpec,
    PipSpec,
    apt_spec,
    collect_apt,
    collect_pip,
    collect_requirements,
    excerpt,
    hint_for,
    parse_apt_specs,
    parse_pip_specs,
    parse_requirements,
    pip_spec,
    plain_excerpt,
    refuse_entries,
    split_package_list,
)
from ds01.errors import ErrorCode, UsageError

__all__ = [
    "DATA_SCIENCE_PACKAGES",
    "EXCERPT_CHARS",
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
    "excerpt",
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


def parse_use_case(value: str) -> UseCase:
    """``--type`` value to :class:`UseCase`; anything else exits 2 listing the choices."""
    try:
        return UseCase(value.strip().lower())
    except ValueError:
        choices = ", ".join(u.value for u in UseCase)
        raise UsageError(
            f"Unknown --type {value!r}.", hint=f"Choose one of: {choices}.", code=ErrorCode.BAD_TYPE
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
        pip_problems: list[tuple[str, str]] = []
        apt_problems: list[tuple[str, str]] = []
        new_pip = collect_pip(pip, "--add-pip", pip_problems)
        new_apt = collect_apt(apt, "--add-apt", apt_problems)
        if pip_problems or apt_problems:
            refuse_entries(
                "Some packages can't be added",
                pip_problems + apt_problems,
                hint_for(pip=bool(pip_problems), apt=bool(apt_problems)),
            )
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
            shown = ", ".join(excerpt(n) for n in missing[:MAX_LISTED])
            left = len(missing) - MAX_LISTED
            raise UsageError(
                f"Not in this image's custom tier: {shown}"
                + (f" and {left} more" if left > 0 else ""),
                hint="--remove takes packages added with --pip/--apt/--add-pip/--add-apt. "
                "To drop a base or use-case package, create the image again without it.",
                code=ErrorCode.NOT_IN_CUSTOM_TIER,
            )
        return CustomTier(
            pip=tuple(s for s in self.pip if s.name not in pip_drop),
            apt=tuple(s for s in self.apt if s.name not in apt_drop),
        )


_Spec = TypeVar("_Spec", PipSpec, AptSpec)
#: Notes about left-out or overriding entries shown for one build: enough to explain,
#: bounded so that a pasted file cannot flood the terminal.
MAX_NOTES = 10


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

    def notes(self, limit: int = MAX_NOTES) -> list[str]:
        """What de-duplication did, for people: one note per package and tier, however
        often it was repeated (20,000 copies of a requirements line are one note, not
        20,000), at most ``limit`` notes and then one line counting the rest."""
        counts: dict[tuple[str, TierName, TierName], int] = {}
        for d in self.duplicates:
            key = (d.entry, d.tier, d.kept_in)
            counts[key] = counts.get(key, 0) + 1
        notes = []
        for (entry, tier, kept_in), n in counts.items():
            if tier == kept_in:
                notes.append(
                    f"{entry} is named {n + 1:,} times in the {tier.value} tier; installed once."
                )
            else:
                again = "" if n == 1 else f", named {n:,} times"
                notes.append(
                    f"{entry} ({tier.value} tier{again}) is installed by the {kept_in.value} "
                    "tier already; left out."
                )
        notes += [
            f"{o.entry} ({o.tier.value} tier) changes what the {o.earlier.value} tier installs."
            for o in self.overrides
        ]
        if len(notes) <= limit:
            return notes
        return [*notes[:limit], f"... and {len(notes) - limit} more such notes."]

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
                pair = f"{plain_excerpt(first.text)} and {plain_excerpt(spec.text)}"
                conflicts.append((pair, f"both in the {where} tier"))
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
                pair = f"{plain_excerpt(earlier_apt[1].text)} and {plain_excerpt(apt.text)}"
                conflicts.append((pair, "both in one tier"))
            else:
                overrides.append(Override(apt.text, tier.name, earlier_apt[0]))
                seen_apt[apt.name] = (tier.name, apt)
                kept_apt.append(apt)
        out.append(replace(tier, pip=tuple(kept_pip), apt=tuple(kept_apt)))
    if conflicts:
        refuse_entries(
            "Some packages are named twice with different versions",
            conflicts,
            "Name each package once per tier.",
        )
    return PackagePlan(tiers=tuple(out), duplicates=tuple(duplicates), overrides=tuple(overrides))


def _fixed(names: Iterable[str]) -> tuple[PipSpec, ...]:
    return tuple(pip_spec(n) for n in names)


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
            code=ErrorCode.CONFLICTING_FLAGS,
        )
    pip_problems: list[tuple[str, str]] = []
    apt_problems: list[tuple[str, str]] = []
    file_problems: list[tuple[str, str]] = []
    custom_pip = collect_pip(pip, "--pip", pip_problems)
    custom_apt = collect_apt(apt, "--apt", apt_problems)
    required: list[PipSpec] = []
    if requirements is not None:
        required = collect_requirements(requirements, requirements_name, file_problems)
    if pip_problems or apt_problems or file_problems:
        # The hint speaks only of the kinds refused: an --apt typo gets apt's advice.
        refuse_entries(
            "Some packages can't be used",
            pip_problems + apt_problems + file_problems,
            hint_for(
                pip=bool(pip_problems), apt=bool(apt_problems), requirements=bool(file_problems)
            ),
        )

    tiers: list[Tier] = []
    if system_tools:
        system_apt = tuple(apt_spec(n) for n in SYSTEM_APT_PACKAGES)
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
