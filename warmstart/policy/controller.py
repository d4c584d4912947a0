"""The controller: combines a model's policies (schedule, hint, predictive, keep-alive) into one plan.

Pure like its parts: `decide(observation, state, now) -> (plan, state)`. The live warming task and the
simulator both call it and apply the plan with `warmstart.policy.plan.evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from warmstart.policy.observation import Observation
from warmstart.policy.plan import Plan, merge

if TYPE_CHECKING:
    import numpy as np


class Policy(Protocol):
    def initial_state(self) -> Any: ...

    def decide(self, obs: Observation, state: Any, now: float) -> tuple[Plan, Any]: ...


class Controller:
    """One model's warming policies, combined; its state is the tuple of their states."""

    def __init__(self, policies: Sequence[Policy], min_review: float = 1.0) -> None:
        self.policies = tuple(policies)
        # never ask again sooner than this: a policy that keeps asking cannot spin the loop
        self.min_review = min_review

    def initial_state(self) -> tuple[Any, ...]:
        return tuple(p.initial_state() for p in self.policies)

    def decide(self, obs: Observation, state: tuple[Any, ...], now: float) -> tuple[Plan, tuple[Any, ...]]:
        plans, states = [], []
        for policy, s in zip(self.policies, state, strict=True):
            plan, s = policy.decide(obs, s, now)
            plans.append(plan)
            states.append(s)
        plan = merge(plans) if plans else Plan()
        review = plan.review_at if not math.isinf(plan.review_at) else now + 3600.0
        review = max(review, now + self.min_review)
        if review != plan.review_at:
            plan = Plan(plan.spans, plan.after_arrival, review, plan.recent_window, plan.ram_after_arrival)
        return plan, tuple(states)


# the history a controller is taught at once: an hour of arrivals per decision
HISTORY_STEP = 3600.0


def learn(controller: Controller, state: tuple[Any, ...], model: str, arrivals: np.ndarray, now: float,
          cold_start: float, step: float = HISTORY_STEP) -> tuple[tuple[Any, ...], np.ndarray]:
    """Teach `controller` a model's past `arrivals` (ascending wall seconds before `now`), one `step` at a
    time, as if it had been running: what the server does at start-up from its request history and what
    `warmstart simulate --history-days` does before the judged window. Returns the state and the arrivals
    of the last, unfinished step (to be shown at the next decision)."""
    if not len(arrivals):
        return state, arrivals
    import numpy as np  # here, not at import: a server with no history to learn from starts without it

    t = math.floor(arrivals[0] / step) * step + step
    i = 0
    while i < len(arrivals) and t < now:
        j = int(np.searchsorted(arrivals, t, side="left"))
        _, state = controller.decide(Observation(model, arrivals[i:j], cold_start), state, t)
        i, t = j, t + step
    return state, arrivals[i:]
