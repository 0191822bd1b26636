"""Reading a Dockerfile's text as Docker's builder does (``domain/dockerfile_syntax``).

Each case is a small text and what the builder makes of it, written out by hand: the lines
joined, the keyword, the flags with quotes and escapes removed, the words, the expansion,
or the exact refusal. Boundaries are tested on both sides (an escape as the last character,
a continuation on the last line, 120 and 121 characters shown).
"""

from __future__ import annotations

import pytest

from ds01.domain.dockerfile_syntax import (
    Instruction,
    WordError,
    expand_word,
    go_lower,
    instructions,
    parse_instruction,
    parse_words,
    refuse,
    split_whitespace,
)
from ds01.errors import EXIT_BAD_INPUT, UsageError

VARS = {"A": "alpha", "B": "", "N1": "one", "X_2": "two"}


def _lookup(name: str) -> str | None:
    return VARS.get(name)


def _parsed(text: str) -> list[tuple[int, str, tuple[str, ...], str, str]]:
    return [(i.line, i.keyword, i.flags, i.args, i.text) for i in instructions(text)]


# ------------------------------------------------------------------- small helpers


def test_refuse_names_the_line_with_hint_and_code() -> None:
    error = refuse(12, "it is wrong.", "Fix it.")
    assert isinstance(error, UsageError)
    assert error.exit_code == EXIT_BAD_INPUT
    assert error.message == "Line 12 of the Dockerfile: it is wrong."
    assert error.hint == "Fix it."
    assert error.code == "bad_dockerfile"


@pytest.mark.parametrize(
    ("text", "lower"),
    [("FROM", "from"), ("OnBuild", "onbuild"), ("İS", "is"), ("ß", "ß"), ("", "")],
)
def test_go_lower_is_one_character_for_one(text: str, lower: str) -> None:
    assert go_lower(text) == lower


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b", ["a", "b"]),
        ("  a \t\v\f\r b  ", ["a", "b"]),
        ("\u3000a b\u3000", ["a", "b"]),  # Go's TrimSpace strips Unicode blanks at the ends
        ("a\u3000b", ["a\u3000b"]),  # but tokenWhitespace splits on ASCII blanks only
        ("\x1ca\x1c", ["\x1ca\x1c"]),  # Python's str.strip would drop these; Go's does not
        ("XaX", ["XaX"]),
        ("", []),
        (" \t ", []),
    ],
)
def test_split_whitespace(text: str, words: list[str]) -> None:
    assert split_whitespace(text) == words


def test_an_instruction_is_shown_whole_up_to_120_characters() -> None:
    def shown(length: int) -> str:
        return Instruction(1, "run", (), "", "x" * length).shown()

    assert shown(119) == "x" * 119
    assert shown(120) == "x" * 120
    assert shown(121) == "x" * 117 + "..."
    assert shown(200) == "x" * 117 + "..."
    assert len(shown(121)) == 120


def test_flag_values_by_name_in_any_case() -> None:
    inst = Instruction(
        1, "copy", ("--from=a", "--FROM=b", "--from", "--chown=1", "--from=", "--fromx=c"), "", ""
    )
    assert inst.flag_values("from") == ["a", "b", None, ""]
    assert inst.flag_values("chown") == ["1"]
    assert inst.flag_values("mount") == []


# --------------------------------------------------------------------- directives

ESCAPE_HINT = (
    "Remove that line: DS01 reads Dockerfiles with the default escape character '\\' only "
    "(Linux images use it)."
)
SYNTAX_HINT = (
    "Remove that line or use 'docker/dockerfile:1': a frontend is an image that would run "
    "with the build's rights."
)


