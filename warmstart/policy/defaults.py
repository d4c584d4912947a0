"""The warming the server ships with, built in one place so the server and `warmstart simulate --policy
default` run the same combination."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from warmstart.policy.controller import Controller, Policy
from warmstart.policy.hint import HintPolicy
from warmstart.policy.predictive_params import PredictiveParams
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


def controller(*, schedules: Sequence[tuple[Sequence[str], str]] = (), hints: bool = False,
               predictive: PredictiveParams | None = None, lead: float = 0.0) -> Controller:
    """One model's policies: its schedules (windows, time zone), the warm hint, and the predictive policy
    (None: off). `lead` is added to every lead time (the server adds its tick)."""
    policies: list[Policy] = [SchedulePolicy(tuple(parse_window(w) for w in windows), zone(tz), lead)
                              for windows, tz in schedules]
    if hints:
        policies.append(HintPolicy())
    if predictive is not None:
        from warmstart.policy.predictive import PredictivePolicy  # numpy: imported only where a model learns

        policies.append(PredictivePolicy(replace(predictive, lead=predictive.lead + lead)))
    return Controller(policies)
