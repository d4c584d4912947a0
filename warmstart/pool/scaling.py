"""How many replicas to start for the requests waiting: a pure function the pool and simulator share."""

from __future__ import annotations

import math


def replicas_to_start(*, waiting: int, free_warm_slots: int, starting: int, live: int,
                      capacity: int, max_replicas: int) -> int:
    """Start enough replicas for the waiting requests not covered by free warm slots or
    replicas already starting, within max_replicas; at least one when something waits and none is live."""
    if waiting <= 0:
        return 0
    uncovered = waiting - free_warm_slots - starting * capacity
    if uncovered <= 0:
        return 0
    wanted = math.ceil(uncovered / max(1, capacity))
    return max(0, min(wanted, max_replicas - live))
