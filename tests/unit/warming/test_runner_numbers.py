"""The warming runner's numbers without numpy (the server's start does not import it, docs/image.md): the p95 of
measured starts is numpy's, and the predictive policy decides the same from the tuple of arrivals the server
shows it as from the array the simulator does."""

from __future__ import annotations

import numpy as np
import pytest

from warmstart.policy.observation import Observation
from warmstart.policy.predictive import PredictivePolicy
from warmstart.policy.predictive_params import PredictiveParams
from warmstart.stats import percentile


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], list(np.linspace(0.4, 9.1, 20)),
                                    [2.5, 2.5, 2.5, 7.0], list(np.random.default_rng(7).exponential(3.0, 17))])
@pytest.mark.parametrize("q", [0, 50, 95, 100])
def test_percentile_is_numpys_linear_percentile(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


def test_the_predictive_policy_learns_the_same_from_a_tuple_as_from_an_array() -> None:
    rng = np.random.default_rng(3)
    arrivals = np.sort(1_700_000_000.0 + rng.uniform(0, 6 * 3600, 120))
    policy = PredictivePolicy(PredictiveParams())
    plans = []
    for shown in (arrivals, tuple(float(x) for x in arrivals)):
        state = policy.initial_state()
        plan, state = policy.decide(Observation("m", shown, 30.0), state, float(arrivals[-1]) + 1)
        plan, state = policy.decide(Observation("m", (), 30.0), state, float(arrivals[-1]) + 600)
        plans.append(plan)
    assert plans[0] == plans[1]
