"""Last-hour figures from the metrics registry: counters read per model, an hour's baseline subtracted,
quantiles from histogram buckets."""

from __future__ import annotations

import math

import pytest

from warmstart.telemetry.metrics import TTFT_BUCKETS, Metrics
from warmstart.telemetry.window import BOUNDS, HourWindow, quantile, read_counters


def served(m: Metrics, model: str, start: str, ttft: float | None, code: str = "200") -> None:
    m.requests.labels(model, start, code).inc()
    if ttft is not None:
        m.ttft_seconds.labels(model, start).observe(ttft)


def cumulative(values: list[float]) -> list[float]:
    return [float(sum(1 for v in values if v <= b)) for b in BOUNDS]


def test_quantile_interpolates_within_the_bucket_like_prometheus():
    # 10 observations all in (0.05, 0.075]: the median is halfway through that bucket
    assert quantile(0.5, cumulative([0.06] * 10)) == pytest.approx(0.0625)
    # 9 fast, 1 slow: p50 is among the fast, p95 inside the slow one's bucket (10, 30]
    mixed = cumulative([0.02] * 9 + [13.0])
    assert 0.01 < quantile(0.5, mixed) <= 0.025
    assert 10 < quantile(0.95, mixed) <= 30
    assert quantile(0.5, cumulative([])) is None
    # beyond the last finite bucket only its bound is known
    assert quantile(0.99, cumulative([500.0])) == TTFT_BUCKETS[-1]


def test_counters_are_read_per_model_and_models_with_only_zeros_are_left_out():
    m = Metrics()
    for name in ("idle-a", "idle-b"):
        m.requests.labels(name, "warm", "200")  # created at zero, as the pool does for every model
        m.replica_loaded_seconds.labels(name)
    served(m, "busy", "warm", 0.05)
    served(m, "busy", "warm", 0.06)
    served(m, "busy", "cold", 2.0)
    served(m, "busy", "cold", None, code="503")
    m.replica_loaded_seconds.labels("busy").inc(42.5)
    m.starts.labels("busy", "hint", "ok").inc()
    m.starts.labels("busy", "request", "failed").inc()
    m.hints.labels("busy", "started").inc()
    m.hints.labels("busy", "already_warm").inc()
    m.hints.labels("busy", "rate_limited").inc()
    rows = read_counters(m)
    assert set(rows) == {"busy"}
    w = HourWindow(m, started=0.0)
    window_s, per_model, totals = w.figures(now=60.0)
    assert window_s == 60.0 and set(per_model) == {"busy"}
    f = per_model["busy"].to_dict()
    assert (f["requests"], f["warm"], f["cold"], f["errors"]) == (4, 2, 2, 1)
    assert f["warm_ratio"] == 0.5
    assert f["loaded_s"] == 42.5
    assert (f["starts"], f["starts_failed"]) == (1, 1)
    assert (f["hints"], f["hints_refused"]) == (3, 1)
    assert f["ttft_warm_mean_s"] == pytest.approx(0.055) and f["ttft_cold_mean_s"] == pytest.approx(2.0)
    assert 0.025 < f["ttft_warm_p50_s"] <= 0.075 and 1 < f["ttft_cold_p50_s"] <= 2
    assert totals.to_dict() == f  # one busy model: the totals are its figures


def test_the_window_subtracts_what_happened_more_than_an_hour_ago():
    m = Metrics()
    w = HourWindow(m, started=0.0, interval=30.0)
    served(m, "a", "cold", 3.0)
    m.replica_loaded_seconds.labels("a").inc(100)
    for t in range(30, 1801, 30):  # half an hour of samples
        w.sample(float(t))
    served(m, "a", "warm", 0.05)
    served(m, "b", "warm", 0.04)
    m.replica_loaded_seconds.labels("a").inc(50)
    for t in range(1830, 3601 + 1800, 30):
        w.sample(float(t))
    # at 5400 s the baseline is the sample of 1800 s: the cold request and its first 100 s are outside the hour
    window_s, per_model, totals = w.figures(now=5400.0)
    assert window_s == 3600.0
    assert per_model["a"].to_dict()["warm"] == 1 and per_model["a"].to_dict()["cold"] == 0
    assert per_model["a"].loaded_s == 50.0
    assert per_model["b"].warm == 1
    assert (totals.warm, totals.cold) == (2, 0) and totals.to_dict()["warm_ratio"] == 1.0
    # an hour after the last event, nothing is left in the window
    for t in range(3600 + 1830, 7300, 30):
        w.sample(float(t))
    window_s, per_model, totals = w.figures(now=7300.0)
    assert per_model == {} and totals.to_dict()["requests"] == 0 and totals.to_dict()["warm_ratio"] is None
    assert 3600.0 <= window_s < 3600.0 + 30


