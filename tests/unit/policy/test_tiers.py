"""Per model, how long it stays loaded and then in RAM: the choice (policy.tiers), the predictive policy's
plan that carries it, and the pool rule that carries it out when the model unloads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmstart.policy import tiering, tiers
from warmstart.policy.observation import Observation
from warmstart.policy.plan import Plan, WarmSpan, ram_until
from warmstart.policy.predictive import EDGES, PredictivePolicy
from warmstart.policy.predictive_params import PredictiveParams
from warmstart.pool import rules
from warmstart.pool.replica import Replica
from warmstart.pool.states import ReplicaState
from warmstart.sim.run import RamTier, make_policy, simulate
from warmstart.sim.traces import Trace


def bursts(every: float, size: int, count: int, start: float = 1000.0, rate: float = 2.0) -> np.ndarray:
    """`count` bursts of `size` requests at `rate` per second, one every `every` seconds."""
    return np.concatenate([start + k * every + np.arange(size) / rate for k in range(count)])


def test_ram_pays_where_the_requests_a_faster_start_saves_outweigh_the_seconds_held():
    # one gap bin: 10 gaps that ended there, each before a burst of 60 (59 after the first), 20000 idle s
    n, w, idle = np.array([10.0]), np.array([600.0]), np.array([20000.0])
    net = tiers.ram_net(n, w, idle, cold_start=30, ram_cold_start=15, ram_price=0.08, rate=20)
    # 20 x 590 x (1 - 15/30) + 15 x 10 - 0.08 x 20000
    assert net[0] == pytest.approx(5900 + 150 - 1600)
    costly = tiers.ram_net(n, w, idle, cold_start=30, ram_cold_start=15, ram_price=1.0, rate=20)
    assert costly[0] < 0
    # no faster start from RAM, nothing to gain
    assert tiers.ram_net(n, w, idle, cold_start=30, ram_cold_start=30, ram_price=0, rate=20)[0] == -math.inf


def test_the_ram_horizon_is_the_best_run_of_bins_after_the_keep_alive():
    edges = np.array([0.0, 100, 200, 400, 800, 1600, np.inf])
    # bins [0,100) [100,200) [200,400) [400,800) [800,1600)
    net = np.array([5.0, 5.0, -1.0, 10.0, -20.0])
    assert tiers.ram_horizon(edges, net, keep_alive=100, max_horizon=1e9) == 800.0  # 5 - 1 + 10 > 5
    assert tiers.ram_horizon(edges, net, keep_alive=800, max_horizon=1e9) == 800.0  # nothing after gains
    assert tiers.ram_horizon(edges, net, keep_alive=100, max_horizon=400) == 200.0  # capped at 400
    assert tiers.ram_horizon(edges, np.full(5, -1.0), keep_alive=100, max_horizon=1e9) == 100.0


def test_the_predictive_policy_holds_a_model_in_ram_through_the_gaps_a_keep_alive_would_not_pay_for():
    # (wake_ram_hold 0: the gaps' choice alone; the hold earned by wake-ups is tested below)
    policy = PredictivePolicy(PredictiveParams(cold_request_cost=20, wake_ram_hold=0.0))
    arrivals = bursts(every=3000.0, size=60, count=40)
    now = float(arrivals[-1]) + 3000

    def plan(ram_price: float) -> Plan:
        obs = Observation("m", arrivals, 30.0, ram_cold_start_s=15.0, ram_price_s=ram_price)
        return policy.decide(obs, policy.initial_state(), now)[0]

    cheap = plan(0.08)
    last = float(arrivals[-1])
    keep = max(s.end for s in cheap.after_arrival
               if s.trigger == "keep-alive" and s.min_recent <= 60 <= s.max_recent)
    assert keep < 3000  # loading through a 50-minute silence does not pay ...
    held = ram_until(cheap, last, recent=60)
    assert held is not None and last + 3000 <= held <= last + EDGES[EDGES > 3000][1]  # ... RAM does
    assert ram_until(plan(1.0), last, recent=60) == last + keep  # as dear as loaded: disk after the unload
    # no RAM tier shown: the plan says nothing, the model's own ram_keep_alive applies
    plain = policy.decide(Observation("m", arrivals, 30.0), policy.initial_state(), now)[0]
    assert plain.ram_after_arrival == () and ram_until(plain, last) is None


def test_the_planned_ram_horizon_replaces_the_models_ram_keep_alive_when_the_last_replica_unloads():
    replica = Replica(id="m#1", model="m", trigger="request", capacity=1, keep_alive=None, created_at=0.0,
                      created_wall=0.0)
    replica.move(ReplicaState.STARTING)
    replica.move(ReplicaState.WARM)
    plan = Plan(ram_after_arrival=(WarmSpan(300.0, 3600.0, "ram", 0, 7), WarmSpan(600.0, 600.0, "ram", 8)))
    assert ram_until(plan, 1000.0, recent=3) == 4600.0
    assert ram_until(plan, 1000.0, recent=20) == 1600.0  # this rate: no RAM after the keep-alive
    assert ram_until(plan, None) == -math.inf

    def stop(planned: float | None, ram_keep_alive: float = 0.0) -> object:
        return rules.tier_on_stop(replica, [replica], reason="keep-alive", ram_keep_alive=ram_keep_alive,
                                  now=1300.0, planned=planned)

    assert stop(4600.0) == tiering.HoldInRam(4600.0)
    assert isinstance(stop(1200.0, ram_keep_alive=3600), tiering.ToDisk)  # the plan wins over the config
    assert stop(None, ram_keep_alive=3600) == tiering.HoldInRam(4900.0)  # no plan: the model's own
    assert stop(math.inf) == tiering.HoldInRam(math.inf)
    manual = rules.tier_on_stop(replica, [replica], reason="manual", ram_keep_alive=0, now=1300.0, planned=4600.0)
    assert isinstance(manual, tiering.ToDisk)


def test_the_default_policy_prices_the_ram_it_chooses_and_waits_less_for_it():
    """Bursts of 60 requests two hours apart: neither a keep-alive nor a pre-warm pays for the silence."""
    arrivals = {"m": bursts(every=7000.0, size=60, count=60)}
    trace = Trace("t", arrivals, 0.0, float(arrivals["m"][-1]) + 3000)
    ram = RamTier(0.0, 15.0, 0.08)
    rate = {"cold_request_cost": 20}
    auto = simulate(trace, make_policy("default", predictive=rate), 30.0, ram)
    disk = simulate(trace, make_policy("predictive", predictive=rate), 30.0, ram)
    assert auto["starts_from_ram"] > 40 and disk["starts_from_ram"] == 0
    assert auto["ram_cost_replica_s"] == pytest.approx(0.08 * auto["ram_resident_s"]) and auto["ram_resident_s"] > 0
    assert auto["total_cost_fraction"] == pytest.approx((auto["loaded_replica_s"] + auto["ram_cost_replica_s"])
                                                        / (trace.end - trace.start))
    # each wake-up read RAM in 15 s rather than disk in 30 s: about half the burst waits
    assert auto["cold_requests"] < 0.6 * disk["cold_requests"]
    # for 0.08 x 6,700 s held per silence, against 20 x 29 requests x 15 s a faster start saves
    assert auto["ram_cost_fraction"] < 0.08


def test_weights_stay_in_ram_no_longer_than_the_longest_gap_the_model_was_seen_to_have():
    # a model that wakes every 4000 s with 60 requests: the prior's unseen long gaps, priced at its bursts,
    # alone would hold its weights in RAM for two days after every burst (ram_evidence 0, as before)
    arrivals = bursts(every=4000.0, size=60, count=30)
    last = float(arrivals[-1])

    def held(arrivals: np.ndarray, evidence: float) -> float:
        # (wake_ram_hold 0: the hold a model's wake-ups earn, tested below, would lift the cap)
        policy = PredictivePolicy(PredictiveParams(ram_evidence=evidence, wake_ram_hold=0.0))
        obs = Observation("m", arrivals, 30.0, ram_cold_start_s=15.0, ram_price_s=0.08)
        until = ram_until(policy.decide(obs, policy.initial_state(), float(arrivals[-1]) + 3000)[0],
                          float(arrivals[-1]), recent=60)
        assert until is not None
        return until - float(arrivals[-1])

    assert held(arrivals, evidence=0.0) == 2 * 86400.0
    cap = float(EDGES[EDGES > 4000][0])  # the end of the bin the 4000 s gaps fall in
    assert held(arrivals, evidence=1.0) == cap
    assert PredictiveParams().ram_evidence == 1.0
    # once the model has been seen silent for a day, a hold may reach that far
    slept = np.concatenate([arrivals, bursts(every=4000.0, size=60, count=30, start=last + 86400.0)])
    policy = PredictivePolicy()
    state = policy.observe(Observation("m", slept, 30.0), policy.initial_state(), float(slept[-1]) + 3000)
    assert policy.ram_cap(state) == float(EDGES[EDGES > 86400][0])


def held_after(arrivals: np.ndarray, params: PredictiveParams | None = None, ram_price: float = 0.08) -> float:
    """Seconds after the last request the default policy holds the weights in RAM, decided 3000 s later."""
    policy = PredictivePolicy(params or PredictiveParams())
    last = float(arrivals[-1])
    obs = Observation("m", arrivals, 30.0, ram_cold_start_s=15.0, ram_price_s=ram_price)
    until = ram_until(policy.decide(obs, policy.initial_state(), last + 3000)[0], last, recent=60)
    assert until is not None
    return until - last


def test_a_model_whose_wake_ups_pay_for_ram_is_held_through_a_silence_longer_than_any_it_has_shown():
    # 60 requests every 4000 s for 2.8 days: 21 wake-ups a day, each with 59 requests a RAM start (15 s, not
    # 30 s) makes wait half as long: 160 x 59 x 0.5 x 21 = 99,000 replica-seconds a day saved for 6,912 in RAM
    habit = bursts(every=4000.0, size=60, count=60)
    cap = float(EDGES[EDGES > 4000][0])  # the longest gap it has shown ends in this bin
    hold = held_after(habit)
    assert 7 * 86400 < hold < PredictiveParams().wake_ram_hold == 28 * 86400.0
    assert held_after(habit, PredictiveParams(wake_ram_hold=0.0)) == cap  # off: the gaps' cap, as before
    assert held_after(habit, PredictiveParams(wake_ram_hold=2 * 86400.0)) == 2 * 86400.0  # at most this
    # half the bursts' worth (30 requests each): held, for less long
    assert cap < held_after(bursts(every=4000.0, size=30, count=60)) < hold
    # the same gaps ending in one request each: a RAM start saves its 15 s, not a day's RAM
    assert held_after(bursts(every=4000.0, size=1, count=60)) < 2 * 86400.0
    # RAM dearer than the wake-ups' worth (a RAM second at 5 loaded seconds: 432,000 a day): no hold
    assert held_after(habit, ram_price=5.0) < 2 * 86400.0
    # not yet observed for a whole day (10 bursts, 11 hours): the gaps' cap alone
    assert held_after(bursts(every=4000.0, size=60, count=10)) <= cap


def test_the_hold_ends_where_deciding_again_through_the_silence_would_let_the_weights_go():
    policy = PredictivePolicy()
    habit = bursts(every=4000.0, size=60, count=60)
    last = float(habit[-1])

    state = policy.observe(Observation("m", habit, 30.0), policy.initial_state(), last + 3000)
    hold = policy.wake_hold(state, 30.0, 15.0, 0.08)
    # decided again every hour of the silence, as a quiet model is (nothing arriving)
    held, t = [], last + 3000
    while t < last + hold + 3 * 86400:
        t += 3600.0
        state = policy.observe(Observation("m", habit[:0], 30.0), state, t)
        held.append((t - last, policy.wake_hold(state, 30.0, 15.0, 0.08)))
    # each decision holds on to about the same end, and the last one that holds is there (the silent days
    # count whole: to within a day)
    assert all(abs(h - hold) < 86400 for since, h in held if h > 0)
    last_held = max(since for since, h in held if h > 0)
    assert abs(last_held - hold) < 86400


def test_the_default_reads_ram_after_a_silence_longer_than_any_its_habit_showed():
    """End to end through the replay: a model wakes to bursts of 40 every 3.1 hours for 4 days (at no fixed time
    of day: nothing to pre-warm), then sleeps 3 days (longer than any gap it has shown) and wakes again: that
    start reads RAM, and RAM is what it paid for."""
    habit = bursts(every=11220.0, size=40, count=32, rate=1.0)
    later = bursts(every=11220.0, size=40, count=4, start=float(habit[-1]) + 3 * 86400.0 + 5000.0, rate=1.0)
    arrivals = {"m": np.concatenate([habit, later])}
    trace = Trace("t", arrivals, 0.0, float(arrivals["m"][-1]) + 3600)
    ram = RamTier(0.0, 15.0, 0.08)
    held = simulate(trace, make_policy("default"), 30.0, ram)
    before = simulate(trace, make_policy("default", predictive={"wake_ram_hold": 0}), 30.0, ram)
    # the first burst after the silence waited on RAM (15 s: 15 of its 40 requests), not disk (30 s: 30)
    assert held["cold_requests"] <= before["cold_requests"] - 10
    assert held["starts_from_ram"] == before["starts_from_ram"] + 1
    assert held["ram_resident_s"] >= before["ram_resident_s"] + 2.8 * 86400
