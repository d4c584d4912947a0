from __future__ import annotations

import math

from warmstart.policy.keepalive import unload_deadline
from warmstart.policy.plan import Plan, WarmSpan, evaluate, merge, warm_target


def test_spans_chain_and_the_highest_priority_trigger_names_the_start():
    plan = Plan(spans=(WarmSpan(100, 200, "prediction"), WarmSpan(150, 400, "schedule"),
                       WarmSpan(400, 500, "hint")))
    assert warm_target(plan, None, 50) is None
    assert warm_target(plan, None, 120) == (500, "prediction")
    assert warm_target(plan, None, 160) == (500, "schedule")
    assert evaluate(plan, None, 50) == (None, 100)


def test_after_arrival_spans_follow_the_last_request_and_its_recent_rate():
    plan = Plan(after_arrival=(WarmSpan(0, 60, "keep-alive", 0, 1), WarmSpan(0, 600, "keep-alive", 2),
                               WarmSpan(3000, 3700, "prediction", 2)))
    assert warm_target(plan, 1000.0, 1000.0, recent=1) == (1060.0, "keep-alive")
    assert warm_target(plan, 1000.0, 1000.0, recent=5) == (1600.0, "keep-alive")
    assert warm_target(plan, 1000.0, 1700.0, recent=5) is None
    assert evaluate(plan, 1000.0, 1700.0, recent=5)[1] == 4000.0
    assert warm_target(plan, None, 1000.0) is None
    assert warm_target(plan, 0.0, 10.0, recent=5) == (600.0, "keep-alive")  # a last request at t=0 counts


def test_merge_takes_every_span_and_the_earliest_review():
    a = Plan(spans=(WarmSpan(0, 1, "schedule"),), review_at=50)
    b = Plan(after_arrival=(WarmSpan(0, 5, "keep-alive"),), review_at=20, recent_window=300)
    m = merge([a, b])
    assert m.spans == a.spans and m.after_arrival == b.after_arrival
    assert m.review_at == 20 and m.recent_window == 300


def test_unload_deadline():
    assert unload_deadline(100, 300, -math.inf) == 400
    assert unload_deadline(100, 300, 1000) == 1000  # the controller wants it longer
    assert unload_deadline(100, 300, 1000, sole_replica=False) == 400  # another replica stays instead
    assert unload_deadline(100, 300, 1000, unload_when_idle=True) == 100
    assert unload_deadline(100, math.inf, -math.inf) == math.inf
    assert unload_deadline(100, 0, -math.inf) == 100
