"""Bounds on what a YAML file may make DS01 build: alias expansion and nesting depth.

YAML aliases (``*name``) repeat an anchored node (``&name``) without copying its text,
so nine short lines that each repeat the previous one nine times describe 9**9 values
(a "billion laughs" bomb): ``ds01 limits`` once hung for minutes and reached 14 GB on
one. DS01 keeps aliases (and merge keys ``<<: *base``, handy for groups that share
limits) but bounds them: all aliases of one file together may repeat at most
:data:`MAX_ALIAS_EXPANSION` nodes. The check runs over the parser's event stream,
before any node tree or Python value is built, and stops at the first alias that crosses
the bound, so the error names that alias's line and key. A recursive alias (a node that
contains itself) is refused the same way.

Depth is bounded too (:data:`MAX_DEPTH`): the line map walk and the constructor recurse
once per level, and DS01's files are a handful of levels deep.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

__all__ = ["ALIAS_HINT", "MAX_ALIAS_EXPANSION", "MAX_DEPTH", "AliasFinding", "check_aliases"]

#: Nodes that all the aliases of one file may repeat, together. Sharing a block of
#: limits among a few dozen groups stays far below; a bomb crosses it within a few levels.
MAX_ALIAS_EXPANSION = 10_000
#: Deepest nesting of mappings and sequences accepted (DS01's files use about 5).
MAX_DEPTH = 64

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ALIAS_HINT = (
    "Write the values out instead of repeating anchors (&name) through aliases (*name); "
    "YAML aliases that multiply each other are refused."
)


@dataclass(frozen=True)
class AliasFinding:
    """Why a file's aliases are refused, and where (1-based line, dotted key)."""

    line: int
    key: str
    message: str


@dataclass
class _Frame:
    """One open mapping or sequence while scanning events."""

    anchor: str | None
    is_mapping: bool
    size: int = 1  # nodes inside, aliases expanded, the collection itself included
    items: int = 0  # child nodes seen (keys and values both, for a mapping)
    key: str | int = "?"  # the path part of the child being read


def _path(frames: list[_Frame]) -> str:
    """The dotted key path of the node being read (``groups.x.members[2]``)."""
    out = ""
    for frame in frames:
        part = frame.key
        if part == "?":
            continue  # inside a mapping key, or between a key and its value
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_aliases(text: str) -> AliasFinding | None:
    """Refuse ``text`` when its aliases repeat too much or refer to themselves.

    Cheap for files without aliases: they are recognised by the absence of ``*``, the
    only way YAML writes an alias. Syntax errors are left to the real parse that follows.
    """
    if "*" not in text:
        return None
    loader = _Loader(text)
    try:
        return _scan(loader)
    except yaml.YAMLError:
        return None  # reported, with its line, by the parse that follows
    finally:
        loader.dispose()


def _scan(loader: yaml.SafeLoader) -> AliasFinding | None:
    sizes: dict[str, int] = {}  # anchor -> expanded size, once its node is complete
    frames: list[_Frame] = []
    repeated = 0
    while loader.check_event():
        event = loader.get_event()  # type: ignore[no-untyped-call]
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            _enter_child(frames)
            if event.anchor is not None:
                # Inside its own node an anchor names that node (a re-used name included).
                sizes.pop(event.anchor, None)
            frames.append(_Frame(event.anchor, isinstance(event, yaml.MappingStartEvent)))
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = frames.pop()
            if done.anchor is not None:
                sizes[done.anchor] = done.size
            _add(frames, done.size, None)
            continue
        if isinstance(event, yaml.ScalarEvent):
            _enter_child(frames)
            if event.anchor is not None:
                sizes[event.anchor] = 1
            _add(frames, 1, event.value)
            continue
        if isinstance(event, yaml.AliasEvent):
            _enter_child(frames)
            anchor = event.anchor or ""
            line = event.start_mark.line + 1 if event.start_mark is not None else 0
            if anchor not in sizes:
                if any(f.anchor == anchor for f in frames):
                    return AliasFinding(
                        line,
                        _path(frames),
                        f"alias *{anchor} refers to a node that contains it (a recursive alias)",
                    )
                continue  # an unknown anchor: the parse that follows names it
            size = sizes[anchor]
            repeated += size
            if repeated > MAX_ALIAS_EXPANSION:
                return AliasFinding(
                    line,
                    _path(frames),
                    f"alias *{anchor} repeats {size:,} nodes; aliases in this file would "
                    f"repeat more than {MAX_ALIAS_EXPANSION:,} in all (an alias bomb?)",
                )
            _add(frames, size, None)
    return None


def _enter_child(frames: list[_Frame]) -> None:
    """Set the current path part of the innermost collection for the child starting now."""
    if not frames:
        return
    top = frames[-1]
    if not top.is_mapping:
        top.key = top.items
    elif top.items % 2 == 0:
        top.key = "?"  # reading a key: the path is the mapping's own


def _add(frames: list[_Frame], size: int, scalar: str | None) -> None:
    """Count a finished child into its parent (and remember a mapping key's text)."""
    if not frames:
        return
    top = frames[-1]
    top.size += size
    if top.is_mapping and top.items % 2 == 0:
        top.key = scalar if scalar is not None else "?"
    top.items += 1