def test_before_an_hour_has_passed_the_window_is_since_the_server_started():
    m = Metrics()
    w = HourWindow(m, started=100.0, interval=30.0)
    served(m, "a", "cold", 3.0)
    for t in range(130, 700, 30):
        w.sample(float(t))
    served(m, "a", "warm", 0.05)
    window_s, _per_model, totals = w.figures(now=700.0)
    assert window_s == 600.0
    assert (totals.warm, totals.cold) == (1, 1)


def test_samples_older_than_the_baseline_are_dropped_and_unchanged_rows_shared():
    m = Metrics()
    w = HourWindow(m, started=0.0, interval=10.0, span=100.0)
    served(m, "a", "warm", 0.05)
    for t in range(10, 1000, 10):
        w.sample(float(t))
    assert len(w._samples) <= 100 / 10 + 2
    rows = [s["a"] for _, s in w._samples]
    assert all(r is rows[0] for r in rows)  # nothing changed: one tuple for every sample
    assert not math.isinf(w.figures(1000.0)[0])


def test_reading_the_children_directly_agrees_with_collect():
    from warmstart.telemetry.window import (
        counter_values,
        counter_values_collected,
        histogram_values,
        histogram_values_collected,
    )

    m = Metrics()
    for model in ("a", "b"):
        served(m, model, "warm", 0.03)
        served(m, model, "cold", 4.0, code="503")
        m.starts.labels(model, "hint", "ok").inc(2)
    served(m, "a", "warm", 700.0)  # beyond the last finite bucket
    names = ("model", "start", "code")
    assert sorted(counter_values(m.requests, names)) == sorted(counter_values_collected(m.requests, names))
    fast = sorted(histogram_values(m.ttft_seconds, ("model", "start")))
    slow = sorted(histogram_values_collected(m.ttft_seconds, ("model", "start")))
    assert fast == slow and len(fast) == 4
    assert dict((labels, buckets[-1]) for labels, _, _, buckets in fast)[("a", "warm")] == 2


def test_on_a_cluster_the_per_model_counters_carry_the_node_and_the_window_sums_over_nodes():
    per_model = ("warmstart_cold_start_seconds", "warmstart_requests", "warmstart_starts", "warmstart_unloads",
                 "warmstart_time_to_first_token_seconds", "warmstart_replica_failures")

    def labels(m: Metrics) -> dict[str, set[str]]:
        return {f.name: {k for s in f.samples for k in s.labels} for f in m.registry.collect()
                if f.name in per_model}

    one_box = Metrics()
    one_box.requests.labels("a", "warm", "200").inc()
    assert "node" not in labels(one_box)["warmstart_requests"]  # single-box series are as they were
    assert one_box.at("n1") == ()
    m = Metrics(node_label=True)
    for node in ("n1", "n2"):
        m.requests.labels("a", "warm", "200", *m.at(node)).inc()
        m.ttft_seconds.labels("a", "warm", *m.at(node)).observe(0.05)
        m.starts.labels("a", "request", "ok", *m.at(node)).inc()
    m.requests.labels("a", "cold", "503", *m.at(None)).inc()  # refused before any node was placed
    assert {s.labels["node"] for f in m.registry.collect() if f.name == "warmstart_requests"
            for s in f.samples} == {"n1", "n2", ""}
    f = HourWindow(m, started=0.0).figures(now=60.0)[1]["a"].to_dict()
    assert (f["requests"], f["warm"], f["errors"], f["starts"]) == (3, 2, 1, 2)
