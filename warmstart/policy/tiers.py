"""Per model, how long its weights stay in each tier after a request: loaded, then held in RAM, then disk.

A pure choice from one gap histogram (per bin of idle gap: the gaps that ended there `n`, the cold requests
a start after them made wait `w`, the idle seconds a replica kept through the bin spends there `idle`):

- a bin covered **loaded** costs its idle seconds and saves, for each gap ending there, the cold requests of
  its start (`rate` replica-seconds each) and the start itself (`cold_start` loaded seconds);
- a bin covered **in RAM** costs its idle seconds at `ram_price` (a RAM second in loaded replica-seconds) and
  saves what a start from RAM saves against one from disk: the requests arriving between the RAM start's
  end and the disk start's end (all but the first of each burst, scaled by the time saved) and the
  loaded seconds of the shorter start.

Loaded is a prefix of the bins, RAM the next run, disk the rest; the keep-alive is given (the predictive
policy picks it), the RAM horizon is the best run after it. `warmstart.policy.predictive` puts the result in
its plan (`Plan.ram_after_arrival`); the pool and the simulator ask `warmstart.policy.tiering` where the
weights go when the model unloads, with that horizon.
"""

from __future__ import annotations

import numpy as np

# a start from the RAM tier against one from disk, llama.cpp with repack = false (docs/store.md, "Measured here"):
# what a RAM start is assumed to take before one is measured
MEASURED_RAM_SPEEDUP = 1.9


def ram_net(n: np.ndarray, w: np.ndarray, idle: np.ndarray, *, cold_start: float, ram_cold_start: float,
            ram_price: float, rate: float) -> np.ndarray:
    """Per bin: replica-seconds gained by holding the weights in RAM through it rather than on disk."""
    if not 0 < ram_cold_start < cold_start:
        return np.full(len(n), -np.inf)
    faster = 1.0 - ram_cold_start / cold_start
    net: np.ndarray = rate * np.maximum(w - n, 0.0) * faster + (cold_start - ram_cold_start) * n - ram_price * idle
    return net


def ram_horizon(edges: np.ndarray, net: np.ndarray, keep_alive: float, max_horizon: float) -> float:
    """How long after a request the weights stay in RAM: the end of the best run of bins from the first
    one the `keep_alive` leaves uncovered (`net[j]` the gain of bin j, whose edges are edges[j], edges[j+1]),
    at most `max_horizon`; `keep_alive` itself when no run gains (disk right after the unload)."""
    first = int(np.searchsorted(edges, keep_alive, side="left"))
    last = int(np.searchsorted(edges, max_horizon, side="right")) - 1
    if first >= min(len(net), last):
        return keep_alive
    gains = np.cumsum(net[first:last])
    m = int(np.argmax(gains))
    if gains[m] <= 0:
        return keep_alive
    return float(max(edges[first + m + 1], keep_alive))
