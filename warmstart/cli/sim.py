"""`warmstart simulate`: replay a trace through the warming policies; print a table, write JSON and a plot."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from warmstart.cli.base import CLIError, command, json_on_stdout

# the curve of fixed keep-alives every other policy is judged against, then the policies
DEFAULT_POLICIES = ("keepalive-0s,keepalive-30s,keepalive-60s,keepalive-120s,keepalive-180s,keepalive-300s,"
                    "keepalive-600s,keepalive-1200s,keepalive-1800s,keepalive-3600s,keepalive-7200s,"
                    "keepalive-14400s,predictive,default,oracle")
# the weights of an 8B model in BF16 (15 GiB), rounded: what a RAM-resident second is priced for by default
DEFAULT_MODEL_GIB = 16.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="replay a trace through warming policies: warm %%, cold waits, cost",
                       description="Replay a request trace on virtual time through the same policy and pool "
                                   "code the server runs, and report per policy the requests served warm, the "
                                   "cold waits and the replica-seconds loaded as a fraction of always-on.")
    p.add_argument("--trace", required=True, help="trace file or folder (ServeGen: the folder of chunk-N-trace.csv)")
    p.add_argument("--format", choices=["servegen", "azure", "jsonl"],
                   help="trace format (default: servegen for a folder, azure for .csv, jsonl for .jsonl)")
    p.add_argument("--policy", default=DEFAULT_POLICIES,
                   help="comma-separated: keepalive-<seconds>s, schedule, predictive, default, oracle "
                        f"(default {DEFAULT_POLICIES})")
    p.add_argument("--cold-start", default="30", help="seconds a replica takes to start (default 30)")
    p.add_argument("--days", help="A:B, the days of the trace to replay (default: all)")
    p.add_argument("--history-days", metavar="A:B",
                   help="days the policies learn from before the judged --days (B <= the first judged day), as "
                        "the server learns from its request history; not judged")
    p.add_argument("--max-rate", type=float, help="keep only models whose mean rate is below R requests/s")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing ServeGen arrivals (default 0)")
    p.add_argument("--schedule", action="append", default=[],
                   help="a window for --policy schedule/default, e.g. '08:00-18:00 Mon-Fri' (repeatable)")
    p.add_argument("--tz", default="UTC", help="time zone of --schedule windows (default UTC)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a predictive-policy setting, e.g. cold_request_cost=60 (repeatable)")
    p.add_argument("--ram-keep-alive", default="0", metavar="SECONDS",
                   help="the RAM tier: hold a model's weights in RAM this long after a keep-alive unload "
                        "(like a model's ram_keep_alive: 3600, '1h', -1 for ever; default 0, off)")
    p.add_argument("--ram-cold-start", metavar="SECONDS",
                   help="seconds a start from RAM takes (default: --cold-start / 1.9, the speedup measured in "
                        "docs/store.md)")
    p.add_argument("--ram-price", type=float, metavar="PRICE",
                   help="cost of one GiB-hour in RAM where a loaded replica-hour costs 1, like store.ram_price "
                        "(default: store.ram_price's default, 0.005)")
    p.add_argument("--model-gib", type=float, default=DEFAULT_MODEL_GIB, metavar="GiB",
                   help=f"size of each model's weights, for the RAM price (default {DEFAULT_MODEL_GIB:g})")
    p.add_argument("--nodes", type=int, metavar="N",
                   help="replay across N nodes (a cluster), placing each start with the live pool's placement.place; "
                        "fixed keep-alive policies only; each model's weights are --model-gib")
    p.add_argument("--node-memory", default="64GiB", metavar="SIZE[,SIZE...]",
                   help="memory for engines per node with --nodes: one size for all, or one per node "
                        "(default 64GiB)")
    p.add_argument("--files", choices=["spread", "all"], default="spread",
                   help="with --nodes: each model's file on one node in turn, the others fetch it (spread, "
                        "default), or on every node (all)")
    p.add_argument("--net-gbps", type=float, default=1.25, metavar="GB/s",
                   help="with --nodes: the rate of a fetch from a peer (default 1.25, 10 Gbit/s)")
    p.add_argument("--per-model", metavar="POLICY",
                   help="also print, for this policy, each model's requests, cold requests, starts and cost "
                        "(most cold requests first)")
    p.add_argument("--json", help="write the results as JSON to this file ('-': to stdout, the table to stderr)")
    p.add_argument("--plot", help="write a PNG of cost against warm %% to this file")


def parse_days(text: str | None, option: str = "--days") -> tuple[float, float] | None:
    if text is None:
        return None
    a, sep, b = text.partition(":")
    try:
        lo, hi = float(a), float(b)
    except ValueError:
        raise CLIError(f"{option} {text!r}: expected A:B, e.g. 0:10") from None
    if not sep or lo < 0 or hi <= lo or not math.isfinite(hi):
        raise CLIError(f"{option} {text!r}: expected A:B with 0 <= A < B, e.g. 0:10")
    return lo, hi


def parse_history(text: str | None, days: tuple[float, float] | None) -> tuple[float, float] | None:
    """--history-days: earlier days than the judged ones, never overlapping them."""
    history = parse_days(text, "--history-days")
    if history is None:
        return None
    if days is None:
        raise CLIError(f"--history-days {text}: also give the judged --days, after the history "
                       f"(e.g. --history-days 0:5 --days 5:10)")
    if history[1] > days[0]:
        raise CLIError(f"--history-days {text}: the history must end by the first judged day "
                       f"(--days {days[0]:g}:{days[1]:g}); e.g. --history-days {history[0]:g}:{days[0]:g}")
    return history


def parse_settings(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise CLIError(f"--set {item!r}: expected KEY=NUMBER, e.g. cold_request_cost=60")
    return out


def parse_ram_tier(args: argparse.Namespace, cold: float) -> tuple[Any, float]:
    """The RAM tier's options, checked: a RamTier (keep_alive 0 when it is off) and the price per GiB-hour."""
    from warmstart.config import StoreConfig
    from warmstart.durations import parse_duration
    from warmstart.policy.tiers import MEASURED_RAM_SPEEDUP
    from warmstart.sim.run import RamTier, ram_price_per_s

    try:
        keep = parse_duration(args.ram_keep_alive)
    except ValueError as exc:
        raise CLIError(f"--ram-keep-alive {args.ram_keep_alive!r}: {exc}") from None
    if args.ram_cold_start is None:
        ram_cold = cold / MEASURED_RAM_SPEEDUP
    else:
        try:
            ram_cold = float(args.ram_cold_start)
        except ValueError:
            ram_cold = math.nan
        if not 0 < ram_cold <= cold:
            raise CLIError(f"--ram-cold-start {args.ram_cold_start!r}: expected seconds above 0 and at most "
                           f"the --cold-start ({cold:g})")
    price = StoreConfig().ram_price if args.ram_price is None else args.ram_price
    if not (price >= 0 and math.isfinite(price)):
        raise CLIError(f"--ram-price {args.ram_price!r}: expected a number >= 0 (cost per GiB-hour)")
    if not (args.model_gib > 0 and math.isfinite(args.model_gib)):
        raise CLIError(f"--model-gib {args.model_gib!r}: expected a positive size in GiB")
    return RamTier(keep, ram_cold, ram_price_per_s(price, args.model_gib)), price


