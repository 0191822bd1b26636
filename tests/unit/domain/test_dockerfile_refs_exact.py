"""Which images a Dockerfile's build reads and which labels it sets (``domain/dockerfile_refs``),
asserted exactly: the whole reading (every image with its place, the bases, the final base,
every label), and every refusal whole (message, hint, code and details), written out by hand.
"""

from __future__ import annotations

import pytest

from ds01.domain.dockerfile_refs import (
    DockerfileReading,
    ImageUse,
    LabelUse,
    _no_variables,
    read_dockerfile,
    read_triggers,
)
from ds01.domain.dockerfile_syntax import WordError
from ds01.errors import EXIT_BAD_INPUT, UsageError

EXPAND_HINT = (
    "Write the image name out, or use a build argument declared before the first FROM "
    "(ARG NAME=value) in the $NAME, ${NAME}, ${NAME:-default} or ${NAME:+alternative} form."
)
UNREAD = (
    "is a substitution DS01 does not read (only $VAR, ${VAR}, ${VAR:-default} and "
    "${VAR:+alternative})"
)
NO_IMAGE_HINT = (
    "Give an image reference (lower case, e.g. 'debian:bookworm') or the name of an earlier stage."
)
STAGE_HINT = "Stage names start with a letter, hold a-z, 0-9, '-', '_', '.', and are unique."
HEREDOC_MESSAGE = (
    "heredocs (<<EOF) need BuildKit; DS01 builds with Docker's classic builder, which would "
    "read the lines after it as instructions."
)
HEREDOC_HINT = "Join the commands with && and \\ continuations in one RUN, or COPY a script."


def _line(n: int, what: str) -> str:
    return f"Line {n} of the Dockerfile ({what})"


# --------------------------------------------------------------------- readings


def test_a_multi_stage_dockerfile_is_read_whole() -> None:
    text = (
        "ARG BASE=debian:bookworm\n"
        "ARG TAG\n"
        "FROM ${BASE} AS build\n"
        "LABEL org.example.a=1 'aime.mlc.FRAMEWORK'=\"x y\"\n"
        "COPY --from=tools:1 /t /t\n"
        "FROM build AS second\n"
        "RUN --mount=type=bind,from=cache:2,target=/c true\n"
        "COPY --from=build /a /a\n"
        "COPY --from=0 /b /b\n"
        "ONBUILD COPY --from=build /c /c\n"
        "ONBUILD LABEL note=$X\n"
        "FROM python:${TAG:-3.11}\n"
        "ADD --FROM=second /d /d\n"
    )
    assert read_dockerfile(text) == DockerfileReading(
        images=(
            ImageUse("debian:bookworm", _line(3, "FROM")),
            ImageUse("tools:1", _line(5, "COPY --from")),
            ImageUse("cache:2", _line(7, "RUN --mount from")),
            ImageUse("build", _line(10, "COPY --from")),  # ONBUILD: a stage name is an image
            ImageUse("python:3.11", _line(12, "FROM")),
        ),
        bases=("debian:bookworm", "python:3.11"),
        final_base="python:3.11",
        labels=(
            LabelUse("org.example.a", "1", _line(4, "LABEL")),
            LabelUse("aime.mlc.FRAMEWORK", "x y", _line(4, "LABEL")),
            LabelUse("note", None, _line(11, "ONBUILD LABEL"), onbuild=True),
        ),
    )


def test_the_final_base_follows_stages_and_scratch() -> None:
    reading = read_dockerfile("FROM cat AS a\nFROM a AS b\nFROM B\n")
    assert (reading.refs(), reading.bases, reading.final_base) == (["cat"], ("cat",), "cat")
    reading = read_dockerfile("FROM cat\nFROM scratch\n")
    assert (reading.refs(), reading.bases, reading.final_base) == (["cat"], ("cat",), "scratch")


def test_refs_name_each_image_once_in_order() -> None:
    text = "FROM b\nCOPY --from=a /x /y\nCOPY --from=b /x /y\nFROM a\n"
    assert read_dockerfile(text).refs() == ["b", "a"]


