"""The predictive policy on virtual time, through the simulator's replay of the pool (the same code the
server runs): a daily habit is learned and pre-warmed; a one-off burst is not chased."""

from __future__ import annotations

import numpy as np

from warmstart.policy.controller import Controller
from warmstart.policy.observation import Observation
from warmstart.policy.predictive import PredictivePolicy
from warmstart.policy.predictive_params import PredictiveParams
from warmstart.sim.replay import replay_model
from warmstart.sim.traces import EPOCH

DAY = 86400.0
COLD = 30.0


def replay(arrivals: np.ndarray, days: int, params: PredictiveParams | None = None):
    controller = Controller([PredictivePolicy(params)])
    return replay_model("m", arrivals, start=EPOCH - COLD, end=EPOCH + days * DAY, cold_start=COLD,
                        keep_alive=0.0, controller=controller, log_starts=True)


def daily_bursts(days: int, at: float, n: int = 40, spacing: float = 1.5, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for day in range(days):
        begin = EPOCH + day * DAY + at + rng.uniform(-20, 20)
        out.append(begin + spacing * np.arange(n))
    return np.concatenate(out)


def test_a_daily_habit_is_learned_and_prewarmed_one_cold_start_ahead():
    nine = 9 * 3600.0
    arrivals = daily_bursts(10, at=nine)
    out = replay(arrivals, 10)
    first_of_day = arrivals[::40]
    cold = set(out.cold_times.tolist())
    # the first days are cold while the habit is learned ...
    assert first_of_day[0] in cold
    # ... from the fifth day on, every burst finds the model warm
    assert not any(t in cold for t in first_of_day[4:])
    prewarms = [t for t, trigger in out.start_log if trigger == "prediction"]
    assert len(prewarms) >= 5
    for day in range(4, 10):
        starts = [t for t in prewarms if EPOCH + day * DAY < t < first_of_day[day]]
        assert starts, f"day {day} was not pre-warmed"
        # started ahead of the burst by at least the cold start, but not hours ahead
        assert COLD <= first_of_day[day] - starts[0] <= 600
    # not kept loaded all day: well under two hours a day on average
    assert out.loaded_s / 10 < 2 * 3600


def test_a_one_off_burst_is_not_chased():
    burst = EPOCH + 1 * DAY + 14 * 3600.0 + 0.5 * np.arange(400)
    out = replay(burst, 10)
    assert [trigger for _, trigger in out.start_log] == ["request"]
    # after the burst the model is let go: loaded for the burst and a bounded keep-alive, not for days
    assert out.loaded_s < 400 * 0.5 + 2 * 3600


def test_after_two_coincidences_it_stops_prewarming_when_they_do_not_recur():
    at = EPOCH + 10 * 3600.0
    arrivals = np.concatenate([at + d * DAY + 2.0 * np.arange(60) for d in (0, 1)])
    out = replay(arrivals, 14)
    late = [t for t, trigger in out.start_log if trigger == "prediction" and t > EPOCH + 8 * DAY]
    assert late == []


def test_the_keep_alive_follows_the_recent_rate():
    """After a request in a busy spell the model stays warm through the pauses that spell has (a cold start
    there would make many wait); after a lone request it is let go sooner."""
    arrivals = []
    for k in range(36):  # every two hours for three days
        t0 = EPOCH + k * 7200.0
        arrivals.append(t0 + 0.5 * np.arange(600))  # a busy spell, 2 requests/s ...
        arrivals.append(t0 + 300 + 95 + 0.5 * np.arange(600))  # ... with a 95 s pause in it
        arrivals.append(t0 + 1500 + 420.0 * np.arange(1, 10))  # then lone requests 7 minutes apart
    arr = np.sort(np.concatenate(arrivals))
    policy = PredictivePolicy(PredictiveParams(min_keep_alive=0.0))
    plan, _state = policy.decide(Observation("m", arr, COLD), policy.initial_state(), float(arr[-1]) + 3600)
    keep = {(s.min_recent, s.max_recent): s.end for s in plan.after_arrival if s.trigger == "keep-alive"}
    busy = [end for (lo, _), end in keep.items() if lo >= 512]
    lone = [end for (lo, hi), end in keep.items() if hi <= 1]
    assert busy and busy[0] >= 95
    assert lone and lone[0] < 95


def test_no_history_falls_back_to_a_fixed_keep_alive():
    policy = PredictivePolicy(PredictiveParams(fallback_keep_alive=300.0))
    plan, _ = policy.decide(Observation("m", np.array([EPOCH]), COLD), policy.initial_state(), EPOCH + 1)
    assert {s.end for s in plan.after_arrival} == {300.0}
    assert plan.spans == ()
