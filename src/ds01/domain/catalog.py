"""AIME's framework catalog (``ml_images.repo``): parsing, lookup, and the fallback.

Each line of the file offers one image for one framework version on one or more GPU
architectures. Both of AIME's line formats are read, and may even be mixed in one file::

    Pytorch, 2.1.0-aime, [CUDA_ADA;CUDA_AMPERE], aimehub/pytorch-2.1.0-aime-cuda11.8   (v2)
    Pytorch, 1.7.0, CUDA_AMPERE, aimehub/pytorch-1.7.0-cuda                           (v1)

Whitespace around fields is ignored; blank lines and lines starting with ``#`` are
skipped (AIME itself has no comment syntax; we add one so admins can disable a line).
Anything else that does not parse is a :class:`ConfigError` naming the file and line:
silently skipping a line would make an image vanish from the catalog with no clue why.

Rules, and why:

- **Duplicates.** AIME returns the first match, so a second line for the same
  (framework, version, arch) can never be reached. We keep the first too, drop the arch
  from the later line (the whole line when nothing is left) and add a warning naming both
  lines; AIME's own v2 file has one (Tensorflow 1.15.4-nvidia on CUDA_AMPERE).
- **Framework names** match case-insensitively (``pytorch`` is ``Pytorch``); the file's
  spelling is what labels record. The aliases users type, ``torch`` (Pytorch) and ``tf``
  (Tensorflow), are accepted by every catalog unless it has a framework of that name.
  A framework name may not contain ``-``: the label ``<Framework>-<version>`` is split at
  its first ``-``.
- **Versions** match exactly: ``2.8.0`` and ``2.8.0-aime`` are different images.
- **Newest** (:func:`version_sort_key`): the highest numeric release wins (``2.10`` beats
  ``2.9``; trailing zeros do not count, so ``2.4`` equals ``2.4.0``); a pre-release
  (``1.14.0a-nvidia``) comes before its final release; versions that do not start with a
  number come last. At an equal release the *plain* version beats a suffixed variant
  (``2.8.0`` over ``2.8.0-aime``): the plain string is the upstream release as its project
  published it, the one a user means who names no version, while suffixes (``-aime``,
  ``-nvidia``, ``-amd``, ``-jlab``) mark special builds a user asks for by name. Among
  variants of the same release, the line nearer the top of the file wins (AIME lists
  what it prefers first).

When AIME's catalog is missing, :func:`fallback_catalog` offers the Docker Hub images of
the integration plan ("Change 1") on every CUDA architecture, with a warning.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import zip_longest
from typing import Literal

from ds01.domain.arch import CUDA_ARCHS, match_arch
from ds01.errors import ConfigError, ErrorCode, UsageError

__all__ = [
    "FALLBACK_IMAGES",
    "FALLBACK_SOURCE",
    "FRAMEWORK_ALIASES",
    "Catalog",
    "CatalogEntry",
    "fallback_catalog",
    "image_reference_problem",
    "parse_catalog",
    "render_catalog",
    "split_framework_label",
    "version_sort_key",
]

#: Short names users type, mapped (case-insensitively) to AIME's framework names.
FRAMEWORK_ALIASES: dict[str, str] = {"torch": "Pytorch", "tf": "Tensorflow"}

FALLBACK_SOURCE = "builtin Docker Hub fallback"
#: The plan's Docker Hub mapping: (framework, version, image).
FALLBACK_IMAGES: tuple[tuple[str, str, str], ...] = (
    ("Pytorch", "2.5.1", "pytorch/pytorch:2.5.1-cuda11.8-cudnn9-runtime"),
    ("Tensorflow", "2.14.0", "tensorflow/tensorflow:2.14.0-gpu"),
)

_FIELDS = ("framework", "version", "architectures", "image")
_FRAMEWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+]*")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_ARCH_TOKEN = re.compile(r"[A-Z][A-Z0-9_]*")

_LINE_HINT = (
    "Write each line as 'Framework, version, [ARCH1;ARCH2], image' (AIME v2) or "
    "'Framework, version, ARCH, image' (AIME v1), or comment it out with '#'."
)


# --- image references --------------------------------------------------------------------

# The grammar of Docker's reference package (distribution/reference), re-expressed here.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")
_MAX_NAME = 255


def image_reference_problem(reference: str) -> str | None:
    """Why Docker would reject ``reference`` as an image name, or ``None`` if it is valid.

    Follows Docker's reference grammar: ``[registry[:port]/]path[:tag][@digest]`` with a
    lower-case path, a tag of at most 128 characters and a name of at most 255.
    """
    if not reference:
        return "the image name is empty"
    if any(c.isspace() for c in reference):
        return f"the image name {reference!r} contains whitespace"
    name, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return f"the digest {digest!r} is not of the form 'algorithm:hex'"
    colon, slash = name.rfind(":"), name.rfind("/")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            return (
                f"the tag {tag!r} is not valid (letters, digits, '_', '.', '-'; "
                "not starting with '.' or '-'; at most 128 characters)"
            )
    if len(name) > _MAX_NAME:
        return f"the image name is {len(name)} characters long; at most {_MAX_NAME} are allowed"
    first, sep, rest = name.partition("/")
    # Like Docker: the first component is a registry only if it looks like a host.
    is_registry = sep and (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    )
    if is_registry:
        if not _DOMAIN.fullmatch(first):
            return f"the registry {first!r} is not a valid host[:port]"
        path = rest
    else:
        path = name
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            if _PATH_COMPONENT.fullmatch(component.lower()):
                return f"the repository name {path!r} must be lower case"
            return (
                f"the repository name component {component!r} is not valid (lower-case "
                "letters and digits, separated by '.', '_', '__' or '-')"
            )
    if _IMAGE_ID.fullmatch(path):
        return f"{path!r} looks like an image ID, which cannot be used as a name"
    return None


# --- versions ----------------------------------------------------------------------------

_RELEASE = re.compile(r"\d+(?:\.\d+)*")
_PRE = re.compile(r"(alpha|beta|preview|pre|rc|dev|a|b|c)(\d*)", re.IGNORECASE)
_PRE_RANK = {"dev": 0, "a": 1, "alpha": 1, "b": 2, "beta": 2}  # rc, c, pre, preview: 3
_FINAL = 4

VersionKey = tuple[int, tuple[int, ...], int, int, int]


def version_sort_key(version: str) -> VersionKey:
    """A key that sorts catalog versions oldest first (see "Newest" in the module doc).

    ``(numeric, release, pre-release rank, pre-release number, plain)``:
    ``2.7.1-aime`` -> ``(1, (2, 7, 1), 4, 0, 0)``; ``1.14.0a-nvidia`` ->
    ``(1, (1, 14), 1, 0, 0)``; ``latest`` -> ``(0, (), 0, 0, 0)``.
    """
    m = _RELEASE.match(version)
    if m is None:
        return (0, (), 0, 0, 0)
    release = tuple(int(part) for part in m.group(0).split("."))
    while release and release[-1] == 0:
        release = release[:-1]
    rest = version[m.end() :]
    pre_rank, pre_number = _FINAL, 0
    pre = _PRE.match(rest)
    # "1.14.0a-nvidia" is a pre-release; "2.0.0abc" is a variant we do not interpret.
    if pre is not None and (pre.end() == len(rest) or rest[pre.end()] in "-+._"):
        pre_rank = _PRE_RANK.get(pre.group(1).lower(), 3)
        pre_number = int(pre.group(2) or 0)
        rest = rest[pre.end() :]
    return (1, release, pre_rank, pre_number, 0 if rest else 1)


# --- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog line: an image for one framework version on some architectures.

    ``framework`` is spelled as in the file (``Pytorch``), ``version`` is the exact string,
    ``line`` the 1-based line in the source (0 for built-in entries).
    """

    framework: str
    version: str
    archs: tuple[str, ...]
    image: str
    line: int

    @property
    def framework_label(self) -> str:
        """AIME's ``aime.mlc.FRAMEWORK`` value: ``<Framework>-<version>``."""
        return f"{self.framework}-{self.version}"


