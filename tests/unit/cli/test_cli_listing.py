"""``print_listing``: what ``container list`` and ``image list`` print.

With ``--json`` the views as one JSON array (each through the one serialiser); else a
table of the cells of each view, and, for ``--all``, a USER column second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from ds01.cli.output import print_listing


@dataclass(frozen=True)
class _View:
    name: str
    user: str
    size: int


VIEWS = [_View("thesis", "alice", 3), _View("paper", "bob", 5)]


def _cells(view: _View) -> list[Any]:
    return [view.name, f"{view.size} GB"]


def _table_lines(out: str) -> list[list[str]]:
    # Words of each line, without the box-drawing rules between the columns.
    rows = ([w for w in line.split() if w.isalnum()] for line in out.splitlines())
    return [row for row in rows if row]


def test_json_is_the_views_as_one_array(capsys: pytest.CaptureFixture[str]) -> None:
    print_listing(
        VIEWS, json_out=True, columns=("NAME", "SIZE"), cells=_cells, owner=None, empty="-"
    )

    assert json.loads(capsys.readouterr().out) == [
        {"name": "thesis", "user": "alice", "size": 3},
        {"name": "paper", "user": "bob", "size": 5},
    ]


def test_own_listing_has_no_user_column(capsys: pytest.CaptureFixture[str]) -> None:
    print_listing(
        VIEWS, json_out=False, columns=("NAME", "SIZE"), cells=_cells, owner=None, empty="-"
    )

    lines = _table_lines(capsys.readouterr().out)
    assert lines[0] == ["NAME", "SIZE"]
    assert ["thesis", "3", "GB"] in lines
    assert ["paper", "5", "GB"] in lines


def test_every_users_listing_puts_the_owner_second(capsys: pytest.CaptureFixture[str]) -> None:
    print_listing(
        VIEWS,
        json_out=False,
        columns=("NAME", "SIZE"),
        cells=_cells,
        owner=lambda v: v.user,
        empty="-",
    )

    lines = _table_lines(capsys.readouterr().out)
    assert lines[0] == ["NAME", "USER", "SIZE"]
    assert ["thesis", "alice", "3", "GB"] in lines
    assert ["paper", "bob", "5", "GB"] in lines


def test_nothing_to_list_prints_the_empty_text(capsys: pytest.CaptureFixture[str]) -> None:
    print_listing(
        [],
        json_out=False,
        columns=("NAME", "SIZE"),
        cells=_cells,
        owner=lambda v: v.user,
        empty="No containers yet.",
    )

    assert capsys.readouterr().out.strip() == "No containers yet."
