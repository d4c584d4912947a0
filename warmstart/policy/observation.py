"""What a policy is shown about one model at one decision: the arrivals since it last decided, and how
long this model takes to start.

numpy is not imported here: the server's warming shows its policies a tuple, and only a policy that learns
from arrivals (the predictive one, which imports numpy) makes an array of them. A server whose models only
follow schedules and hints never imports numpy before its first answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, slots=True)
class Observation:
    model: str
    # requests that arrived since the previous decision for this model: wall seconds, ascending (an array in
    # the simulator, a tuple in the server)
    arrivals: np.ndarray | tuple[float, ...] = ()
    # p95 of the model's measured cold starts (or the configured estimate before any was measured)
    cold_start_s: float = 30.0
    # the RAM tier, when the model may use it: how long a start from RAM takes (measured, else estimated;
    # None: no RAM tier) and what a second held in RAM costs, in loaded replica-seconds (store.ram_price x GiB)
    ram_cold_start_s: float | None = None
    ram_price_s: float = 0.0
    # hints accepted since the previous decision: (wall time, warm for seconds)
    hints: tuple[tuple[float, float], ...] = ()