def split_framework_label(label: str) -> tuple[str, str] | None:
    """``'Pytorch-2.1.0-aime'`` -> ``('Pytorch', '2.1.0-aime')``; ``None`` if no ``-``."""
    framework, sep, version = label.partition("-")
    if not sep or not framework or not version:
        return None
    return framework, version


def _newness(entry: CatalogEntry) -> tuple[VersionKey, int]:
    # The earlier line wins a tie, hence the negated line number.
    return version_sort_key(entry.version), -entry.line


@dataclass(frozen=True)
class Catalog:
    """A parsed catalog. ``source`` names where it came from (a path, or the fallback);
    ``warnings`` are problems that did not stop parsing (duplicates, the fallback itself).
    """

    entries: tuple[CatalogEntry, ...]
    source: str
    warnings: tuple[str, ...] = ()

    @property
    def archs(self) -> tuple[str, ...]:
        """Every architecture some entry offers, sorted."""
        return tuple(sorted({arch for entry in self.entries for arch in entry.archs}))

    def canonical_framework(self, framework: str) -> str | None:
        """The catalog's spelling of ``framework`` (any case, or an alias); ``None`` if absent."""
        spellings: dict[str, str] = {}
        for entry in self.entries:
            spellings.setdefault(entry.framework.casefold(), entry.framework)
        wanted = framework.strip().casefold()
        if wanted in spellings:
            return spellings[wanted]
        alias = FRAMEWORK_ALIASES.get(wanted)
        if alias is not None:
            return spellings.get(alias.casefold())
        return None

    def frameworks(self, arch: str | None = None) -> tuple[str, ...]:
        """Framework names (file spelling), sorted case-insensitively; only those with an
        image for ``arch`` when given. An unknown ``arch`` raises :class:`UsageError`."""
        entries = self._on_arch(self._arch(arch)) if arch is not None else self.entries
        names: dict[str, str] = {}
        for entry in entries:
            names.setdefault(entry.framework.casefold(), entry.framework)
        return tuple(names[key] for key in sorted(names))

    def entries_for(
        self, framework: str | None = None, arch: str | None = None
    ) -> tuple[CatalogEntry, ...]:
        """Entries in file order, filtered by framework (any case, or alias) and arch.

        A framework or arch the catalog does not have at all raises :class:`UsageError`
        (a typo should not look like an empty catalog); a framework that exists but has
        nothing for ``arch`` gives an empty tuple.
        """
        arch_name = self._arch(arch) if arch is not None else None
        entries = self._on_arch(arch_name) if arch_name is not None else self.entries
        if framework is None:
            return entries
        canonical = self.canonical_framework(framework)
        if canonical is None:
            raise self._unknown_framework(framework, arch_name)
        return tuple(e for e in entries if e.framework.casefold() == canonical.casefold())

    def lookup(self, framework: str, version: str | None, arch: str) -> CatalogEntry:
        """The entry for ``framework`` ``version`` on ``arch``; newest when ``version`` is None.

        Raises :class:`UsageError` with code ``unknown_arch``, ``unknown_framework`` or
        ``unknown_version``; the message lists the closest names available for ``arch``.
        """
        arch_name = self._arch(arch)
        if version is None:
            return self.newest(framework, arch_name)
        candidates = self._framework_on_arch(framework, arch_name)
        wanted = version.strip()
        for entry in candidates:
            if entry.version == wanted:
                return entry
        raise self._unknown_version(candidates[0].framework, wanted, arch_name, candidates)

    def newest(self, framework: str, arch: str) -> CatalogEntry:
        """The newest version of ``framework`` on ``arch`` (see "Newest" in the module doc)."""
        return max(self._framework_on_arch(framework, self._arch(arch)), key=_newness)

    # --- internals ---------------------------------------------------------------------

    def _on_arch(self, arch: str) -> tuple[CatalogEntry, ...]:
        return tuple(e for e in self.entries if arch in e.archs)

    def _arch(self, arch: str) -> str:
        found = match_arch(arch, self.archs)
        if found is None:
            listed = ", ".join(self.archs) or "none"
            raise UsageError(
                f"The catalog ({self.source}) has no images for architecture {arch!r}. "
                f"Architectures in it: {listed}.",
                hint=f"Pass --arch (or set MLC_ARCH) to one of: {listed}.",
                code=ErrorCode.UNKNOWN_ARCH,
                details={"arch": arch, "valid": list(self.archs), "catalog": self.source},
            )
        return found

    def _framework_on_arch(self, framework: str, arch: str) -> tuple[CatalogEntry, ...]:
        canonical = self.canonical_framework(framework)
        if canonical is not None:
            found = tuple(
                e for e in self._on_arch(arch) if e.framework.casefold() == canonical.casefold()
            )
            if found:
                return found
        raise self._unknown_framework(framework, arch)

    def _unknown_framework(self, framework: str, arch: str | None) -> UsageError:
        available = self.frameworks(arch)
        where = f" for {arch}" if arch else ""
        canonical = self.canonical_framework(framework)
        if canonical is not None and arch is not None:
            # The name is right; the host's architecture is the problem.
            elsewhere = sorted(
                {
                    a
                    for e in self.entries
                    if e.framework.casefold() == canonical.casefold()
                    for a in e.archs
                }
            )
            message = (
                f"{canonical} has no images for {arch} in the catalog ({self.source}); "
                f"it has some for {', '.join(elsewhere)}. "
                f"Frameworks for {arch}: {', '.join(available) or 'none'}."
            )
            closest = list(available)
        else:
            folded = {name.casefold(): name for name in available}
            matches = difflib.get_close_matches(
                framework.strip().casefold(), list(folded), n=3, cutoff=0.5
            )
            closest = [folded[m] for m in matches]
            listing = (
                f"Closest: {', '.join(closest)}."
                if closest
                else f"Frameworks{where}: {', '.join(available) or 'none'}."
            )
            message = f"Unknown framework {framework!r}{where} in {self.source}. {listing}"
        arch_flag = f" --arch {arch}" if arch else ""
        return UsageError(
            message,
            hint=f"See what exists with: ds01 catalog list{arch_flag}",
            code=ErrorCode.UNKNOWN_FRAMEWORK,
            details={"framework": framework, "arch": arch, "closest": closest},
        )

    def _unknown_version(
        self,
        framework: str,
        version: str,
        arch: str,
        candidates: tuple[CatalogEntry, ...],
    ) -> UsageError:
        closest = _closest_versions(version, [e.version for e in candidates])
        elsewhere = sorted(
            {
                a
                for e in self.entries
                if e.framework.casefold() == framework.casefold() and e.version == version
                for a in e.archs
            }
        )
        message = (
            f"{framework} has no version {version!r} for {arch} in {self.source}. "
            f"Closest: {', '.join(closest)}."
        )
        if elsewhere:
            message += f" Version {version} exists for {', '.join(elsewhere)}."
        return UsageError(
            message,
            hint=f"See what exists with: ds01 catalog list --framework {framework} --arch {arch}",
            code=ErrorCode.UNKNOWN_VERSION,
            details={
                "framework": framework,
                "version": version,
                "arch": arch,
                "closest": closest,
                "other_archs": elsewhere,
            },
        )


