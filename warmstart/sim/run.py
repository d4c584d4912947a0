"""Run named policies over a trace and report warm fraction, cost and cold waits per policy."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from warmstart.policy.controller import Controller, learn
from warmstart.policy.tiers import MEASURED_RAM_SPEEDUP  # noqa: F401 (the simulator's default RAM start)
from warmstart.sim.oracle import OraclePolicy
from warmstart.sim.replay import ModelOutcome, replay_model
from warmstart.sim.traces import Trace

_KEEPALIVE = re.compile(r"^keepalive-(\d+(?:\.\d+)?)s$")


@dataclass(frozen=True)
class SimPolicy:
    """How the simulated server is set up for one named policy: the pool's keep-alive and a controller
    per model (None: the pool alone). `ram_tier`: whether the RAM tier applies (the oracle stays on disk);
    `ram_auto`: the controller picks how long each model stays in RAM (keep_alive "auto"), whatever the
    fixed RAM keep-alive."""

    name: str
    keep_alive: float
    controller: Callable[[str, np.ndarray, float], Controller | None]
    ram_tier: bool = True
    ram_auto: bool = False
    learns: bool = True  # shown the history (--history-days); the oracle needs none


@dataclass(frozen=True)
class RamTier:
    """The simulated RAM tier: weights stay in RAM `keep_alive` seconds after a keep-alive unload (0: off,
    math.inf: for ever), a start from RAM takes `cold_start` seconds, and a second held in RAM costs
    `price_per_s` loaded replica-seconds."""

    keep_alive: float = 0.0
    cold_start: float | None = None
    price_per_s: float = 0.0


def ram_price_per_s(ram_price: float, model_gib: float) -> float:
    """store.ram_price is a price per GiB-hour in the unit a loaded replica-hour costs, so a second held in RAM
    costs ram_price x GiB loaded replica-seconds."""
    return ram_price * model_gib


class UnknownPolicy(ValueError):
    pass


def policy_names() -> list[str]:
    return ["keepalive-<seconds>s", "schedule", "predictive", "default", "oracle"]


def make_policy(name: str, *, schedule: Sequence[str] = (), tz: str = "UTC",
                predictive: dict[str, Any] | None = None) -> SimPolicy:
    from warmstart.policy import defaults

    if m := _KEEPALIVE.match(name):
        return SimPolicy(name, float(m.group(1)), lambda _m, _a, _c: None)
    if name == "oracle":
        return SimPolicy(name, 0.0, lambda _m, arr, c: Controller([OraclePolicy(arr, c)]), ram_tier=False,
                         learns=False)
    if name == "predictive":
        params = defaults.predictive_params(predictive or {})
        return SimPolicy(name, 0.0, lambda _m, _a, _c: defaults.controller(predictive=params))
    if name == "default":
        params = defaults.predictive_params(predictive or {})
        return SimPolicy(name, defaults.AUTO_KEEP_ALIVE_FLOOR,
                         lambda _m, _a, _c: defaults.controller(
                             predictive=params, schedules=[(schedule, tz)] if schedule else ()), ram_auto=True)
    if name == "schedule":
        windows = tuple(schedule) or defaults.EXAMPLE_SCHEDULE
        return SimPolicy(name, defaults.FIXED_KEEP_ALIVE,
                         lambda _m, _a, _c: defaults.controller(schedules=[(windows, tz)]))
    raise UnknownPolicy(f"unknown policy {name!r}; use {', '.join(policy_names())}")


def simulate(trace: Trace, policy: SimPolicy, cold_start: float, ram: RamTier | None = None,
             history: Trace | None = None, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Replay every model of `trace` under `policy`. `history`: earlier arrivals the controllers learn from
    before the trace starts (`policy.controller.learn`, as the server does from its request history); only
    the trace is judged. `progress(models done, models)` is told as it goes."""
    ram = ram if ram is not None and policy.ram_tier else RamTier()
    outcomes = []
    for done, (model, arr) in enumerate(trace.arrivals.items()):
        if progress is not None:
            progress(done, len(trace.arrivals))
        controller = policy.controller(model, arr, cold_start)
        # a controller may act one cold start before the trace begins, as it would on a running server
        begin = trace.start - (cold_start if controller is not None else 0.0)
        learned, idle_since = None, None
        past = history.arrivals.get(model) if history is not None and policy.learns else None
        if past is not None:
            past = past[past < begin]
        if past is not None and len(past):
            idle_since = float(past[-1])
            if controller is not None:
                state, rest = learn(controller, controller.initial_state(), model, past, begin, cold_start)
                learned = (state, rest, idle_since)
        outcomes.append(replay_model(model, arr, start=begin, end=trace.end, cold_start=cold_start,
                                     keep_alive=policy.keep_alive, controller=controller,
                                     ram_keep_alive=ram.keep_alive, ram_cold_start=ram.cold_start,
                                     learned=learned,
                                     ram_price_s=ram.price_per_s if policy.ram_auto and ram.cold_start else None,
                                     idle_since=idle_since))
    return summarize(outcomes, trace, ram.price_per_s)


