"""The models served changed while the pool runs (a reload, the store), on virtual time with the SimulatedEngine
(no process runs on a virtual clock; tests/integration/test_reload.py does the same with llama.cpp)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from warmstart.clock import VirtualClock
from warmstart.config_loader import parse_config
from warmstart.engines.simulated import SimulatedEngine
from warmstart.errors import ModelNotFound, Unavailable
from warmstart.pool.changes import diff_models
from warmstart.pool.pool import Pool
from warmstart.pool.states import ReplicaState as S
from warmstart.telemetry.metrics import Metrics

START = (("load", 2.0),)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    return path


def configs(model_file, *models):
    raw = {"server": {"data_dir": str(model_file.parent)},
           "models": [{"engine": "llamacpp", "path": str(model_file), "max_concurrency": 1, **m} for m in models]}
    return parse_config(raw, base_dir=model_file.parent)


async def make_pool(model_file, *models):
    clock = VirtualClock()
    engine = SimulatedEngine(clock, START)
    pool = Pool(configs(model_file, *models), {"llamacpp": engine}, clock, Metrics())
    return pool, clock, engine


async def cold_lease(pool, clock, name):
    await pool.capabilities(name)  # resolved in a thread, on real time
    task = asyncio.get_running_loop().create_task(pool.acquire(name))
    await clock.advance(2.5)
    return task.result()


async def test_a_removed_model_refuses_new_and_held_requests_finishes_its_lease_then_unloads(model_file):
    pool, clock, engine = await make_pool(model_file, {"name": "a", "keep_alive": "10m"})
    lease = await cold_lease(pool, clock, "a")
    held = asyncio.get_running_loop().create_task(pool.acquire("a"))  # one slot: this one waits
    await clock.settle()
    pool.apply(diff_models(pool.configs(), ()))
    await clock.settle()
    with pytest.raises(ModelNotFound):
        await pool.acquire("a")
    with pytest.raises(Unavailable, match="removed"):
        await held
    proc = engine.started[0]
    assert pool.draining() == ("a",) and proc.returncode is None  # the request in flight is served on
    lease.release()
    await clock.advance(0.1)
    assert proc.stopped_by_request and pool.draining() == ()
    await pool.shutdown()


async def test_a_new_keep_alive_applies_to_an_idle_replica_at_once(model_file):
    pool, clock, engine = await make_pool(model_file, {"name": "a", "keep_alive": "10m"})
    (await cold_lease(pool, clock, "a")).release()
    await clock.advance(30)
    assert pool.state_of("a") is S.WARM
    new = dataclasses.replace(pool.configs()[0], keep_alive=60.0)
    changes = diff_models(pool.configs(), (new,))
    assert [m.name for m in changes.updated] == ["a"] and not changes.restarted
    pool.apply(changes)
    await clock.advance(29)
    assert pool.state_of("a") is S.WARM
    await clock.advance(2)  # 60 s after its idle clock started, not after the change
    assert pool.state_of("a") is S.COLD and engine.started[0].stopped_by_request
    await pool.shutdown()


async def test_new_engine_settings_drain_the_old_replica_and_the_next_start_uses_them(model_file):
    pool, clock, engine = await make_pool(model_file, {"name": "a", "keep_alive": "10m"})
    lease = await cold_lease(pool, clock, "a")
    new = dataclasses.replace(pool.configs()[0], options={"n_ctx": 1024})
    pool.apply(diff_models(pool.configs(), (new,)))
    assert pool.state_of("a") is S.COLD  # the new entry has no replica; the old one serves its lease
    second = await cold_lease(pool, clock, "a")
    assert len(engine.started) == 2 and second.replica is not lease.replica
    lease.release()
    await clock.advance(0.1)
    assert engine.started[0].stopped_by_request and not engine.started[1].stopped_by_request
    second.release()
    assert pool.draining() == ()
    await pool.shutdown()


async def test_an_added_model_is_served(model_file):
    pool, clock, _engine = await make_pool(model_file, {"name": "a"})
    added = configs(model_file, {"name": "a"}, {"name": "b"}).models
    pool.apply(diff_models(pool.configs(), added))
    assert pool.model_names() == ("a", "b")
    (await cold_lease(pool, clock, "b")).release()
    assert pool.state_of("b") is S.WARM
    await pool.shutdown()
