"""A llama.cpp start runs no warm-up unless the model sets one, from the RAM tier and from disk alike:
llama-server maps the file with MAP_POPULATE and decodes two tokens before it listens anyway (its context
probe), so the warm-up would only repeat a forward pass over every weight. A model that sets `warmup` gets what
it sets. Real engines on SmolLM2: the xllamacpp worker, and a pre-started router."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from pathlib import Path
from types import MappingProxyType

import pytest

from tests.integration.test_audit_server import smol_file
from tests.integration.test_llamacpp_binary import _PROBLEM, BINARY

pytestmark = pytest.mark.integration
WARMING = b"warming up the model"


def _config(path: Path, name: str = "smol", **options):
    from warmstart.config import ModelConfig

    return ModelConfig(name=name, engine="llamacpp", path=str(path),
                       options=MappingProxyType({"n_ctx": 512, **options}))


async def _start_log(engine, cfg, path: Path, replica: str, log: Path) -> tuple[bytes, dict[str, float]]:
    """The lines a start wrote to `log`, and its phases; the replica is stopped after."""
    from warmstart.engines.base import StartReport

    offset = log.stat().st_size if log.is_file() else 0
    report = StartReport()
    proc = await engine.start(cfg, path, report, replica)
    try:
        return log.read_bytes()[offset:], dict(report.phases)
    finally:
        await proc.stop(10)


async def test_the_worker_skips_warm_up_from_the_ram_tier_and_from_disk_unless_set(tmp_path):
    from warmstart.engines.llamacpp import LlamaCppEngine
    from warmstart.engines.process import replica_log_path
    from warmstart.store.pagecache import evict
    from warmstart.store.tiers import RamTier

    on_disk = tmp_path / "smol.gguf"  # a copy of our own: no other process maps it, so its pages can be dropped
    shutil.copyfile(smol_file(), on_disk)
    engine = LlamaCppEngine(tmp_path / "data")
    log = functools.partial(replica_log_path, engine.data_dir)
    tier = RamTier(method="tmpfs", tmpfs_dir=Path("/dev/shm") / f"ws-test-warmup-{os.getpid()}")
    try:
        tier.hold("smol", [on_disk])
        held = tier.path_for("smol", on_disk)
        assert held != on_disk
        lines, phases = await _start_log(engine, _config(on_disk), held, "ram", log("ram"))
        assert WARMING not in lines and b"listening on" in lines
        assert phases["warmup"] > 0  # the probe's decode, still timed as the decode before listening
        assert evict(on_disk) == 0.0
        lines, _ = await _start_log(engine, _config(on_disk), on_disk, "disk", log("disk"))
        assert WARMING not in lines and b"listening on" in lines
        assert evict(on_disk) == 0.0
        lines, _ = await _start_log(engine, _config(on_disk, warmup=True), on_disk, "disk-set", log("disk-set"))
        assert WARMING in lines
        lines, _ = await _start_log(engine, _config(on_disk, warmup=True), held, "ram-set", log("ram-set"))
        assert WARMING in lines  # what the model sets wins
    finally:
        tier.release("smol")
        shutil.rmtree(tier.tmpfs_dir, ignore_errors=True)


@pytest.mark.skipif(_PROBLEM is not None, reason=f"no llama-server binary ({_PROBLEM})")
async def test_a_routers_instances_run_no_warm_up_unless_the_model_sets_it(tmp_path):
    from warmstart.engines.llamacpp import LlamaCppEngine

    quick, warm = _config(smol_file(), server=BINARY, router=True), \
        _config(smol_file(), "smol-w", server=BINARY, router=True, warmup=True)
    engine = LlamaCppEngine(tmp_path, models=(quick, warm))
    await engine.open()
    try:
        for router in engine.routers.values():
            await asyncio.wait_for(router.listening.wait(), 30)
        lines, _ = await _start_log(engine, quick, smol_file(), "smol#1", engine.routers["smol"].log_path)
        assert b"spawning server instance" in lines and WARMING not in lines
        lines, _ = await _start_log(engine, warm, smol_file(), "smol-w#1", engine.routers["smol-w"].log_path)
        assert WARMING in lines
    finally:
        await engine.close()
