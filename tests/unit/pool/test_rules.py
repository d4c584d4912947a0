"""The pool's rules on replicas built by hand: decisions as data, nothing changed."""

from __future__ import annotations

import math

from warmstart.policy.tiering import HoldInRam, ToDisk
from warmstart.pool import rules
from warmstart.pool.replica import Replica
from warmstart.pool.states import ReplicaState as S


def replica(state: S = S.WARM, *, in_flight: int = 0, capacity: int = 1, idle_since: float | None = 0.0,
            keep_alive: float | None = None, expires_at: float | None = None) -> Replica:
    r = Replica(id="m#1", model="m", trigger="request", capacity=capacity, keep_alive=keep_alive,
                created_at=0.0, created_wall=0.0)
    r.state, r.in_flight, r.idle_since, r.expires_at = state, in_flight, idle_since, expires_at
    return r


def test_admit_serves_the_least_busy_free_replica_when_nobody_waits():
    busy, calm = replica(in_flight=2, capacity=4), replica(in_flight=1, capacity=4)
    assert rules.admit([busy, calm], waiting=0, queue_size=10) == rules.Serve(calm)
    # someone already waits: first come, first served
    assert rules.admit([busy, calm], waiting=1, queue_size=10) == rules.Hold(cold=False)
    assert rules.admit([busy, calm], waiting=10, queue_size=10) == rules.Refuse(10)


def test_admit_holds_cold_while_no_replica_is_warm_and_skips_one_to_be_unloaded():
    assert rules.admit([replica(S.STARTING)], waiting=0, queue_size=10) == rules.Hold(cold=True)
    assert rules.admit([], waiting=0, queue_size=10) == rules.Hold(cold=True)
    leaving = replica()
    leaving.unload_when_idle = True
    assert rules.admit([leaving], waiting=0, queue_size=10) == rules.Hold(cold=False)


def test_to_start_counts_free_slots_and_starts_under_way():
    assert rules.to_start([], 1, capacity=1, max_replicas=1) == 1
    assert rules.to_start([replica(S.STARTING)], 3, capacity=1, max_replicas=1) == 0  # at max_replicas
    assert rules.to_start([replica(S.STARTING)], 3, capacity=1, max_replicas=4) == 2
    assert rules.to_start([replica(capacity=4)], 3, capacity=4, max_replicas=4) == 0  # free warm slots
    assert rules.to_start([], 0, capacity=1, max_replicas=4) == 0


def test_unload_at_is_the_keep_alive_or_the_warm_until_for_the_last_warm_replica():
    r = replica(idle_since=100.0)
    kw = {"configured": 300.0, "model": 30.0}
    assert rules.unload_at(r, [r], 100.0, warm_until=-math.inf, **kw) == 130.0  # the controller's floor
    assert rules.unload_at(r, [r], 100.0, warm_until=1000.0, **kw) == 1000.0
    other = replica(in_flight=1)
    # another warm replica stays: this one scales down after the configured keep-alive
    assert rules.unload_at(r, [r, other], 100.0, warm_until=1000.0, **kw) == 400.0
    r.keep_alive = math.inf  # a request asked for never
    assert rules.unload_at(r, [r], 100.0, warm_until=-math.inf, **kw) == math.inf
    r.keep_alive = 0.0
    assert rules.unload_at(r, [r], 150.0, warm_until=-math.inf, **kw) == 150.0  # past: now
    assert rules.unload_at(replica(in_flight=1), [], 0.0, warm_until=0.0, **kw) is None  # busy
    assert rules.unload_at(replica(S.STARTING), [], 0.0, warm_until=0.0, **kw) is None


def test_warm_until_starts_a_replica_only_while_the_span_is_ahead_and_rearms_the_idle_ones():
    assert rules.warm_until([], 10.0, 100.0, "schedule", configured=300.0) == [rules.Start("schedule")]
    assert rules.warm_until([], 10.0, 5.0, "schedule", configured=300.0) == []
    idle, busy = replica(), replica(in_flight=1)
    assert rules.warm_until([idle, busy], 10.0, 100.0, "prediction", configured=300.0) == [
        rules.Rewarm(idle, None), rules.Rewarm(busy, None)]
    assert rules.warm_until([idle, busy], 10.0, -math.inf, "", configured=300.0) == [rules.Rearm(idle)]


def test_ensure_warm_by_hand_gives_the_configured_keep_alive():
    assert rules.ensure_warm([], "manual", configured=300.0) == [rules.Start("manual", 300.0)]
    assert rules.ensure_warm([], "hint", configured=300.0) == [rules.Start("hint", None)]
    starting = replica(S.STARTING)
    assert rules.ensure_warm([starting], "manual", 60.0, configured=300.0) == [rules.Rewarm(starting, 60.0)]


def test_unload_stops_idle_and_starting_replicas_now_and_busy_ones_when_idle():
    idle, busy, starting = replica(), replica(in_flight=1), replica(S.STARTING)
    assert rules.on_unload([idle, busy, starting]) == [rules.Stop(idle), rules.StopWhenIdle(busy),
                                                        rules.Stop(starting)]


def test_the_last_replica_to_stop_on_keep_alive_sends_the_weights_to_ram():
    last, other = replica(S.STOPPING), replica()
    assert rules.tier_on_stop(last, [last, other], reason="keep-alive", ram_keep_alive=600, now=100) is None
    assert rules.tier_on_stop(last, [last], reason="keep-alive", ram_keep_alive=600, now=100) == HoldInRam(700)
    assert isinstance(rules.tier_on_stop(last, [last], reason="manual", ram_keep_alive=600, now=100), ToDisk)


def test_outlook_says_how_long_the_model_stays_loaded():
    assert rules.outlook([], model=60.0, cold_start=6.0, now=0.0) == rules.Outlook(60.0, -math.inf, False)
    assert rules.outlook([replica(S.STARTING)], model=60.0, cold_start=6.0, now=0.0).unload_in == 66.0
    idle = replica(expires_at=150.0)
    assert rules.outlook([idle], model=60.0, cold_start=6.0, now=100.0) == rules.Outlook(60.0, 50.0, True)
    assert rules.outlook([idle, replica(in_flight=1)], model=60.0, cold_start=6.0, now=100.0).unload_in == math.inf
