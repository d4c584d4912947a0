"""The predictive policy pays only for silences the model has shown: the prior's unseen long gaps price a
keep-alive, they do not by themselves buy one longer than the longest gap seen at that recent rate."""

from __future__ import annotations

import numpy as np

from warmstart.policy.observation import Observation
from warmstart.policy.predictive import PredictivePolicy
from warmstart.policy.predictive_params import DAY, PredictiveParams


def test_a_model_never_seen_to_pause_is_kept_no_longer_than_the_minimum_keep_alive():
    # 30 minutes at about 3 requests a second, never a pause of more than a few seconds (the Azure traces)
    arrivals = 1000.0 + np.cumsum(np.random.default_rng(0).exponential(0.3, size=6000))

    def keep_alive(params: PredictiveParams) -> float:
        policy = PredictivePolicy(params)
        plan = policy.decide(Observation("m", arrivals, 30.0), policy.initial_state(), float(arrivals[-1]) + 1)[0]
        return max(s.end for s in plan.after_arrival if s.trigger == "keep-alive" and s.min_recent >= 512)

    assert keep_alive(PredictiveParams()) == PredictiveParams().min_keep_alive == 300.0
    # without the cap the prior's pseudo-gaps, priced at the requests of a busy minute, buy more
    assert keep_alive(PredictiveParams(keep_evidence=0.0)) > 300.0


def test_the_cap_follows_the_gaps_the_model_has_shown():
    # bursts every 2 hours: the 2-hour silences have been seen, so the keep-alive may cover them
    arrivals = np.concatenate([1000.0 + k * 7200.0 + np.arange(300) / 2.0 for k in range(40)])
    policy = PredictivePolicy(PredictiveParams(cold_request_cost=160, max_keep_alive=3 * 3600.0))
    plan = policy.decide(Observation("m", arrivals, 30.0), policy.initial_state(), float(arrivals[-1]) + 1)[0]
    assert max(s.end for s in plan.after_arrival if s.trigger == "keep-alive") >= 7200.0


def _daily_habits(days: int) -> np.ndarray:
    """Silent all day but for two wake-ups, 09:00 and 09:20 UTC (20 requests in 40 s each, within 20 s)."""
    day0 = 20000 * DAY
    return np.sort(np.concatenate([day0 + d * DAY + t + (d % 3) * 10.0 + np.arange(20) * 2.0
                                   for d in range(days) for t in (9 * 3600.0, 9 * 3600.0 + 1200.0)]))


def test_two_daily_habits_twenty_minutes_apart_are_pre_warmed_apart():
    arrivals = _daily_habits(6)
    today = float(arrivals[0] // DAY * DAY + 6 * DAY)

    def prewarm(params: PredictiveParams) -> list[tuple[float, float]]:
        policy = PredictivePolicy(params)
        plan = policy.decide(Observation("m", arrivals, 30.0), policy.initial_state(), today + 8 * 3600)[0]
        return [(s.start - today, s.end - today) for s in plan.spans if s.trigger == "prediction"]

    spans = prewarm(PredictiveParams())
    for wake in (9 * 3600.0, 9 * 3600.0 + 1200.0):  # both habits loaded (one cold start ahead) when they come
        assert any(lo <= wake - 30.0 and wake + 20.0 <= hi for lo, hi in spans), (wake, spans)
    # and not the 20 minutes between them: 600 s slots (each pooled with its neighbours) blurred the two into
    # one habit spread over half an hour and kept the model loaded through it
    assert sum(hi - lo for lo, hi in spans) < 600.0
    assert sum(hi - lo for lo, hi in prewarm(PredictiveParams(slot=600.0))) > 1800.0
