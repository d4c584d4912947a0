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


def _learned_hourly(params: PredictiveParams, arrivals: np.ndarray) -> float:
    """The keep-alive after a request at 8-31 requests in the last 10 minutes, the policy taught an hour at a time
    (as the server learns from its history), decided an hour after the last request."""
    policy = PredictivePolicy(params)
    state = policy.initial_state()
    i, t = 0, float(arrivals[0] // 3600 * 3600 + 3600)
    while t <= arrivals[-1] + 3600:
        j = int(np.searchsorted(arrivals, t))
        plan, state = policy.decide(Observation("m", arrivals[i:j], 30.0), state, t)
        i, t = j, t + 3600
    return max(s.end for s in plan.after_arrival if s.trigger == "keep-alive" and s.min_recent == 8)


def test_a_habit_that_moved_hours_ago_counts_for_more_than_its_share_of_the_week():
    # for six days: 30 requests 10 s apart, then 700 s of silence (a cold start after it makes 3 requests wait:
    # not worth 700 s loaded); for the last 3 hours the same 30 requests come in 15 s (30 would wait: worth it)
    day0, t, arrivals = 20000 * DAY, 20000 * DAY, []
    while t < day0 + 6 * DAY:
        arrivals.append(t + np.arange(30) * 10.0)
        t += 290.0 + 700.0
    end = t + 3 * 3600
    while t < end:
        arrivals.append(t + np.arange(30) * 0.5)
        t += 14.5 + 700.0
    both = np.concatenate(arrivals)
    # the fast copy of the histograms (a day's half-life, weighed 4x) covers the new 700 s silences at once
    assert _learned_hourly(PredictiveParams(), both) > 700.0
    # the week-long histograms alone still weigh the six days of cheap silences more
    assert _learned_hourly(PredictiveParams(recent_weight=0.0), both) == PredictiveParams().min_keep_alive
