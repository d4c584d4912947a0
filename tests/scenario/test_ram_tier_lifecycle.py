"""The RAM tier's lifecycle on virtual time: demoted on keep-alive, held while loaded, released when its
RAM keep-alive runs out; seconds per tier counted. Real files and a real tier; the clock is virtual."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from warmstart.clock import VirtualClock
from warmstart.config_loader import parse_config
from warmstart.store.model_store import ModelStore
from warmstart.telemetry.metrics import Metrics


async def _settle(done, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("did not happen in time")


@pytest.fixture
def setup(tmp_path):
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF" + os.urandom(1 << 20))
    config = parse_config({
        "server": {"data_dir": str(tmp_path / "data")},
        "store": {"tmpfs_dir": str(Path("/dev/shm") / f"ws-scenario-{os.getpid()}"), "ram_price": 3600.0},
        "models": [{"name": "m", "engine": "llamacpp", "path": str(weights), "ram_keep_alive": 60}],
    }, base_dir=tmp_path)
    live = {"m": 0}
    clock = VirtualClock()
    metrics = Metrics()
    store = ModelStore(config, clock, metrics, live_replicas=live.__getitem__)
    yield store, config.models[0], weights, live, clock
    store.tier.close()
    shutil.rmtree(store.tier.tmpfs_dir, ignore_errors=True)


async def test_demote_hold_while_loaded_then_expire(setup):
    store, model, weights, live, clock = setup
    assert await store.before_start(model, weights) == store.tier.path_for("m", weights)  # manifest made
    live["m"] = 1
    await clock.advance(10)
    store.add_loaded_seconds("m", 10)

    await store.before_stop(model, weights, "keep-alive", last=True)
    live["m"] = 0
    view = store.view("m")
    assert view["tier"] == "ram" and view["ram"]["until_s"] == 60
    await clock.advance(30)
    store.account()
    assert store.view("m")["seconds"] == {"loaded": 10, "ram": 30}

    store.replica_starting("m")  # a request: promoted, loaded from RAM
    live["m"] = 1
    served = await store.before_start(model, weights)
    assert served == store.tier.path_for("m", weights)
    await clock.advance(40)  # the RAM keep-alive runs out while loaded: held on
    assert store.view("m")["tier"] == "loaded" and store.tier.resident("m") is not None

    store.add_loaded_seconds("m", 40)
    await store.before_stop(model, weights, "keep-alive", last=True)  # demoted again: 60 s from now
    live["m"] = 0
    await clock.advance(59)
    assert store.tier.resident("m") is not None
    await clock.advance(2)
    await _settle(lambda: store.tier.resident("m") is None)  # the release runs in a worker thread
    assert store.view("m")["tier"] == "disk"
    seconds = store.view("m")["seconds"]["ram"]
    assert store.view("m")["seconds"]["loaded"] == 50
    assert 30 + 60 <= seconds <= 30 + 61
    # 3600 per GiB-hour for seconds x 1 MiB: the cost follows the bytes held
    assert store.view("m")["ram_cost"] == pytest.approx(seconds * (weights.stat().st_size / 2**30), rel=1e-3)


async def test_a_manual_unload_or_a_model_without_ram_keep_alive_goes_to_disk(setup):
    store, model, weights, _live, _clock = setup
    await store.before_stop(model, weights, "manual", last=True)
    assert store.tier.resident("m") is None
    await store.before_stop(model, weights, "keep-alive", last=False)  # others still loaded
    assert store.tier.resident("m") is None
    await store.before_stop(model, weights, "keep-alive", last=True)
    assert store.tier.resident("m") is not None
    assert await store.evict("m", "manual unload") and store.view("m")["tier"] == "disk"


async def test_a_hold_by_hand_outlasts_a_shorter_ram_keep_alive_and_counts_its_ram_seconds(setup):
    store, model, weights, live, clock = setup  # the model's own ram_keep_alive is 60 s
    await store.hold(model, weights, 300)
    view = store.view("m")
    assert view["tier"] == "ram" and view["held_by_hand"] and view["ram"]["until_s"] == 300
    await clock.advance(20)
    store.replica_starting("m")  # a request: loaded from RAM
    live["m"] = 1
    await clock.advance(30)
    store.add_loaded_seconds("m", 30)
    await store.before_stop(model, weights, "keep-alive", last=True)  # 60 s would end at 110: the hold wins
    live["m"] = 0
    assert store.view("m")["ram"]["until_s"] == 250
    await clock.advance(249)
    assert store.tier.resident("m") is not None and store.view("m")["held_by_hand"]
    await clock.advance(2)
    await _settle(lambda: store.tier.resident("m") is None)
    view = store.view("m")
    assert view["tier"] == "disk" and not view["held_by_hand"]
    assert view["seconds"]["loaded"] == 30 and 20 + 250 <= view["seconds"]["ram"] <= 20 + 251


async def test_a_hold_by_hand_of_zero_lets_the_weights_go_and_a_manual_unload_ends_a_hold(setup):
    store, model, weights, _live, _clock = setup
    await store.hold(model, weights, 300)
    await store.hold(model, weights, 0)
    assert store.tier.resident("m") is None and store.view("m")["tier"] == "disk"
    await store.hold(model, weights, 300)
    await store.before_stop(model, weights, "manual", last=True)
    assert store.tier.resident("m") is None and not store.view("m")["held_by_hand"]
