"""Sizes and durations as people write them in policy files, and back.

Sizes follow Docker's own reading of ``--memory`` / ``--shm-size`` (go-units
``RAMInBytes``): a number, an optional space, an optional unit ``b k m g t p`` in either
case, optionally followed by ``i`` and/or ``b``. Every unit is a power of 1024, so
``16g``, ``16gb``, ``16GiB`` and ``16G`` are all 17179869184 bytes, exactly what Docker
would apply for the same text. A whole number without a unit (a YAML integer or the
string ``"1024"``) is bytes. Fractions with a unit (``1.5g``) are allowed and rounded
down to whole bytes, as Docker does. A fraction of a byte (``"1.5"``, or a YAML float
such as ``memory: 1.5``) is refused: it is almost certainly a slip.

Durations are one or more ``<number><unit>`` parts with units ``s m h d w`` (seconds,
minutes, hours, days, weeks), e.g. ``90s``, ``30m``, ``1h30m``, ``1.5h``, ``7d``. A bare
number is refused: the existing DS01 counted idle timeouts in hours, so ``idle_timeout: 30``
is ambiguous, and a wrong guess stops somebody's training run. The result is whole
seconds (rounded half up).

The other parsers here read the plain numbers of a policy file (CPUs, counts,
percentages, GPU equivalents, MIG profile lists) with the same strictness: YAML's
``true`` is not 1, ``.nan`` is not a number, and negative values are refused.

``None`` (YAML ``null``) means *unlimited*; it never reaches these parsers (callers
handle it first), so they only ever see real values and raise :class:`ValueError` with a
message that names the value and says what is accepted. The policy loader turns that
into a located :class:`ds01.errors.ConfigError`.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction

from ds01.domain.devices import profile_slices

__all__ = [
    "MAX_BYTES",
    "MAX_COUNT",
    "MAX_CPUS",
    "MAX_DURATION",
    "format_cpus",
    "format_duration",
    "format_size",
    "parse_count",
    "parse_cpus",
    "parse_duration",
    "parse_gpu_equivalents",
    "parse_mig_profiles",
    "parse_percent",
    "parse_size",
]

#: Docker stores sizes as signed 64-bit integers.
MAX_BYTES = 2**63 - 1
#: The longest duration DS01 accepts: 100 years. Longer ones mean "never" (write null or
#: ``never`` where that is allowed) and would overflow date arithmetic and SQLite.
MAX_DURATION = 100 * 365 * 86400
#: The largest whole number a limit may hold (Docker and SQLite store 64-bit integers).
MAX_COUNT = 2**63 - 1
#: Docker stores CPUs as nano-CPUs in a signed 64-bit integer.
MAX_CPUS = MAX_COUNT // 1_000_000_000

# ASCII digits only, as Docker reads them ("１６g" in full-width digits is not 16g).
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?(?:([kmgtp])(i?))?(b?)$", re.IGNORECASE | re.ASCII)
_SIZE_FACTOR = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
#: Units used when writing a size back, largest first; bytes are written with "b".
_SIZE_OUT = (("p", 1024**5), ("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024))

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.ASCII)
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_OUT = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))

_SIZE_EXAMPLES = "write a size such as 512m, 32g or 1.5g (units b, k, m, g, t; powers of 1024)"
_DURATION_EXAMPLES = "write a duration such as 90s, 30m, 1h30m, 24h or 7d"


def parse_size(value: object, *, allow_zero: bool = False) -> int:
    """A size in Docker's notation (or whole bytes) as bytes; ``ValueError`` if invalid.

    ``allow_zero`` is for thresholds where 0 has a meaning; for limits 0 would read as
    "no limit" to Docker, which is what ``null`` says explicitly, so it is refused.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {str(value).lower()}; {_SIZE_EXAMPLES}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        raise ValueError(
            f"{_short(value)} has no unit; {_SIZE_EXAMPLES} "
            "(a number without a unit must be whole bytes)"
        )
    elif isinstance(value, str):
        number = _size_text_to_bytes(value)
    else:
        raise ValueError(f"expected a size, got {type(value).__name__}; {_SIZE_EXAMPLES}")
    return _checked_bytes(value, number, allow_zero=allow_zero)


def _size_text_to_bytes(text: str) -> Decimal:
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f"{_short(text)} is negative; use null for unlimited")
    m = _SIZE.match(stripped)
    if m is None:
        raise ValueError(f"{_short(text)} is not a size; {_SIZE_EXAMPLES}")
    digits, prefix, _binary, _b = m.groups()
    factor = _SIZE_FACTOR[(prefix or "").lower()]
    try:
        number = Decimal(digits)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
        raise ValueError(f"{_short(text)} is not a size; {_SIZE_EXAMPLES}") from exc
    if factor == 1 and number != number.to_integral_value():
        raise ValueError(f"{_short(text)} is a fraction of a byte; {_SIZE_EXAMPLES}")
    return number * factor


def _checked_bytes(original: object, number: Decimal, *, allow_zero: bool) -> int:
    if number < 0:
        raise ValueError(f"{_short(original)} is negative; use null for unlimited")
    as_bytes = int(number.to_integral_value(rounding=ROUND_FLOOR))
    if as_bytes == 0 and not allow_zero:
        raise ValueError(
            f"{_short(original)} is zero bytes; give a positive size "
            "(null, where allowed, is unlimited)"
        )
    if as_bytes > MAX_BYTES:
        raise ValueError(f"{_short(original)} is larger than Docker can store (8 EiB)")
    return as_bytes


