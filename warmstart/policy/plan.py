"""Decisions as data: a model's warm plan, and the one pure rule that turns a plan into "loaded until".

A `Plan` says when a model should be loaded: absolute spans (a schedule, a hint, a predicted busy
period) and spans relative to the model's last request (keep-alive, and a later pre-warm where the
gaps between requests make one pay). The live controller and the simulator both apply a plan with
`evaluate` (loaded until when, and when the plan next changes), so what the simulator measures is what
the server does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Which trigger names a start when several policies want a model loaded at once.
PRIORITY = {"schedule": 0, "hint": 1, "prediction": 2, "keep-alive": 3}


@dataclass(frozen=True, slots=True)
class WarmSpan:
    """Be loaded (ready, as far as the lead time allows) from `start` until `end`.

    A span relative to the last request can be limited to a recent rate: it applies only when between
    `min_recent` and `max_recent` requests (that one included) arrived in the plan's `recent_window`.
    """

    start: float
    end: float
    trigger: str
    min_recent: int = 0
    max_recent: float = math.inf


@dataclass(frozen=True, slots=True)
class Plan:
    # absolute wall-clock spans
    spans: tuple[WarmSpan, ...] = ()
    # spans in seconds after the model's last request arrived
    after_arrival: tuple[WarmSpan, ...] = ()
    # ask the policy again no later than this (wall time)
    review_at: float = math.inf
    # seconds before the last request in which requests count as its recent rate
    recent_window: float = 600.0
    # how long after the last request the weights stay held in RAM once the model unloads (trigger "ram";
    # limited to a recent rate like `after_arrival`); empty: the model's own ram_keep_alive applies
    ram_after_arrival: tuple[WarmSpan, ...] = ()


IDLE = Plan()


def evaluate(plan: Plan, last_arrival: float | None, now: float, recent: int = 1
             ) -> tuple[tuple[float, str] | None, float]:
    """Whether the model should be loaded at `now` -- (until when, which trigger) or None -- and the next
    time after `now` at which a span of the plan begins.

    `recent` is how many requests arrived in the plan's `recent_window` up to the last one (it included).
    Overlapping and touching spans chain: the model stays loaded to the end of the chain. The trigger is
    the highest-priority one among the spans covering `now`.
    """
    until, trigger, rank, upcoming = -math.inf, "", 99, math.inf
    shift = last_arrival if last_arrival is not None else 0.0
    for group, offset, relative in ((plan.spans, 0.0, False),
                                    (plan.after_arrival if last_arrival is not None else (), shift, True)):
        for s in group:
            start, end = s.start + offset, s.end + offset
            if end <= start or (relative and not s.min_recent <= recent <= s.max_recent):
                continue
            if start <= now:
                if now < end:
                    if end > until:
                        until = end
                    r = PRIORITY.get(s.trigger, 9)
                    if r < rank:
                        trigger, rank = s.trigger, r
            elif start < upcoming:
                upcoming = start
    if rank == 99:
        return None, upcoming
    if len(plan.spans) + len(plan.after_arrival) > 1:
        spans = [(s.start, s.end) for s in plan.spans if s.end > s.start]
        if last_arrival is not None:
            spans += [(shift + s.start, shift + s.end) for s in plan.after_arrival
                      if s.end > s.start and s.min_recent <= recent <= s.max_recent]
        grew = True
        while grew:
            grew = False
            for start, end in spans:
                if start <= until < end:
                    until, grew = end, True
    return (until, trigger), upcoming


def warm_target(plan: Plan, last_arrival: float | None, now: float, recent: int = 1) -> tuple[float, str] | None:
    """Whether the model should be loaded at `now`: (until when, which trigger), or None."""
    return evaluate(plan, last_arrival, now, recent)[0]


def ram_until(plan: Plan, last_arrival: float | None, recent: int = 1) -> float | None:
    """Until when the plan holds the model's weights in RAM after it unloads (wall time; -inf: not at
    all), or None when the plan does not say (the model's own ram_keep_alive applies)."""
    if not plan.ram_after_arrival:
        return None
    if last_arrival is None:
        return -math.inf
    ends = [s.end for s in plan.ram_after_arrival if s.min_recent <= recent <= s.max_recent]
    return last_arrival + max(ends) if ends else -math.inf


def merge(plans: list[Plan]) -> Plan:
    """The union of several policies' plans; review when the earliest of them asks."""
    if len(plans) == 1:
        return plans[0]
    windows = {p.recent_window for p in plans if p.after_arrival}
    return Plan(
        spans=tuple(s for p in plans for s in p.spans),
        after_arrival=tuple(s for p in plans for s in p.after_arrival),
        review_at=min((p.review_at for p in plans), default=math.inf),
        recent_window=max(windows, default=600.0),
        ram_after_arrival=tuple(s for p in plans for s in p.ram_after_arrival),
    )
