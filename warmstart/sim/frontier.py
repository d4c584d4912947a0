"""The judge of a warming policy: the frontier of fixed keep-alives.

Every fixed keep-alive is one point (cost, cold share): cost is `total_cost_fraction` (loaded replica-seconds
plus priced RAM, over always-on), cold share the requests that waited for a start. Joined in order of cost
they make the curve a user gets by picking a constant. A policy is judged against that curve at its own
cost (how many cold requests the curve has there, interpolated) and at its own cold share (what the curve
costs there). Interpolation is linear in both axes between neighbouring keep-alives: a mix of the two
(half the time one, half the other) reaches exactly that chord, so a policy beating the chord beats every
such mix. Outside the curve's range nothing is claimed (None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Curve:
    """(cost, cold share) of the fixed keep-alives, ascending in cost; cold share made non-increasing
    (a dearer keep-alive that is colder than a cheaper one is dominated: the cheaper one is used there)."""

    costs: tuple[float, ...]
    colds: tuple[float, ...]
    names: tuple[str, ...] = ()


def curve(points: Mapping[str, tuple[float, float]]) -> Curve:
    """The frontier of `points` (name -> (cost, cold share))."""
    ordered = sorted(points.items(), key=lambda kv: (kv[1][0], kv[1][1]))
    costs, colds, names = [], [], []
    best = math.inf
    for name, (cost, cold) in ordered:
        best = min(best, cold)
        costs.append(cost)
        colds.append(best)
        names.append(name)
    return Curve(tuple(costs), tuple(colds), tuple(names))


def cold_at_cost(c: Curve, cost: float) -> float | None:
    """The curve's cold share at `cost`, interpolated; None outside its range of costs."""
    xs, ys = c.costs, c.colds
    if not xs or cost < xs[0] or cost > xs[-1]:
        return None
    for i in range(1, len(xs)):
        if cost <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y1 if x1 == x0 else y0 + (y1 - y0) * (cost - x0) / (x1 - x0)
    return ys[-1]


def cost_at_cold(c: Curve, cold: float) -> float | None:
    """The cheapest cost at which the curve's cold share is `cold` or less, interpolated; None when the
    curve never gets that cold share within its range."""
    xs, ys = c.costs, c.colds
    if not xs or cold < ys[-1]:
        return None
    if cold >= ys[0]:
        return xs[0]
    for i in range(1, len(xs)):
        if ys[i] <= cold:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return x1 if y0 == y1 else x0 + (x1 - x0) * (y0 - cold) / (y0 - y1)
    return None


def judge(c: Curve, cost: float, cold: float) -> dict[str, Any]:
    """A policy at (cost, cold share) against the curve: the curve's cold share at equal cost and the
    policy's cold requests relative to it (-0.2: 20 % fewer), and the curve's cost at equal cold share and
    the policy's cost relative to it (-0.2: 20 % cheaper). None where the curve does not reach."""
    at_cost = cold_at_cost(c, cost)
    at_cold = cost_at_cold(c, cold)
    return {
        "curve_cold_at_equal_cost": at_cost,
        "cold_vs_curve": _relative(cold, at_cost),
        "curve_cost_at_equal_cold": at_cold,
        "cost_vs_curve": _relative(cost, at_cold),
        "above_curve": None if at_cost is None else cold > at_cost * (1 + 1e-9),
    }


def _relative(value: float, reference: float | None) -> float | None:
    if reference is None:
        return None
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return value / reference - 1.0


def cold_share(result: Mapping[str, Any]) -> float:
    return result["cold_requests"] / result["requests"] if result["requests"] else math.nan


def frontier(policies: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The curve of the `keepalive-*` policies among `policies` and every policy judged against it (the
    keep-alives too: on the curve, or above it where dominated)."""
    fixed = {n: (r["total_cost_fraction"], cold_share(r)) for n, r in policies.items() if n.startswith("keepalive-")}
    c = curve(fixed)
    return {
        "curve": [{"policy": n, "total_cost_fraction": x, "cold_fraction": y}
                  for n, x, y in zip(c.names, c.costs, c.colds, strict=True)],
        "policies": {n: judged(c, r) for n, r in policies.items()},
    }


def judged(c: Curve, result: Mapping[str, Any]) -> dict[str, Any]:
    """A replay's cost and cold share (`total_cost_fraction`, `cold_fraction`), and `judge` of them against `c`."""
    cost, share = result["total_cost_fraction"], cold_share(result)
    return {"total_cost_fraction": cost, "cold_fraction": share, **judge(c, cost, share)}


def curve_of(report: Mapping[str, Any]) -> Curve:
    """The Curve back from a report's `frontier` (JSON)."""
    pts = report["curve"]
    return Curve(tuple(p["total_cost_fraction"] for p in pts), tuple(p["cold_fraction"] for p in pts),
                 tuple(p["policy"] for p in pts))
