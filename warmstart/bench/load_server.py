"""`warmstart bench load --server BINARY`: the big GGUF started by a llama-server binary (the `llamacpp` engine's
option `server`), as a plain process and in a router pre-started with the model's flags (option `router`),
from the RAM tier (tmpfs) and from disk, beside the xllamacpp worker from the same tier: every arm
interleaved in each round, so all see the same machine. Repacking is off in every arm (a start from RAM is
then a mapping of the tier's pages, not a copy)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from warmstart.bench._harness import median

ARMS = ("disk_binary", "ram_binary", "ram_router", "ram_worker")
OPTIONS = {"n_ctx": 512, "repack": False}


async def _once(engine: Any, cfg: Any, path: Path, name: str) -> dict[str, Any]:
    from warmstart.engines.base import StartReport

    report = StartReport()
    t = time.monotonic()
    proc = await engine.start(cfg, path, report, name)
    total = time.monotonic() - t
    t = time.monotonic()
    await proc.stop(10)
    return {"total_s": total, "stop_s": time.monotonic() - t, "phases": {k: round(v, 4) for k, v in report.phases}}


async def _rounds(binary: str, gguf: Path, work: Path, repeat: int, say: Any) -> dict[str, list[dict[str, Any]]]:
    from warmstart.config import ModelConfig
    from warmstart.engines.llamacpp import LlamaCppEngine
    from warmstart.store.pagecache import evict
    from warmstart.store.tiers import RamTier

    def config(name: str, **extra: Any) -> ModelConfig:
        return ModelConfig(name=name, engine="llamacpp", path=str(gguf), options=MappingProxyType(OPTIONS | extra))

    plain, routed, worker = config("bench-7b", server=binary), config("bench-7b-r", server=binary, router=True), \
        config("bench-7b-w")
    engine = LlamaCppEngine(work / "server-data", models=(routed,))
    await engine.open()
    router = engine.routers[routed.name]
    await asyncio.wait_for(router.listening.wait(), 30)
    tier = RamTier(method="tmpfs", tmpfs_dir=Path("/dev/shm") / f"warmstart-bench-server-{os.getpid()}")
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    try:
        tier.hold("bench-7b", [gguf])
        served = tier.path_for("bench-7b", gguf)
        for i in range(repeat):
            evict(gguf)
            say(f"llama-server start from disk, round {i + 1}")
            runs["disk_binary"].append(await _once(engine, plain, gguf, f"bench-disk-{i}"))
            for arm, cfg in (("ram_binary", plain), ("ram_router", routed), ("ram_worker", worker)):
                say(f"{arm} start from the RAM tier (tmpfs), round {i + 1}")
                runs[arm].append(await _once(engine, cfg, served, f"bench-{arm}-{i}"))
    finally:
        tier.release("bench-7b")
        shutil.rmtree(tier.tmpfs_dir, ignore_errors=True)
        await engine.close()
    return runs


def measure_server_starts(binary: str, gguf: Path, work: Path, repeat: int, say: Any) -> dict[str, Any]:
    runs = asyncio.run(_rounds(binary, gguf, work, repeat, say))
    out: dict[str, Any] = {"binary": binary, "options": OPTIONS}
    for arm, rs in runs.items():
        phases = sorted({p for r in rs for p in r["phases"]}, key=lambda p: list(rs[0]["phases"]).index(p)
                        if p in rs[0]["phases"] else 99)
        out[arm] = {"median_s": median([r["total_s"] for r in rs]),
                    "phases": {p: median([r["phases"].get(p, 0.0) for r in rs]) for p in phases}, "runs": rs}
    out["ram_router_vs_disk_binary"] = out["disk_binary"]["median_s"] / out["ram_router"]["median_s"]
    out["ram_router_vs_ram_binary"] = out["ram_binary"]["median_s"] / out["ram_router"]["median_s"]
    return out


def server_table(s: dict[str, Any], size: int) -> list[str]:
    lines = ["", f"llama-server binary ({s['binary']}), the {size / 1e9:.2f} GB GGUF, repack off "
             "(median s; phases):"]
    for arm in ARMS:
        e = s[arm]
        lines.append(f"  {arm:12} {e['median_s']:6.2f}  " + ", ".join(f"{p} {v:.3f}" for p, v in e["phases"].items()))
    lines.append(f"  RAM tier in the pre-started router: {s['ram_router_vs_disk_binary']:.1f}x a plain start from "
                 f"disk, {s['ram_router_vs_ram_binary']:.2f}x a plain start from the RAM tier")
    return lines
