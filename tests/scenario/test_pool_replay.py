"""What the simulator predicts is what the server does: one slice of a real trace (the Azure 2023
conversation trace) goes through the live `Pool` and `WarmingRunner` on the virtual clock, and through
`simulate` and its replay; both serve the same requests warm, start replicas at the same moments for the
same reasons, and keep them loaded the same replica-seconds, to the last bit.

Both carry out the same rules (warmstart.pool.rules) and the same warming controller. The engine is the
SimulatedEngine (no process runs on a virtual clock); requests take no time, as the replay assumes, so the
test releases each lease the moment it is given. The virtual clock reads the trace's own seconds
(now() == wall()), and the cold start is a whole number of seconds, so no time is rounded on one side and
not on the other.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from warmstart.clock import VirtualClock
from warmstart.config import Config
from warmstart.config_loader import parse_config
from warmstart.engines.simulated import SimulatedEngine
from warmstart.pool.pool import Pool
from warmstart.pool.states import ReplicaState
from warmstart.sim.replay import replay_model
from warmstart.sim.run import SimPolicy, simulate
from warmstart.sim.traces import Trace, read_azure
from warmstart.telemetry.metrics import Metrics
from warmstart.warming.runner import WarmingRunner, build_controller

AZURE = Path(__file__).resolve().parents[1] / "data" / "azure-2023" / "azure2023_conv.csv"
COLD = 1.0  # seconds a start takes: a whole number, so trace time + COLD - trace time == COLD exactly
SLICE = 600.0  # the first ten minutes: 2,867 requests


@pytest.fixture(scope="module")
def trace() -> Trace:
    full = read_azure(AZURE)
    [(name, arrivals)] = full.arrivals.items()
    end = float(arrivals[0]) + SLICE
    return Trace("azure-2023-conv-10min", {name: arrivals[arrivals < end]}, float(arrivals[0]), end)


class Recorder:
    """The audit sink: every start and unload, in the order the pool reports them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, float | None]] = []

    async def record(self, event: str, *, replica: Any, outcome: str, seconds: float | None = None,
                     **_: Any) -> None:
        if outcome == "ok":
            self.events.append((event, replica, seconds))


def server_config(tmp_path: Path, name: str, keep_alive: Any, **warming: Any) -> Config:
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    raw = {"server": {"data_dir": str(tmp_path), "queue_deadline": "1h", "queue_size": 100_000},
           # a batch of slots, so every request held during a start is served the moment it ends
           "models": [{"name": name, "engine": "llamacpp", "path": str(weights), "keep_alive": keep_alive,
                       "max_concurrency": 64}],
           "warming": {"cold_start_estimate": COLD, **warming}}
    return parse_config(raw, base_dir=tmp_path)


async def serve_live(config: Config, trace: Trace, begin: float) -> dict[str, Any]:
    """The trace through the live pool and warming runner; what the replay reports, read off the server."""
    [(name, arrivals)] = trace.arrivals.items()
    clock = VirtualClock(start=begin)
    metrics, audit = Metrics(), Recorder()
    pool = Pool(config, {"llamacpp": SimulatedEngine(clock, (("load", COLD),))}, clock, metrics, audit)
    await pool.capabilities(name)
    runner = WarmingRunner(config, pool, clock, metrics, history=None)
    await runner.start()
    cold: dict[float, bool] = {}

    async def request(t: float) -> None:  # the relay: the warm fast path, else held
        lease = pool.try_acquire(name) or await pool.acquire(name)
        cold[t] = lease.cold
        lease.release()  # requests take no time

    tasks = []
    for t in arrivals.tolist():
        await clock.advance(t - clock.now())
        tasks.append(asyncio.get_running_loop().create_task(request(t)))
        await clock.settle()
    await clock.advance(trace.end - clock.now())
    for t, task in zip(arrivals.tolist(), tasks, strict=True):
        if task.done():
            task.result()
        else:  # held at the end of the trace, for a start still under way: cold, as the replay counts it
            cold[t] = True
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.stop()
    # replica-seconds as the replay sums them: each unloaded replica's life in unload order, then the one
    # still loaded at the end of the trace
    loaded = 0.0
    for event, _replica, seconds in audit.events:
        if event == "unload":
            loaded += seconds
    starts = [(r.created_at, r.trigger) for event, r, _ in audit.events if event == "start"]
    for replica in pool.replicas(name):
        loaded += trace.end - replica.created_at
        if replica.state is ReplicaState.STARTING:  # audited once it is warm, after the trace
            starts.append((replica.created_at, replica.trigger))
    pool.account_all()
    metered = metrics.replica_loaded_seconds.labels(name)._value.get()
    await pool.shutdown()
    return {"cold_times": [t for t in arrivals.tolist() if cold[t]],
            "starts": starts,
            "loaded_s": loaded, "metered_s": metered}


