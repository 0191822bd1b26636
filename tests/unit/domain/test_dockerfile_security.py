"""Hostile Dockerfiles (issue 10, finding 5): every image a build reads, and DS01's labels.

The build check used to skip any ``FROM`` holding a ``$``: ``ARG B=bob's image`` then
``FROM ${B}`` built on another user's image. Each case below is a Dockerfile DS01 must read
exactly as Docker's builder will: the images it reads (build arguments resolved, stages
followed) or a refusal (exit 2) whose code and message are asserted. Labels under
``aime.mlc.*`` / ``ds01.*`` that a Dockerfile may not set are refused the same way.
"""

from __future__ import annotations

import pytest

from ds01.domain.dockerfile import BuildNetwork, ImageSpec, ImageUser, render_dockerfile
from ds01.domain.dockerfile_edit import wrap_user_dockerfile
from ds01.domain.dockerfile_labels import check_labels, is_reserved, ownership_labels
from ds01.domain.dockerfile_refs import read_dockerfile, read_triggers
from ds01.domain.labels import L
from ds01.domain.packages import plan_packages
from ds01.errors import EXIT_BAD_INPUT, UsageError

BOB = "bobimg-bob-image:latest"
ID = "sha256:" + "a" * 64
PROXY = {"http_proxy": "http://proxy:3128", "HTTP_PROXY": "http://proxy:3128"}