def _refused(text: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        instructions(text)
    assert info.value.code == "bad_dockerfile"
    return info.value


def test_an_escape_directive_is_refused_exactly() -> None:
    error = _refused("# escape=`\nFROM cat\n")
    assert error.message == (
        "Line 1 of the Dockerfile: the parser directive '# escape=`' changes the escape character."
    )
    assert error.hint == ESCAPE_HINT


def test_a_foreign_frontend_is_refused_exactly_on_its_line() -> None:
    error = _refused("# syntax=docker/dockerfile:1\n  #SYNTAX = bobimg  \nFROM cat\n")
    assert error.message == (
        "Line 2 of the Dockerfile: the parser directive '#SYNTAX = bobimg' names a Dockerfile "
        "frontend other than Docker's own."
    )
    assert error.hint == SYNTAX_HINT


@pytest.mark.parametrize(
    "text",
    [
        "\t# escape=`\nFROM cat\n",  # blanks before a directive
        "\u3000# escape=`\nFROM cat\n",
        "# ESCAPE=`\nFROM cat\n",
        "# escape=\\\n# escape=`\nFROM cat\n",  # directives go on until a line is not one
    ],
)
def test_directives_are_read_as_the_builder_reads_them(text: str) -> None:
    assert "changes the escape character" in _refused(text).message


@pytest.mark.parametrize(
    ("text", "keywords"),
    [
        ("# escape=\\\nFROM cat\n", ["from"]),
        ("# escape=\\\\\nFROM cat\n", ["from"]),  # Docker itself refuses this value
        ("# syntax=docker/dockerfile:1\nFROM cat\n", ["from"]),
        (
            f"# syntax=docker.io/docker/dockerfile-upstream:1.4@sha256:{'a' * 64}\nFROM a\n",
            ["from"],
        ),
        ("FROM cat\n# escape=`\n", ["from"]),  # not at the top: a comment
        ("# a comment\n# escape=`\nFROM cat\n", ["from"]),
        ("X# escape=`\nFROM cat\n", ["x#", "from"]),  # not a directive: an instruction
        ("\x1c# escape=`\nFROM cat\n", ["\x1c#", "from"]),
    ],
)
def test_what_is_not_a_refused_directive(text: str, keywords: list[str]) -> None:
    assert [i.keyword for i in instructions(text)] == keywords


# -------------------------------------------------------------------------- lines


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        pytest.param(
            "FROM cat\nRUN a\n",
            [(1, "from", (), "cat", "FROM cat"), (2, "run", (), "a", "RUN a")],
            id="two-lines",
        ),
        pytest.param(
            "\ufeffFROM cat\r\nRUN a \\\r\n  b\r\n",
            [(1, "from", (), "cat", "FROM cat"), (2, "run", (), "a   b", "RUN a b")],
            id="bom-crlf-continuation",
        ),
        pytest.param(
            "FROM cat\nRUN a \\\n# note\n\n   \n  b \\\n c\nRUN d\n",
            [
                (1, "from", (), "cat", "FROM cat"),
                (2, "run", (), "a   b  c", "RUN a b c"),
                (8, "run", (), "d", "RUN d"),
            ],
            id="continuation-over-comments-and-blanks",
        ),
        pytest.param(
            "FROM cat\nRUN a \\",
            [(1, "from", (), "cat", "FROM cat"), (2, "run", (), "a", "RUN a")],
            id="continuation-on-the-last-line",
        ),
        pytest.param(
            "FROM cat\nRUN a \\\n",
            [(1, "from", (), "cat", "FROM cat"), (2, "run", (), "a", "RUN a")],
            id="continuation-before-the-end",
        ),
        pytest.param(
            "  # comment\n\t\nFROM cat\n",
            [(3, "from", (), "cat", "FROM cat")],
            id="indented-comment-and-blank",
        ),
        pytest.param(
            "\\\nFROM cat\n",
            [(1, "from", (), "cat", "FROM cat")],
            id="lone-backslash-continues",
        ),
        pytest.param(
            "\x1cFROM cat\n",
            [(1, "\x1cfrom", (), "cat", "FROM cat")],  # the shown text uses str.split
            id="not-a-go-blank",
        ),
        pytest.param(
            "RUN a \\\n\x1c\nb\n",
            [(1, "run", (), "a \x1c", "RUN a"), (3, "b", (), "", "b")],
            id="not-a-go-blank-in-continuation",
        ),
        pytest.param(
            "RUN a \\\nX\nb\n",
            [(1, "run", (), "a X", "RUN a X"), (3, "b", (), "", "b")],
            id="x-in-continuation",
        ),
        pytest.param("\x1c\n", [(1, "\x1c", (), "", "")], id="only-not-a-go-blank"),
        pytest.param("X\n", [(1, "x", (), "", "X")], id="only-x"),
        pytest.param(
            "\u3000FROM\u3000cat\n", [(1, "from\u3000cat", (), "", "FROM cat")], id="ideographic"
        ),
        pytest.param("RUN \\\n\n", [(1, "run", (), "", "RUN")], id="continuation-into-nothing"),
    ],
)
def test_instructions_are_joined_as_the_builder_joins_them(
    text: str, parsed: list[tuple[int, str, tuple[str, ...], str, str]]
) -> None:
    assert _parsed(text) == parsed


