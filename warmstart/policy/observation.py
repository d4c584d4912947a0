"""What a policy is shown about one model at one decision: the arrivals since it last decided, and how
long this model takes to start."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_EMPTY = np.empty(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Observation:
    model: str
    # requests that arrived since the previous decision for this model: wall seconds, ascending
    arrivals: np.ndarray = field(default_factory=lambda: _EMPTY)
    # p95 of the model's measured cold starts (or the configured estimate before any was measured)
    cold_start_s: float = 30.0
    # hints accepted since the previous decision: (wall time, warm for seconds)
    hints: tuple[tuple[float, float], ...] = ()
