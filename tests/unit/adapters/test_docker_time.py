"""Docker's timestamps: nanoseconds, 'Z', offsets, and its zero time meaning 'never'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ds01.adapters.docker_engine import parse_docker_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T10:31:29.123456789Z", datetime(2026, 11, 28, 10, 31, 29, 123456, UTC)),
        ("2026-11-28T10:31:29Z", datetime(2026, 11, 28, 10, 31, 29, tzinfo=UTC)),
        (
            "2026-11-28T10:31:29.5+02:00",
            datetime(2026, 11, 28, 10, 31, 29, 500000, timezone(timedelta(hours=2))),
        ),
    ],
)
def test_parses_to_aware_datetimes(text: str, expected: datetime) -> None:
    parsed = parse_docker_time(text)
    assert parsed == expected
    assert parsed is not None and parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00Z", "", None])
def test_zero_time_means_never(text: str | None) -> None:
    assert parse_docker_time(text) is None
