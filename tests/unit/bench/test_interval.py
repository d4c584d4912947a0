"""The interval `bench serve` prints beside a median difference: it holds the true shift, narrows with more
samples, and tells a figure under a target from one merely near it."""

import numpy as np
import pytest

from warmstart.bench._interval import median_difference_interval, median_ratio_interval


def _pairs(n, shift, seed):
    rng = np.random.default_rng(seed)
    direct = rng.uniform(7.0, 11.5, n)  # an engine's time spread flat, as measured
    return direct, direct + shift + rng.normal(0.0, 0.3, n)


@pytest.mark.parametrize("paired", [False, True])
def test_the_interval_holds_the_shift_as_often_as_it_says_and_narrows_with_more_samples(paired):
    held = 0
    for seed in range(60):
        direct, via = _pairs(200, 0.7, seed)
        lo, hi = median_difference_interval(direct, via, paired=paired, resamples=500)
        held += lo < 0.7 < hi
    assert 51 <= held <= 60  # 95 % of 60 is 57; a binomial draw falls under 51 less than once in a thousand
    widths = []
    for n in (100, 400, 1600):
        direct, via = _pairs(n, 0.7, seed=n)
        lo, hi = median_difference_interval(direct, via, paired=paired)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_pairing_takes_the_engines_own_spread_out():
    direct, via = _pairs(400, 0.7, seed=400)
    paired = median_difference_interval(direct, via, paired=True)
    unpaired = median_difference_interval(direct, via)
    assert paired[1] - paired[0] < (unpaired[1] - unpaired[0]) / 3


def test_a_shift_well_under_a_target_is_told_from_one_near_it():
    direct, via = _pairs(1600, 0.6, seed=1)
    assert median_difference_interval(direct, via, paired=True)[1] < 1.0
    direct, via = _pairs(1600, 0.98, seed=1)
    lo, hi = median_difference_interval(direct, via, paired=True)
    assert lo < 1.0 < hi


def test_the_same_samples_give_the_same_interval_and_bad_input_is_refused():
    direct, via = _pairs(200, 0.5, seed=3)
    assert median_difference_interval(direct, via) == median_difference_interval(direct, via)
    with pytest.raises(ValueError, match="equally long"):
        median_difference_interval(direct, via[:-1])
    with pytest.raises(ValueError, match="level"):
        median_difference_interval(direct, via, level=95)


def test_a_ratio_of_paired_throughputs_is_held_with_the_drift_between_rounds_taken_out():
    """Rounds of a throughput through the gateway and directly, back to back; the machine's speed drifts from round
    to round far more than the gateway's share moves. The interval of the median of each round's ratio holds the
    true share, and its width is that of the share's own noise (2 % per arm), not of the drift (+-25 %)."""
    held = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        speed = rng.uniform(130.0, 220.0, 8)  # tokens/s of the machine in each round
        direct = speed * rng.normal(1.0, 0.02, 8)
        via = speed * 0.98 * rng.normal(1.0, 0.02, 8)
        lo, hi = median_ratio_interval(direct, via, resamples=500, seed=seed)
        held += lo < 0.98 < hi
        assert hi - lo < 0.1
    assert held >= 48  # a percentile bootstrap over 8 rounds holds a little less often than it says
    with pytest.raises(ValueError, match="equally long"):
        median_ratio_interval([1.0, 2.0], [1.0])