def run_simulation(args: argparse.Namespace, log: Any = None, on_trace: Any = None) -> dict[str, Any]:
    """Replay the trace for each policy; `on_trace` is handed the trace as read, then the history (None without
    --history-days): the bench uses them. What it reads and each policy's time are said on stderr (`log`), the
    step under way on the command's progress display."""
    from warmstart.policy.defaults import predictive_params
    from warmstart.policy.schedule import parse_window, zone
    from warmstart.progress import say, step
    from warmstart.sim.frontier import frontier
    from warmstart.sim.run import UnknownPolicy, make_policy, oracle_summary, simulate
    from warmstart.sim.traces import Trace, TraceError, read_trace

    path = Path(args.trace).expanduser()
    if not path.exists():
        raise CLIError(f"--trace {args.trace}: no such file or folder")
    fmt = args.format or ("servegen" if path.is_dir() else "jsonl" if path.suffix == ".jsonl" else "azure")
    try:
        cold = float(args.cold_start)
    except ValueError:
        cold = math.nan
    if not (cold > 0 and math.isfinite(cold)):
        raise CLIError(f"--cold-start {args.cold_start!r}: expected a positive number of seconds")
    if args.max_rate is not None and not args.max_rate > 0:
        raise CLIError("--max-rate must be a positive number of requests per second")
    days = parse_days(args.days)
    history_days = parse_history(getattr(args, "history_days", None), days)
    ram, ram_price = parse_ram_tier(args, cold)
    settings = parse_settings(args.set)
    try:
        predictive_params(settings)
        for window in args.schedule:
            parse_window(window)
        zone(args.tz)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    names = [n.strip() for n in args.policy.split(",") if n.strip()]
    if not names:
        raise CLIError("--policy: name at least one policy")
    per_model = getattr(args, "per_model", None)
    if per_model is not None and per_model not in names:
        raise CLIError(f"--per-model {per_model!r}: not among the policies replayed; name one of --policy "
                       f"({', '.join(names)})")
    try:
        policies = {name: make_policy(name, schedule=args.schedule, tz=args.tz, predictive=settings)
                    for name in names}
    except UnknownPolicy as exc:
        raise CLIError(str(exc)) from None
    log = log or say
    t0 = time.perf_counter()
    step(f"reading the trace {path.name}")
    try:
        trace = read_trace(path, fmt, days, args.max_rate, args.seed)
    except TraceError as exc:
        raise CLIError(str(exc)) from None
    if not trace.arrivals:
        raise CLIError("no model in the trace has requests in the chosen days and under --max-rate")
    history = None
    if history_days is not None:
        try:
            history = read_trace(path, fmt, history_days, None, args.seed)
        except TraceError as exc:
            raise CLIError(f"--history-days: {exc}") from None
        history = Trace(history.name, {m: a for m, a in history.arrivals.items() if m in trace.arrivals},
                        history.start, history.end)
    if on_trace is not None:
        on_trace(trace)
        on_trace(history)
    log(f"trace {trace.name}: {trace.requests:,} requests, {len(trace.arrivals)} models, "
        f"{(trace.end - trace.start) / 86400:.2f} days (read in {time.perf_counter() - t0:.1f} s)"
        + (f"; history {history.requests:,} requests of {len(history.arrivals)} of them" if history else ""))
    if getattr(args, "nodes", None) is not None:
        return run_on_nodes(args, trace, policies, cold, path, fmt, log)
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for i, (name, policy) in enumerate(policies.items()):
        t = time.perf_counter()

        def models_done(done: int, total: int, what: str = f"policy {i + 1}/{len(policies)} {name}, models") -> None:
            step(what, done, total)

        results[name] = simulate(trace, policy, cold, ram, history, progress=models_done)
        seconds[name] = time.perf_counter() - t
        log(f"  {name}: {seconds[name]:.1f} s")
    # asked for by name, the oracle is replayed like the others; otherwise its closed form (the same figures)
    oracle = results["oracle"] if "oracle" in names else oracle_summary(trace, cold)
    return {
        "trace": str(path), "format": fmt, "days": list(days) if days else None,
        "history_days": list(history_days) if history_days else None, "max_rate": args.max_rate,
        "seed": args.seed, "cold_start_s": cold, "models": len(trace.arrivals), "requests": trace.requests,
        "policies": results, "oracle": oracle, "seconds": seconds,
        "frontier": frontier({**results, "oracle": oracle}),
        "ram_tier": {"keep_alive_s": None if math.isinf(ram.keep_alive) else ram.keep_alive,
                     "cold_start_s": ram.cold_start, "price_per_gib_hour": ram_price,
                     "model_gib": args.model_gib, "price_per_s": ram.price_per_s},
    }