def summarize(outcomes: list[ModelOutcome], trace: Trace, ram_price_per_s: float = 0.0) -> dict[str, Any]:
    """Per policy: warm requests, cold waits (all, and by the tier the start read), and cost: replica-seconds
    loaded (`cost_fraction`), seconds held in RAM at `ram_price_per_s`, and both (`total_cost_fraction`),
    over always-on (every model loaded all the time)."""
    requests = sum(o.requests for o in outcomes)
    cold = sum(o.cold for o in outcomes)
    waits = np.concatenate([o.waits for o in outcomes]) if outcomes else np.empty(0)
    on_ram = np.concatenate([o.waited_on_ram if o.waited_on_ram is not None else np.zeros(len(o.waits), dtype=bool)
                             for o in outcomes]) if outcomes else np.empty(0, dtype=bool)
    span = trace.end - trace.start
    always_on = len(outcomes) * span
    loaded = sum(o.loaded_s for o in outcomes)
    ram_s = sum(o.ram_s for o in outcomes)
    ram_cost = ram_s * ram_price_per_s
    starts: Counter = Counter()
    for o in outcomes:
        starts.update(o.starts)
    ram_starts = sum(o.ram_starts for o in outcomes)
    return {
        "requests": requests,
        "warm_fraction": (requests - cold) / requests if requests else math.nan,
        "cost_fraction": loaded / always_on if always_on else math.nan,
        "wait_p50_s": float(np.percentile(waits, 50)) if len(waits) else 0.0,
        "wait_p99_s": float(np.percentile(waits, 99)) if len(waits) else 0.0,
        "cold_requests": cold,
        "starts": dict(sorted(starts.items())),
        "loaded_replica_s": loaded,
        "models": len(outcomes),
        # the RAM tier (all zero when it is off)
        "ram_resident_s": ram_s,
        "ram_cost_replica_s": ram_cost,
        "ram_cost_fraction": ram_cost / always_on if always_on else math.nan,
        "total_cost_fraction": (loaded + ram_cost) / always_on if always_on else math.nan,
        "starts_from_ram": ram_starts,
        "starts_from_disk": sum(starts.values()) - ram_starts,
        "cold_from_ram": int(on_ram.sum()),
        "cold_from_disk": int(len(on_ram) - on_ram.sum()),
        **_percentiles("wait_disk", waits[~on_ram]),
        **_percentiles("wait_ram", waits[on_ram]),
        # the same per model: where the cold requests and the cost are (`simulate --per-model`)
        "per_model": {o.model: _per_model(o, ram_price_per_s, span) for o in outcomes},
    }


def _per_model(o: ModelOutcome, ram_price_per_s: float, span: float) -> dict[str, Any]:
    cost = o.loaded_s + o.ram_s * ram_price_per_s
    return {"requests": o.requests, "cold_requests": o.cold, "starts": sum(o.starts.values()),
            "starts_from_ram": o.ram_starts, "loaded_replica_s": o.loaded_s, "ram_resident_s": o.ram_s,
            "total_cost_replica_s": cost, "total_cost_fraction": cost / span if span else math.nan}


def _percentiles(prefix: str, waits: np.ndarray) -> dict[str, float | None]:
    """p50 and p99 of `waits`, None when there are none."""
    return {f"{prefix}_p{q}_s": float(np.percentile(waits, q)) if len(waits) else None for q in (50, 99)}


def oracle_summary(trace: Trace, cold_start: float) -> dict[str, Any]:
    """The oracle's report in closed form (what replaying `OraclePolicy` gives, faster)."""
    from warmstart.sim.oracle import oracle_cost

    outcomes = [ModelOutcome(m, len(a), 0, np.empty(0), oracle_cost(a, cold_start), Counter())
                for m, a in trace.arrivals.items()]
    return summarize(outcomes, trace)


def causal_bound(trace: Trace, cold_start: float, history: Trace | None = None) -> dict[str, Any]:
    """The fewest cold requests any policy that learns from history can have, short of keeping unseen models
    loaded: nothing is known about a model before its first request, so that request and those in the cold
    start it triggers wait. With a `history`, only models it never saw count."""
    seen = history.arrivals if history is not None else {}
    first = sum(int(np.searchsorted(arr, arr[0] + cold_start, side="left"))
                for model, arr in trace.arrivals.items() if not len(seen.get(model, ())))
    requests = trace.requests
    return {"first_burst_requests": first,
            "min_cold_fraction": first / requests if requests else math.nan,
            "max_warm_fraction": (requests - first) / requests if requests else math.nan}


