"""Last-hour figures per model (requests warm/cold, time to first token, replica-seconds, starts, hints),
computed from the Prometheus metrics that warmstart records where each event happens.

A counter only grows, so "in the last hour" is its value now minus its value an hour ago. `HourWindow`
keeps a sample of the counters every `interval` seconds for an hour (per model, only models with any
non-zero value, and a model's unchanged sample is shared with the one before), and subtracts the oldest
sample still within the hour from the current values. While the server has been up less than an hour the
baseline is zero, since every counter starts at zero with the server: the figures are then exact.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from warmstart.policy.hint import ACCEPTED as ACCEPTED_HINTS  # every other outcome is a refusal
from warmstart.telemetry.metrics import TTFT_BUCKETS, Metrics

HOUR = 3600.0
STARTS = ("warm", "cold")

# layout of one model's sample: a flat tuple of counter values
REQ_WARM, REQ_COLD, REQ_ERRORS, LOADED_S, STARTS_OK, STARTS_FAILED, HINTS_OK, HINTS_REFUSED = range(8)
_TTFT = 8
_NB = len(TTFT_BUCKETS) + 1  # the finite buckets and +Inf
_PER_START = 2 + _NB  # count, sum, cumulative bucket counts
WIDTH = _TTFT + len(STARTS) * _PER_START
ZERO = array("d", [0.0] * WIDTH)
BOUNDS: tuple[float, ...] = (*TTFT_BUCKETS, math.inf)

# per model, its counters as packed doubles (8 bytes a value, where a tuple of floats takes 32)
Sample = dict[str, array]


def read_counters(metrics: Metrics) -> Sample:
    """The current value of every counter the window reports, per model (models with only zeros left out)."""
    rows: dict[str, list[float]] = {}

    def row(model: str) -> list[float]:
        r = rows.get(model)
        if r is None:
            r = rows[model] = [0.0] * WIDTH
        return r

    for (model, start, code, *_node), value in counter_values(metrics.requests, ("model", "start", "code")):
        if value:
            r = row(model)
            r[REQ_WARM if start == "warm" else REQ_COLD] += value
            if not code.startswith("2"):
                r[REQ_ERRORS] += value
    for (model, *_node), value in counter_values(metrics.replica_loaded_seconds, ("model",)):
        if value:
            row(model)[LOADED_S] += value
    for (model, _trigger, outcome, *_node), value in counter_values(metrics.starts, ("model", "trigger", "outcome")):
        if value and outcome in ("ok", "failed"):
            row(model)[STARTS_OK if outcome == "ok" else STARTS_FAILED] += value
    for (model, outcome), value in counter_values(metrics.hints, ("model", "outcome")):
        if value:
            row(model)[HINTS_OK if outcome in ACCEPTED_HINTS else HINTS_REFUSED] += value
    for (model, start, *_node), count, total, buckets in histogram_values(metrics.ttft_seconds, ("model", "start")):
        if count and start in STARTS:
            base = _TTFT + STARTS.index(start) * _PER_START
            row(model)[base:base + _PER_START] = [count, total, *buckets]
    return {model: array("d", r) for model, r in rows.items()}


# Reading the children directly is 20 times faster than collect(), which builds a sample (and a _created
# sample) for each of the thousands of series hundreds of models have; collect() is the fallback should
# prometheus_client's internals change.

def counter_values(metric: Any, names: tuple[str, ...]) -> list[tuple[tuple[str, ...], float]]:
    try:
        with metric._lock:
            children = list(metric._metrics.items())
        return [(labels, child._value.get()) for labels, child in children]
    except AttributeError:
        return counter_values_collected(metric, names)


def counter_values_collected(metric: Any, names: tuple[str, ...]) -> list[tuple[tuple[str, ...], float]]:
    return [(tuple(s.labels[n] for n in names), s.value)
            for family in metric.collect() for s in family.samples if s.name.endswith("_total")]


def histogram_values(metric: Any, names: tuple[str, ...]) -> list[tuple[tuple[str, ...], float, float, list[float]]]:
    """(labels, count, sum, cumulative bucket counts) per child."""
    try:
        with metric._lock:
            children = list(metric._metrics.items())
        out = []
        for labels, child in children:
            cumulative, running = [], 0.0
            for bucket in child._buckets:
                running += bucket.get()
                cumulative.append(running)
            out.append((labels, running, child._sum.get(), cumulative))
        return out
    except AttributeError:
        return histogram_values_collected(metric, names)


def histogram_values_collected(metric: Any,
                               names: tuple[str, ...]) -> list[tuple[tuple[str, ...], float, float, list[float]]]:
    index = {b: i for i, b in enumerate(BOUNDS)}
    found: dict[tuple[str, ...], list[Any]] = {}
    for family in metric.collect():
        for s in family.samples:
            labels = tuple(s.labels[n] for n in names)
            entry = found.setdefault(labels, [0.0, 0.0, [0.0] * len(BOUNDS)])
            if s.name.endswith("_count"):
                entry[0] = s.value
            elif s.name.endswith("_sum"):
                entry[1] = s.value
            elif s.name.endswith("_bucket"):
                entry[2][index[float(s.labels["le"])]] = s.value
    return [(labels, count, total, buckets) for labels, (count, total, buckets) in found.items()]


def quantile(q: float, cumulative: tuple[float, ...] | list[float]) -> float | None:
    """`q`-quantile from cumulative histogram bucket counts (upper bounds BOUNDS), interpolated within its
    bucket the way Prometheus's histogram_quantile does; None without observations."""
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(BOUNDS, cumulative, strict=False):
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower  # past the last finite bucket: its upper bound is all that is known
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass(frozen=True)
class Figures:
    """One model's (or all models') counts over the window."""

    warm: float
    cold: float
    errors: float
    loaded_s: float
    starts_ok: float
    starts_failed: float
    hints_accepted: float
    hints_refused: float
    ttft: Mapping[str, tuple[float, ...]]  # start -> (count, sum, cumulative buckets...)

    @classmethod
    def of(cls, delta: tuple[float, ...]) -> Figures:
        ttft = {start: delta[_TTFT + i * _PER_START:_TTFT + (i + 1) * _PER_START] for i, start in enumerate(STARTS)}
        return cls(*delta[:_TTFT], ttft=ttft)  # type: ignore[arg-type, misc]  # mypy cannot count a slice

    def to_dict(self) -> dict[str, Any]:
        requests = self.warm + self.cold
        both = [w + c for w, c in zip(self.ttft["warm"][2:], self.ttft["cold"][2:], strict=False)]
        out: dict[str, Any] = {
            "requests": int(requests),
            "warm": int(self.warm),
            "cold": int(self.cold),
            "errors": int(self.errors),
            "warm_ratio": None if requests == 0 else round(self.warm / requests, 4),
            "ttft_p50_s": _round(quantile(0.5, both)),
            "ttft_p95_s": _round(quantile(0.95, both)),
            "loaded_s": round(self.loaded_s, 1),
            "starts": int(self.starts_ok),
            "starts_failed": int(self.starts_failed),
            "hints": int(self.hints_accepted + self.hints_refused),
            "hints_refused": int(self.hints_refused),
        }
        for start in STARTS:
            count, total = self.ttft[start][0], self.ttft[start][1]
            out[f"ttft_{start}_p50_s"] = _round(quantile(0.5, self.ttft[start][2:]))
            out[f"ttft_{start}_mean_s"] = _round(total / count) if count else None
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


