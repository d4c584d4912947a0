"""Warm hints cannot burn money: a token bucket per client, a model allowlist, an hourly budget."""

from __future__ import annotations

import math

import pytest

from warmstart.policy.hint import HintLimits, HintPolicy, HintRequest, HintState, decide
from warmstart.policy.observation import Observation

LIMITS = HintLimits(warm_for=120.0, client_rate=1 / 60, client_burst=2.0, models=frozenset({"chat"}),
                    budget_per_hour=500.0)


def req(model="chat", client="10.0.0.1", known=True, loaded=False, warm_until=-math.inf, cold=30.0):
    return HintRequest(model, client, known, loaded, warm_until, cold)


def test_a_cold_model_is_started_and_charged_its_cold_start_and_warm_time():
    d, s = decide(req(), HintState(), 1000.0, LIMITS)
    assert (d.outcome, d.warm_until, d.charge) == ("started", 1120.0, 150.0)
    assert d.accepted and s.spent == ((1000.0, 150.0),)


def test_a_client_gets_its_burst_then_waits_for_tokens():
    s, now = HintState(), 0.0
    outcomes = []
    for _ in range(3):
        d, s = decide(req(loaded=True, warm_until=now + 1000), s, now, LIMITS)
        outcomes.append(d.outcome)
    assert outcomes == ["already_warm", "already_warm", "rate_limited"]
    assert d.retry_after == pytest.approx(60.0)
    # another client is not affected; the first one may hint again a minute later
    assert decide(req(client="10.0.0.2", loaded=True, warm_until=2000), s, now, LIMITS)[0].accepted
    assert decide(req(loaded=True, warm_until=2000), s, 60.0, LIMITS)[0].accepted


def test_models_off_the_allowlist_and_unknown_models_start_nothing():
    d, s = decide(req(model="big"), HintState(), 0.0, LIMITS)
    assert d.outcome == "not_allowed" and not d.accepted and s == HintState()
    assert decide(req(model="nope", known=False), HintState(), 0.0, LIMITS)[0].outcome == "unknown_model"
    anyone = HintLimits(models=None)
    assert decide(req(model="big"), HintState(), 0.0, anyone)[0].outcome == "started"


def test_the_hourly_budget_refuses_hints_until_old_charges_leave_the_hour():
    s = HintState()
    clients = (f"10.0.0.{i}" for i in range(100))
    d1, s = decide(req(client=next(clients)), s, 0.0, LIMITS)  # 150
    d2, s = decide(req(client=next(clients)), s, 100.0, LIMITS)  # 300
    d3, s = decide(req(client=next(clients)), s, 200.0, LIMITS)  # 450
    d4, s = decide(req(client=next(clients)), s, 300.0, LIMITS)  # would be 600 > 500
    assert [d.outcome for d in (d1, d2, d3, d4)] == ["started"] * 3 + ["over_budget"]
    assert d4.warm_until is None and d4.charge == 0.0
    assert d4.retry_after == pytest.approx(3600.0 - 300.0)  # when the first charge leaves the hour
    # extending a loaded model costs only the time added; fully covered costs nothing
    d5, s = decide(req(client=next(clients), loaded=True, warm_until=390.0), s, 300.0, LIMITS)
    assert (d5.outcome, d5.charge) == ("extended", 30.0)
    d6, s = decide(req(client=next(clients), loaded=True, warm_until=5000.0), s, 300.0, LIMITS)
    assert (d6.outcome, d6.charge) == ("already_warm", 0.0)
    assert decide(req(client=next(clients)), s, 3601.0, LIMITS)[0].outcome == "started"


def test_client_buckets_are_bounded():
    limits = HintLimits(max_clients=50, client_rate=1.0, client_burst=1.0, budget_per_hour=math.inf)
    s = HintState()
    for i in range(500):
        _, s = decide(req(client=f"c{i}", loaded=True, warm_until=1e9), s, float(i), limits)
    assert len(s.buckets) <= 50


def test_the_hint_policy_keeps_the_model_warm_until_the_latest_hint_runs_out():
    policy = HintPolicy()
    plan, state = policy.decide(Observation("m", hints=((100.0, 120.0), (150.0, 120.0))), policy.initial_state(), 150.0)
    assert [(s.start, s.end, s.trigger) for s in plan.spans] == [(150.0, 270.0, "hint")]
    plan, state = policy.decide(Observation("m"), state, 200.0)
    assert [(s.end, s.trigger) for s in plan.spans] == [(270.0, "hint")]
    plan, _ = policy.decide(Observation("m"), state, 300.0)
    assert plan.spans == ()


def test_a_hint_is_charged_what_it_keeps_loaded_including_the_models_keep_alive():
    limits = HintLimits(warm_for=30.0, models=None, budget_per_hour=3600.0)

    def charged(**kw):
        return decide(HintRequest("m", "c", True, **kw), HintState(), 1000.0, limits)[0]

    # a start stays for the model's keep-alive when that is longer than the hint's span
    d = charged(loaded=False, warm_until=-math.inf, cold_start_s=3.0, keep_alive_s=118.0)
    assert (d.outcome, d.charge) == ("started", 121.0)
    assert charged(loaded=False, warm_until=-math.inf, cold_start_s=3.0, keep_alive_s=10.0).charge == 33.0
    # an idle warm replica's idle clock restarts: it now stays 118 s, where it would have gone in 20
    d = charged(loaded=True, warm_until=-math.inf, cold_start_s=3.0, keep_alive_s=118.0, loaded_until=1020.0,
                idle=True)
    assert (d.outcome, d.charge) == ("extended", 98.0)
    # a busy replica does not unload while busy: nothing to pay
    d = charged(loaded=True, warm_until=-math.inf, cold_start_s=3.0, keep_alive_s=118.0, loaded_until=math.inf)
    assert (d.outcome, d.charge) == ("already_warm", 0.0)
    # a model that never unloads cannot be started by a hint: no budget pays for forever
    d = charged(loaded=False, warm_until=-math.inf, cold_start_s=3.0, keep_alive_s=math.inf)
    assert d.outcome == "over_budget" and math.isinf(d.retry_after)
