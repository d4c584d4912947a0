"""How far a benchmark's median difference could move by chance: a bootstrap interval over the measured pairs.

A gateway's added latency is the difference of two medians of a few hundred requests each, and a run-to-run
spread of 0.1-0.3 ms on a 1 ms target says little without it: the interval shows whether a run's figure is
under the target or merely near it. The same for a ratio of paired throughputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def median_difference_interval(direct: Sequence[float], via: Sequence[float], *, paired: bool = False,
                               level: float = 0.95, resamples: int = 2000,
                               seed: int = 0) -> tuple[float, float]:
    """The `level` interval of `median(via) - median(direct)` (`paired`: of `median(via - direct)`), by resampling
    the pairs (`direct[i]`, `via[i]` were measured side by side, so they are drawn together); percentile
    bootstrap, seeded so that a run's report is reproducible from its samples."""
    d, v, draws = _draws(direct, via, level, resamples, seed)
    stats = np.median((v - d)[draws], axis=1) if paired else np.median(v[draws], axis=1) - np.median(d[draws], axis=1)
    return _percentiles(stats, level)


def median_ratio_interval(direct: Sequence[float], via: Sequence[float], *, level: float = 0.95,
                          resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The `level` interval of `median(via / direct)` over pairs measured side by side (a throughput through the
    gateway and directly, in the same round), resampled as `median_difference_interval` resamples them."""
    d, v, draws = _draws(direct, via, level, resamples, seed)
    return _percentiles(np.median((v / d)[draws], axis=1), level)


def _draws(direct: Sequence[float], via: Sequence[float], level: float, resamples: int,
           seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, v = np.asarray(direct, dtype=float), np.asarray(via, dtype=float)
    if d.shape != v.shape or d.ndim != 1 or len(d) < 2:
        raise ValueError("need two equally long series of at least 2 paired values")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level} is not between 0 and 1")
    return d, v, np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)
