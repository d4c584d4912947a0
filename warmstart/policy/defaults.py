"""The warming the server ships with, built in one place so the server and `warmstart simulate --policy
default` run the same combination."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from warmstart.policy.controller import Controller, Policy
from warmstart.policy.predictive import PredictiveParams, PredictivePolicy
from warmstart.policy.schedule import SchedulePolicy, parse_window, zone

# the serving core's fixed keep-alive, for models that set one (and the `schedule` simulation)
FIXED_KEEP_ALIVE = 300.0
# the pool's own keep-alive for models whose keep-alive the predictive policy picks
AUTO_KEEP_ALIVE_FLOOR = 0.0
# what `--policy schedule` simulates when no schedule is given: office hours
EXAMPLE_SCHEDULE = ("08:00-18:00 Mon-Fri",)


def predictive_params(overrides: Mapping[str, Any]) -> PredictiveParams:
    known = {f.name for f in fields(PredictiveParams)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown predictive setting(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    return PredictiveParams(**{k: float(v) for k, v in overrides.items()})


def predictive(params: PredictiveParams | None = None) -> PredictivePolicy:
    return PredictivePolicy(params)


def controller(*, predictive: Policy | None = None, schedule: Sequence[str] = (), tz: str = "UTC",
               lead: float = 0.0, extra: Sequence[Policy] = ()) -> Controller:
    policies: list[Policy] = []
    if schedule:
        policies.append(SchedulePolicy(tuple(parse_window(w) for w in schedule), zone(tz), lead))
    policies += list(extra)
    if predictive is not None:
        policies.append(predictive)
    return Controller(policies)
