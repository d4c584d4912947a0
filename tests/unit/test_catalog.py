"""The catalog: models added to the store are served beside the configured ones; a reload applies what a
running server can take, reports what needs a restart, and refuses a config that does not load."""

from __future__ import annotations

import dataclasses

import pytest

from warmstart.catalog import Catalog, in_force, restart_needed
from warmstart.clock import VirtualClock
from warmstart.config_loader import parse_config
from warmstart.engines.simulated import SimulatedEngine
from warmstart.errors import ConfigError
from warmstart.pool.changes import diff_models
from warmstart.pool.pool import Pool
from warmstart.store.manifest import ManifestStore
from warmstart.telemetry.metrics import Metrics


def config(tmp_path, *, store=None, server=None, models=None):
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF" + bytes(60))
    raw = {"server": {"data_dir": str(tmp_path / "data"), **(server or {})}, "store": store or {},
           "defaults": {"keep_alive": "7m"},
           "models": models if models is not None else [{"name": "a", "path": str(weights)}]}
    return parse_config(raw, base_dir=tmp_path)


def catalog(tmp_path, cfg, load=None):
    engine = SimulatedEngine(VirtualClock())
    pool = Pool(cfg, {"llamacpp": engine, "vllm": engine, "command": engine}, VirtualClock(), Metrics())
    return Catalog(cfg, pool, load), pool


async def test_models_added_to_the_store_are_served_with_the_defaults_and_the_config_wins(tmp_path):
    cfg = config(tmp_path, models=[{"name": "a", "path": str(tmp_path / "m.gguf")},
                                   {"name": "renamed", "path": "store:b", "engine": "llamacpp"}])
    cat, pool = catalog(tmp_path, cfg)
    store = ManifestStore(cfg.server.data_dir)
    assert not cat.refresh()
    for name in ("a", "b", "c"):
        store.add(tmp_path / "m.gguf", name=name)
    store.check("recorded", tmp_path / "m.gguf", engine="llamacpp", source="x")  # a first start's record: unpinned
    assert cat.refresh()
    # a is configured, b is served as "renamed", recorded is no added model
    assert pool.model_names() == ("a", "renamed", "c")
    c = pool.configs()[2]
    assert (c.engine, c.path, c.keep_alive) == ("llamacpp", "store:c", 420.0)
    assert not cat.refresh()  # read again (the folder changed just now) but nothing new
    store.remove("c")
    cat._seen = None
    assert cat.refresh() and pool.model_names() == ("a", "renamed")


async def test_store_models_are_not_served_when_serve_added_is_off(tmp_path):
    cfg = config(tmp_path, store={"serve_added": False})
    cat, pool = catalog(tmp_path, cfg)
    ManifestStore(cfg.server.data_dir).add(tmp_path / "m.gguf", name="b")
    assert not cat.refresh() and pool.model_names() == ("a",)


def test_what_needs_a_restart_is_named_and_kept_as_it_is(tmp_path):
    old = config(tmp_path)
    new = config(tmp_path, server={"port": 9001, "queue_size": 3},
                 models=[{"name": "a", "path": str(tmp_path / "m.gguf"), "keep_alive": "1m"}])
    assert restart_needed(old, new) == ("server.port", "server.queue_size")
    applied = in_force(old, new)
    assert applied.server == old.server and applied.models == new.models
    changes = diff_models(old.models, applied.models)
    assert changes.to_dict()["updated"] == {"a": ["keep_alive"]} and "keep_alive changed" in changes.summary()


async def test_a_config_that_does_not_load_is_refused_and_the_one_in_force_stays(tmp_path):
    cfg = config(tmp_path)

    def broken():
        raise ConfigError("models[0].engine", "nope", "must be one of llamacpp, vllm, command")

    cat, pool = catalog(tmp_path, cfg, broken)
    with pytest.raises(ConfigError, match=r"models\[0\]\.engine"):
        await cat.reload()
    assert cat.config is cfg and pool.model_names() == ("a",)

    def unreadable():
        raise PermissionError(13, "Permission denied")

    cat._load = unreadable
    with pytest.raises(ConfigError, match="cannot be read: Permission denied"):
        await cat.reload()
    assert cat.config is cfg

    new = dataclasses.replace(config(tmp_path, models=[{"name": "z", "path": str(tmp_path / "m.gguf")}]))
    cat._load = lambda: new
    report = await cat.reload()
    assert report.to_dict()["models"]["added"] == ["z"] and report.to_dict()["models"]["removed"] == ["a"]
    assert pool.model_names() == ("z",) and report.needs_restart == ()
    await pool.shutdown()