def parse_nodes(args: argparse.Namespace) -> list[Any]:
    """--nodes and --node-memory, checked: the simulated nodes, named n1..nN."""
    from warmstart.sim.nodes import SimNode
    from warmstart.store.tiers import parse_size

    if args.nodes < 1:
        raise CLIError(f"--nodes {args.nodes}: expected at least 1 node")
    try:
        sizes = [parse_size(s) for s in str(args.node_memory).split(",")]
    except ValueError as exc:
        raise CLIError(f"--node-memory {args.node_memory!r}: {exc}") from None
    if len(sizes) not in (1, args.nodes) or not all(sizes):
        raise CLIError(f"--node-memory {args.node_memory!r}: give one size above 0 for every node, or "
                       f"{args.nodes} sizes separated by commas")
    if not (args.net_gbps > 0 and math.isfinite(args.net_gbps)):
        raise CLIError(f"--net-gbps {args.net_gbps!r}: expected a positive rate in GB/s")
    return [SimNode(f"n{i + 1}", sizes[i if len(sizes) > 1 else 0]) for i in range(args.nodes)]


def run_on_nodes(args: argparse.Namespace, trace: Any, policies: dict[str, Any], cold: float, path: Path,
                 fmt: str, log: Any) -> dict[str, Any]:
    """`--nodes`: each fixed keep-alive policy replayed across the nodes (warmstart.sim.nodes)."""
    from warmstart.sim.nodes import simulate_nodes, spread_files

    if args.policy == DEFAULT_POLICIES:  # the curve of fixed keep-alives
        policies = {n: p for n, p in policies.items() if n.startswith("keepalive-")}
    other = [n for n in policies if not n.startswith("keepalive-")]
    if other:
        raise CLIError(f"--policy {','.join(other)}: with --nodes only keepalive-<seconds>s policies are replayed "
                       "(the warming controller and the RAM tier are not replayed across nodes yet)")
    size = int(args.model_gib * (1 << 30))
    results: dict[str, Any] = {}
    for name, policy in policies.items():
        nodes = parse_nodes(args)
        spread_files(list(trace.arrivals), nodes, args.files)
        t = time.perf_counter()
        results[name] = simulate_nodes(trace, nodes, keep_alive=policy.keep_alive, cold_start=cold, size=size,
                                       net_bps=args.net_gbps * 1e9)
        log(f"  {name}: {time.perf_counter() - t:.1f} s")
    return {"trace": str(path), "format": fmt, "cold_start_s": cold, "models": len(trace.arrivals),
            "requests": trace.requests, "model_gib": args.model_gib, "files": args.files,
            "net_gbps": args.net_gbps, "policies": results,
            "nodes": {n.name: n.memory_bytes for n in parse_nodes(args)}}


