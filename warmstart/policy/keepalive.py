"""Keep-alive with Ollama's semantics: the idle clock starts when in-flight reaches zero;
0 unloads at once, negative (math.inf) never unloads."""

from __future__ import annotations

import math


def expiry(idle_since: float, keep_alive: float) -> float:
    """When an idle replica should unload; math.inf for never."""
    if math.isinf(keep_alive):
        return math.inf
    return idle_since + max(0.0, keep_alive)


def expired(idle_since: float, keep_alive: float, now: float) -> bool:
    return now >= expiry(idle_since, keep_alive)
