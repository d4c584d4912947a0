"""Reports of a simulation: a table for people, JSON for machines, a PNG of cost against warm requests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from warmstart.cli_format import columns


def table(policies: dict[str, dict[str, Any]], oracle: dict[str, Any] | None, tiers: bool = False,
          judged: dict[str, Any] | None = None) -> str:
    """One row per policy. `tiers`: add the RAM tier's columns (hours per tier, cost by tier, starts and cold
    waits by the tier the start read). `judged`: the frontier (`sim.frontier.frontier`), whose columns say
    how each policy stands against the fixed keep-alives: cold requests at equal cost, cost at equal cold."""
    rows: list[tuple[str, ...]] = [
        ("policy", "requests", "warm %", "cost % of always-on", "x oracle", "cold p50 s", "cold p99 s")]
    if judged:
        rows[0] += ("total cost %", "cold %", "curve cold % at cost", "cold vs curve", "cost vs curve")
    if tiers:
        rows[0] += ("loaded h", "RAM h", "RAM cost %") + (() if judged else ("total cost %",)) + (
            "starts RAM/disk", "RAM p50/p99 s", "disk p50/p99 s")
    base = oracle["cost_fraction"] if oracle else math.nan
    entries = list(policies.items()) + ([("oracle", oracle)] if oracle and "oracle" not in policies else [])
    for name, r in entries:
        ratio = r["cost_fraction"] / base if base and base > 0 else math.nan
        row: tuple[str, ...] = (name, f"{r['requests']:,}", f"{100 * r['warm_fraction']:.3f}",
                                f"{100 * r['cost_fraction']:.3f}", f"{ratio:.2f}", f"{r['wait_p50_s']:.1f}",
                                f"{r['wait_p99_s']:.1f}")
        if judged:
            j = judged["policies"].get(name)
            row += (f"{100 * r['total_cost_fraction']:.3f}", f"{100 * (1 - r['warm_fraction']):.3f}",
                    *(("-",) * 3 if j is None else (_pct(j["curve_cold_at_equal_cost"], 3),
                                                    _pct(j["cold_vs_curve"], 1, sign=True),
                                                    _pct(j["cost_vs_curve"], 1, sign=True))))
        if tiers:
            row += (f"{r['loaded_replica_s'] / 3600:,.1f}", f"{r['ram_resident_s'] / 3600:,.1f}",
                    f"{100 * r['ram_cost_fraction']:.3f}") + (() if judged else (
                    f"{100 * r['total_cost_fraction']:.3f}",)) + (f"{r['starts_from_ram']:,}/{r['starts_from_disk']:,}",
                    _pair(r["wait_ram_p50_s"], r["wait_ram_p99_s"]), _pair(r["wait_disk_p50_s"], r["wait_disk_p99_s"]))
        rows.append(row)
    return "\n".join(columns(rows, numbers=True, rule=True))


def _pct(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.{digits}f}" if sign else f"{100 * value:.{digits}f}"


def _pair(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a:.1f} / {b:.1f}"


ZERO_COLD = 1e-3  # where a point with no cold request is drawn on the log-scale axis, %


class PlotUnavailable(Exception):
    pass


def plot(panels: list[tuple[str, dict[str, Any]]], out: Path, title: str = "") -> None:
    """One panel per (title, report): the curve of fixed keep-alives, cold requests (%) against total cost
    (% of always-on, loaded plus priced RAM), and every other policy and the oracle as a point on it."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: install it with `pip install 'warmstart[sim]'`") from None
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.6 * rows), dpi=110, squeeze=False)
    for ax, (name, report) in zip(axes.flat, panels, strict=False):
        _panel(ax, name, report, matplotlib.ticker)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _panel(ax: Any, name: str, report: dict[str, Any], ticker: Any) -> None:
    judged = report["frontier"]
    curve = judged["curve"]
    if curve:
        ax.plot([100 * p["total_cost_fraction"] for p in curve], [100 * p["cold_fraction"] for p in curve],
                "-o", color="0.55", markersize=4, label="fixed keep-alive")
        for p in curve:
            ax.annotate(p["policy"].removeprefix("keepalive-"), (100 * p["total_cost_fraction"],
                                                                  100 * p["cold_fraction"]),
                        textcoords="offset points", xytext=(3, 3), fontsize=7, color="0.4")
    markers = iter("sD^vPX")
    for n, j in judged["policies"].items():
        if n.startswith("keepalive-") or n == "oracle":
            continue
        rel = j["cold_vs_curve"]
        label = n + ("" if rel is None else f" ({100 * rel:+.0f}% cold at equal cost)")
        # no cold request at all: drawn on the floor of the axis
        ax.plot(100 * j["total_cost_fraction"], max(100 * j["cold_fraction"], ZERO_COLD), next(markers, "o"),
                markersize=8, label=label + (" (0 cold)" if j["cold_fraction"] == 0 else ""))
    oracle = report.get("oracle")
    if oracle:
        ax.plot(100 * oracle["total_cost_fraction"], max(100 * (1 - oracle["warm_fraction"]), ZERO_COLD), "*",
                color="black", markersize=11, label="oracle (perfect foresight)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("total cost, % of always-on (loaded + RAM)")
    ax.set_ylabel("cold requests, %")
    ax.set_title(name, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