# (text, build args, images read in order, final base)
RESOLVED = [
    pytest.param(f"ARG B={BOB}\nFROM ${{B}}\n", {}, [BOB], BOB, id="arg-braced"),
    pytest.param(f"ARG B={BOB}\nFROM $B\n", {}, [BOB], BOB, id="arg-plain"),
    pytest.param(
        'ARG A=bob\nARG B="${A}img-${A}-image":latest\nfrom ${C:-${B}}\n',
        {},
        [BOB],
        BOB,
        id="nested-default-quoted-lowercase",
    ),
    pytest.param("ARG X=1\nFROM ${X:+bobimg}\n", {}, ["bobimg"], "bobimg", id="alt-set"),
    pytest.param("ARG X\nFROM ${X:+bobimg}cat\n", {}, ["cat"], "cat", id="alt-unset"),
    pytest.param("ARG X=\nFROM ${X:-bobimg}\n", {}, ["bobimg"], "bobimg", id="default-empty"),
    pytest.param(
        "ARG BASE=cat\nFROM $BASE\n",
        {"BASE": "bobimg"},
        ["bobimg"],
        "bobimg",
        id="build-arg-overrides-default",
    ),
    pytest.param(
        "ARG http_proxy\nFROM img${http_proxy:+-proxied}\n",
        PROXY,
        ["img-proxied"],
        "img-proxied",
        id="ds01s-proxy-build-arg",
    ),
    pytest.param(
        "ARG N=B\nARG ${N}=bobimg\nFROM $B\n", {}, ["bobimg"], "bobimg", id="arg-name-from-variable"
    ),
    pytest.param("ARG A=bob B=img\nFROM ${A}${B}\n", {}, ["bobimg"], "bobimg", id="two-args"),
    pytest.param(
        "FROM python:${PY:-3.11}\n",
        {},
        ["python:3.11"],
        "python:3.11",
        id="undeclared-with-default",
    ),
    pytest.param(
        "FROM \\\n  # a comment\n\n  bobimg\n",
        {},
        ["bobimg"],
        "bobimg",
        id="continuation-comment-blank",
    ),
    pytest.param(
        "FROM \\  \n bobimg\n", {}, ["bobimg"], "bobimg", id="continuation-trailing-blank"
    ),
    pytest.param(
        "# note \\\nFROM bobimg\n", {}, ["bobimg"], "bobimg", id="comment-ending-in-backslash"
    ),
    pytest.param(
        "arg B=bobimg\nfRoM $B aS base\nFrOm BASE\n", {}, ["bobimg"], "bobimg", id="mixed-case"
    ),
    pytest.param('FROM "bobimg"\n', {}, ["bobimg"], "bobimg", id="double-quoted"),
    pytest.param("FROM 'bob'img\n", {}, ["bobimg"], "bobimg", id="single-quoted-part"),
    pytest.param("FROM bob\\img\n", {}, ["bobimg"], "bobimg", id="escaped"),
    pytest.param("ARG B=bobimg\r\nFROM $B\r\n", {}, ["bobimg"], "bobimg", id="crlf"),
    pytest.param("\ufeffFROM bobimg\n", {}, ["bobimg"], "bobimg", id="bom"),
    pytest.param(f"FROM {ID}\n", {}, [ID], ID, id="image-id"),
    pytest.param(
        "\n# escape=`\nFROM bobimg\n",
        {},
        ["bobimg"],
        "bobimg",
        id="escape-after-blank-is-a-comment",
    ),
    pytest.param(
        "# syntax=docker/dockerfile:1\n# escape=\\\nFROM cat\n",
        {},
        ["cat"],
        "cat",
        id="harmless-directives",
    ),
    pytest.param(
        "FROM --platform=$BUILDPLATFORM cat:1 AS b\nFROM b\n",
        {},
        ["cat:1"],
        "cat:1",
        id="platform-flag-and-stage",
    ),
    pytest.param("FROM cat AS a\nFROM a AS b\nFROM B\n", {}, ["cat"], "cat", id="stage-chain"),
    pytest.param(
        "ARG B=cat\nFROM x\nARG B=bobimg\nFROM ${B}\n",
        {},
        ["x", "cat"],
        "cat",
        id="arg-redefined-in-a-stage-never-reaches-from",
    ),
    pytest.param(
        f"FROM cat\nCOPY --from={BOB} /home /x\n", {}, ["cat", BOB], "cat", id="copy-from"
    ),
    pytest.param(
        'FROM cat\nCOPY --from="bobimg" /a /b\n',
        {},
        ["cat", "bobimg"],
        "cat",
        id="copy-from-quoted",
    ),
    pytest.param(
        "FROM cat\ncopy --FROM=bobimg /a /b\n",
        {},
        ["cat", "bobimg"],
        "cat",
        id="copy-from-any-case",
    ),
    pytest.param(
        "FROM cat AS bobimg\nCOPY --from=bobimg /a /b\n",
        {},
        ["cat", "bobimg"],
        "cat",
        id="copy-from-current-stage-name-is-the-image",
    ),
    pytest.param(
        "FROM cat AS b\nFROM cat2\nCOPY --from=B /a /b\nCOPY --from=0 /c /d\n",
        {},
        ["cat", "cat2"],
        "cat2",
        id="copy-from-earlier-stage",
    ),
    pytest.param(
        "FROM cat\nCOPY --from=3 /a /b\n",
        {},
        ["cat", "3"],
        "cat",
        id="copy-from-index-out-of-range",
    ),
    pytest.param(
        "FROM cat\nCOPY --from=later /a /b\nFROM cat2 AS later\n",
        {},
        ["cat", "later", "cat2"],
        "cat2",
        id="copy-from-later-stage",
    ),
    pytest.param(
        "FROM cat\nRUN --mount=type=bind,from=bobimg,source=/home,target=/x true\n",
        {},
        ["cat", "bobimg"],
        "cat",
        id="run-mount-from",
    ),
    pytest.param(
        "FROM cat\nRUN --mount=type=cache,FROM=bobimg,target=/x true\n",
        {},
        ["cat", "bobimg"],
        "cat",
        id="run-mount-from-upper",
    ),
    pytest.param(
        "FROM cat AS a\nONBUILD COPY --from=bobimg /a /b\n",
        {},
        ["cat", "bobimg"],
        "cat",
        id="onbuild-copy-from",
    ),
    pytest.param(
        "FROM cat AS b\nFROM cat2\nONBUILD COPY --from=b /a /a\n",
        {},
        ["cat", "cat2", "b"],
        "cat2",
        id="onbuild-stage-names-are-checked-as-images",
    ),
    pytest.param("FROM scratch\nCOPY --from=bobimg / /\n", {}, ["bobimg"], "scratch", id="scratch"),
]


@pytest.mark.parametrize(("text", "args", "images", "final"), RESOLVED)
def test_every_image_a_build_reads_is_found(
    text: str, args: dict[str, str], images: list[str], final: str
) -> None:
    reading = read_dockerfile(text, args)
    assert reading.refs() == images
    assert reading.final_base == final