# -------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("line", "keyword", "flags", "args"),
    [
        ("COPY --from=a /x /y", "copy", ("--from=a",), "/x /y"),
        ("copy  --from=a   --chown=1:2  /x", "copy", ("--from=a", "--chown=1:2"), "/x"),
        ("COPY --from='a b' /x", "copy", ("--from=a b",), "/x"),
        ('COPY --from="a\\"b" /x', "copy", ('--from=a"b',), "/x"),
        ("COPY --from='a\\'b' /x", "copy", ("--from=a'b",), "/x"),
        ("COPY --fr\\om=a /x", "copy", ("--from=a",), "/x"),
        ("COPY --from=a\\ b /x", "copy", ("--from=a b",), "/x"),
        ("COPY -- /x", "copy", (), " /x"),  # "--" ends the flags (Go keeps the blank)
        ("COPY --from=a -- --x", "copy", ("--from=a",), " --x"),
        ("COPY -from=a /x", "copy", (), "-from=a /x"),  # one dash: not a flag
        ("COPY - /x", "copy", (), "- /x"),
        ("COPY -", "copy", (), "-"),
        ("COPY --from=a", "copy", ("--from=a",), ""),
        ("COPY --from=a ", "copy", ("--from=a",), ""),
        ("COPY --", "copy", (), ""),
        ("COPY --from=a\\", "copy", ("--from=a",), ""),  # a last lone escape is dropped
        ("COPY --from='a\\", "copy", ("--from=a",), ""),  # in a quote, too
        ("COPY --from='a", "copy", ("--from=a",), ""),  # an open quote ends the line
        ("COPY --a='' /x", "copy", ("--a=",), "/x"),
        ("COPY ''--a /x", "copy", (), "''--a /x"),
        ("COPY --a'' --b /x", "copy", ("--a", "--b"), "/x"),
        ("COPY --a\t--b\x85/x", "copy", ("--a", "--b\udcc2"), "/x"),  # bytes: U+0085 is C2 85
        ("COPY --x=é /y", "copy", ("--x=é",), "/y"),
        ("COPY --x='é b' /y", "copy", ("--x=é b",), "/y"),
        ("RUN", "run", (), ""),
        ("  RUN   echo  hi  ", "run", (), "echo  hi"),
        ("RUN\techo", "run", (), "echo"),
    ],
)
def test_flags_are_read_as_go_reads_them(
    line: str, keyword: str, flags: tuple[str, ...], args: str
) -> None:
    inst = parse_instruction(line, 4)
    assert (inst.line, inst.keyword, inst.flags, inst.args) == (4, keyword, flags, args)


def test_the_joined_text_collapses_blanks() -> None:
    assert parse_instruction("  COPY   --from=a\t /x  ", 1).text == "COPY --from=a /x"


def test_flags_hold_bytes_that_are_not_utf8_unchanged() -> None:
    line = "COPY --x=\udcff /y"  # a surrogate-escaped byte, as a file read with errors= gives
    assert parse_instruction(line, 1).flags == ("--x=\udcff",)


