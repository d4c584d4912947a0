"""The perfect-foresight oracle: the floor every policy is measured against.

It knows every arrival: it loads exactly one cold start ahead of each request and unloads right after
a request when the next one is more than a cold start away. It runs through the same replay as the
real policies, as a policy that is handed the future (only the simulator can build one).
"""

from __future__ import annotations

import numpy as np

from warmstart.policy.observation import Observation
from warmstart.policy.plan import Plan, WarmSpan

CHAINS_PER_PLAN = 8


class OraclePolicy:
    def __init__(self, arrivals: np.ndarray, cold_start: float) -> None:
        self.c = float(cold_start)
        arr = np.asarray(arrivals, dtype=np.float64)
        # chains of requests less than a cold start apart: loaded from first - c to last
        breaks = np.nonzero(np.diff(arr) > self.c)[0] + 1 if len(arr) else np.empty(0, dtype=np.int64)
        firsts = np.concatenate([[0], breaks]).astype(np.int64) if len(arr) else breaks
        lasts = np.concatenate([breaks - 1, [len(arr) - 1]]).astype(np.int64) if len(arr) else breaks
        self.starts = arr[firsts] - self.c if len(arr) else arr
        self.ends = arr[lasts] if len(arr) else arr

    def initial_state(self) -> int:
        return 0

    def decide(self, obs: Observation, state: int, now: float) -> tuple[Plan, int]:
        i = int(np.searchsorted(self.ends, now, side="left"))
        j = min(i + CHAINS_PER_PLAN, len(self.starts))
        spans = tuple(WarmSpan(float(s), float(e), "prediction")
                      for s, e in zip(self.starts[i:j], self.ends[i:j], strict=True))
        review = float(self.starts[j - 1]) if j - i > 1 else (float(self.ends[i]) if i < j else float("inf"))
        return Plan(spans=spans, review_at=review), j


def oracle_cost(arrivals: np.ndarray, cold_start: float) -> float:
    """Replica-seconds the oracle keeps a model loaded: a cold start per chain plus the gaps inside chains."""
    if not len(arrivals):
        return 0.0
    gaps = np.diff(arrivals)
    return float(cold_start * (1 + np.count_nonzero(gaps > cold_start)) + gaps[gaps <= cold_start].sum())