def novel_silence_bound(trace: Trace, cold_start: float, history: Trace | None = None,
                        longer_than: float = 4 * 3600.0) -> dict[str, Any]:
    """Cold requests no policy that keeps a model loaded (or pre-warms it) only through silences it has seen,
    and never longer than `longer_than` beyond them, can avoid: the first burst of every model the history
    never saw, and every burst after a silence longer than `longer_than` and than any the model had before it
    (in the history or earlier in the trace; the silence before its first request in the trace counts from
    its last request in the history). Not a floor for every policy (one that keeps a model loaded for days
    on end avoids them): what of the cold requests nothing learned from the model's own gaps foresees."""
    seen = history.arrivals if history is not None else {}
    first = novel = 0
    for model, arr in trace.arrivals.items():
        past = seen.get(model, np.empty(0))
        burst = np.searchsorted(arr, arr + cold_start, side="left") - np.arange(len(arr))
        if not len(past):
            first += int(burst[0])
            gaps, ends = np.diff(arr), np.arange(1, len(arr))
            longest = 0.0
        else:
            gaps, ends = np.diff(np.concatenate([past[-1:], arr])), np.arange(len(arr))
            longest = float(np.diff(past).max()) if len(past) > 1 else 0.0
        before = np.maximum.accumulate(np.concatenate([[longest], gaps]))[:-1]  # longest gap before each
        novel += int(burst[ends[(gaps > before) & (gaps > longer_than)]].sum())
    requests = trace.requests
    return {"first_burst_requests": first, "novel_silence_requests": novel,
            "min_cold_fraction": (first + novel) / requests if requests else math.nan}


def in_sample_history(trace: Trace, history: Trace | None, only_unseen: bool = False) -> Trace:
    """Not a history a server can have: the judged arrivals themselves, moved back by the judged window's length
    in whole days (rounded up, so times of day stay put), as the history of every model
    (`only_unseen`: of the models `history` never saw; the others keep theirs). Replayed with it, a learning
    policy shows what its own structure reaches when the future repeats the past: the difference from the
    real history is what the judged days brought that the earlier ones did not show."""
    shift = max(1, math.ceil((trace.end - trace.start) / 86400.0)) * 86400.0
    seen = history.arrivals if history is not None else {}
    moved = {model: arr - shift for model, arr in trace.arrivals.items()
             if not only_unseen or not len(seen.get(model, ()))}
    if not only_unseen:
        return Trace(f"{trace.name} (in sample)", moved, trace.start - shift, trace.end - shift)
    start = min(trace.start - shift, history.start) if history is not None else trace.start - shift
    return Trace(f"{trace.name} (in sample, unseen models)", {**seen, **moved}, start, trace.start)


HINDSIGHT_KEEPALIVES = (0, 30, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200,
                        10800, 14400, 21600, 43200, 86400)


def hindsight_keepalive(trace: Trace, cold_start: float, history: Trace | None = None,
                        exchange_rates: Sequence[float] = (5, 10, 20, 40, 80, 160, 320, 640)) -> list[dict[str, Any]]:
    """Not a policy: for each exchange rate of replica-seconds per cold request, the fixed keep-alive per model
    chosen knowing the judged days in advance (minimising loaded seconds + rate x cold requests), replayed.
    What a keep-alive per model could at best reach, to set the policies against (`sim.frontier.judge`).
    With a `history`, each model starts with the replica its last request there left loaded, as in `simulate`."""
    per_model = {}
    for model, arr in trace.arrivals.items():
        gaps = np.diff(arr)
        burst = (np.searchsorted(arr, arr[1:] + cold_start) - np.arange(1, len(arr))).astype(np.float64)
        per_model[model] = (gaps, burst)
    results = []
    for rate in exchange_rates:
        outcomes = []
        for model, arr in trace.arrivals.items():
            gaps, burst = per_model[model]

            def score(ka: float, gaps: np.ndarray = gaps, burst: np.ndarray = burst, rate: float = rate) -> float:
                covered = gaps <= ka
                return float(np.where(covered, gaps, ka + cold_start).sum() + rate * burst[~covered].sum())

            ka = min(HINDSIGHT_KEEPALIVES, key=score)
            past = history.arrivals.get(model, np.empty(0)) if history is not None else np.empty(0)
            past = past[past < trace.start]
            outcomes.append(replay_model(model, arr, start=trace.start, end=trace.end, cold_start=cold_start,
                                         keep_alive=float(ka), idle_since=float(past[-1]) if len(past) else None))
        result = summarize(outcomes, trace)
        result["exchange_rate"] = rate
        results.append(result)
    return results
