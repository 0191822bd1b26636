"""Which images a Dockerfile's build reads files from, and which labels it sets.

Pure. A build may read another image's files in several ways, and DS01 must see every one
before it lets a user build (:mod:`ds01.services.image.build` then asks the engine whose
each image is):

- ``FROM`` of every stage, its build arguments resolved: the global ``ARG`` s (those before
  the first ``FROM``, their defaults expanded in order), overridden by the ``--build-arg``
  values DS01 passes, in ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alt}``
  forms, nested and quoted. ``ARG`` s inside a stage never reach a ``FROM``, as in Docker.
  A name that is an earlier stage's is that stage, in any case; ``scratch`` is nothing.
- ``--from=`` of ``COPY`` (and of any other instruction: DS01 errs on the safe side),
  ``from=`` of ``RUN --mount``: an earlier stage by name or index, else an image.
- ``ONBUILD`` instructions, which run when an image is built on this one (even a later stage
  of the same file), and the ONBUILD triggers of a base image, which run in this build
  (:func:`read_triggers`): each ``--from`` there is checked as an image whatever stage
  names exist, as the stages it will meet are not known now.

What cannot be resolved the same way by every builder is refused with exit 2 and the line:
a variable in ``--from`` (the classic builder does not expand it, BuildKit does), BuildKit's
automatic platform arguments and Docker's proxy arguments when not declared (set by some
builders, not others), heredocs (BuildKit only; the classic builder DS01 runs would read
their lines as instructions), a ``FROM`` that resolves to nothing or to no image name.

Labels are collected with their keys as Docker will store them (quotes and escapes
removed); a key that depends on a variable is refused, since it could name any label.
Which keys a Dockerfile may set is :mod:`ds01.domain.dockerfile_labels`' decision.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ds01.domain.dockerfile import _IMAGE_REF
from ds01.domain.dockerfile_syntax import (
    Instruction,
    WordError,
    expand_word,
    go_lower,
    instructions,
    parse_instruction,
    parse_words,
    split_whitespace,
)
from ds01.errors import ErrorCode, UsageError

__all__ = [
    "PLATFORM_ARGS",
    "PROXY_ARGS",
    "DockerfileReading",
    "ImageUse",
    "LabelUse",
    "read_dockerfile",
    "read_triggers",
]

#: Set by BuildKit for every build, unknown to the classic builder.
PLATFORM_ARGS = frozenset(
    f"{kind}{part}"
    for kind in ("TARGET", "BUILD")
    for part in ("PLATFORM", "OS", "ARCH", "VARIANT")
)
#: Docker's predefined proxy arguments: the classic builder lets a FROM use them undeclared.
PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12,64}")
_STAGE_INDEX = re.compile(r"[0-9]+")
_HEREDOC = re.compile(r"(?:^|[\t\n\v\f\r ])<<-?[\"']?[A-Za-z_]")
_TOKEN_WS = re.compile(r"[\t\v\f\r ]+")


@dataclass(frozen=True)
class ImageUse:
    """An image the build reads: its reference as the engine will look it up."""

    ref: str
    place: str  # "Line 3 of the Dockerfile (FROM)", for messages


@dataclass(frozen=True)
class LabelUse:
    """A label an instruction sets: the key as stored, the value (``None`` when it
    depends on a variable) and whether it only takes effect in a later build (ONBUILD)."""

    key: str
    value: str | None
    place: str
    onbuild: bool = False


@dataclass(frozen=True)
class DockerfileReading:
    """What a Dockerfile's build reads and sets."""

    images: tuple[ImageUse, ...]
    bases: tuple[str, ...]  # images a stage is built FROM (their ONBUILD triggers run)
    final_base: str  # what the last stage builds on, through stages; may be "scratch"
    labels: tuple[LabelUse, ...]

    def refs(self) -> list[str]:
        """Every image reference, each once, in order."""
        return list(dict.fromkeys(use.ref for use in self.images))


