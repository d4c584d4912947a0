"""What the predictive policy (warmstart.policy.predictive) has learned of one model: its gap histograms per
recent-rate class, kept with two half-lives, its wake-ups per time of day, and the plan last derived from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from warmstart.policy.plan import WarmSpan

# gap histogram edges, seconds (the last bin is open: never kept warm through)
EDGES = np.array([0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 45, 60, 90, 120, 150, 180, 240, 300, 360, 450, 600,
                  750, 900, 1200, 1500, 1800, 2400, 3000, 3600, 4500, 5400, 7200, 9000, 10800, 14400,
                  18000, 21600, 28800, 36000, 43200, 57600, 72000, 86400, 129600, 172800, np.inf])
WIDTHS = np.diff(EDGES)[:-1]
NB = len(EDGES) - 1
# recent-rate classes: requests in the recent window up to the one a gap began after
CONTEXTS = np.array([0, 2, 8, 32, 128, 512, np.inf])
NC = len(CONTEXTS) - 1


@dataclass(frozen=True)
class PredictiveState:
    updated: float = -math.inf  # time the accumulators were last decayed to
    first_seen: float = math.nan
    # arrivals from `recent_window` before the first gap not yet learned (its cold-start window is open)
    buf: np.ndarray = field(default_factory=lambda: np.empty(0))
    pending: float = math.nan  # where that first unlearned gap begins
    # per recent-rate class and gap bin: gaps, cold requests after them, idle seconds spent warm in the bin
    n: np.ndarray = field(default_factory=lambda: np.zeros((NC, NB)))
    w: np.ndarray = field(default_factory=lambda: np.zeros((NC, NB)))
    idle: np.ndarray = field(default_factory=lambda: np.zeros((NC, NB)))
    # the same, decaying with `recent_half_life`
    nf: np.ndarray = field(default_factory=lambda: np.zeros((NC, NB)))
    wf: np.ndarray = field(default_factory=lambda: np.zeros((NC, NB)))
    idlef: np.ndarray = field(default_factory=lambda: np.zeros((NC, NB)))
    # wake-ups (requests after a gap longer than the keep-alive then in force), per time-of-day slot:
    # decayed cold requests they brought, decayed number of days they happened on, the last such day
    wake_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wake_days: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wake_last_day: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wake_count: np.ndarray = field(default_factory=lambda: np.zeros(0))  # distinct days, not decayed
    # per slot: decayed number of wake-ups and the sums of their offsets into the slot (and squares)
    wake_n: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wake_off: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wake_off2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wake_dow: np.ndarray = field(default_factory=lambda: np.zeros(7))  # wake-up weight per weekday
    seen_dow: np.ndarray = field(default_factory=lambda: np.zeros(7))  # decayed days observed per weekday
    last_day: float = -1.0  # the last whole day counted as observed
    # the keep-alive in force per recent-rate class (to tell wake-ups apart)
    keep_alive: np.ndarray = field(default_factory=lambda: np.full(NC, np.nan))
    # what was learned: bumped when gaps (`gaps_seen`) or wake-ups (`wakes_seen`) are added
    gaps_seen: int = 0
    wakes_seen: int = 0
    # the keep-alive spans last derived, and from what (gaps_seen, cold start, decay epoch): reused while
    # nothing new was learned, since deriving them is most of a decision's cost
    after: tuple[WarmSpan, ...] = ()
    after_key: tuple[float, ...] = ()
    # and how long after a request the weights stay in RAM, per recent-rate class (policy.tiers)
    ram_after: tuple[WarmSpan, ...] = ()
