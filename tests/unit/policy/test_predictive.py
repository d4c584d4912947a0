"""The predictive policy pays only for silences the model has shown: the prior's unseen long gaps price a
keep-alive, they do not by themselves buy one longer than the longest gap seen at that recent rate."""

from __future__ import annotations

import numpy as np

from warmstart.policy.observation import Observation
from warmstart.policy.predictive import PredictiveParams, PredictivePolicy


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