def _valid_image(ref: str) -> bool:
    return len(ref) <= 255 and bool(_IMAGE_REF.fullmatch(ref) or _IMAGE_ID.fullmatch(ref))


def _no_variables(name: str) -> str | None:
    raise WordError(f"it uses the variable {name}")


@dataclass
class _Reader:
    build_args: Mapping[str, str]
    describe: str = "Line {line} of the Dockerfile"  # where an instruction is, for messages
    scope: dict[str, str | None] = field(default_factory=dict)  # global ARGs
    # Declared without a value where BuildKit gives one (TARGETARCH...) and the classic
    # builder none: their use is refused.
    ambiguous: set[str] = field(default_factory=set)
    stages: list[tuple[str | None, str]] = field(default_factory=list)  # (name, image)
    images: list[ImageUse] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)
    labels: list[LabelUse] = field(default_factory=list)

    # -- messages --------------------------------------------------------------------

    def where(self, inst: Instruction) -> str:
        return self.describe.format(line=inst.line)

    def refuse(self, inst: Instruction, what: str, hint: str, code: ErrorCode) -> UsageError:
        return UsageError(
            f"{self.where(inst)} ({inst.shown()}): {what}",
            hint=hint,
            code=code,
            details={"line": inst.line, "instruction": inst.shown()},
        )

    # -- variables -------------------------------------------------------------------

    def global_value(self, name: str) -> str | None:
        if name in self.ambiguous:
            raise WordError(
                f"${name} has no value of its own; BuildKit sets it and the classic builder "
                f"does not; give it one: 'ARG {name}=<value>'"
            )
        if name in self.scope:
            return self.scope[name]
        if name in PLATFORM_ARGS or name in PROXY_ARGS:
            raise WordError(
                f"${name} is set by some builders and not by others; declare it with "
                f"'ARG {name}=<value>' before the first FROM"
            )
        return None  # undeclared: empty, in every builder

    def expand(self, inst: Instruction, word: str, what: str) -> str:
        try:
            return expand_word(word, self.global_value)
        except WordError as exc:
            raise self.refuse(
                inst,
                f"DS01 cannot resolve {what} {word!r}: {exc}.",
                "Write the image name out, or use a build argument declared before the first "
                "FROM (ARG NAME=value) in the $NAME, ${NAME}, ${NAME:-default} or "
                "${NAME:+alternative} form.",
                ErrorCode.UNRESOLVABLE_DOCKERFILE,
            ) from exc

    def global_arg(self, inst: Instruction) -> None:
        for word in parse_words(inst.args):
            raw_key, sep, raw_value = word.partition("=")
            key = self.expand(inst, raw_key, "the ARG name")
            if not _ARG_NAME.fullmatch(key):
                raise self.refuse(
                    inst,
                    f"{key!r} is not a build argument name.",
                    "Name build arguments with letters, digits and _.",
                    ErrorCode.BAD_DOCKERFILE,
                )
            value = self.expand(inst, raw_value, "the ARG default") if sep else None
            self.scope[key] = self.build_args.get(key, value)
            if key in PLATFORM_ARGS and self.scope[key] is None:
                self.ambiguous.add(key)
            else:
                self.ambiguous.discard(key)

    # -- stages ----------------------------------------------------------------------

    def stage_of(self, name: str) -> int | None:
        folded = name.lower()
        for index, (stage, _) in enumerate(self.stages):
            if stage == folded:
                return index
        return None

    def from_(self, inst: Instruction) -> None:
        words = split_whitespace(inst.args)
        three = len(words) == 3 and go_lower(words[1]).replace("ſ", "s") == "as"
        if len(words) != 1 and not three:
            raise self.refuse(
                inst,
                "FROM takes an image and, optionally, 'AS name'.",
                "Write 'FROM image' or 'FROM image AS name'.",
                ErrorCode.BAD_DOCKERFILE,
            )
        ref = self.expand(inst, words[0], "the FROM image")
        name = go_lower(words[2]) if three else None
        if name is not None and (
            not _STAGE_NAME.fullmatch(name) or self.stage_of(name) is not None
        ):
            raise self.refuse(
                inst,
                f"{words[2]!r} is not a valid new stage name.",
                "Stage names start with a letter, hold a-z, 0-9, '-', '_', '.', and are unique.",
                ErrorCode.BAD_DOCKERFILE,
            )
        earlier = self.stage_of(ref)
        if earlier is not None:
            image = self.stages[earlier][1]
        elif ref == "scratch":
            image = "scratch"
        elif not _valid_image(ref):
            shown = f"{words[0]!r}" + (f", which resolves to {ref!r}," if ref != words[0] else "")
            raise self.refuse(
                inst,
                f"FROM {shown} names no image and no earlier stage.",
                "Give an image reference (lower case, e.g. 'debian:bookworm') or the name "
                "of an earlier stage.",
                ErrorCode.UNRESOLVABLE_DOCKERFILE,
            )
        else:
            image = ref
            self.images.append(ImageUse(ref, f"{self.where(inst)} (FROM)"))
            self.bases.append(ref)
        self.stages.append((name, image))

    # -- sources and labels ----------------------------------------------------------

    def source(self, inst: Instruction, value: str | None, how: str, *, later: bool) -> None:
        """``--from=value`` (or a mount's ``from=``): an earlier stage, else an image.
        ``later``: it runs in a build not known now (ONBUILD), so no stage name counts."""
        if value is None:
            raise self.refuse(
                inst, f"{how} needs a value.", f"Write {how}=NAME.", ErrorCode.BAD_DOCKERFILE
            )
        if "$" in value:
            raise self.refuse(
                inst,
                f"{how}={value} depends on a variable, which builders expand differently "
                "(the classic builder not at all).",
                f"Name the stage or image literally, or use 'FROM ${{VAR}} AS src' and {how}=src.",
                ErrorCode.UNRESOLVABLE_DOCKERFILE,
            )
        if not value:
            return
        done = len(self.stages) - 1  # stages finished before the current one
        if not later:
            if _STAGE_INDEX.fullmatch(value) and int(value) < done:
                return
            index = self.stage_of(value)
            if index is not None and index < done:
                return
        if _valid_image(value):
            place = f"{self.where(inst)} ({how})"
            self.images.append(ImageUse(value, place))

    def sources(self, inst: Instruction, *, later: bool) -> None:
        for value in inst.flag_values("from"):
            self.source(inst, value, f"{inst.keyword.upper()} --from", later=later)
        for value in inst.flag_values("mount"):
            if value is None:
                raise self.refuse(
                    inst,
                    "--mount needs a value.",
                    "Write --mount=type=...",
                    ErrorCode.BAD_DOCKERFILE,
                )
            try:
                fields = next(csv.reader([value]), [])
            except csv.Error as exc:
                raise self.refuse(
                    inst,
                    f"DS01 cannot read --mount={value}: {exc}.",
                    "Check it.",
                    ErrorCode.BAD_DOCKERFILE,
                ) from exc
            for item in fields:
                key, _, mounted = item.partition("=")
                if go_lower(key.strip()) == "from":
                    self.source(inst, mounted, "RUN --mount from", later=later)

    def label(self, inst: Instruction, *, onbuild: bool) -> None:
        words = parse_words(inst.args)
        if not words:
            return
        pairs: list[tuple[str, str]]
        if "=" not in words[0]:  # the old form: LABEL key value
            parts = _TOKEN_WS.split(inst.args, maxsplit=1)
            pairs = [(parts[0], parts[1] if len(parts) > 1 else "")]
        else:
            pairs = []
            for word in words:
                key, sep, value = word.partition("=")
                if not sep:
                    raise self.refuse(
                        inst,
                        f"{word!r} is not key=value.",
                        "Write LABEL key=value ...",
                        ErrorCode.BAD_DOCKERFILE,
                    )
                pairs.append((key, value))
        for raw_key, raw_value in pairs:
            if "$" in raw_key:
                raise self.refuse(
                    inst,
                    f"the label key {raw_key!r} depends on a variable, so DS01 cannot tell "
                    "which label it sets.",
                    "Write label keys literally.",
                    ErrorCode.RESERVED_LABEL,
                )
            try:
                key = expand_word(raw_key, _no_variables)
                stored = None if "$" in raw_value else expand_word(raw_value, _no_variables)
            except WordError as exc:
                raise self.refuse(
                    inst,
                    f"DS01 cannot read this label: {exc}.",
                    "Check its quotes.",
                    ErrorCode.BAD_DOCKERFILE,
                ) from exc
            place = f"{self.where(inst)} ({'ONBUILD ' if onbuild else ''}LABEL)"
            self.labels.append(LabelUse(key, stored, place, onbuild))

    def heredoc(self, inst: Instruction) -> None:
        if inst.keyword in ("run", "copy", "add") and _HEREDOC.search(inst.args):
            raise self.refuse(
                inst,
                "heredocs (<<EOF) need BuildKit; DS01 builds with Docker's classic builder, "
                "which would read the lines after it as instructions.",
                "Join the commands with && and \\ continuations in one RUN, or COPY a script.",
                ErrorCode.BAD_DOCKERFILE,
            )

    def step(self, inst: Instruction, *, later: bool = False) -> None:
        """One instruction inside a stage (or an ONBUILD one, ``later``)."""
        self.heredoc(inst)
        self.sources(inst, later=later)
        if inst.keyword == "label":
            self.label(inst, onbuild=later)
        elif inst.keyword == "onbuild":
            inner = parse_instruction(inst.args, inst.line)
            if inner.keyword in ("onbuild", "from", "maintainer", ""):
                raise self.refuse(
                    inst,
                    f"ONBUILD {inner.keyword.upper()} is not allowed.",
                    "Remove it.",
                    ErrorCode.BAD_DOCKERFILE,
                )
            self.step(inner, later=True)


