"""`warmstart bench warming`: every warming policy beside each fixed keep-alive and the perfect-foresight
oracle, on the ServeGen m-large slice the target is defined on (days 0-10, clients under 0.1 req/s,
30 s cold starts). Target: >= 99.8 % of requests warm at <= 1.5x the oracle's replica-seconds."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from warmstart.cli import CLIError

TARGET_WARM = 0.998
TARGET_COST_RATIO = 1.5
KEEPALIVES = "60,120,180,240,300,600,1800,3600"
POLICIES = "schedule,predictive,default"


def default_trace() -> Path:
    from warmstart.sim.traces import shared_traces

    return shared_traces() / "servegen-m-large"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message} (see `warmstart bench warming --help`)", status=2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="warmstart bench warming", description=__doc__)
    p.add_argument("--trace", default=str(default_trace()), help="ServeGen trace folder (default: %(default)s)")
    p.add_argument("--days", default="0:10")
    p.add_argument("--max-rate", type=float, default=0.1)
    p.add_argument("--cold-start", default="30")
    p.add_argument("--keepalives", default=KEEPALIVES, help="fixed keep-alives to compare, seconds")
    p.add_argument("--policies", default=POLICIES)
    p.add_argument("--ram-keep-alive", default="0", help="the RAM tier, as in `warmstart simulate` (default 0, off)")
    p.add_argument("--ram-cold-start", help="seconds a start from RAM takes (default: --cold-start / 1.9)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--plot", help="write a PNG of cost against warm %% here")
    return p


def main(argv: list[str]) -> int:
    from warmstart.sim.cli import DEFAULT_MODEL_GIB, run_simulation, write_json
    from warmstart.sim.report import PlotUnavailable, plot, table
    from warmstart.sim.run import causal_bound, hindsight_keepalive

    args = parser().parse_args(argv)
    try:
        fixed = [f"keepalive-{int(float(s))}s" for s in args.keepalives.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--keepalives {args.keepalives!r}: expected seconds, e.g. {KEEPALIVES}") from None
    names = fixed + [n.strip() for n in args.policies.split(",") if n.strip()]
    if not Path(args.trace).exists():
        raise CLIError(f"--trace {args.trace}: not found; pass the folder of ServeGen m-large chunk-N-trace.csv files")
    sim_args = argparse.Namespace(trace=args.trace, format="servegen", policy=",".join(names),
                                  cold_start=args.cold_start, days=args.days, max_rate=args.max_rate, seed=0,
                                  schedule=[], tz="UTC", set=[], json=None, plot=None,
                                  ram_keep_alive=args.ram_keep_alive, ram_cold_start=args.ram_cold_start,
                                  ram_price=None, model_gib=DEFAULT_MODEL_GIB)
    started = time.perf_counter()
    traces: list[Any] = []
    report = run_simulation(sim_args, on_trace=traces.append)
    report["wall_s"] = time.perf_counter() - started
    oracle = report["oracle"]
    print()
    print(table(report["policies"], oracle, tiers=report["ram_tier"]["keep_alive_s"] != 0))
    [trace] = traces
    bound = causal_bound(trace, report["cold_start_s"])
    hindsight = hindsight_keepalive(trace, report["cold_start_s"], TARGET_COST_RATIO * oracle["cost_fraction"])
    verdicts: dict[str, Any] = {}
    print()
    for name in ("predictive", "default"):
        r = report["policies"].get(name)
        if r is None:
            continue
        ratio = r["cost_fraction"] / oracle["cost_fraction"]
        met = r["warm_fraction"] >= TARGET_WARM and ratio <= TARGET_COST_RATIO
        verdicts[name] = {"warm_fraction": r["warm_fraction"], "cost_ratio": ratio, "target_met": met}
        print(f"{name}: {100 * r['warm_fraction']:.3f} % warm at {ratio:.2f}x the oracle's cost "
              f"(target >= {100 * TARGET_WARM:.1f} % at <= {TARGET_COST_RATIO}x): {'met' if met else 'not met'}")
    print(f"no policy that learns from history can exceed {100 * bound['max_warm_fraction']:.3f} % warm here: "
          f"{bound['first_burst_requests']:,} requests arrive within one cold start of their model's first request")
    if hindsight:
        ratio = hindsight["cost_fraction"] / oracle["cost_fraction"]
        print(f"a keep-alive per model chosen knowing the whole trace in advance reaches "
              f"{100 * hindsight['warm_fraction']:.3f} % warm at {ratio:.2f}x")
    report["target"] = {"warm_fraction": TARGET_WARM, "cost_ratio": TARGET_COST_RATIO, "results": verdicts,
                        "causal_bound": bound, "hindsight_keepalive": hindsight}
    if args.json:
        write_json(Path(args.json), report)
    if args.plot:
        try:
            plot(report["policies"], oracle, Path(args.plot),
                 f"ServeGen m-large days {args.days}, {report['models']} models under {args.max_rate} req/s, "
                 f"cold start {report['cold_start_s']:g} s")
        except PlotUnavailable as exc:
            raise CLIError(str(exc)) from None
    return 0
