"""Summaries over seeds (or any small sample): the mean and the sample standard deviation, NaN handled explicitly.

None means "not measured" and is left out; NaN means "undefined" (a ratio with a zero denominator) and is left out
too, but counted, so that a caller can say how many values a summary rests on.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable


def finite(xs: Iterable[float | None]) -> list[float]:
    """The values that are neither None nor NaN/inf."""
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def mean(xs: Iterable[float | None]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    v = finite(xs)
    return statistics.fmean(v) if v else float("nan")


def sd(xs: Iterable[float | None]) -> float:
    """Sample standard deviation (n - 1) of the finite values; 0.0 for one value, NaN for none."""
    v = finite(xs)
    if not v:
        return float("nan")
    return statistics.stdev(v) if len(v) > 1 else 0.0
