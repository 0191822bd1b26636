"""YAML files that remember where every key was, and errors that point there.

Used for every DS01 configuration file (``ds01.yaml``, the resource-limits file). The
contract DESIGN.md sets: an error names the file, the line and the key. So loading keeps
a *line map* from key paths to line numbers, and validation errors (pydantic's, or our
own checks) become one :class:`ConfigError` listing each problem as
``FILE:LINE: key.path: what is wrong``.

Key paths are tuples: mapping keys as the text written in the file (``"groups"``,
``"student"``, ``"1234"`` even when YAML reads it as a number), sequence items as their
index (``("groups", "student", "members", 2)``). Pydantic's error locations use the same
shape, so they can be looked up directly; a path with no line of its own (a missing key,
a value from a YAML merge ``<<``) gets the line of its nearest ancestor.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ds01.config.yaml_guard import ALIAS_HINT, MAX_DEPTH, check_aliases
from ds01.errors import ConfigError, ErrorCode
from ds01.serialize import to_json

__all__ = [
    "KeyPath",
    "LineMap",
    "Problem",
    "dotted",
    "errors_to_problems",
    "line_for",
    "load_model",
    "load_yaml_with_lines",
    "located_error",
    "parse_yaml_with_lines",
    "problems_error",
    "validate_located",
]

KeyPath = tuple[str | int, ...]
LineMap = dict[KeyPath, int]
M = TypeVar("M", bound=BaseModel)

# The C parser is several times faster; both build the same nodes.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INPUT_SHOWN = 60


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one file: rendered as ``FILE:LINE: key.path: message``."""

    file: str
    line: int | None
    key: str
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def dotted(path: Sequence[str | int]) -> str:
    """``("groups", "student", "members", 2)`` -> ``groups.student.members[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def line_for(line_map: Mapping[KeyPath, int], path: Sequence[str | int]) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    candidate = tuple(path)
    while True:
        line = line_map.get(candidate)
        if line is not None:
            return line
        if not candidate:
            return None
        candidate = candidate[:-1]


def load_yaml_with_lines(
    path: Path,
    *,
    what: str = "configuration file",
    referenced_by: str | None = None,
) -> tuple[Any, LineMap]:
    """Read and parse a YAML file; return its data and the line of every key.

    ``what`` names the file for people (``resource-limits file``); ``referenced_by`` says
    which setting points at it (``policy.resource_limits in /etc/ds01/ds01.yaml:12``), so
    a missing file is reported where it can be fixed. Every failure is a
    :class:`ConfigError` naming the file.
    """
    pointer = f" (set by {referenced_by})" if referenced_by else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"The {what} {path} does not exist{pointer}.",
            hint=f"Create it, or point {referenced_by or 'the setting'} at the right file.",
            details={"file": str(path)},
        ) from exc
    except IsADirectoryError as exc:
        raise ConfigError(
            f"The {what} {path} is a directory, not a file{pointer}.",
            hint="Point the setting at the YAML file itself.",
            details={"file": str(path)},
        ) from exc
    except PermissionError as exc:
        raise ConfigError(
            f"The {what} {path} cannot be read: permission denied{pointer}.",
            hint="Make it readable by every DS01 user (mode 0644).",
            details={"file": str(path)},
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"The {what} {path} is not UTF-8 text (byte {exc.start}){pointer}.",
            hint="Save the file as UTF-8.",
            details={"file": str(path)},
        ) from exc
    return parse_yaml_with_lines(text, filename=str(path))


def parse_yaml_with_lines(text: str, *, filename: str) -> tuple[Any, LineMap]:
    """Parse YAML ``text`` (one document); ``filename`` is used in error messages.

    A syntax error, a second document, a duplicate key or a tag the safe loader refuses
    is a :class:`ConfigError` with file and line. An empty document gives ``None``.
    Aliases that would repeat too much (an alias bomb) and nesting deeper than
    :data:`~ds01.config.yaml_guard.MAX_DEPTH` are refused the same way, before any
    node tree is built (:mod:`ds01.config.yaml_guard`).
    """
    finding = check_aliases(text)
    if finding is not None:
        raise problems_error(
            [Problem(filename, finding.line, finding.key, finding.message)], hint=ALIAS_HINT
        )
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        line_map: LineMap = {}
        if node is not None:
            line_map[()] = node.start_mark.line + 1
            duplicates: list[Problem] = []
            _record_lines(node, (), _Walk(line_map, duplicates, filename, set()))
            if duplicates:
                raise problems_error(
                    duplicates, hint="Remove one of the duplicates: YAML keeps only the last."
                )
            data = loader.construct_document(node)
        else:
            data = None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, filename) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{filename}: not valid YAML: {exc}", hint="Fix the YAML syntax."
        ) from exc
    finally:
        loader.dispose()
    return data, line_map


def _syntax_error(exc: yaml.MarkedYAMLError, filename: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    what = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
    problem = Problem(filename, line, "", f"YAML syntax error: {what}")
    return ConfigError(
        problem.render(),
        hint="Fix the YAML syntax at that line (indentation, a missing ':' or quote).",
        code=ErrorCode.BAD_CONFIG,
        details={"file": filename, "problems": [to_json(problem)]},
    )


@dataclass
class _Walk:
    """What one walk over the node tree fills in."""

    line_map: LineMap
    duplicates: list[Problem]
    filename: str
    active: set[int]


def _record_lines(node: yaml.Node, path: KeyPath, walk: _Walk) -> None:
    # Aliases make the same node appear at several paths; a node that contains itself
    # (a recursive anchor) would loop forever, so stop at a node already on the path.
    active = walk.active
    if id(node) in active:
        return
    if len(path) > MAX_DEPTH:
        # The walk and PyYAML's constructor recurse once per level; stop long before
        # Python's recursion limit (an exit-1 traceback) with a located error instead.
        raise problems_error(
            [
                Problem(
                    walk.filename,
                    node.start_mark.line + 1,
                    dotted(path[:8]) + (" ..." if len(path) > 8 else ""),
                    f"nested more than {MAX_DEPTH} levels deep",
                )
            ],
            hint="DS01's configuration files are a few levels deep; flatten this value.",
        )
    active.add(id(node))
    try:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    walk.duplicates.append(
                        Problem(
                            walk.filename,
                            line,
                            dotted((*path, key)),
                            f"duplicate key (first given on line {seen[key]})",
                        )
                    )
                    continue
                seen[key] = line
                walk.line_map[(*path, key)] = line
                _record_lines(value_node, (*path, key), walk)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk.line_map[(*path, index)] = item.start_mark.line + 1
                _record_lines(item, (*path, index), walk)
    finally:
        active.discard(id(node))


def problems_error(problems: Sequence[Problem], *, hint: str | None = None) -> ConfigError:
    """One :class:`ConfigError` listing every problem, sorted by file and line."""
    ordered = sorted(problems, key=lambda p: (p.file, p.line or 0, p.key))
    if len(ordered) == 1:
        message = ordered[0].render()
    else:
        files = sorted({p.file for p in ordered})
        header = f"{', '.join(files)}: {len(ordered)} problems:"
        message = "\n  ".join([header, *(p.render() for p in ordered)])
    return ConfigError(
        message,
        hint=hint,
        details={
            "file": ordered[0].file if ordered else None,
            "problems": [to_json(p) for p in ordered],
        },
    )


def errors_to_problems(
    filename: str,
    error: ValidationError,
    line_map: Mapping[KeyPath, int],
    *,
    model: type[BaseModel] | None = None,
    display: Callable[[KeyPath], KeyPath] | None = None,
) -> list[Problem]:
    """Pydantic's errors as :class:`Problem`\\ s located through ``line_map``.

    With ``model`` given, an unknown key also gets a "did you mean" from the keys
    allowed at that place. ``display`` maps a validated path back to the spelling in
    the file, for callers that renamed keys before validating.
    """
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc: KeyPath = tuple(item["loc"])
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]  # pydantic's marker for "the key itself is wrong"
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
            if model is not None and loc:
                close = difflib.get_close_matches(
                    str(loc[-1]), allowed_keys(model, loc[:-1]), n=1, cutoff=0.6
                )
                if close:
                    message += f" (did you mean {close[0]!r}?)"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = _clean_message(item["msg"])
            if kind not in ("value_error", "assertion_error") and "input" in item:
                message += f" (got {_shown(item['input'])})"
        shown = display(loc) if display is not None else loc
        problems.append(Problem(filename, line_for(line_map, loc), dotted(shown), message))
    return problems


def located_error(
    path: Path | str,
    validation_error: ValidationError,
    line_map: Mapping[KeyPath, int],
    *,
    model: type[BaseModel] | None = None,
    extra: Iterable[Problem] = (),
    hint: str | None = None,
) -> ConfigError:
    """A pydantic ``ValidationError`` (plus any ``extra`` problems) as one located error."""
    problems = errors_to_problems(str(path), validation_error, line_map, model=model)
    return problems_error([*problems, *extra], hint=hint)


def validate_located(
    model_cls: type[M],
    data: Any,
    *,
    path: Path | str,
    line_map: Mapping[KeyPath, int],
    hint: str | None = None,
) -> M:
    """``model_cls.model_validate(data)``, or a located :class:`ConfigError` (exit 2)."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise located_error(path, exc, line_map, model=model_cls, hint=hint) from exc


