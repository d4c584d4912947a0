"""The replay reproduces the pool's fixed keep-alive exactly on a trace checked by hand, and the oracle
its closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmstart.policy.controller import Controller
from warmstart.policy.keepalive import KeepAlivePolicy
from warmstart.sim.oracle import OraclePolicy, oracle_cost
from warmstart.sim.replay import replay_model
from warmstart.sim.run import RamTier, make_policy, ram_price_per_s, simulate
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


# ---- the RAM tier ------------------------------------------------------------------------------------

def test_ram_tier_on_a_hand_checked_trace():
    # keep-alive 300 s, cold start 30 s from disk and 12 s from RAM, RAM keep-alive 3600 s, 0..6000 s:
    #   t=0    cold from disk: ready 30, unload 330 -> held in RAM until 3930
    #   t=600  cold from RAM (RAM 330-600 = 270 s): waits 12, ready 612, unload 912 -> in RAM until 4512
    #   t=5000 the RAM keep-alive ran out at 4512 (RAM 912-4512 = 3600 s): cold from disk, waits 30,
    #          ready 5030, unload 5330 -> in RAM until 8930, past the end (RAM 5330-6000 = 670 s)
    # loaded: 330 + 312 + 330 = 972 replica-seconds; RAM: 270 + 3600 + 670 = 4540 s
    arrivals = np.array([0.0, 600.0, 5000.0])
    out = replay_model("m", arrivals, start=0.0, end=6000.0, cold_start=30.0, keep_alive=300.0,
                       ram_keep_alive=3600.0, ram_cold_start=12.0)
    assert out.waits.tolist() == [30.0, 12.0, 30.0]
    assert out.waited_on_ram.tolist() == [False, True, False]
    assert out.loaded_s == pytest.approx(972.0)
    assert out.ram_s == pytest.approx(4540.0)
    assert out.ram_starts == 1

    # at 0.005 per GiB-hour for 16 GiB, a second in RAM costs 0.08 loaded replica-seconds
    price = ram_price_per_s(0.005, 16.0)
    assert price == pytest.approx(0.08)
    report = simulate(Trace("hand", {"m": arrivals}, 0.0, 6000.0), make_policy("keepalive-300s"), 30.0,
                      RamTier(3600.0, 12.0, price))
    assert report["cost_fraction"] == pytest.approx(972 / 6000)
    assert report["ram_resident_s"] == pytest.approx(4540.0)
    assert report["ram_cost_replica_s"] == pytest.approx(4540 * 0.08)
    assert report["ram_cost_fraction"] == pytest.approx(4540 * 0.08 / 6000)
    assert report["total_cost_fraction"] == pytest.approx((972 + 4540 * 0.08) / 6000)
    assert (report["starts_from_ram"], report["starts_from_disk"]) == (1, 2)
    assert (report["cold_from_ram"], report["cold_from_disk"]) == (1, 2)
    assert (report["wait_ram_p50_s"], report["wait_ram_p99_s"]) == (12.0, 12.0)
    assert (report["wait_disk_p50_s"], report["wait_disk_p99_s"]) == (30.0, 30.0)
    assert report["warm_fraction"] == 0.0


def test_the_ram_deadline_is_the_tiering_policys():
    """A start at the very moment the RAM keep-alive ends reads disk (the store releases at the deadline);
    one a moment earlier reads RAM; a RAM keep-alive for ever (-1, math.inf) keeps every later start in RAM."""
    for second, from_ram in ((330.0 + 3600.0, False), (330.0 + 3599.0, True)):
        out = replay_model("m", np.array([0.0, second]), start=0.0, end=10_000.0, cold_start=30.0,
                           keep_alive=300.0, ram_keep_alive=3600.0, ram_cold_start=12.0)
        assert out.waited_on_ram.tolist() == [False, from_ram]
    out = replay_model("m", np.array([0.0, 1e5, 1e6]), start=0.0, end=2e6, cold_start=30.0, keep_alive=300.0,
                       ram_keep_alive=math.inf, ram_cold_start=12.0)
    assert out.waits.tolist() == [30.0, 12.0, 12.0]
    assert out.ram_s == pytest.approx(2e6 - 3 * 312.0 - 18.0)


def test_a_controller_start_reads_ram_too():
    """The oracle starts one (disk) cold start ahead; from RAM the replica is ready early and the request warm."""
    arrivals = np.array([100.0, 2000.0])
    out = replay_model("m", arrivals, start=0.0, end=3000.0, cold_start=30.0, keep_alive=0.0,
                       controller=Controller([OraclePolicy(arrivals, 30.0)]), log_starts=True,
                       ram_keep_alive=3600.0, ram_cold_start=12.0)
    assert out.cold == 0
    assert out.start_log == [(70.0, "prediction"), (1970.0, "prediction")]
    assert out.ram_starts == 1
    assert out.ram_s == pytest.approx(1970.0 - 100.0 + 3000.0 - 2000.0)


def test_ram_keep_alive_zero_gives_the_results_without_a_ram_tier():
    """Except for the default (keep_alive "auto"), which picks each model's time in RAM itself."""
    rng = np.random.default_rng(13)
    arrivals = {m: 50.0 + np.cumsum(rng.weibull(0.5, 300) * scale) for m, scale in (("a", 30.0), ("b", 600.0))}
    trace = Trace("t", arrivals, 0.0, max(float(a[-1]) for a in arrivals.values()) + 1)
    for name in ("keepalive-300s", "predictive", "oracle"):
        plain = simulate(trace, make_policy(name), 30.0)
        off = simulate(trace, make_policy(name), 30.0, RamTier(0.0, 12.0, 0.08))
        assert off == plain
        assert off["ram_resident_s"] == 0 and off["starts_from_ram"] == 0
        assert off["total_cost_fraction"] == off["cost_fraction"]
        assert off["wait_ram_p50_s"] is None