# -------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("rest", "words"),
    [
        ("a b", ["a", "b"]),
        ("a  b", ["a", "b"]),
        ("  a  ", ["a"]),
        ("a ", ["a"]),
        ("", []),
        ("   ", []),
        ("'a b' c", ["'a b'", "c"]),
        ('"a b" c', ['"a b"', "c"]),
        ("''", ["''"]),
        ("a'b c'd e", ["a'b c'd", "e"]),
        ("a\\ b c", ["a\\ b", "c"]),
        ("a\\", ["a"]),
        ("\\", []),
        ("a \\", ["a"]),
        ("\\ab", ["\\ab"]),
        ('"a\\"b c"', ['"a\\"b c"']),
        ("'a\\' b'", ["'a\\'", "b'"]),  # no escape inside single quotes
        ('"a\\', ['"a']),
        ('"a', ['"a']),
        ('k="v w" x=y', ['k="v w"', "x=y"]),
        ("a\u3000b", ["a", "b"]),
    ],
)
def test_parse_words(rest: str, words: list[str]) -> None:
    assert parse_words(rest) == words


# ---------------------------------------------------------------------- expansion


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("plain", "plain"),
        ("$A", "alpha"),
        ("ab$A", "abalpha"),
        ("x${A}y", "xalphay"),
        ("$A$N1", "alphaone"),
        ("$X_2-", "two-"),
        ("$UNSET.", "."),
        ("a$", "a$"),
        ("$ x", "$ x"),
        ("${A:-d}", "alpha"),
        ("${B:-d}", "d"),
        ("${UNSET:-d}", "d"),
        ("${A:+alt}", "alt"),
        ("${B:+alt}", ""),
        ("${UNSET:+alt}", ""),
        ("${UNSET:-${A:+x$N1}}", "xone"),
        ("${UNSET:-'a}b'}", "a}b"),
        ('${UNSET:-"$A"}', "alpha"),
        ("'a b'", "a b"),
        ("'$A'", "$A"),
        ("x'a'y'b'z", "xaybz"),
        ("'a'b'c'", "abc"),
        ('"a b"', "a b"),
        ('"$A"', "alpha"),
        ('"x${A}y$N1"', "xalphayone"),
        ('"a\\"b"', 'a"b'),
        ('"a\\$A"', "a$A"),
        ('"a\\\\b"', "a\\b"),
        ('"a\\nb"', "a\\nb"),
        ('""', ""),
        ("a\\$A", "a$A"),
        ("a\\ b", "a b"),
        ("a\\", "a"),
        ("\\\\", "\\"),
        ("é$A", "éalpha"),
    ],
)
def test_expand_word(text: str, value: str) -> None:
    assert expand_word(text, _lookup) == value


UNREAD = (
    "is a substitution DS01 does not read (only $VAR, ${VAR}, ${VAR:-default} and "
    "${VAR:+alternative})"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("'a", "a closing single quote is missing"),
        ("x'", "a closing single quote is missing"),
        ('"a', "a closing double quote is missing"),
        ('"$A', "a closing double quote is missing"),
        ('"a\\', "a closing double quote is missing"),
        ("$-", "'$-' is a special parameter, which builders read differently"),
        ("${", "a closing '}' is missing"),
        ("${A", "a closing '}' is missing"),
        ("${A:-b", "a closing '}' is missing"),
        ("${}", "'${}' is a bad substitution"),
        ("${{A}}", "'${{' is a bad substitution"),
        ("${:-a}", "'${:' is a bad substitution"),
        ("${@}", "'${@' is a bad substitution"),
        ("${#A}", "'${#' is a bad substitution"),
        ("${1}", "'${1' is a bad substitution"),
        ("$@", "'$@' is a special parameter, which builders read differently"),
        ("$1", "'$1' is a special parameter, which builders read differently"),
        ("a$$", "'$$' is a special parameter, which builders read differently"),
        ("${A-b}", "'${A-b...' " + UNREAD),
        ("${A:?b}", "'${A:?...' " + UNREAD),
        ("${A#b}", "'${A#b...' " + UNREAD),
        ("${A:}", "'${A:}...' " + UNREAD),
        ("${A-", "'${A-...' " + UNREAD),
    ],
)
def test_expansion_refusals_say_why(text: str, message: str) -> None:
    with pytest.raises(WordError) as info:
        expand_word(text, _lookup)
    assert str(info.value) == message


def test_what_the_lookup_raises_comes_through() -> None:
    def refusing(name: str) -> str | None:
        raise WordError(f"no {name}")

    with pytest.raises(WordError, match=r"^no A$"):
        expand_word("x$A", refusing)
    assert expand_word("no variables", refusing) == "no variables"
