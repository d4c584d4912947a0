"""Keep-alive with Ollama's semantics: the idle clock starts when in-flight reaches zero;
0 unloads at once, negative (math.inf) never unloads.

`unload_deadline` is the one rule for when an idle replica unloads; the pool and the simulator both call it.
"""

from __future__ import annotations

import math

from warmstart.policy.plan import Plan, WarmSpan


def expiry(idle_since: float, keep_alive: float) -> float:
    """When an idle replica should unload; math.inf for never."""
    if math.isinf(keep_alive):
        return math.inf
    return idle_since + max(0.0, keep_alive)


def unload_deadline(idle_since: float, keep_alive: float, warm_until: float, *, sole_replica: bool = True,
                    unload_when_idle: bool = False) -> float:
    """When an idle replica unloads: its keep-alive after the idle clock started, or later if the warming
    controller wants the model loaded until `warm_until` and this is the model's only warm replica."""
    if unload_when_idle:
        return idle_since
    deadline = expiry(idle_since, keep_alive)
    if sole_replica:
        deadline = max(deadline, warm_until)
    return deadline


class KeepAlivePolicy:
    """The fixed keep-alive as a warming policy: keep the model loaded `seconds` after each request."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._plan = Plan(after_arrival=(WarmSpan(0.0, seconds, "keep-alive"),))

    def initial_state(self) -> None:
        return None

    def decide(self, obs: object, state: None, now: float) -> tuple[Plan, None]:
        return self._plan, None
