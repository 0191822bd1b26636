"""Sizes and durations: what is accepted, what is refused, and the round trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.domain.units import (
    MAX_BYTES,
    format_cpus,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512m", 512 * MiB),
        ("32g", 32 * GiB),
        ("32G", 32 * GiB),
        ("1.5g", 1536 * MiB),
        ("16GiB", 16 * GiB),
        ("16gb", 16 * GiB),  # Docker reads "gb" as GiB too
        ("16 g", 16 * GiB),
        ("2t", 2 * TiB),
        ("4k", 4 * KiB),
        ("1024", 1024),
        ("1024b", 1024),
        (1024, 1024),
        ("0.5k", 512),
        ("0.3k", 307),  # fractions round down to whole bytes, as Docker does
        (" 8g ", 8 * GiB),
    ],
)
def test_parse_size_accepts_docker_notation(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("-1g", "negative"),
        (-5, "negative"),
        ("abc", "not a size"),
        ("", "not a size"),
        ("12 parsecs", "not a size"),
        ("1gg", "not a size"),
        ("1ib", "not a size"),
        ("nan", "not a size"),
        ("inf", "not a size"),
        (1.5, "no unit"),
        (float("nan"), "no unit"),
        ("1.5", "fraction of a byte"),
        ("1.9b", "fraction of a byte"),
        (True, "got true"),
        (None, "NoneType"),
        ([1], "list"),
        (0, "zero"),
        ("0m", "zero"),
        ("9999999p", "larger than Docker"),
    ],
)
def test_parse_size_refuses_nonsense(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_size(value)


def test_zero_size_only_where_meaningful() -> None:
    assert parse_size("0", allow_zero=True) == 0
    assert parse_size(0, allow_zero=True) == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("24h", 86400),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1.5h", 5400),
        ("0.01h", 36),
        (" 5M ", 300),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (30, "no unit"),
        (0.5, "no unit"),
        ("30", "not a duration"),
        ("", "not a duration"),
        ("soon", "not a duration"),
        ("5x", "not a duration"),
        ("m", "not a duration"),
        ("1h-30m", "not a duration"),
        ("-5m", "negative"),
        ("0s", "zero"),
        ("0.1s", "zero"),
        (True, "expected a duration"),
        (None, "expected a duration"),
    ],
)
def test_parse_duration_refuses_nonsense(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)


def test_zero_duration_only_where_meaningful() -> None:
    assert parse_duration("0s", allow_zero=True) == 0
    assert parse_duration("0m", allow_zero=True) == 0


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [(32 * GiB, "32g"), (1536 * MiB, "1536m"), (1000, "1000b"), (0, "0b"), (KiB, "1k")],
)
def test_format_size(num_bytes: int, text: str) -> None:
    assert format_size(num_bytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400 * 7, "7d"),
        (93784, "1d2h3m4s"),
    ],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_refuses_negative() -> None:
    with pytest.raises(ValueError, match=r"^a size cannot be negative: -1$"):
        format_size(-1)
    with pytest.raises(ValueError, match=r"^a duration cannot be negative: -1$"):
        format_duration(-1)


@pytest.mark.parametrize(
    ("cpus", "text"), [(16.0, "16"), (10, "10"), (0.5, "0.5"), (2.25, "2.25"), (0.01, "0.01")]
)
def test_format_cpus(cpus: float, text: str) -> None:
    assert format_cpus(cpus) == text


@pytest.mark.parametrize("cpus", [0.0, -1.0, math.nan, math.inf])
def test_format_cpus_refuses_nonsense(cpus: float) -> None:
    with pytest.raises(ValueError, match=r"^a CPU limit must be a positive number, not "):
        format_cpus(cpus)


@given(st.integers(min_value=1, max_value=MAX_BYTES))
def test_size_round_trip(num_bytes: int) -> None:
    assert parse_size(format_size(num_bytes)) == num_bytes


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds), allow_zero=True) == seconds


@given(st.text(max_size=12))
def test_parse_size_never_fails_unexpectedly(text: str) -> None:
    # Whatever is typed, the answer is a positive byte count or a ValueError.
    try:
        result = parse_size(text)
    except ValueError:
        return
    assert 0 < result <= MAX_BYTES
