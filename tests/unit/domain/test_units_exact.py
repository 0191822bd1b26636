"""Policy numbers, exactly: every limit on, just below and just above its boundary, the
rounding rules, and every refusal's full message (the policy loader shows it to admins).

Expected values and messages are written out by hand from the documented rules.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from ds01.domain.units import (
    MAX_BYTES,
    MAX_COUNT,
    MAX_CPUS,
    MAX_DURATION,
    parse_count,
    parse_cpus,
    parse_duration,
    parse_gpu_equivalents,
    parse_mig_profiles,
    parse_percent,
    parse_size,
)

SIZES = "write a size such as 512m, 32g or 1.5g (units b, k, m, g, t; powers of 1024)"
DURATIONS = "write a duration such as 90s, 30m, 1h30m, 24h or 7d"


def _message(call: object, *args: object, **kwargs: object) -> str:
    assert callable(call)
    with pytest.raises(ValueError) as err:
        call(*args, **kwargs)
    return str(err.value)


def test_the_limits() -> None:
    assert MAX_BYTES == 9223372036854775807
    assert MAX_COUNT == 9223372036854775807
    assert MAX_CPUS == 9223372036
    assert MAX_DURATION == 3153600000


# --- sizes


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, f"expected a size, got true; {SIZES}"),
        (False, f"expected a size, got false; {SIZES}"),
        (1.5, f"1.5 has no unit; {SIZES} (a number without a unit must be whole bytes)"),
        ([1], f"expected a size, got list; {SIZES}"),
        (None, f"expected a size, got NoneType; {SIZES}"),
        ("-5g", "'-5g' is negative; use null for unlimited"),
        (" -1", "' -1' is negative; use null for unlimited"),
        (-5, "-5 is negative; use null for unlimited"),
        ("5x", f"'5x' is not a size; {SIZES}"),
        ("1.5", f"'1.5' is a fraction of a byte; {SIZES}"),
        ("1.5b", f"'1.5b' is a fraction of a byte; {SIZES}"),
        ("0", "'0' is zero bytes; give a positive size (null, where allowed, is unlimited)"),
        (0, "0 is zero bytes; give a positive size (null, where allowed, is unlimited)"),
        (
            "0.0001k",
            "'0.0001k' is zero bytes; give a positive size (null, where allowed, is unlimited)",
        ),
        (2**63, "9223372036854775808 is larger than Docker can store (8 EiB)"),
        ("8192p", "'8192p' is larger than Docker can store (8 EiB)"),
    ],
)
def test_size_refusals(value: object, message: str) -> None:
    assert _message(parse_size, value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        ("1", 1),
        (9223372036854775807, 9223372036854775807),  # the largest Docker stores
        ("8191p", 9222246136947933184),
        ("1.7k", 1740),  # 1740.8 bytes: rounded down, as Docker does (not to 1741)
        ("1.9999k", 2047),  # 2047.8976
        ("1.5k", 1536),
    ],
)
def test_sizes_accepted(value: object, expected: int) -> None:
    assert parse_size(value) == expected


def test_zero_bytes_where_zero_is_allowed() -> None:
    assert parse_size(0, allow_zero=True) == 0
    assert parse_size("0g", allow_zero=True) == 0
    assert parse_size("0.0001k", allow_zero=True) == 0


# --- durations


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, f"expected a duration, got true; {DURATIONS}"),
        (
            30,
            f"30 has no unit; {DURATIONS} (a bare number is ambiguous: "
            "the old *_h keys counted hours)",
        ),
        (
            1.5,
            f"1.5 has no unit; {DURATIONS} (a bare number is ambiguous: "
            "the old *_h keys counted hours)",
        ),
        ([1], f"expected a duration, got list; {DURATIONS}"),
        ("-5m", "'-5m' is negative; use null for unlimited"),
        ("5x", f"'5x' is not a duration; {DURATIONS}"),
        ("", f"'' is not a duration; {DURATIONS}"),
        ("5m x", f"'5m x' is not a duration; {DURATIONS}"),
        (
            "3153600001s",
            "'3153600001s' is longer than 100 years; give a shorter duration (or null, "
            "where allowed, for no limit)",
        ),
        (
            "36501d",
            "'36501d' is longer than 100 years; give a shorter duration (or null, "
            "where allowed, for no limit)",
        ),
        ("0s", "'0s' is zero; give a positive duration (null, where allowed, is never)"),
        ("0.4s", "'0.4s' is zero; give a positive duration (null, where allowed, is never)"),
    ],
)
def test_duration_refusals(value: object, message: str) -> None:
    assert _message(parse_duration, value) == message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3153600000s", 3153600000),  # exactly 100 years is allowed
        ("36500d", 3153600000),
        ("3153599999s", 3153599999),
        ("0.5s", 1),  # rounded half up, not to even
        ("2.5s", 3),
        ("1.4s", 1),
        ("1h30m", 5400),
    ],
)
def test_durations_accepted(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_zero_duration_where_zero_is_allowed() -> None:
    assert parse_duration("0s", allow_zero=True) == 0


# --- plain numbers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("4", "expected a number, got '4'"),
        (None, "expected a number, got None"),
        (True, "expected a number, got True"),
        (float("nan"), "nan is not a finite number"),
        (float("inf"), "inf is not a finite number"),
        (0.0099, "0.0099 CPUs is too small: at least 0.01; use null for unlimited"),
        (0, "0 CPUs is too small: at least 0.01; use null for unlimited"),
        (9223372037, "9223372037 CPUs is more than Docker can store; use null for unlimited"),
    ],
)
def test_cpu_refusals(value: object, message: str) -> None:
    assert _message(parse_cpus, value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.01, 0.01), (0.011, 0.011), (1, 1.0), (1.0, 1.0), (9223372036, 9223372036.0)],
)
def test_cpus_accepted(value: object, expected: float) -> None:
    got = parse_cpus(value)
    assert got == expected
    assert type(got) is float


def test_count_boundaries() -> None:
    assert parse_count(0) == 0
    assert parse_count(9223372036854775807) == 9223372036854775807
    assert parse_count(5, minimum=5) == 5
    assert parse_count(6, minimum=5) == 6


@pytest.mark.parametrize(
    ("value", "minimum", "message"),
    [
        (-1, 0, "-1 is below the minimum 0; use null for unlimited"),
        (4, 5, "4 is below the minimum 5; use null for unlimited"),
        ("x", 0, "expected a whole number, got 'x'"),
        (True, 0, "expected a whole number, got True"),
        (1.0, 0, "expected a whole number, got 1.0"),
        (
            9223372036854775808,
            0,
            "9223372036854775808 is too large (at most 2**63-1); use null for unlimited",
        ),
    ],
)
def test_count_refusals(value: object, minimum: int, message: str) -> None:
    assert _message(parse_count, value, minimum=minimum) == message


def test_a_long_value_is_cut_in_the_message_after_39_characters() -> None:
    # repr of 38 x's is 40 characters: shown whole; of 39 x's, 41: cut to 39 plus "…".
    assert _message(parse_count, "x" * 38) == "expected a whole number, got '" + "x" * 38 + "'"
    assert _message(parse_count, "x" * 39) == "expected a whole number, got '" + "x" * 38 + "…"
    assert _message(parse_count, "x" * 80) == "expected a whole number, got '" + "x" * 38 + "…"


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (0, {}, 0.0),
        (0.5, {}, 0.5),
        (100, {}, 100.0),
        (50, {"maximum": 50.0}, 50.0),
        (1000, {"maximum": None}, 1000.0),
    ],
)
def test_percentages_accepted(value: object, kwargs: dict[str, object], expected: float) -> None:
    assert parse_percent(value, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (-0.1, {}, "-0.1 is not a percentage between 0 and 100"),
        (100.5, {}, "100.5 is not a percentage between 0 and 100"),
        (101, {}, "101 is not a percentage between 0 and 100"),
        (50.5, {"maximum": 50.0}, "50.5 is not a percentage between 0 and 50"),
        (-1, {"maximum": None}, "-1 is not a percentage between 0 and any"),
        ("5", {}, "expected a number, got '5'"),
    ],
)
def test_percent_refusals(value: object, kwargs: dict[str, object], message: str) -> None:
    assert _message(parse_percent, value, **kwargs) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Fraction(0)),
        (1, Fraction(1)),
        (0.1, Fraction(1, 10)),  # from its text, not the binary float
        ("3/7", Fraction(3, 7)),
        (" 0.5 ", Fraction(1, 2)),
    ],
)
def test_gpu_equivalents_accepted(value: object, expected: Fraction) -> None:
    assert parse_gpu_equivalents(value) == expected


def test_a_huge_whole_number_of_equivalents_is_read_as_a_number_not_as_text() -> None:
    # Python refuses to turn an int of more than 4300 digits into text: a whole number
    # must go to Fraction directly.
    assert parse_gpu_equivalents(10**5000) == Fraction(10**5000)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "expected GPU equivalents such as 1, 0.5 or 3/7, got True"),
        ([1], "expected GPU equivalents such as 1, 0.5 or 3/7, got [1]"),
        (None, "expected GPU equivalents such as 1, 0.5 or 3/7, got None"),
        ("abc", "'abc' is not a number of GPU equivalents (1, 0.5, 3/7)"),
        ("1/0", "'1/0' is not a number of GPU equivalents (1, 0.5, 3/7)"),
        ("-1", "'-1' is negative; use null for unlimited"),
        (-1, "-1 is negative; use null for unlimited"),
        (-0.5, "-0.5 is negative; use null for unlimited"),
    ],
)
def test_gpu_equivalent_refusals(value: object, message: str) -> None:
    assert _message(parse_gpu_equivalents, value) == message


def test_mig_profiles() -> None:
    assert parse_mig_profiles(["1g.18gb", "3g.71gb"]) == ("1g.18gb", "3g.71gb")
    assert parse_mig_profiles(("2g.35gb",)) == ("2g.35gb",)
    assert parse_mig_profiles([]) == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1g.18gb", "expected a list of MIG profiles such as [1g.18gb], got '1g.18gb'"),
        (None, "expected a list of MIG profiles such as [1g.18gb], got None"),
        (["x"], "'x' is not a MIG profile name such as 1g.18gb or 3g.71gb"),
        ([1], "1 is not a MIG profile name such as 1g.18gb or 3g.71gb"),
    ],
)
def test_mig_profile_refusals(value: object, message: str) -> None:
    assert _message(parse_mig_profiles, value) == message


def test_full_width_digits_are_not_a_size() -> None:
    # They look like 16g, but Docker reads only ASCII digits.
    with pytest.raises(ValueError, match=r"^'１６g' is not a size; write a size such as 512m"):
        parse_size("１６g")


def test_full_width_digits_are_not_a_duration() -> None:
    with pytest.raises(ValueError, match=r"^'２h' is not a duration; write a duration such as"):
        parse_duration("２h")
