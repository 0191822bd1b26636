"""One serialiser for every result: typed values in, JSON-ready data out.

Results are dataclasses; :func:`to_json` turns them (recursively) into the ``--json``
documents, and the daemon's wire format will be the same data. A field's JSON key is its
name; the few results whose JSON differs from their fields say so with field metadata
instead of a hand-written ``to_dict``:

* ``json_key("id")``: the field is written under another key;
* ``JSON_SKIP``: the field is internal and not written;
* ``JSON_OMIT_EMPTY``: the field is left out when it is empty (``None``, ``""``, ``()``);
* ``JSON_OMIT_NONE``: the field is left out only when it is ``None`` (``False`` and ``0``
  are written);
* ``json_round(n)``: a float field is written rounded to ``n`` places (``None`` stays).

Metadata combine: ``{**json_key("x"), **json_round(1)}``.

Values: an ``Enum`` is its value, a ``datetime`` its ``isoformat()``, a ``Fraction`` (GPU
equivalents) a float rounded as :func:`format_equivalents` does, a ``Path`` its string,
tuples, lists and sets lists, mappings dicts (keys as strings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from fractions import Fraction
from pathlib import PurePath
from typing import Any, Final

from ds01.domain.devices import format_equivalents

__all__ = ["JSON_OMIT_EMPTY", "JSON_OMIT_NONE", "JSON_SKIP", "json_key", "json_round", "to_json"]

JSON_SKIP: Final[Mapping[str, Any]] = {"json_skip": True}
JSON_OMIT_EMPTY: Final[Mapping[str, Any]] = {"json_omit_empty": True}
JSON_OMIT_NONE: Final[Mapping[str, Any]] = {"json_omit_none": True}


def json_key(key: str) -> Mapping[str, Any]:
    """Field metadata: write this field under ``key``."""
    return {"json_key": key}


def json_round(places: int) -> Mapping[str, Any]:
    """Field metadata: write this (float) field rounded to ``places`` decimal places."""
    return {"json_round": places}


def to_json(value: Any) -> Any:
    """``value`` as data ``json.dumps`` writes as is (the README's ``--json`` shapes)."""
    # Enum before str/int: a StrEnum is a str, and its JSON is its plain value.
    if isinstance(value, Enum):
        return to_json(value.value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dataclass(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Fraction):
        return format_equivalents(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(to_json(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [to_json(v) for v in items]
    raise TypeError(f"to_json: no JSON form for {type(value).__name__}")


def _dataclass(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        if f.metadata.get("json_skip"):
            continue
        item = getattr(value, f.name)
        if f.metadata.get("json_omit_empty") and not item:
            continue
        if item is None and f.metadata.get("json_omit_none"):
            continue
        places = f.metadata.get("json_round")
        if places is not None and item is not None:
            item = round(item, places)
        out[f.metadata.get("json_key", f.name)] = to_json(item)
    return out