def _closest_versions(wanted: str, available: list[str], limit: int = 5) -> list[str]:
    """Versions to suggest for ``wanted``: the same release number first, then the
    neighbours by number on either side (nearest first), then look-alikes (difflib)."""
    key = version_sort_key(wanted)
    numeric = key[0] == 1
    same_release = [v for v in available if numeric and version_sort_key(v)[:2] == key[:2]]
    lookalikes = difflib.get_close_matches(wanted, available, n=3, cutoff=0.6)
    ordered = sorted(set(available), key=version_sort_key)
    at = bisect.bisect_left(ordered, key, key=version_sort_key)
    below, above = ordered[max(at - 2, 0) : at][::-1], ordered[at : at + 2]
    neighbours = [v for pair in zip_longest(below, above) for v in pair if v is not None]
    suggestions: list[str] = []
    for version in [*same_release, *neighbours, *lookalikes]:
        if version not in suggestions:
            suggestions.append(version)
    return suggestions[:limit]


# --- parsing -----------------------------------------------------------------------------


def _bad_line(source: str, number: int, raw: str, problem: str) -> ConfigError:
    return ConfigError(
        f"{source}, line {number}: {problem}.\n  {number} | {raw.rstrip()}",
        hint=_LINE_HINT,
        code=ErrorCode.BAD_CATALOG,
        details={"file": source, "line": number, "text": raw.rstrip()},
    )