def read_dockerfile(text: str, build_args: Mapping[str, str] | None = None) -> DockerfileReading:
    """Every image ``text`` reads files from, its final base and the labels it sets.

    ``build_args`` are the ``--build-arg`` values the build gets. Raises
    :class:`~ds01.errors.UsageError` (exit 2) naming the line for what cannot be resolved
    as every builder would, and for a Dockerfile without a ``FROM``.
    """
    reader = _Reader(dict(build_args or {}))
    for inst in instructions(text):
        if inst.keyword == "from":
            reader.sources(inst, later=False)
            reader.from_(inst)
        elif not reader.stages:
            if inst.keyword == "arg":
                reader.global_arg(inst)
            else:
                reader.step(inst)
        else:
            reader.step(inst)
    if not reader.stages:
        raise UsageError(
            "The Dockerfile has no FROM line.",
            hint="Start it with 'FROM <image>'.",
            code=ErrorCode.BAD_DOCKERFILE,
        )
    return DockerfileReading(
        images=tuple(reader.images),
        bases=tuple(reader.bases),
        final_base=reader.stages[-1][1],
        labels=tuple(reader.labels),
    )


def read_triggers(
    triggers: Sequence[str], base: str
) -> tuple[tuple[ImageUse, ...], tuple[LabelUse, ...]]:
    """The images and labels of a base image's ONBUILD triggers, which run in a build on
    it. Every ``--from`` there is taken as an image (the stage names it meets are the
    building file's, not known to whoever wrote the trigger). Refused (exit 2) as in
    :func:`read_dockerfile`."""
    images: list[ImageUse] = []
    labels: list[LabelUse] = []
    for number, trigger in enumerate(triggers, start=1):
        reader = _Reader({}, describe=f"ONBUILD trigger {number} of the base image {base}")
        inst = parse_instruction(trigger, number)
        reader.heredoc(inst)
        reader.sources(inst, later=True)
        if inst.keyword == "label":
            reader.label(inst, onbuild=False)  # it runs in this build
        images += reader.images
        labels += reader.labels
    return tuple(images), tuple(labels)