def parse_duration(value: object, *, allow_zero: bool = False) -> int:
    """A duration such as ``30m`` or ``1h30m`` as whole seconds; ``ValueError`` if invalid."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {str(value).lower()}; {_DURATION_EXAMPLES}")
    if isinstance(value, int | float):
        raise ValueError(
            f"{_short(value)} has no unit; {_DURATION_EXAMPLES} (a bare number is ambiguous: "
            "the old *_h keys counted hours)"
        )
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}; {_DURATION_EXAMPLES}")
    text = value.strip().lower()
    if text.startswith("-"):
        raise ValueError(f"{_short(value)} is negative; use null for unlimited")
    total = Decimal(0)
    position = 0
    for part in _DURATION_PART.finditer(text):
        if part.start() != position:
            break
        total += Decimal(part.group(1)) * _DURATION_SECONDS[part.group(2)]
        position = part.end()
    if not text or position != len(text):
        raise ValueError(f"{_short(value)} is not a duration; {_DURATION_EXAMPLES}")
    if total > MAX_DURATION:
        raise ValueError(
            f"{_short(value)} is longer than 100 years; give a shorter duration (or null, "
            "where allowed, for no limit)"
        )
    seconds = int(total.to_integral_value(rounding=ROUND_HALF_UP))
    if seconds == 0 and not allow_zero:
        raise ValueError(
            f"{_short(value)} is zero; give a positive duration (null, where allowed, is never)"
        )
    return seconds


def format_size(num_bytes: int) -> str:
    """Bytes in the largest exact unit, in a form Docker and :func:`parse_size` read back.

    ``34359738368`` -> ``"32g"``, ``1610612736`` -> ``"1536m"``, ``1000`` -> ``"1000b"``.
    """
    if num_bytes < 0:
        raise ValueError(f"a size cannot be negative: {num_bytes}")
    for suffix, factor in _SIZE_OUT:
        if num_bytes >= factor and num_bytes % factor == 0:
            return f"{num_bytes // factor}{suffix}"
    return f"{num_bytes}b"


def format_duration(seconds: int) -> str:
    """Whole seconds as ``1d2h``, ``1h30m``, ``90s`` -> ``1m30s``; ``0`` -> ``0s``."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    if seconds == 0:
        return "0s"
    parts: list[str] = []
    remaining = seconds
    for suffix, factor in _DURATION_OUT:
        count, remaining = divmod(remaining, factor)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts)


def format_cpus(cpus: float) -> str:
    """A CPU count the way ``docker --cpus`` takes it: ``8``, ``0.5``, ``2.25``.

    Goes through nano-CPUs (Docker's own resolution) so the flag and the SDK's
    ``nano_cpus`` always describe the same limit.
    """
    if not math.isfinite(cpus) or cpus <= 0:
        raise ValueError(f"a CPU limit must be a positive number, not {cpus!r}")
    nano = round(cpus * 1_000_000_000)
    return format(Decimal(nano).scaleb(-9).normalize(), "f")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_short(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{_short(value)} is not a finite number")
    return float(value)


def parse_cpus(value: object) -> float:
    """A CPU count (``16``, ``0.5``); Docker's smallest is 0.01."""
    cpus = _number(value)
    if cpus < 0.01:
        raise ValueError(
            f"{_short(value)} CPUs is too small: at least 0.01; use null for unlimited"
        )
    if cpus > MAX_CPUS:
        raise ValueError(
            f"{_short(value)} CPUs is more than Docker can store; use null for unlimited"
        )
    return cpus


def parse_count(value: object, *, minimum: int = 0) -> int:
    """A whole number of at least ``minimum`` (YAML booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {_short(value)}")
    if value < minimum:
        raise ValueError(f"{_short(value)} is below the minimum {minimum}; use null for unlimited")
    if value > MAX_COUNT:
        raise ValueError(f"{_short(value)} is too large (at most 2**63-1); use null for unlimited")
    return value


def _short(value: object) -> str:
    """``value`` for a message, cut so that a hostile value cannot flood the terminal."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def parse_percent(value: object, *, maximum: float | None = 100.0) -> float:
    """A percentage from 0 to ``maximum`` (``None``: no upper bound, e.g. CPU % of cores)."""
    number = _number(value)
    if number < 0 or (maximum is not None and number > maximum):
        top = f"{maximum:g}" if maximum is not None else "any"
        raise ValueError(f"{_short(value)} is not a percentage between 0 and {top}")
    return number


def parse_gpu_equivalents(value: object) -> Fraction:
    """GPU equivalents as an exact fraction: ``1``, ``0.5``, ``"3/7"``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected GPU equivalents such as 1, 0.5 or 3/7, got {_short(value)}")
    try:
        # str() first so that 0.1 reads as 1/10, not as its binary float approximation.
        amount = Fraction(value) if isinstance(value, int) else Fraction(str(value))
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(
            f"{_short(value)} is not a number of GPU equivalents (1, 0.5, 3/7)"
        ) from exc
    if amount < 0:
        raise ValueError(f"{_short(value)} is negative; use null for unlimited")
    return amount


def parse_mig_profiles(value: object) -> tuple[str, ...]:
    """A list of MIG profile names (``[1g.18gb, 3g.71gb]``) as a tuple."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of MIG profiles such as [1g.18gb], got {value!r}")
    for item in value:
        if not isinstance(item, str) or profile_slices(item) is None:
            raise ValueError(f"{item!r} is not a MIG profile name such as 1g.18gb or 3g.71gb")
    return tuple(str(item).strip() for item in value)