# (text, build args, error code, a fragment of the message)
REFUSED = [
    pytest.param(
        "# escape=`\nFROM cat\n",
        {},
        "bad_dockerfile",
        "changes the escape character",
        id="escape-directive",
    ),
    pytest.param(
        f"# syntax={BOB}\nFROM cat\n",
        {},
        "bad_dockerfile",
        "names a Dockerfile frontend other than Docker's own",
        id="syntax-frontend",
    ),
    pytest.param(
        "ARG B\nFROM ${B-bobimg}\n",
        {},
        "unresolvable_dockerfile",
        "is a substitution DS01 does not read",
        id="dash-without-colon",
    ),
    pytest.param(
        "ARG B=xbobimg\nFROM ${B#x}\n",
        {},
        "unresolvable_dockerfile",
        "is a substitution DS01 does not read",
        id="pattern-removal",
    ),
    pytest.param(
        "ARG B\nFROM ${B:?unset}\n",
        {},
        "unresolvable_dockerfile",
        "is a substitution DS01 does not read",
        id="question-modifier",
    ),
    pytest.param(
        "FROM $1bobimg\n", {}, "unresolvable_dockerfile", "is a special parameter", id="positional"
    ),
    pytest.param(
        "FROM img-$TARGETARCH\n",
        {},
        "unresolvable_dockerfile",
        "$TARGETARCH is set by some builders and not by others",
        id="platform-arg",
    ),
    pytest.param(
        "ARG TARGETARCH\nFROM img-$TARGETARCH\n",
        {},
        "unresolvable_dockerfile",
        "BuildKit sets it and the classic builder does not",
        id="platform-arg-declared",
    ),
    pytest.param(
        "FROM ${HTTP_PROXY:-cat}\n",
        PROXY,
        "unresolvable_dockerfile",
        "$HTTP_PROXY is set by some builders",
        id="undeclared-proxy-arg",
    ),
    pytest.param(
        "ARG B\nFROM ${B}\n",
        {},
        "unresolvable_dockerfile",
        "FROM '${B}', which resolves to '', names no image",
        id="empty",
    ),
    pytest.param(
        "FROM ${B}\n",
        {"B": "bobimg"},
        "unresolvable_dockerfile",
        "which resolves to '', names no image",
        id="undeclared-build-arg-is-empty",
    ),
    pytest.param("FROM BobImg\n", {}, "unresolvable_dockerfile", "names no image", id="upper-case"),
    pytest.param(
        "ARG B=x\nFROM cat\\$B\n",
        {},
        "unresolvable_dockerfile",
        "which resolves to 'cat$B'",
        id="escaped-dollar",
    ),
    pytest.param(
        "FROM cat\nARG S=bobimg\nCOPY --from=$S /a /b\n",
        {},
        "unresolvable_dockerfile",
        "COPY --from=$S depends on a variable",
        id="copy-from-variable",
    ),
    pytest.param(
        "FROM cat\nCOPY --from=${S:-bobimg} /a /b\n",
        {},
        "unresolvable_dockerfile",
        "depends on a variable",
        id="copy-from-default",
    ),
    pytest.param(
        "FROM cat\nRUN --mount=type=bind,from=$S,target=/x true\n",
        {},
        "unresolvable_dockerfile",
        "RUN --mount from=$S depends on a variable",
        id="mount-from-variable",
    ),
    pytest.param(
        "FROM cat\nONBUILD COPY --from=$S /a /b\n",
        {},
        "unresolvable_dockerfile",
        "depends on a variable",
        id="onbuild-copy-from-variable",
    ),
    pytest.param(
        "FROM cat\nCOPY --from /a /b\n",
        {},
        "bad_dockerfile",
        "COPY --from needs a value",
        id="copy-from-no-value",
    ),
    pytest.param(
        "FROM cat\nRUN <<EOF\nFROM bobimg\nEOF\n",
        {},
        "bad_dockerfile",
        "heredocs (<<EOF) need BuildKit",
        id="heredoc-run",
    ),
    pytest.param(
        "FROM cat\nCOPY <<-'X' /f\nhi\nX\n",
        {},
        "bad_dockerfile",
        "heredocs (<<EOF) need BuildKit",
        id="heredoc-copy",
    ),
    pytest.param(f"ARG B={BOB}\n", {}, "bad_dockerfile", "no FROM line", id="no-from"),
    pytest.param(
        "FROM cat bobimg\n", {}, "bad_dockerfile", "FROM takes an image", id="from-two-words"
    ),
    pytest.param(
        "FROM cat AS ${X}\n",
        {},
        "bad_dockerfile",
        "is not a valid new stage name",
        id="stage-name-variable",
    ),
    pytest.param(
        "FROM cat AS a\nFROM cat AS A\n",
        {},
        "bad_dockerfile",
        "is not a valid new stage name",
        id="duplicate-stage",
    ),
    pytest.param(
        "FROM cat\nONBUILD FROM bobimg\n",
        {},
        "bad_dockerfile",
        "ONBUILD FROM is not allowed",
        id="onbuild-from",
    ),
    pytest.param(
        'FROM "bobimg\n',
        {},
        "unresolvable_dockerfile",
        "a closing double quote is missing",
        id="open-quote",
    ),
    pytest.param(
        "ARG B=x\nFROM ${B\n",
        {},
        "unresolvable_dockerfile",
        "a closing '}' is missing",
        id="open-brace",
    ),
]