def replay(config: Config, trace: Trace, controlled: bool) -> tuple[dict[str, Any], Any]:
    """The trace through `simulate` and `replay_model`, set up as the server's config says."""
    [(name, arrivals)] = trace.arrivals.items()
    [model] = config.models
    keep_alive = model.keep_alive
    if controlled:
        from warmstart.policy.defaults import AUTO_KEEP_ALIVE_FLOOR

        keep_alive = AUTO_KEEP_ALIVE_FLOOR if model.keep_alive_auto else model.keep_alive
    policy = SimPolicy("server", keep_alive,
                       (lambda _m, _a, _c: build_controller(config, model)) if controlled else (lambda *_: None),
                       ram_tier=False)
    report = simulate(trace, policy, COLD)
    begin = trace.start - (COLD if controlled else 0.0)
    out = replay_model(name, arrivals, start=begin, end=trace.end, cold_start=COLD, keep_alive=keep_alive,
                       controller=policy.controller(name, arrivals, COLD), log_starts=True)
    return report, out


def same(live: dict[str, Any], report: dict[str, Any], out: Any, trace: Trace) -> None:
    assert live["cold_times"] == out.cold_times.tolist()  # request by request
    assert live["starts"] == out.start_log
    assert live["loaded_s"] == out.loaded_s  # to the last bit
    assert live["metered_s"] == pytest.approx(out.loaded_s, rel=1e-12)  # the server's own meter
    requests = trace.requests
    assert report["cold_requests"] == len(live["cold_times"])
    assert report["warm_fraction"] == (requests - len(live["cold_times"])) / requests
    assert report["loaded_replica_s"] == live["loaded_s"]


async def test_a_fixed_keep_alive_serves_a_real_trace_as_the_simulator_predicts(tmp_path, trace):
    [name] = trace.arrivals
    config = server_config(tmp_path, name, 0.5, predictive=False)
    report, out = replay(config, trace, controlled=False)
    live = await serve_live(config, trace, trace.start)
    same(live, report, out, trace)
    # the slice is worth comparing: hundreds of starts and unloads, most requests warm
    assert len(out.start_log) > 100 and 100 < out.cold < 0.5 * trace.requests


async def test_a_schedule_applied_by_the_warming_runner_serves_a_real_trace_as_the_simulator_predicts(
        tmp_path, trace):
    """keep-alive 0: the model is cold whenever no request holds it, so the schedule's start comes from the
    runner, at the moment its span begins (18:16:54: one cold start and the 5 s tick ahead of 18:17), off
    the tick, as the replay applies it; a tick later a request would have started the model instead."""
    [name] = trace.arrivals
    config = server_config(tmp_path, name, 0, predictive=False, schedule=[{"model": name, "when": "18:17 for 1m"}])
    report, out = replay(config, trace, controlled=True)
    live = await serve_live(config, trace, trace.start - COLD)
    same(live, report, out, trace)
    at = math.floor(trace.start / 86400) * 86400 + 18 * 3600 + 17 * 60  # 18:17 UTC on the trace's day
    assert [(t, trigger) for t, trigger in live["starts"] if trigger != "request"] == [(at - 6.0, "schedule")]
    arrivals = trace.arrivals[name]
    in_window = arrivals[(arrivals >= at) & (arrivals < at + 60)]
    assert len(in_window) > 200 and not set(in_window.tolist()) & set(live["cold_times"])


async def test_the_predictive_policy_applied_by_the_warming_runner_serves_a_real_trace_as_the_simulator_predicts(
        tmp_path, trace):
    """keep_alive "auto": the predictive policy picks the keep-alive, re-planning every 61 s (off the
    runner's 5 s tick), and the runner hands the pool its warm-until."""
    [name] = trace.arrivals
    config = server_config(tmp_path, name, "auto",
                           settings={"fallback_keep_alive": 0.5, "min_keep_alive": 0, "horizon": 120, "review": 61})
    report, out = replay(config, trace, controlled=True)
    live = await serve_live(config, trace, trace.start - COLD)
    same(live, report, out, trace)
    triggers = [trigger for _, trigger in live["starts"]]
    assert triggers.count("request") > 20 and "keep-alive" in triggers  # one start by the warm-until