class _Fail:
    """Builds the ConfigError for one line, so checks only state the problem."""

    def __init__(self, source: str, number: int, raw: str) -> None:
        self.source, self.number, self.raw = source, number, raw

    def __call__(self, problem: str) -> ConfigError:
        return _bad_line(self.source, self.number, self.raw, problem)


def _parse_archs(field: str, fail: _Fail) -> list[str]:
    opens, closes = field.count("["), field.count("]")
    bracketed = field.startswith("[") and field.endswith("]") and opens == closes == 1
    if (opens or closes) and not bracketed:
        raise fail(f"unbalanced brackets in the architecture list {field!r}")
    inner = field[1:-1] if bracketed else field
    if not inner.strip():
        raise fail("the architecture list is empty")
    # AIME v2 splits on ';' after stripping the brackets, so "A;B" without brackets is
    # accepted there too.
    tokens = [token.strip() for token in inner.split(";")]
    for token in tokens:
        if not _ARCH_TOKEN.fullmatch(token):
            if _ARCH_TOKEN.fullmatch(token.upper()):
                raise fail(f"architecture names are upper case: write {token.upper()!r}")
            raise fail(
                f"{token!r} is not an architecture name (upper-case letters, digits and "
                "'_', such as CUDA_ADA)"
            )
    return tokens