class HourWindow:
    """Samples of the counters over the last hour; `figures(now)` subtracts the oldest from the current."""

    def __init__(self, metrics: Metrics, started: float, interval: float = 30.0, span: float = HOUR) -> None:
        self.metrics = metrics
        self.interval = interval
        self.span = span
        # the server's counters were all zero when it started
        self._samples: deque[tuple[float, Sample]] = deque([(started, {})])

    def sample(self, now: float) -> None:
        """Keep the current values; drop samples no longer needed as a baseline."""
        current = read_counters(self.metrics)
        previous = self._samples[-1][1]
        # share unchanged rows with the previous sample: idle models cost a reference, not a copy
        kept = {m: previous[m] if previous.get(m) == row else row for m, row in current.items()}
        self._samples.append((now, kept))
        # the baseline is the newest sample at or before now - span; everything older can go
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.span:
            self._samples.popleft()

    def figures(self, now: float) -> tuple[float, dict[str, Figures], Figures]:
        """(the window's length in seconds, figures per model, figures of all models together)."""
        current = read_counters(self.metrics)
        at, base = self._baseline(now)
        per_model: dict[str, Figures] = {}
        total = [0.0] * WIDTH
        for model, row in current.items():
            old = base.get(model, ZERO)
            delta = tuple(max(0.0, a - b) for a, b in zip(row, old, strict=False))
            if any(delta):
                per_model[model] = Figures.of(delta)
                for i, v in enumerate(delta):
                    total[i] += v
        return now - at, per_model, Figures.of(tuple(total))

    def _baseline(self, now: float) -> tuple[float, Sample]:
        chosen = self._samples[0]
        for entry in self._samples:
            if entry[0] <= now - self.span:
                chosen = entry
            else:
                break
        return chosen