def test_the_oracle_stays_on_disk():
    arrivals = {"a": np.array([100.0, 5000.0])}
    trace = Trace("t", arrivals, 0.0, 6000.0)
    report = simulate(trace, make_policy("oracle"), 30.0, RamTier(3600.0, 12.0, 0.08))
    assert report["ram_resident_s"] == 0
    assert report["loaded_replica_s"] == pytest.approx(oracle_cost(arrivals["a"], 30.0))


def test_a_learned_policy_keeps_the_replica_its_history_left_loaded_while_its_plan_says_so():
    # two days of a request every 100 s: the predictive policy learns a keep-alive of at least 180 s. The
    # judged window opens 50 s after the last of them, its first request 10 s later: the replica the
    # running server had is still loaded under that plan (not unloaded at the window's start on the pool's
    # floor keep-alive of 0 and started again), so the request is warm and nothing starts
    past = np.arange(0.0, 2 * 86400.0, 100.0)
    start = float(past[-1]) + 50.0
    trace = Trace("t", {"m": np.array([start + 10.0])}, start, start + 3600.0)
    history = Trace("h", {"m": past}, 0.0, start)
    out = simulate(trace, make_policy("predictive"), 30.0, history=history)
    assert out["cold_requests"] == 0
    assert out["starts"] == {}


def test_the_novel_silence_bound_counts_first_bursts_and_bursts_after_silences_longer_than_any_before():
    from warmstart.sim.run import novel_silence_bound

    h = 3600.0
    # "old": history gaps of up to 10 h, last request at 0; in the trace a 12 h silence (longer than 4 h and
    # than any before: its 3 requests within the 30 s start count), then a 6 h one (shorter than 12 h: not
    # novel), then a 20 h one (novel again: 2 requests). "new": never in the history, its first burst of 2.
    history = Trace("h", {"old": np.array([-20 * h, -10 * h, 0.0])}, -20 * h, 1.0)
    old = np.array([12 * h, 12 * h + 5, 12 * h + 10, 18 * h, 38 * h, 38 * h + 29])
    new = np.array([h, h + 20, h + 40])
    trace = Trace("t", {"old": old, "new": new}, 1.0, 40 * h)
    out = novel_silence_bound(trace, 30.0, history)
    assert (out["first_burst_requests"], out["novel_silence_requests"]) == (2, 5)
    assert out["min_cold_fraction"] == 7 / 9


def test_in_sample_history_is_the_judged_days_moved_back_and_teaches_a_habit_the_real_history_never_showed():
    from warmstart.sim.run import in_sample_history

    day = 86400.0
    # "habit": every judged day a burst at 09:00 (never in the history); "old": in the history, quiet in it
    habit = np.concatenate([d * day + 9 * 3600 + np.arange(0.0, 600.0, 20.0) for d in range(10, 14)])
    old = np.array([10 * day + 100.0, 12 * day + 100.0])
    trace = Trace("t", {"habit": habit, "old": old}, 10 * day, 14 * day)
    history = Trace("h", {"old": np.array([2 * day, 3 * day])}, 0.0, 10 * day)

    every = in_sample_history(trace, history)
    assert (every.start, every.end) == (6 * day, 10 * day)  # 4 whole days back: times of day stay put
    np.testing.assert_array_equal(every.arrivals["habit"], habit - 4 * day)
    np.testing.assert_array_equal(every.arrivals["old"], old - 4 * day)
    unseen = in_sample_history(trace, history, only_unseen=True)
    np.testing.assert_array_equal(unseen.arrivals["old"], history.arrivals["old"])  # a seen model keeps its own
    np.testing.assert_array_equal(unseen.arrivals["habit"], habit - 4 * day)
    assert unseen.start == 0.0 and unseen.end == 10 * day
    # an hour-long window moves back a whole day
    short = Trace("s", {"m": np.array([50.0, 3000.0])}, 0.0, 3600.0)
    assert in_sample_history(short, None).arrivals["m"].tolist() == [50.0 - day, 3000.0 - day]

    # the default taught the habit pre-warms 09:00 and waits far less often than with the real history
    policy, ram = make_policy("default"), RamTier(0.0, 30.0 / 1.9, 0.08)
    real = simulate(trace, policy, 30.0, ram, history)
    taught = simulate(trace, policy, 30.0, ram, unseen)
    assert taught["cold_requests"] < real["cold_requests"] / 2
    assert taught["starts"]["prediction"] > real["starts"]["prediction"]
