"""The controller: combines a model's policies (schedule, hint, predictive, keep-alive) into one plan.

Pure like its parts: `decide(observation, state, now) -> (plan, state)`. The live warming task and the
simulator both call it and apply the plan with `warmstart.policy.plan.evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from warmstart.policy.observation import Observation
from warmstart.policy.plan import Plan, merge


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
            plan = Plan(plan.spans, plan.after_arrival, review)
        return plan, tuple(states)