@pytest.mark.parametrize(("text", "args", "code", "fragment"), REFUSED)
def test_what_cannot_be_resolved_is_refused_naming_the_line(
    text: str, args: dict[str, str], code: str, fragment: str
) -> None:
    with pytest.raises(UsageError) as info:
        read_dockerfile(text, args)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert info.value.code == code
    assert fragment in info.value.message
    if code != "bad_dockerfile" or "no FROM" not in fragment:
        assert info.value.message.startswith("Line ") or "no FROM line" in info.value.message


# ------------------------------------------------------------------------------ labels

OWN = ownership_labels(
    image="p-alice-image:latest", project="p", login="alice", uid=1000, gid=1000, base="cat"
)


def _check(text: str) -> None:
    check_labels(read_dockerfile(text).labels, OWN)


FORGED = [
    pytest.param(
        "LABEL aime.mlc.DS01_USER_NAME=bob", "aime.mlc.DS01_USER_NAME=bob", id="baked-user"
    ),
    pytest.param('LABEL "aime.mlc.MAINTAINER"=bob', "aime.mlc.MAINTAINER=bob", id="quoted-key"),
    pytest.param("LABEL aime\\.mlc.MAINTAINER=bob", "aime.mlc.MAINTAINER=bob", id="escaped-key"),
    pytest.param("LABEL aime.mlc.MAINTAINER bob", "aime.mlc.MAINTAINER=bob", id="old-form"),
    pytest.param("LABEL a=1 aime.mlc.DS01_PROJECT=x", "aime.mlc.DS01_PROJECT=x", id="second-pair"),
    pytest.param(
        "LABEL a=1 \\\n  aime.mlc.CUSTOM_IMAGE=x", "aime.mlc.CUSTOM_IMAGE=x", id="continued"
    ),
    pytest.param("LABEL aime.mlc.DS01_USER_UID=1001", "aime.mlc.DS01_USER_UID=1001", id="uid"),
    pytest.param("LABEL AIME.MLC.MAINTAINER=alice", "AIME.MLC.MAINTAINER=alice", id="other-case"),
    pytest.param("LABEL aime.mlc=bob", "aime.mlc=bob", id="aime-owner"),
    pytest.param("LABEL aime.mlc.USER=bob", "aime.mlc.USER=bob", id="container-user"),
    pytest.param("LABEL aime.mlc.GPU_UUIDS=GPU-1", "aime.mlc.GPU_UUIDS=GPU-1", id="gpu-holding"),
    pytest.param("LABEL ds01.gpu.uuids=GPU-1", "ds01.gpu.uuids=GPU-1", id="legacy-gpu"),
    pytest.param("LABEL ds01.user=bob", "ds01.user=bob", id="legacy-user"),
    pytest.param(
        "ARG U=alice\nLABEL aime.mlc.MAINTAINER=$U",
        "aime.mlc.MAINTAINER ",
        id="value-from-variable",
    ),
    pytest.param(
        "ONBUILD LABEL aime.mlc.MAINTAINER=alice",
        "ONBUILD label would be set",
        id="onbuild-even-own-value",
    ),
]


@pytest.mark.parametrize(("line", "shown"), FORGED)
def test_a_dockerfile_may_not_set_ds01s_labels(line: str, shown: str) -> None:
    with pytest.raises(UsageError) as info:
        _check(f"FROM cat\n{line}\n")
    error = info.value
    assert (error.exit_code, error.code) == (EXIT_BAD_INPUT, "reserved_label")
    assert shown in error.message
    assert "Remove that label" in (error.hint or "")


