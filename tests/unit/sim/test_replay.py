"""The replay reproduces the pool's fixed keep-alive exactly on a trace checked by hand, and the oracle
its closed form."""

from __future__ import annotations

import numpy as np
import pytest

from warmstart.policy.controller import Controller
from warmstart.policy.keepalive import KeepAlivePolicy
from warmstart.sim.oracle import OraclePolicy, oracle_cost
from warmstart.sim.replay import replay_model
from warmstart.sim.run import make_policy, simulate
from warmstart.sim.traces import Trace


def test_fixed_keep_alive_on_a_hand_checked_trace():
    # keep-alive 120 s, cold start 30 s, one model, 0..3000 s:
    #   t=0    cold: start 0, ready 30, idle from 30 -> unload at 150 ... extended by:
    #   t=10   arrives while starting: cold, waits 20; served at 30
    #   t=100  warm; idle from 100 -> unload at 220
    #   t=500  cold: start 500, ready 530 -> unload at 650 ... extended by:
    #   t=505  cold (start under way), waits 25
    #   t=2000 cold: start 2000, ready 2030 -> unload at 2150
    # loaded: 0-220, 500-650, 2000-2150 = 220 + 150 + 150 = 520 replica-seconds
    arrivals = np.array([0.0, 10.0, 100.0, 500.0, 505.0, 2000.0])
    out = replay_model("m", arrivals, start=0.0, end=3000.0, cold_start=30.0, keep_alive=120.0, log_starts=True)
    assert out.cold == 5
    assert out.waits.tolist() == [30.0, 20.0, 30.0, 25.0, 30.0]
    assert out.loaded_s == pytest.approx(520.0)
    assert [t for t, _ in out.start_log] == [0.0, 500.0, 2000.0]

    trace = Trace("hand", {"m": arrivals}, 0.0, 3000.0)
    report = simulate(trace, make_policy("keepalive-120s"), 30.0)
    assert report["requests"] == 6
    assert report["warm_fraction"] == pytest.approx(1 / 6)
    assert report["cost_fraction"] == pytest.approx(520 / 3000)
    assert report["wait_p50_s"] == 30.0


def test_the_keep_alive_policy_through_the_controller_matches_the_pool_keep_alive():
    """The same keep-alive as a controller policy (measured from each arrival) gives the same warm requests."""
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(200.0, 500))
    pool = replay_model("m", arrivals, start=0.0, end=arrivals[-1] + 1, cold_start=30.0, keep_alive=300.0)
    ctrl = replay_model("m", arrivals, start=0.0, end=arrivals[-1] + 1, cold_start=30.0, keep_alive=0.0,
                        controller=Controller([KeepAlivePolicy(300.0)]))
    # warm arrivals coincide except right after cold starts (the pool counts idle time from readiness)
    assert abs(pool.cold - ctrl.cold) <= pool.cold * 0.05
    assert ctrl.loaded_s <= pool.loaded_s


def test_the_oracle_is_always_warm_at_its_closed_form_cost():
    rng = np.random.default_rng(7)
    arrivals = 100.0 + np.cumsum(rng.weibull(0.4, 3000) * 60)
    out = replay_model("m", arrivals, start=0.0, end=float(arrivals[-1]) + 10, cold_start=30.0, keep_alive=0.0,
                       controller=Controller([OraclePolicy(arrivals, 30.0)]))
    assert out.cold == 0
    assert out.loaded_s == pytest.approx(oracle_cost(arrivals, 30.0))


def test_a_longer_keep_alive_is_never_colder_and_never_cheaper():
    rng = np.random.default_rng(11)
    arrivals = np.cumsum(rng.weibull(0.5, 2000) * 100)
    runs = [replay_model("m", arrivals, start=0.0, end=float(arrivals[-1]) + 1, cold_start=30.0, keep_alive=ka)
            for ka in (60.0, 300.0, 3600.0)]
    assert runs[0].cold >= runs[1].cold >= runs[2].cold
    assert runs[0].loaded_s <= runs[1].loaded_s <= runs[2].loaded_s


def test_the_oracle_summary_in_closed_form_equals_the_replayed_oracle():
    from warmstart.sim.run import oracle_summary

    rng = np.random.default_rng(5)
    arrivals = {m: 50.0 + np.cumsum(rng.weibull(0.5, 400) * scale) for m, scale in (("a", 20.0), ("b", 400.0))}
    trace = Trace("t", arrivals, 0.0, max(float(a[-1]) for a in arrivals.values()) + 1)
    replayed = simulate(trace, make_policy("oracle"), 30.0)
    closed = oracle_summary(trace, 30.0)
    for key in ("requests", "warm_fraction", "cold_requests", "wait_p50_s", "wait_p99_s"):
        assert closed[key] == replayed[key]
    assert closed["cost_fraction"] == pytest.approx(replayed["cost_fraction"])