def nodes_table(report: dict[str, Any]) -> str:
    from warmstart.cli_format import columns

    rows: list[tuple[str, ...]] = [("policy", "node", "memory GiB", "starts", "fetches", "evicted",
                                    "loaded h", "peak GiB", "warm %", "refused", "cold p99 s")]
    for name, r in report["policies"].items():
        for node, n in r["nodes"].items():
            rows.append((name, node, f"{n['memory_bytes'] / (1 << 30):.0f}", f"{n['starts']:,}", f"{n['fetches']:,}",
                         f"{n['evictions']:,}", f"{n['loaded_replica_s'] / 3600:,.1f}",
                         f"{n['peak_used_bytes'] / (1 << 30):.1f}", "", "", ""))
        rows.append((name, "all", f"{sum(report['nodes'].values()) / (1 << 30):.0f}", f"{r['starts']:,}",
                     f"{r['fetches']:,}", f"{r['evictions']:,}", f"{r['loaded_replica_s'] / 3600:,.1f}", "",
                     f"{100 * r['warm_fraction']:.3f}", f"{r['refused']:,}", f"{r['wait_p99_s']:.1f}"))
    return "\n".join(columns(rows, numbers=True, rule=True))


def per_model_table(name: str, report: dict[str, Any]) -> str:
    """One policy's figures per model, most cold requests first; its cost (loaded plus priced RAM) as a share of
    that model loaded all the time."""
    from warmstart.cli_format import columns

    rows: list[tuple[str, ...]] = [(f"{name}: model", "requests", "cold", "cold %", "starts RAM/disk", "loaded h",
                                    "RAM h", "total cost %")]
    for model, m in sorted(report["policies"][name]["per_model"].items(),
                           key=lambda kv: (-kv[1]["cold_requests"], kv[0])):
        rows.append((model, f"{m['requests']:,}", f"{m['cold_requests']:,}",
                     f"{100 * m['cold_requests'] / m['requests']:.2f}" if m["requests"] else "-",
                     f"{m['starts_from_ram']:,}/{m['starts'] - m['starts_from_ram']:,}",
                     f"{m['loaded_replica_s'] / 3600:,.1f}", f"{m['ram_resident_s'] / 3600:,.1f}",
                     f"{100 * m['total_cost_fraction']:.2f}"))
    return "\n".join(columns(rows, numbers=True, rule=True))


@command("simulate")
def _simulate(args: argparse.Namespace) -> int:
    from warmstart.progress import Progress
    from warmstart.sim.report import PlotUnavailable, plot, table

    with json_on_stdout(args.json) as json_path:  # `--json -`: the JSON alone on stdout, the table on stderr
        with Progress("simulate"):
            report = run_simulation(args)
        if getattr(args, "nodes", None) is not None:
            print(nodes_table(report))
            if json_path:
                write_json(Path(json_path), report)
            return 0
        print(table(report["policies"], report["oracle"], tiers=report["ram_tier"]["keep_alive_s"] != 0 or any(
            r["ram_resident_s"] for r in report["policies"].values()), judged=report["frontier"]))
        if args.per_model:
            print()
            print(per_model_table(args.per_model, report))
        if json_path:
            write_json(Path(json_path), report)
    if args.plot:
        title = f"{Path(report['trace']).name}: {report['models']} models, {report['requests']:,} requests, " \
                f"cold start {report['cold_start_s']:g} s"
        try:
            plot([(title, report)], Path(args.plot))
        except PlotUnavailable as exc:
            raise CLIError(str(exc)) from None
        except OSError as exc:
            raise CLIError(f"--plot {args.plot}: {exc.strerror}") from None
    return 0


def write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror}") from None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(type(value).__name__)
