"""Warm hints: a page about to send a prompt asks for its model to be warmed for a short time.

Pure decisions, so a hint cannot become a way to burn money: a token bucket per client, an allowlist of
models, and a global budget of hint-paid replica-seconds per rolling hour. A refused hint starts nothing.
`HintPolicy` turns the accepted hints into warm spans for the controller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from warmstart.policy.observation import Observation
from warmstart.policy.plan import Plan, WarmSpan

HOUR = 3600.0
ACCEPTED = ("started", "extended", "already_warm")


@dataclass(frozen=True)
class HintLimits:
    # how long a hint keeps the model warm
    warm_for: float = 120.0
    # per client: tokens added per second, and the most a client can save up
    client_rate: float = 6 / 60
    client_burst: float = 3.0
    # models a hint may warm; None: every model
    models: frozenset[str] | None = None
    # replica-seconds that hints may pay for in any rolling hour, all models and clients together
    budget_per_hour: float = 3600.0
    # clients remembered at most (the least recently seen are forgotten first)
    max_clients: int = 10_000


@dataclass(frozen=True)
class HintRequest:
    model: str
    client: str
    known: bool  # the model exists
    loaded: bool  # a replica is starting or warm
    # until when the model is wanted loaded anyway (the controller's current warm-until), wall time
    warm_until: float
    cold_start_s: float
    # how long the model's last replica stays loaded once idle (its keep-alive; math.inf: never unloads)
    keep_alive_s: float = 0.0
    # when the loaded model would unload without this hint, wall time (math.inf: not while it is busy)
    loaded_until: float = -math.inf
    # a warm replica is idle: the hint restarts its idle clock, so it stays `keep_alive_s` from now
    idle: bool = False


@dataclass(frozen=True)
class HintState:
    # client -> (tokens, when they were counted)
    buckets: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))
    # (when, replica-seconds) charged to the budget within the last hour
    spent: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class HintDecision:
    outcome: str
    warm_until: float | None = None  # for accepted hints: keep the model warm until then (wall time)
    charge: float = 0.0  # replica-seconds charged to the hourly budget
    retry_after: float | None = None  # for refused ones: when asking again could succeed

    @property
    def accepted(self) -> bool:
        return self.outcome in ACCEPTED


def decide(req: HintRequest, state: HintState, now: float, limits: HintLimits) -> tuple[HintDecision, HintState]:
    if not req.known:
        return HintDecision("unknown_model"), state
    if limits.models is not None and req.model not in limits.models:
        return HintDecision("not_allowed"), state
    tokens, counted = state.buckets.get(req.client, (limits.client_burst, now))
    tokens = min(limits.client_burst, tokens + max(0.0, now - counted) * limits.client_rate)
    buckets = dict(state.buckets)
    if tokens < 1.0:
        buckets[req.client] = (tokens, now)
        wait = (1.0 - tokens) / limits.client_rate if limits.client_rate > 0 else math.inf
        return HintDecision("rate_limited", retry_after=wait), replace(state, buckets=_bounded(buckets, now, limits))
    buckets[req.client] = (tokens - 1.0, now)
    spent = tuple((t, s) for t, s in state.spent if t > now - HOUR)
    until = now + limits.warm_for
    charge = hint_charge(req, now, limits)
    outcome = ("extended" if charge > 0 else "already_warm") if req.loaded else "started"
    used = sum(s for _, s in spent)
    if math.isinf(charge):  # the model never unloads: no budget pays for forever, now or later
        return (HintDecision("over_budget", retry_after=math.inf),
                replace(state, buckets=_bounded(buckets, now, limits), spent=spent))
    if charge > 0 and used + charge > limits.budget_per_hour:
        # the budget frees up as the oldest charges leave the rolling hour
        freed, wait = used + charge - limits.budget_per_hour, HOUR
        for t, s in spent:
            freed -= s
            if freed <= 0:
                wait = t + HOUR - now
                break
        return (HintDecision("over_budget", retry_after=max(1.0, wait)),
                replace(state, buckets=_bounded(buckets, now, limits), spent=spent))
    if charge > 0:
        spent = spent + ((now, charge),)
    return (HintDecision(outcome, warm_until=until, charge=charge),
            HintState(buckets=_bounded(buckets, now, limits), spent=spent))


def hint_charge(req: HintRequest, now: float, limits: HintLimits) -> float:
    """The replica-seconds a hint keeps loaded that would not be loaded without it: a start pays for the
    start and for as long as the replica then stays, the hint's span or the model's keep-alive, whichever is
    longer; a loaded model pays for the time it now stays past when it would have unloaded."""
    until = now + limits.warm_for
    if not req.loaded:
        return req.cold_start_s + max(limits.warm_for, req.keep_alive_s)
    stays = max(until, now + req.keep_alive_s) if req.idle else until
    would = max(now, req.loaded_until, req.warm_until)
    return max(0.0, stays - would)


def _bounded(buckets: dict[str, tuple[float, float]], now: float,
             limits: HintLimits) -> Mapping[str, tuple[float, float]]:
    if len(buckets) > limits.max_clients:
        # a client whose bucket has refilled is no different from a new one: forget those first, then the oldest
        full_after = limits.client_burst / limits.client_rate if limits.client_rate > 0 else math.inf
        kept = {c: v for c, v in buckets.items() if now - v[1] < full_after}
        if len(kept) > limits.max_clients:
            kept = dict(sorted(kept.items(), key=lambda kv: kv[1][1])[-limits.max_clients:])
        buckets = kept
    return MappingProxyType(buckets)


class HintPolicy:
    """The controller's view of accepted hints: keep the model warm until the latest hint runs out."""

    def initial_state(self) -> float:
        return -math.inf

    def decide(self, obs: Observation, state: float, now: float) -> tuple[Plan, float]:
        until = max([state] + [t + warm_for for t, warm_for in obs.hints])
        if until <= now:
            return Plan(), until
        return Plan(spans=(WarmSpan(now, until, "hint"),), review_at=until), until