def test_a_forged_label_names_ds01s_own_value() -> None:
    with pytest.raises(UsageError) as info:
        _check("FROM cat\nLABEL aime.mlc.DS01_USER_NAME=bob\n")
    assert info.value.message == (
        "Line 2 of the Dockerfile (LABEL) sets the label aime.mlc.DS01_USER_NAME=bob (DS01 "
        "sets 'alice' itself); labels under aime.mlc.* and ds01.* are DS01's: they say whose "
        "an image is, and a Dockerfile may not set them."
    )


def test_a_label_key_from_a_variable_is_refused() -> None:
    with pytest.raises(UsageError) as info:
        _check("FROM cat\nARG K=aime.mlc.MAINTAINER\nLABEL $K=bob\n")
    assert info.value.code == "reserved_label"
    assert "depends on a variable, so DS01 cannot tell which label it sets" in info.value.message


@pytest.mark.parametrize(
    "line",
    [
        "LABEL aime.mlc.MAINTAINER=alice aime.mlc.DS01_USER_NAME=alice",  # DS01's own values
        'LABEL aime.mlc.DS01_USER_UID="1000"',
        "LABEL aime.mlc.DS01_TIERS=anything aime.mlc.FRAMEWORK=x",  # descriptive
        "LABEL aime.mlc.BASE_IMAGE=stale",  # descriptive; DS01 overrides it at build
        "LABEL org.example.owner=bob maintainer=bob",  # not DS01's namespace
        "LABEL ds01x=1",
    ],
)
def test_labels_a_dockerfile_may_set(line: str) -> None:
    _check(f"FROM cat\n{line}\n")


def test_ds01s_own_dockerfiles_pass_the_label_check() -> None:
    user = ImageUser(uid=1000, gid=1000, login="alice")
    spec = ImageSpec(
        base_image="cat",
        project="p",
        framework="custom",
        plan=plan_packages(),
        user=user,
        network=BuildNetwork(),
    )
    own = ownership_labels(
        image=spec.image_name, project="p", login="alice", uid=1000, gid=1000, base="cat"
    )
    for text in (render_dockerfile(spec), wrap_user_dockerfile("FROM cat\nRUN true\n", spec)):
        reading = read_dockerfile(text)
        check_labels(reading.labels, own)
        assert reading.refs() == ["cat"]
    # The same file built for another user is refused: its owner lines are alice's.
    bobs = ownership_labels(
        image="p-bob-image:latest", project="p", login="bob", uid=1001, gid=1001, base="cat"
    )
    with pytest.raises(UsageError, match="DS01 sets 'p-bob-image:latest' itself"):
        check_labels(read_dockerfile(render_dockerfile(spec)).labels, bobs)


def test_ownership_labels_are_the_whole_set_ds01_reads() -> None:
    assert OWN == {
        L.CUSTOM_IMAGE: "p-alice-image:latest",
        L.MAINTAINER: "alice",
        L.IMAGE_PROJECT: "p",
        L.BAKED_UID: "1000",
        L.BAKED_GID: "1000",
        L.BAKED_USER: "alice",
        L.BASE_IMAGE: "cat",
    }
    assert all(is_reserved(key) for key in OWN)
    assert not is_reserved("org.example.aime.mlc")


# ------------------------------------------------------------------- ONBUILD of a base


def test_a_base_images_onbuild_triggers_are_read() -> None:
    images, labels = read_triggers(
        [
            "COPY --from=bobimg /home /x",
            "RUN echo hi",
            "LABEL aime.mlc.MAINTAINER=bob",
            "ADD --from=b0 a b",
        ],
        "base:1",
    )
    assert [use.ref for use in images] == ["bobimg", "b0"]
    assert images[0].place == "ONBUILD trigger 1 of the base image base:1 (COPY --from)"
    with pytest.raises(UsageError, match="ONBUILD trigger 3 of the base image base:1"):
        check_labels(labels, OWN)  # it runs in this build: the ordinary rule applies


def test_an_unreadable_onbuild_trigger_is_refused() -> None:
    with pytest.raises(UsageError) as info:
        read_triggers(["COPY --from=${X} /a /b"], "base:1")
    assert info.value.message.startswith("ONBUILD trigger 1 of the base image base:1")
    assert info.value.code == "unresolvable_dockerfile"