@pytest.mark.parametrize(
    ("words", "final"),
    [
        ("cat AS base", "cat"),
        ("cat as base", "cat"),
        ("cat aſ base", "cat"),  # Go's EqualFold: the long s is an s
        ("cat Aſ base", "cat"),
    ],
)
def test_as_is_read_in_any_case(words: str, final: str) -> None:
    assert read_dockerfile(f"FROM {words}\nFROM base\n").final_base == final


def test_a_stage_index_counts_only_finished_stages() -> None:
    text = "FROM a\nFROM b\nCOPY --from=0 /x /y\nCOPY --from=1 /x /y\nCOPY --from=2 /x /y\n"
    # Index 1 is the stage being built: not an earlier stage, so read as an image name.
    assert read_dockerfile(text).refs() == ["a", "b", "1", "2"]


def test_a_stage_name_counts_only_once_finished() -> None:
    text = "FROM a AS s0\nFROM b AS s1\nCOPY --from=s0 /x /y\nCOPY --from=s1 /x /y\n"
    assert read_dockerfile(text).refs() == ["a", "b", "s1"]


def test_a_mount_in_onbuild_names_an_image_even_with_a_stage_name() -> None:
    text = "FROM a AS s0\nFROM b\nONBUILD RUN --mount=from=s0 true\nRUN --mount=from=s0 true\n"
    assert read_dockerfile(text).images == (
        ImageUse("a", _line(1, "FROM")),
        ImageUse("b", _line(2, "FROM")),
        ImageUse("s0", _line(3, "RUN --mount from")),
    )


def test_a_from_flag_on_from_itself_is_checked_as_a_source() -> None:
    text = "FROM a AS s0\nFROM b AS s1\nFROM --from=s0 --from=img c\n"
    assert read_dockerfile(text).refs() == ["a", "b", "img", "c"]


@pytest.mark.parametrize(
    ("line", "refs"),
    [
        ("COPY --from= /x /y", ["cat"]),  # empty: nothing to read
        ("COPY --from=Not_An/Image /x /y", ["cat"]),  # no image the engine would find
        ("RUN --mount=type=cache,target=/c true", ["cat"]),
        ("RUN --mount=type=bind,FROM=img,target=/c true", ["cat", "img"]),
        ("RUN --mount=type=bind,' from '=img,target=/c true", ["cat", "img"]),
        ('RUN --mount="type=bind,from=img2" true', ["cat", "img2"]),
        ("RUN --mount=from=a --mount=from=b true", ["cat", "a", "b"]),
        (f"COPY --from=sha256:{'c' * 64} /x /y", ["cat", f"sha256:{'c' * 64}"]),
        ("COPY --from=cccccccccccc /x /y", ["cat", "cccccccccccc"]),
    ],
)
def test_sources_of_a_stage(line: str, refs: list[str]) -> None:
    assert read_dockerfile(f"FROM cat\n{line}\n").refs() == refs


def test_an_image_name_may_be_255_characters_long() -> None:
    assert read_dockerfile("FROM " + "a" * 255 + "\n").refs() == ["a" * 255]
    with pytest.raises(UsageError, match=r"names no image and no earlier stage\.$"):
        read_dockerfile("FROM " + "a" * 256 + "\n")
    assert read_dockerfile("FROM cat\nCOPY --from=" + "b" * 256 + " /x /y\n").refs() == ["cat"]


def test_a_platform_argument_given_a_value_is_no_longer_ambiguous() -> None:
    text = "ARG TARGETARCH\nARG TARGETARCH=amd64\nFROM img-$TARGETARCH\n"
    assert read_dockerfile(text).refs() == ["img-amd64"]
    text = "ARG TARGETARCH\nFROM img-$TARGETARCH\n"
    assert read_dockerfile(text, {"TARGETARCH": "arm64"}).refs() == ["img-arm64"]


def test_build_args_reach_only_declared_global_args() -> None:
    text = "ARG A=x\nFROM a-$A${B:-b}\n"
    assert read_dockerfile(text, {"A": "y", "B": "z"}).refs() == ["a-yb"]


