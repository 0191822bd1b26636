"""Summaries every benchmark prints the same way: min / median / max over repeated runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["spread", "spread_ms"]


def spread(values: Sequence[float], unit: str = "s", digits: int = 3) -> str:
    """``median 0.412 s (min 0.398, max 0.455, n=5)``: one run proves nothing, so n shows."""
    if not values:
        return "no runs"
    med = statistics.median(values)
    return (
        f"median {med:.{digits}f} {unit} (min {min(values):.{digits}f}, "
        f"max {max(values):.{digits}f}, n={len(values)})"
    )


def spread_ms(values_s: Sequence[float]) -> str:
    return spread([v * 1000 for v in values_s], unit="ms", digits=1)
