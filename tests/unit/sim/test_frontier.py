"""The frontier of fixed keep-alives and how a policy is judged against it."""

from __future__ import annotations

import math

import pytest

from warmstart.sim.frontier import cold_at_cost, cost_at_cold, curve, frontier, judge

POINTS = {"keepalive-60s": (0.10, 0.04), "keepalive-300s": (0.20, 0.02), "keepalive-3600s": (0.40, 0.01)}


def test_the_curve_is_ordered_by_cost_and_a_dearer_but_colder_keep_alive_is_dominated():
    c = curve({**POINTS, "keepalive-600s": (0.30, 0.03)})
    assert c.names == ("keepalive-60s", "keepalive-300s", "keepalive-600s", "keepalive-3600s")
    # 600 s costs more than 300 s and is colder: at its cost the curve is what 300 s gives
    assert c.colds == (0.04, 0.02, 0.02, 0.01)


@pytest.mark.parametrize(("cost", "cold"), [(0.10, 0.04), (0.15, 0.03), (0.20, 0.02), (0.30, 0.015), (0.40, 0.01)])
def test_cold_share_at_a_cost_is_interpolated_linearly_between_neighbours(cost, cold):
    assert cold_at_cost(curve(POINTS), cost) == pytest.approx(cold)


@pytest.mark.parametrize(("cold", "cost"), [(0.04, 0.10), (0.05, 0.10), (0.03, 0.15), (0.015, 0.30), (0.01, 0.40)])
def test_cost_at_a_cold_share_is_the_cheapest_point_of_the_curve_reaching_it(cold, cost):
    assert cost_at_cold(curve(POINTS), cold) == pytest.approx(cost)


def test_nothing_is_claimed_outside_the_curve():
    c = curve(POINTS)
    assert cold_at_cost(c, 0.05) is None and cold_at_cost(c, 0.5) is None
    assert cost_at_cold(c, 0.005) is None  # colder than the dearest keep-alive gets


def test_a_policy_is_judged_at_its_cost_and_at_its_cold_share():
    # at cost 0.15 the curve has 3 % cold; 2.4 % is 20 % fewer. The curve reaches 2.4 % at cost 0.18
    j = judge(curve(POINTS), 0.15, 0.024)
    assert j["curve_cold_at_equal_cost"] == pytest.approx(0.03)
    assert j["cold_vs_curve"] == pytest.approx(-0.2)
    assert j["curve_cost_at_equal_cold"] == pytest.approx(0.18)
    assert j["cost_vs_curve"] == pytest.approx(0.15 / 0.18 - 1)
    assert j["above_curve"] is False
    worse = judge(curve(POINTS), 0.15, 0.035)
    assert worse["above_curve"] is True and worse["cold_vs_curve"] == pytest.approx(0.035 / 0.03 - 1)


def test_frontier_judges_every_policy_of_a_report_by_total_cost_and_cold_requests():
    def result(cost: float, cold: float, ram: float = 0.0) -> dict:
        return {"requests": 1000, "cold_requests": round(1000 * cold), "total_cost_fraction": cost + ram,
                "cost_fraction": cost}

    report = {n: result(*p) for n, p in POINTS.items()}
    # loaded 0.12, RAM 0.03: judged at its total cost, 0.15
    report["default"] = result(0.12, 0.024, ram=0.03)
    out = frontier(report)
    assert [p["policy"] for p in out["curve"]] == ["keepalive-60s", "keepalive-300s", "keepalive-3600s"]
    assert out["policies"]["default"]["cold_vs_curve"] == pytest.approx(-0.2)
    assert out["policies"]["keepalive-300s"]["cold_vs_curve"] == 0.0
    empty = frontier({"default": result(0.1, 0.0)})
    assert empty["curve"] == [] and empty["policies"]["default"]["cold_vs_curve"] is None
    zero = judge(curve({"keepalive-60s": (0.1, 0.0), "keepalive-600s": (0.2, 0.0)}), 0.15, 0.001)
    assert zero["cold_vs_curve"] == math.inf and zero["above_curve"] is True