def test_instructions_before_the_first_from_are_read_too() -> None:
    text = "LABEL k=v\nONBUILD COPY --from=img /a /b\nFROM cat\n"
    reading = read_dockerfile(text)
    assert reading.images == (
        ImageUse("img", _line(2, "COPY --from")),
        ImageUse("cat", _line(3, "FROM")),
    )
    assert reading.labels == (LabelUse("k", "v", _line(1, "LABEL")),)


@pytest.mark.parametrize(
    ("line", "labels"),
    [
        ("LABEL key value with  blanks", [("key", "value with  blanks")]),
        ("LABEL key", [("key", "")]),
        ("LABEL key\t'quoted value'", [("key", "quoted value")]),
        ("LABEL a=b=c", [("a", "b=c")]),
        ('LABEL "a b"=1 c="d e" f=', [("a b", "1"), ("c", "d e"), ("f", "")]),
        ("LABEL k\\=x=1", [("k", "x=1")]),  # Docker's parser splits at the first "=" too
        ("LABEL k=$V", [("k", None)]),
        ("LABEL k=\\$V", [("k", None)]),
        ("LABEL", []),
    ],
)
def test_labels_as_docker_stores_them(line: str, labels: list[tuple[str, str | None]]) -> None:
    reading = read_dockerfile(f"FROM cat\n{line}\n")
    assert reading.labels == tuple(LabelUse(k, v, _line(2, "LABEL")) for k, v in labels)


def test_no_variables_refuses_every_name() -> None:
    with pytest.raises(WordError, match=r"^it uses the variable NAME$"):
        _no_variables("NAME")


# -------------------------------------------------------------------- ONBUILD triggers


def test_triggers_are_read_with_their_number_and_base() -> None:
    images, labels = read_triggers(
        [
            "RUN --mount=from=m true",
            "COPY --from=0 /a /b",
            "LABEL aime.mlc.MAINTAINER=bob note=$X",
        ],
        "base:1",
    )
    assert images == (
        ImageUse("m", "ONBUILD trigger 1 of the base image base:1 (RUN --mount from)"),
        ImageUse("0", "ONBUILD trigger 2 of the base image base:1 (COPY --from)"),
    )
    place = "ONBUILD trigger 3 of the base image base:1 (LABEL)"
    assert labels == (
        LabelUse("aime.mlc.MAINTAINER", "bob", place),
        LabelUse("note", None, place),
    )


def test_a_refused_trigger_names_its_number_in_the_details() -> None:
    with pytest.raises(UsageError) as info:
        read_triggers(["RUN true", "RUN <<EOF"], "base:1")
    error = info.value
    assert error.message == (
        f"ONBUILD trigger 2 of the base image base:1 (RUN <<EOF): {HEREDOC_MESSAGE}"
    )
    assert error.hint == HEREDOC_HINT
    assert error.code == "bad_dockerfile"
    assert error.details == {"line": 2, "instruction": "RUN <<EOF"}


# ---------------------------------------------------------------------- refusals

