"""The tier choice runs live as the simulator predicts: a model with keep_alive "auto" (so ram_keep_alive
"auto") on the live `Pool`, `WarmingRunner` and a real `ModelStore` holding real weights in a real RAM tier
(tmpfs), on the virtual clock, and the same trace through `simulate` and its replay: the same requests
cold, the same starts for the same reasons, the same starts read from RAM, the same replica-seconds.

The engine is the SimulatedEngine, whose start takes 1 s from disk and 0.526 s from the RAM tier's copy
(1/1.9, the speed-up measured in docs/store.md, to the millisecond: what the runner assumes before it has
measured a start from RAM, and what it measures after). The store's file work runs inline (not in a
worker thread), so the virtual clock never moves while a copy is under way: the replay's unload is
instantaneous too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.scenario.test_pool_replay import Recorder
from warmstart.clock import VirtualClock
from warmstart.config import Config
from warmstart.config_loader import parse_config
from warmstart.engines.simulated import SimulatedEngine
from warmstart.policy.tiers import MEASURED_RAM_SPEEDUP
from warmstart.pool.pool import Pool
from warmstart.sim.replay import replay_model
from warmstart.sim.run import RamTier, SimPolicy, simulate
from warmstart.sim.traces import Trace
from warmstart.store import model_store
from warmstart.store.model_store import ModelStore
from warmstart.telemetry.metrics import Metrics
from warmstart.warming.runner import WarmingRunner, build_controller

COLD = 1.0
RAM_COLD = round(COLD / MEASURED_RAM_SPEEDUP, 3)  # what the runner assumes, to the millisecond: 0.526 s
WEIGHTS = 1 << 20
RAM_PRICE = 51.2  # per GiB-hour: 1 MiB in RAM costs 0.05 loaded replica-seconds a second


@pytest.fixture
def trace() -> Trace:
    """Bursts of 6 requests, half a second apart, after silences of 20 s to 40 min (log-uniform)."""
    rng = np.random.default_rng(5)
    t, times = 1.7e9, []
    for gap in np.exp(rng.uniform(np.log(20), np.log(2400), 80)):
        t += float(np.round(gap))
        times += [t + 0.5 * i for i in range(6)]
    arrivals = np.array(times)
    return Trace("bursts", {"m": arrivals}, float(arrivals[0]), float(arrivals[-1]) + 600)


@pytest.fixture
def config(tmp_path: Path) -> Any:
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF" + os.urandom(WEIGHTS - 4))
    tmpfs = Path("/dev/shm") / f"ws-tier-replay-{os.getpid()}"
    raw = {"server": {"data_dir": str(tmp_path / "data"), "queue_deadline": "1h", "queue_size": 100_000},
           "store": {"ram_method": "tmpfs", "tmpfs_dir": str(tmpfs), "ram_price": RAM_PRICE,
                     "verify_on_start": False},
           "models": [{"name": "m", "engine": "llamacpp", "path": str(weights), "keep_alive": "auto",
                       "max_concurrency": 64}],
           "warming": {"cold_start_estimate": COLD, "settings": {"min_keep_alive": 0, "review": 61}}}
    yield parse_config(raw, base_dir=tmp_path)
    shutil.rmtree(tmpfs, ignore_errors=True)


async def serve_live(config: Config, trace: Trace, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    async def inline(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    monkeypatch.setattr(model_store.asyncio, "to_thread", inline)
    [(name, arrivals)] = trace.arrivals.items()
    clock = VirtualClock(start=trace.start - COLD)
    metrics, audit = Metrics(), Recorder()
    tmpfs = config.store.tmpfs_dir
    engine = SimulatedEngine(clock, (("load", COLD),), ram_phases=(("load", RAM_COLD),), ram_dir=tmpfs)
    pool = Pool(config, {"llamacpp": engine}, clock, metrics, audit)
    store = ModelStore(config, clock, metrics, live_replicas=pool.live_replicas)  # as serve.py builds it
    pool.attach_store(store)
    await pool.capabilities(name)
    runner = WarmingRunner(config, pool, clock, metrics, history=None)
    await runner.start()
    cold: dict[float, bool] = {}

    async def request(t: float) -> None:
        lease = pool.try_acquire(name) or await pool.acquire(name)
        cold[t] = lease.cold
        lease.release()

    tasks = []
    for t in arrivals.tolist():
        await clock.advance(t - clock.now())
        tasks.append(asyncio.get_running_loop().create_task(request(t)))
        await clock.settle()
    await clock.advance(trace.end - clock.now())
    await asyncio.gather(*tasks)
    await runner.stop()
    loaded = sum(seconds for event, _, seconds in audit.events if event == "unload")
    for replica in pool.replicas(name):
        loaded += trace.end - replica.created_at
    starts = [(r.created_at, r.trigger) for event, r, _ in audit.events if event == "start"]
    tiers = [r.tier for event, r, _ in audit.events if event == "start"]  # the pool keeps only its last 50
    await pool.shutdown()
    store.tier.close()
    return {"cold_times": [t for t in arrivals.tolist() if cold[t]], "starts": starts, "loaded_s": loaded,
            "ram_starts": tiers.count("ram")}


async def test_the_tiers_the_controller_picks_run_live_as_the_simulator_predicts(config, trace, monkeypatch):
    [model] = config.models
    assert model.keep_alive_auto and model.ram_keep_alive_auto
    price = RAM_PRICE * WEIGHTS / (1 << 30)
    policy = SimPolicy("server", 0.0, lambda _m, _a, _c: build_controller(config, model), ram_auto=True)
    report = simulate(trace, policy, COLD, RamTier(0.0, RAM_COLD, price))
    arrivals = trace.arrivals["m"]
    out = replay_model("m", arrivals, start=trace.start - COLD, end=trace.end, cold_start=COLD, keep_alive=0.0,
                       controller=policy.controller("m", arrivals, COLD), log_starts=True,
                       ram_cold_start=RAM_COLD, ram_price_s=price)
    live = await serve_live(config, trace, monkeypatch)
    assert live["cold_times"] == out.cold_times.tolist()
    assert live["starts"] == out.start_log
    assert live["ram_starts"] == out.ram_starts == report["starts_from_ram"]
    assert live["loaded_s"] == pytest.approx(out.loaded_s, rel=1e-12)
    # the choice is not all or nothing: some wake-ups read RAM, some disk
    assert 5 < out.ram_starts < len(out.start_log) - 5
    assert report["ram_resident_s"] > 0 and report["cold_from_ram"] > 0
