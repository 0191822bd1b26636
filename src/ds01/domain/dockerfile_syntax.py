"""Reading a Dockerfile's text the way Docker's builder does: lines, instructions, words.

Pure. DS01 decides which images a build may read from what this module finds, so it follows
the builder's own rules (``moby/buildkit`` ``frontend/dockerfile/parser`` and ``shell``, as
Docker 20.10's classic builder uses them) rather than a simpler reading that could disagree
with the engine: parser directives only at the top, ``\\`` continuations (with trailing blanks
allowed), comment and blank lines dropped inside continuations, instructions in any case,
flags (``--name=value``) with quotes and escapes removed, and the shell-like word expansion of
``$VAR``, ``${VAR}``, ``${VAR:-word}``, ``${VAR:+word}`` (nested), quotes and escapes.

Where builders disagree, or a form's meaning depends on the builder (another escape
character, special parameters, ``${VAR-word}``, ``${VAR#...}``), the text is refused (exit 2)
instead of guessed: a guess that differs from the engine's reading is a way around a check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ds01.errors import ErrorCode, UsageError

__all__ = [
    "ESCAPE",
    "Instruction",
    "Lookup",
    "WordError",
    "expand_word",
    "go_lower",
    "instructions",
    "parse_instruction",
    "parse_words",
    "refuse",
    "split_whitespace",
]

ESCAPE = "\\"
#: Go's ``tokenWhitespace`` (ASCII blanks only, unlike Python's ``str.split``).
_TOKEN_WS = re.compile(r"[\t\v\f\r ]+")
_CONTINUATION = re.compile(r"\\[ \t]*$")
#: Anything shaped like a parser directive; a superset of what any builder reads as one.
_DIRECTIVE = re.compile(r"#[ \t]*([A-Za-z][A-Za-z0-9]*)[ \t]*=[ \t]*(.*?)[ \t]*")
#: Official Dockerfile frontends; any other ``# syntax=`` makes BuildKit run that image.
_OFFICIAL_SYNTAX = re.compile(
    r"(?:docker\.io/)?docker/dockerfile(?:-upstream)?(?::[A-Za-z0-9_.-]+)?(?:@sha256:[0-9a-f]{64})?"
)
#: Bytes Go's ``unicode.IsSpace`` accepts when the builder looks at single bytes.
_GO_SPACE_BYTES = frozenset(b"\t\n\v\f\r \x85\xa0")
_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
_SPECIAL_PARAMS = frozenset("@*#?-$!")

#: Returns a variable's value, ``None`` when unset; may raise :class:`WordError`.
Lookup = Callable[[str], "str | None"]


class WordError(ValueError):
    """A word the builder would reject, or whose meaning DS01 will not guess."""


def refuse(
    line: int, what: str, hint: str, *, code: ErrorCode = ErrorCode.BAD_DOCKERFILE
) -> UsageError:
    """The exit-2 error for something in a Dockerfile, naming its line."""
    return UsageError(f"Line {line} of the Dockerfile: {what}", hint=hint, code=code)


def go_lower(text: str) -> str:
    """Lower case as Go's ``strings.ToLower`` (one character for one: ``İ`` is ``i``)."""
    return "".join(c.lower()[0] for c in text)


def split_whitespace(text: str) -> list[str]:
    """Go's ``tokenWhitespace.Split(strings.TrimSpace(text), -1)``, empty words dropped."""
    return [w for w in _TOKEN_WS.split(text.strip("".join(_GO_SPACE))) if w]


@dataclass(frozen=True)
class Instruction:
    """One instruction: its first line, keyword (lower case), flags and the rest."""

    line: int
    keyword: str
    flags: tuple[str, ...]  # "--name=value" (or "--name"), quotes and escapes removed
    args: str  # what follows the flags, as written
    text: str  # the joined instruction, for messages

    def flag_values(self, name: str) -> list[str | None]:
        """Values of the flag ``name`` (any case, as DS01 errs on the safe side);
        ``None`` for the flag without ``=``."""
        out: list[str | None] = []
        for flag in self.flags:
            key, sep, value = flag.removeprefix("--").partition("=")
            if go_lower(key) == name:
                out.append(value if sep else None)
        return out

    def shown(self) -> str:
        return self.text if len(self.text) <= 120 else self.text[:117] + "..."


# ------------------------------------------------------------------------------- lines


