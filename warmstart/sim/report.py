"""Reports of a simulation: a table for people, JSON for machines, a PNG of cost against warm requests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from warmstart.cli_format import columns


def table(policies: dict[str, dict[str, Any]], oracle: dict[str, Any] | None, tiers: bool = False) -> str:
    """One row per policy. `tiers`: add the RAM tier's columns (hours per tier, cost by tier, starts and cold
    waits by the tier the start read)."""
    rows: list[tuple[str, ...]] = [
        ("policy", "requests", "warm %", "cost % of always-on", "x oracle", "cold p50 s", "cold p99 s")]
    if tiers:
        rows[0] += ("loaded h", "RAM h", "RAM cost %", "total cost %", "starts RAM/disk", "RAM p50/p99 s",
                    "disk p50/p99 s")
    base = oracle["cost_fraction"] if oracle else math.nan
    entries = list(policies.items()) + ([("oracle", oracle)] if oracle and "oracle" not in policies else [])
    for name, r in entries:
        ratio = r["cost_fraction"] / base if base and base > 0 else math.nan
        row: tuple[str, ...] = (name, f"{r['requests']:,}", f"{100 * r['warm_fraction']:.3f}",
                                f"{100 * r['cost_fraction']:.3f}", f"{ratio:.2f}", f"{r['wait_p50_s']:.1f}",
                                f"{r['wait_p99_s']:.1f}")
        if tiers:
            row += (f"{r['loaded_replica_s'] / 3600:,.1f}", f"{r['ram_resident_s'] / 3600:,.1f}",
                    f"{100 * r['ram_cost_fraction']:.3f}", f"{100 * r['total_cost_fraction']:.3f}",
                    f"{r['starts_from_ram']:,}/{r['starts_from_disk']:,}",
                    _pair(r["wait_ram_p50_s"], r["wait_ram_p99_s"]), _pair(r["wait_disk_p50_s"], r["wait_disk_p99_s"]))
        rows.append(row)
    return "\n".join(columns(rows, numbers=True, rule=True))


def _pair(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a:.1f} / {b:.1f}"


class PlotUnavailable(Exception):
    pass


def plot(policies: dict[str, dict[str, Any]], oracle: dict[str, Any] | None, out: Path, title: str) -> None:
    """Cost (% of always-on) against warm requests (%), one point per policy; fixed keep-alives joined."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: install it with `pip install 'warmstart[sim]'`") from None
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    fixed = sorted(((n, r) for n, r in policies.items() if n.startswith("keepalive-")),
                   key=lambda nr: nr[1]["cost_fraction"])
    if fixed:
        ax.plot([100 * r["cost_fraction"] for _, r in fixed], [100 * r["warm_fraction"] for _, r in fixed],
                "-o", color="0.55", label="fixed keep-alive")
        for n, r in fixed:
            ax.annotate(n.removeprefix("keepalive-"), (100 * r["cost_fraction"], 100 * r["warm_fraction"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=8, color="0.35")
    markers = iter("sD^vP*X")
    for n, r in policies.items():
        if n.startswith("keepalive-") or n == "oracle":
            continue
        ax.plot(100 * r["cost_fraction"], 100 * r["warm_fraction"], next(markers, "o"), markersize=8, label=n)
    if oracle:
        ax.plot(100 * oracle["cost_fraction"], 100 * oracle["warm_fraction"], "*", color="black", markersize=12,
                label="oracle (perfect foresight)")
        ax.axvline(150 * oracle["cost_fraction"], color="0.8", linestyle="--", linewidth=1)
        ax.annotate("1.5x oracle", (150 * oracle["cost_fraction"], ax.get_ylim()[1]), fontsize=8, color="0.5",
                    xytext=(3, -12), textcoords="offset points")
    ax.set_xscale("log")
    for axis_format in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_format(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("replica-seconds loaded, % of always-on (log scale)")
    ax.set_ylabel("requests served warm, %")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