def load_model(
    path: Path,
    model_cls: type[M],
    *,
    what: str = "configuration file",
    referenced_by: str | None = None,
    hint: str | None = None,
) -> M:
    """Read ``path`` and validate it against ``model_cls``; every failure is located.

    An empty file (or one with only comments) validates as ``{}``, so a model whose
    fields all have defaults gives its defaults.
    """
    data, line_map = load_yaml_with_lines(path, what=what, referenced_by=referenced_by)
    return validate_located(
        model_cls, {} if data is None else data, path=path, line_map=line_map, hint=hint
    )


def allowed_keys(model_cls: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The keys (field names and aliases) a model accepts at ``path``; ``[]`` if unknown."""
    current: Any = model_cls
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = _field_named(current, str(part))
            if field is None:
                return []
            current = field.annotation
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if origin in (dict, Mapping) and len(args) == 2:
            current = args[1]
        elif origin in (list, tuple, Sequence) and args:
            current = args[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        names: list[str] = []
        for name, info in current.model_fields.items():
            names.append(info.alias or name)
        return names
    return []


def _field_named(model_cls: type[BaseModel], key: str) -> Any:
    for name, info in model_cls.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to the interesting type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = typing.get_args(annotation)
        if args and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                annotation = rest[0]
                continue
        return annotation


def _clean_message(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _INPUT_SHOWN else text[: _INPUT_SHOWN - 3] + "..."