def _check_directives(lines: list[str]) -> None:
    for number, raw in enumerate(lines, start=1):
        match = _DIRECTIVE.fullmatch(raw.lstrip("".join(_GO_SPACE)))
        if match is None:
            return  # directives end at the first line that is not one
        name, value = match.group(1).lower(), match.group(2)
        if name == "escape" and value[:1] != ESCAPE:
            raise refuse(
                number,
                f"the parser directive '{raw.strip()}' changes the escape character.",
                "Remove that line: DS01 reads Dockerfiles with the default escape character "
                "'\\' only (Linux images use it).",
            )
        if name == "syntax" and not _OFFICIAL_SYNTAX.fullmatch(value):
            raise refuse(
                number,
                f"the parser directive '{raw.strip()}' names a Dockerfile frontend other "
                "than Docker's own.",
                "Remove that line or use 'docker/dockerfile:1': a frontend is an image that "
                "would run with the build's rights.",
            )


def instructions(text: str) -> list[Instruction]:
    """The instructions of ``text``, joined from their lines as the builder joins them.

    Refused (exit 2): a directive that changes the escape character or names a frontend
    other than Docker's.
    """
    lines = text.removeprefix("\ufeff").split("\n")
    lines = [line.removesuffix("\r") for line in lines]
    _check_directives(lines)
    out: list[Instruction] = []
    index = 0
    while index < len(lines):
        start = index + 1
        first = lines[index].lstrip("".join(_GO_SPACE))
        index += 1
        if first.startswith("#"):
            continue
        line, ended = _trim_continuation(first)
        if ended and not line:
            continue
        while not ended and index < len(lines):
            raw = lines[index]
            index += 1
            stripped = raw.lstrip("".join(_GO_SPACE))
            if stripped.startswith("#") or not stripped:
                continue  # comments and blank lines inside a continuation are dropped
            part, ended = _trim_continuation(raw)
            line += part
        if line.strip("".join(_GO_SPACE)):
            out.append(parse_instruction(line, start))
    return out


def _trim_continuation(line: str) -> tuple[str, bool]:
    match = _CONTINUATION.search(line)
    if match is None:
        return line, True
    return line[: match.start()], False


def parse_instruction(line: str, number: int) -> Instruction:
    """One joined instruction line: keyword, flags, the rest (Go's ``splitCommand``)."""
    stripped = line.strip("".join(_GO_SPACE))
    parts = _TOKEN_WS.split(stripped, maxsplit=1)
    keyword = go_lower(parts[0])
    rest = parts[1] if len(parts) > 1 else ""
    args, flags = _extract_flags(rest)
    return Instruction(number, keyword, tuple(flags), args, " ".join(stripped.split()))


def _extract_flags(line: str) -> tuple[str, list[str]]:  # noqa: PLR0915
    """Go's ``extractBuilderFlags``: the leading ``--flag`` words (quotes and escapes
    removed) and the rest. It looks at bytes, as Go's does. One function, like Go's state
    machine, so the two can be compared side by side."""
    data = line.encode("utf-8", "surrogateescape")
    words: list[bytes] = []
    word = bytearray()
    in_word = in_quote = blank_ok = False
    quote = 0
    pos = 0
    while pos <= len(data):
        end = pos == len(data)
        ch = 0 if end else data[pos]
        if not in_word and not in_quote:
            if end:
                break
            if ch in _GO_SPACE_BYTES:
                pos += 1
                continue
            if ch != ord("-") or pos + 1 == len(data) or data[pos + 1] != ord("-"):
                return _text(data[pos:]), [_text(w) for w in words]
            in_word = True
        if end:
            if bytes(word) != b"--" and (blank_ok or word):
                words.append(bytes(word))
            break
        if in_quote:
            if ch == quote:
                in_quote, in_word = False, True
            else:
                if ch == ord(ESCAPE):
                    if pos + 1 == len(data):
                        in_quote, in_word = False, True
                        pos += 1
                        continue
                    pos += 1
                    ch = data[pos]
                word.append(ch)
            pos += 1
            continue
        if ch in _GO_SPACE_BYTES:
            in_word = False
            if bytes(word) == b"--":
                return _text(data[pos:]), [_text(w) for w in words]
            if blank_ok or word:
                words.append(bytes(word))
            word, blank_ok = bytearray(), False
            pos += 1
            continue
        if ch in (ord("'"), ord('"')):
            quote, blank_ok, in_quote, in_word = ch, True, True, False
            pos += 1
            continue
        if ch == ord(ESCAPE):
            if pos + 1 == len(data):
                pos += 1
                continue
            pos += 1
            ch = data[pos]
        word.append(ch)
        pos += 1
    return "", [_text(w) for w in words]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def parse_words(rest: str) -> list[str]:  # noqa: PLR0915 - Go's state machine, side by side
    """Go's ``parseWords``: words split on blanks outside quotes; quotes and escapes are
    kept in the word (the word is expanded later)."""
    words: list[str] = []
    word = ""
    phase = "space"
    quote = ""
    blank_ok = False
    pos = 0
    while pos <= len(rest):
        end = pos == len(rest)
        ch = "" if end else rest[pos]
        if phase == "space":
            if end:
                break
            if ch in _GO_SPACE:
                pos += 1
                continue
            phase = "word"
        if end:
            if blank_ok or word:
                words.append(word)
            break
        if phase == "word":
            if ch in _GO_SPACE:
                phase = "space"
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote, blank_ok, phase = ch, True, "quote"
            elif ch == ESCAPE:
                if pos + 1 == len(rest):
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
            continue
        # in a quote
        if ch == quote:
            phase = "word"
        elif ch == ESCAPE and quote != "'":
            if pos + 1 == len(rest):
                phase = "word"
                pos += 1
                continue
            word += ch
            pos += 1
            ch = rest[pos]
        word += ch
        pos += 1
    return words


