"""The server's start: the models the warming plan wants warm begin starting before the gateway exists,
so an engine loads while the web framework is imported (warmstart.serve)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from warmstart.clock import VirtualClock
from warmstart.config import Config
from warmstart.config_loader import parse_config
from warmstart.engines.simulated import SimulatedEngine
from warmstart.pool.pool import Pool
from warmstart.pool.states import ReplicaState
from warmstart.telemetry.metrics import Metrics
from warmstart.warming.runner import WarmingRunner

# what only the gateway needs: none of it may stand between `warmstart serve` and its first engine spawn
GATEWAY_ONLY = ("fastapi", "starlette", "pydantic", "aiohttp", "uvicorn")


def scheduled(tmp_path: Path) -> Config:
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    return parse_config({"server": {"data_dir": str(tmp_path / "data")},
                         "models": [{"name": "m", "engine": "llamacpp", "path": str(weights), "keep_alive": "-1"}],
                         "warming": {"schedule": [{"model": "m", "when": ["00:00-24:00 daily"]}]}}, base_dir=tmp_path)


def test_the_core_a_model_starts_from_imports_no_web_framework(tmp_path: Path) -> None:
    config = tmp_path / "w.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n'
                      '[[warming.schedule]]\nmodel = "smollm2-135m-instruct"\nwhen = ["00:00-24:00 daily"]\n')
    code = ("import sys, pathlib, warmstart.cli; from warmstart.config_loader import load_config; "
            "from warmstart.serve import build_core; "
            f"core = build_core(load_config(pathlib.Path({str(config)!r}), env={{}}, flags={{}})); "
            "assert core.warming is not None; "
            f"print(sorted(m for m in {GATEWAY_ONLY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_a_scheduled_models_start_and_the_gateway_import_no_numpy(tmp_path: Path) -> None:
    """numpy costs 0.1 s of CPU before the first engine spawns (docs/image.md): a server whose model follows a
    schedule (warmstart's image) starts it, with its request history opened, and builds its gateway without it."""
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    code = f"""
import asyncio, sys, pathlib
import warmstart.cli
from warmstart.clock import VirtualClock
from warmstart.config_loader import parse_config
from warmstart.engines.simulated import SimulatedEngine
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics
from warmstart.warming.runner import new_runner

config = parse_config({{"server": {{"data_dir": {str(tmp_path / "data")!r}}},
                        "models": [{{"name": "m", "engine": "llamacpp", "path": {str(weights)!r}, "keep_alive": "-1"}}],
                        "warming": {{"schedule": [{{"model": "m", "when": ["00:00-24:00 daily"]}}]}}}},
                       base_dir=pathlib.Path({str(tmp_path)!r}))

async def main():
    clock = VirtualClock(start=1_000_000.0)
    pool = Pool(config, {{"llamacpp": SimulatedEngine(clock, (("load", 1.0),))}}, clock, Metrics())
    runner = new_runner(config, pool, clock, Metrics())
    await runner.start()
    for _ in range(500):  # the start's file check runs in a thread: real time passes too
        await clock.advance(1.0)
        await clock.settle()
        if [r.state.name for r in pool.replicas("m")] == ["WARM"]:
            break
        await asyncio.sleep(0.01)
    assert [r.state.name for r in pool.replicas("m")] == ["WARM"]
    runner.on_arrival("m", clock.wall())
    runner.step()
    import warmstart.gateway.app
    await runner.stop()
    await pool.shutdown()

asyncio.run(main())
print("numpy" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


async def test_the_runner_started_early_starts_the_model_once(tmp_path: Path) -> None:
    config = scheduled(tmp_path)
    clock = VirtualClock(start=1_000_000.0)
    pool = Pool(config, {"llamacpp": SimulatedEngine(clock, (("load", 5.0),))}, clock, Metrics())
    await pool.capabilities("m")  # the model's file inspected, as the server's prepare does
    runner = WarmingRunner(config, pool, clock, Metrics(), history=None)
    await runner.start()  # as `warmstart serve` does, before the gateway is imported
    await clock.settle()
    [replica] = pool.replicas("m")
    assert replica.trigger == "schedule"
    task = runner._task
    await runner.start()  # the gateway's lifespan asks again: nothing more happens
    await clock.advance(10.0)
    await clock.settle()
    [after] = pool.replicas("m")
    assert runner._task is task and after.id == replica.id and after.state is ReplicaState.WARM
    await runner.stop()
    await pool.shutdown()