# (text, build args, message, hint, code, line, instruction as shown)
REFUSALS = [
    pytest.param(
        "ARG B\nFROM ${B-x}\n",
        f"Line 2 of the Dockerfile (FROM ${{B-x}}): DS01 cannot resolve the FROM image "
        f"'${{B-x}}': '${{B-x...' {UNREAD}.",
        EXPAND_HINT,
        "unresolvable_dockerfile",
        2,
        "FROM ${B-x}",
        id="from-expansion",
    ),
    pytest.param(
        "ARG ${X-y}=1\nFROM cat\n",
        f"Line 1 of the Dockerfile (ARG ${{X-y}}=1): DS01 cannot resolve the ARG name "
        f"'${{X-y}}': '${{X-y...' {UNREAD}.",
        EXPAND_HINT,
        "unresolvable_dockerfile",
        1,
        "ARG ${X-y}=1",
        id="arg-name-expansion",
    ),
    pytest.param(
        "ARG OK=1 A=${X-y}\nFROM cat\n",
        f"Line 1 of the Dockerfile (ARG OK=1 A=${{X-y}}): DS01 cannot resolve the ARG default "
        f"'${{X-y}}': '${{X-y...' {UNREAD}.",
        EXPAND_HINT,
        "unresolvable_dockerfile",
        1,
        "ARG OK=1 A=${X-y}",
        id="arg-default-expansion",
    ),
    pytest.param(
        "ARG 1A=x\nFROM cat\n",
        "Line 1 of the Dockerfile (ARG 1A=x): '1A' is not a build argument name.",
        "Name build arguments with letters, digits and _.",
        "bad_dockerfile",
        1,
        "ARG 1A=x",
        id="arg-name",
    ),
    pytest.param(
        "FROM img-$TARGETOS\n",
        "Line 1 of the Dockerfile (FROM img-$TARGETOS): DS01 cannot resolve the FROM image "
        "'img-$TARGETOS': $TARGETOS is set by some builders and not by others; declare it "
        "with 'ARG TARGETOS=<value>' before the first FROM.",
        EXPAND_HINT,
        "unresolvable_dockerfile",
        1,
        "FROM img-$TARGETOS",
        id="platform-arg",
    ),
    pytest.param(
        "ARG BUILDARCH\nFROM img-$BUILDARCH\n",
        "Line 2 of the Dockerfile (FROM img-$BUILDARCH): DS01 cannot resolve the FROM image "
        "'img-$BUILDARCH': $BUILDARCH has no value of its own; BuildKit sets it and the "
        "classic builder does not; give it one: 'ARG BUILDARCH=<value>'.",
        EXPAND_HINT,
        "unresolvable_dockerfile",
        2,
        "FROM img-$BUILDARCH",
        id="platform-arg-declared",
    ),
    pytest.param(
        "FROM img-$no_proxy\n",
        "Line 1 of the Dockerfile (FROM img-$no_proxy): DS01 cannot resolve the FROM image "
        "'img-$no_proxy': $no_proxy is set by some builders and not by others; declare it "
        "with 'ARG no_proxy=<value>' before the first FROM.",
        EXPAND_HINT,
        "unresolvable_dockerfile",
        1,
        "FROM img-$no_proxy",
        id="proxy-arg",
    ),
    pytest.param(
        "FROM a b\n",
        "Line 1 of the Dockerfile (FROM a b): FROM takes an image and, optionally, 'AS name'.",
        "Write 'FROM image' or 'FROM image AS name'.",
        "bad_dockerfile",
        1,
        "FROM a b",
        id="from-two-words",
    ),
    pytest.param(
        "FROM\n",
        "Line 1 of the Dockerfile (FROM): FROM takes an image and, optionally, 'AS name'.",
        "Write 'FROM image' or 'FROM image AS name'.",
        "bad_dockerfile",
        1,
        "FROM",
        id="from-alone",
    ),
    pytest.param(
        "FROM a AS b c\n",
        "Line 1 of the Dockerfile (FROM a AS b c): FROM takes an image and, optionally, 'AS name'.",
        "Write 'FROM image' or 'FROM image AS name'.",
        "bad_dockerfile",
        1,
        "FROM a AS b c",
        id="from-four-words",
    ),
    pytest.param(
        "FROM cat AS 1x\n",
        "Line 1 of the Dockerfile (FROM cat AS 1x): '1x' is not a valid new stage name.",
        STAGE_HINT,
        "bad_dockerfile",
        1,
        "FROM cat AS 1x",
        id="stage-name",
    ),
    pytest.param(
        "FROM cat AS Base\nFROM cat AS BASE\n",
        "Line 2 of the Dockerfile (FROM cat AS BASE): 'BASE' is not a valid new stage name.",
        STAGE_HINT,
        "bad_dockerfile",
        2,
        "FROM cat AS BASE",
        id="stage-name-again",
    ),
    pytest.param(
        "FROM BobImg\n",
        "Line 1 of the Dockerfile (FROM BobImg): FROM 'BobImg' names no image and no earlier "
        "stage.",
        NO_IMAGE_HINT,
        "unresolvable_dockerfile",
        1,
        "FROM BobImg",
        id="no-image",
    ),
    pytest.param(
        "ARG B=Bad\nFROM $B\n",
        "Line 2 of the Dockerfile (FROM $B): FROM '$B', which resolves to 'Bad', names no image "
        "and no earlier stage.",
        NO_IMAGE_HINT,
        "unresolvable_dockerfile",
        2,
        "FROM $B",
        id="no-image-resolved",
    ),
    pytest.param(
        "FROM cat\nCOPY --from /a /b\n",
        "Line 2 of the Dockerfile (COPY --from /a /b): COPY --from needs a value.",
        "Write COPY --from=NAME.",
        "bad_dockerfile",
        2,
        "COPY --from /a /b",
        id="from-without-value",
    ),
    pytest.param(
        "FROM cat\nADD --from=${S} /a /b\n",
        "Line 2 of the Dockerfile (ADD --from=${S} /a /b): ADD --from=${S} depends on a "
        "variable, which builders expand differently (the classic builder not at all).",
        "Name the stage or image literally, or use 'FROM ${VAR} AS src' and ADD --from=src.",
        "unresolvable_dockerfile",
        2,
        "ADD --from=${S} /a /b",
        id="from-variable",
    ),
    pytest.param(
        "FROM cat\nRUN --mount=from=$S true\n",
        "Line 2 of the Dockerfile (RUN --mount=from=$S true): RUN --mount from=$S depends on a "
        "variable, which builders expand differently (the classic builder not at all).",
        "Name the stage or image literally, or use 'FROM ${VAR} AS src' and RUN --mount from=src.",
        "unresolvable_dockerfile",
        2,
        "RUN --mount=from=$S true",
        id="mount-from-variable",
    ),
    pytest.param(
        "FROM cat\nRUN --mount=type=bind,from=$A=b true\n",
        "Line 2 of the Dockerfile (RUN --mount=type=bind,from=$A=b true): RUN --mount "
        "from=$A=b depends on a variable, which builders expand differently (the classic "
        "builder not at all).",
        "Name the stage or image literally, or use 'FROM ${VAR} AS src' and RUN --mount from=src.",
        "unresolvable_dockerfile",
        2,
        "RUN --mount=type=bind,from=$A=b true",
        id="mount-from-splits-at-the-first-equals",
    ),
    pytest.param(
        "FROM cat\nRUN --mount true\n",
        "Line 2 of the Dockerfile (RUN --mount true): --mount needs a value.",
        "Write --mount=type=...",
        "bad_dockerfile",
        2,
        "RUN --mount true",
        id="mount-without-value",
    ),
    pytest.param(
        "FROM cat\nRUN --mount='a\rb' true\n",
        "Line 2 of the Dockerfile (RUN --mount='a b' true): DS01 cannot read --mount=a\rb: "
        "new-line character seen in unquoted field - do you need to open the file in "
        "universal-newline mode?.",
        "Check it.",
        "bad_dockerfile",
        2,
        "RUN --mount='a b' true",
        id="mount-unreadable",
    ),
    pytest.param(
        "FROM cat\nLABEL a=1 b\n",
        "Line 2 of the Dockerfile (LABEL a=1 b): 'b' is not key=value.",
        "Write LABEL key=value ...",
        "bad_dockerfile",
        2,
        "LABEL a=1 b",
        id="label-not-key-value",
    ),
    pytest.param(
        "FROM cat\nLABEL $K=bob\n",
        "Line 2 of the Dockerfile (LABEL $K=bob): the label key '$K' depends on a variable, so "
        "DS01 cannot tell which label it sets.",
        "Write label keys literally.",
        "reserved_label",
        2,
        "LABEL $K=bob",
        id="label-key-variable",
    ),
    pytest.param(
        "FROM cat\nLABEL k='v\n",
        "Line 2 of the Dockerfile (LABEL k='v): DS01 cannot read this label: a closing single "
        "quote is missing.",
        "Check its quotes.",
        "bad_dockerfile",
        2,
        "LABEL k='v",
        id="label-open-quote",
    ),
    pytest.param(
        "FROM cat\nLABEL 'k=v\n",
        "Line 2 of the Dockerfile (LABEL 'k=v): DS01 cannot read this label: a closing single "
        "quote is missing.",
        "Check its quotes.",
        "bad_dockerfile",
        2,
        "LABEL 'k=v",
        id="label-key-open-quote",
    ),
    pytest.param(
        "FROM cat\nADD <<EOF /x\n",
        f"Line 2 of the Dockerfile (ADD <<EOF /x): {HEREDOC_MESSAGE}",
        HEREDOC_HINT,
        "bad_dockerfile",
        2,
        "ADD <<EOF /x",
        id="heredoc-add",
    ),
    pytest.param(
        "FROM cat\nONBUILD RUN <<EOF\n",
        f"Line 2 of the Dockerfile (RUN <<EOF): {HEREDOC_MESSAGE}",
        HEREDOC_HINT,
        "bad_dockerfile",
        2,
        "RUN <<EOF",
        id="heredoc-onbuild",
    ),
    pytest.param(
        "FROM cat\nONBUILD ONBUILD RUN x\n",
        "Line 2 of the Dockerfile (ONBUILD ONBUILD RUN x): ONBUILD ONBUILD is not allowed.",
        "Remove it.",
        "bad_dockerfile",
        2,
        "ONBUILD ONBUILD RUN x",
        id="onbuild-onbuild",
    ),
    pytest.param(
        "FROM cat\nONBUILD maintainer me\n",
        "Line 2 of the Dockerfile (ONBUILD maintainer me): ONBUILD MAINTAINER is not allowed.",
        "Remove it.",
        "bad_dockerfile",
        2,
        "ONBUILD maintainer me",
        id="onbuild-maintainer",
    ),
    pytest.param(
        "FROM cat\nONBUILD\n",
        "Line 2 of the Dockerfile (ONBUILD): ONBUILD  is not allowed.",
        "Remove it.",
        "bad_dockerfile",
        2,
        "ONBUILD",
        id="onbuild-nothing",
    ),
    pytest.param(
        "FROM cat\nONBUILD COPY --from=$S /a /b\n",
        "Line 2 of the Dockerfile (COPY --from=$S /a /b): COPY --from=$S depends on a variable, "
        "which builders expand differently (the classic builder not at all).",
        "Name the stage or image literally, or use 'FROM ${VAR} AS src' and COPY --from=src.",
        "unresolvable_dockerfile",
        2,
        "COPY --from=$S /a /b",
        id="onbuild-inner-line",
    ),
    pytest.param(
        "ARG B=x\n",
        "The Dockerfile has no FROM line.",
        "Start it with 'FROM <image>'.",
        "bad_dockerfile",
        None,
        None,
        id="no-from",
    ),
]


@pytest.mark.parametrize(("text", "message", "hint", "code", "line", "shown"), REFUSALS)
def test_refusals_are_exact(  # noqa: PLR0917 (a pytest table)
    text: str, message: str, hint: str, code: str, line: int | None, shown: str | None
) -> None:
    with pytest.raises(UsageError) as info:
        read_dockerfile(text)
    error = info.value
    assert error.exit_code == EXIT_BAD_INPUT
    assert (error.message, error.hint, error.code) == (message, hint, code)
    assert error.details == ({} if line is None else {"line": line, "instruction": shown})


def test_a_long_instruction_is_shortened_in_the_refusal() -> None:
    image = "B" * 150
    with pytest.raises(UsageError) as info:
        read_dockerfile(f"FROM {image}\n")
    shown = f"FROM {'B' * 112}..."
    assert info.value.message == (
        f"Line 1 of the Dockerfile ({shown}): FROM {image!r} names no image and no earlier stage."
    )
    assert info.value.details == {"line": 1, "instruction": shown}