# ------------------------------------------------------------------------------- words


class _Word:
    """Go's ``shellWord``: quotes, escapes and variables of one word."""

    def __init__(self, text: str, lookup: Lookup) -> None:
        self.text = text
        self.pos = 0
        self.lookup = lookup

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def until(self, stop: str) -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "'":
                out.append(self.single())
            elif ch == '"':
                out.append(self.double())
            elif ch == "$":
                out.append(self.dollar())
            else:
                self.pos += 1
                if ch == ESCAPE:
                    if self.pos >= len(self.text):
                        break
                    ch = self.next()
                out.append(ch)
        if stop:
            raise WordError(f"a closing '{stop}' is missing")
        return "".join(out)

    def single(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise WordError("a closing single quote is missing")
        out, self.pos = self.text[self.pos : end], end + 1
        return out

    def double(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise WordError("a closing double quote is missing")
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == ESCAPE and self.peek() in ('"', "$", ESCAPE) and self.peek():
                ch = self.next()
            out.append(ch)

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if not (ch == "_" or ch.isalnum()):
                break
            self.pos += 1
        return self.text[start : self.pos]

    def dollar(self) -> str:
        self.pos += 1
        first = self.peek()
        if first and (first in _SPECIAL_PARAMS or first.isdigit()):
            raise WordError(f"'${first}' is a special parameter, which builders read differently")
        if first != "{":
            name = self.name()
            return "$" if not name else self.value(name)
        self.pos += 1
        first = self.peek()
        if not first:
            raise WordError("a closing '}' is missing")
        if first in "{}:" or first in _SPECIAL_PARAMS or first.isdigit():
            raise WordError(f"'${{{first}' is a bad substitution")
        name = self.name()
        ch = self.next()
        if not ch:
            raise WordError("a closing '}' is missing")
        if ch == "}":
            return self.value(name)
        if ch == ":" and self.peek() in ("-", "+"):
            modifier = self.next()
            word = self.until("}")
            value = self.value(name)
            if modifier == "+":
                return word if value else value
            return value or word
        shown = f"${{{name}{ch}{self.peek()}"
        raise WordError(
            f"'{shown}...' is a substitution DS01 does not read (only $VAR, ${{VAR}}, "
            "${VAR:-default} and ${VAR:+alternative})"
        )

    def value(self, name: str) -> str:
        return self.lookup(name) or ""


def expand_word(text: str, lookup: Lookup) -> str:
    """``text`` with quotes, escapes and variables processed as the builder does.

    Raises :class:`WordError` for what the builder would reject, for substitutions other
    than ``$VAR``, ``${VAR}``, ``${VAR:-word}``, ``${VAR:+word}``, and whatever ``lookup``
    raises for.
    """
    return _Word(text, lookup).until("")