def _parse_line(raw: str, number: int, source: str) -> tuple[CatalogEntry, list[str]]:
    """One non-blank, non-comment line -> its entry and the archs it repeats."""
    fail = _Fail(source, number, raw)
    text = raw.strip()
    if re.search(r"\[[^\]]*,[^\]]*\]", text):
        raise fail("architectures inside [...] are separated by ';', not ','")
    fields = [field.strip() for field in text.split(",")]
    if len(fields) != len(_FIELDS):
        raise fail(f"expected 4 comma-separated fields ({', '.join(_FIELDS)}), found {len(fields)}")
    for position, (what, value) in enumerate(zip(_FIELDS, fields, strict=True), start=1):
        if not value:
            raise fail(f"field {position} ({what}) is empty")
    framework, version, arch_field, image = fields
    if not _FRAMEWORK.fullmatch(framework):
        raise fail(
            f"framework {framework!r} may hold only letters, digits, '_', '.' and '+' "
            "(a '-' would make the label '<Framework>-<version>' ambiguous)"
        )
    if not _VERSION.fullmatch(version):
        raise fail(f"version {version!r} may hold only letters, digits, '_', '.', '+' and '-'")
    tokens = _parse_archs(arch_field, fail)
    problem = image_reference_problem(image)
    if problem is not None:
        raise fail(f"Docker would not accept the image: {problem}")
    unique = tuple(dict.fromkeys(tokens))
    repeated = [t for i, t in enumerate(tokens) if t in tokens[:i]]
    return CatalogEntry(framework, version, unique, image, number), repeated


def parse_catalog(text: str, source: str) -> Catalog:
    """Parse the text of an ``ml_images.repo`` (v1 and v2 lines); ``source`` names it in
    messages. A malformed line raises :class:`ConfigError` (exit 2) naming file and line;
    duplicates keep the first entry and add a warning (see the module docstring)."""
    entries: list[CatalogEntry] = []
    warnings: list[str] = []
    first_seen: dict[tuple[str, str, str], int] = {}
    # split("\n"), not splitlines(): form feeds and the like must not shift line numbers.
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        entry, repeated = _parse_line(raw, number, source)
        for arch in repeated:
            warnings.append(f"{source}, line {number}: {arch} is listed twice on the line.")
        kept: list[str] = []
        for arch in entry.archs:
            key = (entry.framework.casefold(), entry.version, arch)
            if key in first_seen:
                warnings.append(
                    f"{source}, line {number}: {entry.framework} {entry.version} for {arch} "
                    f"is already listed on line {first_seen[key]}; line {number} "
                    f"({entry.image}) is ignored for {arch}."
                )
                continue
            first_seen[key] = number
            kept.append(arch)
        if kept:
            entries.append(replace(entry, archs=tuple(kept)))
    return Catalog(tuple(entries), source, tuple(warnings))


def render_catalog(entries: Iterable[CatalogEntry], *, style: Literal["v1", "v2"] = "v2") -> str:
    """Write entries as ``ml_images.repo`` text: v2 lists the archs in brackets, v1
    repeats a multi-arch entry once per arch (v1 has no lists)."""
    lines: list[str] = []
    for e in entries:
        if style == "v2":
            lines.append(f"{e.framework}, {e.version}, [{';'.join(e.archs)}], {e.image}")
        else:
            lines.extend(f"{e.framework}, {e.version}, {arch}, {e.image}" for arch in e.archs)
    return "".join(f"{line}\n" for line in lines)


def fallback_catalog(*, missing_path: str | None = None) -> Catalog:
    """The plan's Docker Hub images, offered on every CUDA arch, for when AIME's catalog
    file is missing. ``missing_path`` (the path looked for) is named in the warning."""
    entries = tuple(
        CatalogEntry(framework, version, CUDA_ARCHS, image, 0)
        for framework, version, image in FALLBACK_IMAGES
    )
    where = f" at {missing_path}" if missing_path else ""
    images = ", ".join(image for _, _, image in FALLBACK_IMAGES)
    warning = (
        f"AIME's image catalog (ml_images.repo) was not found{where}; using DS01's "
        f"built-in Docker Hub images instead ({images}). Install AIME MLC or set 'catalog' "
        "in the DS01 configuration to get AIME's images."
    )
    return Catalog(entries, FALLBACK_SOURCE, (warning,))
