"""Percentiles of a few measured values, without numpy (imported on the server's way to its first start, where
numpy's 0.1 s of CPU would be paid for a p95 of twenty numbers)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile, interpolated linearly between the closest ranks (numpy's default); None for no
    values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
