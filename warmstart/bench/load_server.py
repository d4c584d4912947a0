"""`warmstart bench load --server BINARY`: the big GGUF started by a llama-server binary (the `llamacpp` engine's
option `server`) from disk and from the RAM tier, as a plain process and in a router pre-started with the
model's flags (option `router`), beside the xllamacpp worker: every arm interleaved in each round, so all see
the same machine. Each arm is timed to ready (a healthy answer) and to its first token (one request of one
token right after), with the server's CPU seconds and page faults at both. Repacking is off in every arm (a
start from RAM is then a mapping of the tier's pages, not a copy).

The disk arms start a copy of the file whose pages are dropped first (the RAM tier's mlock holds the original's);
`disk_binary` is a plain llama-server start with llama.cpp's defaults, warm-up included; `disk_binary_no_warmup`
is warmstart's own start from disk (no warm-up run: the engine's default). RAM-tier starts run none either;
`ram_router_warmup` puts it back, to show what it costs in the same run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from warmstart.bench._harness import median
from warmstart.engines import procfs

ARMS = ("disk_binary", "disk_binary_no_warmup", "ram_binary", "ram_router", "ram_router_warmup",
        "ram_router_tmpfs", "ram_worker")
OPTIONS = {"n_ctx": 512, "repack": False}
PROMPT = "The capital of Norway is"


def _usage(pid: int) -> dict[str, float]:
    """CPU seconds and page faults of a process so far (/proc/PID/stat)."""
    try:
        fields = procfs.stat_fields(pid)
    except OSError:
        return {}
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / procfs.CLK_TCK, "sys_s": int(fields[12]) / procfs.CLK_TCK,
            "minflt": int(fields[7]), "majflt": int(fields[9])}


async def _first_token(base_url: str) -> float:
    import aiohttp

    body = {"model": "bench", "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    t = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session, \
            session.post(base_url + "/v1/completions", json=body) as resp:
        data = await resp.json()
    if resp.status != 200 or not data.get("choices"):
        raise RuntimeError(f"first request: HTTP {resp.status} {str(data)[:200]}")
    return time.monotonic() - t


async def _once(engine: Any, cfg: Any, path: Path, name: str) -> dict[str, Any]:
    from warmstart.engines.base import StartReport

    report = StartReport()
    load = os.getloadavg()[0]
    t = time.monotonic()
    proc = await engine.start(cfg, path, report, name)
    ready = time.monotonic() - t
    at_ready = _usage(proc.pid)
    request = await _first_token(proc.base_url)
    at_first = _usage(proc.pid)
    t = time.monotonic()
    await proc.stop(10)
    return {"total_s": ready, "first_token_s": ready + request, "request_s": request,
            "stop_s": time.monotonic() - t, "load_average": load, "at_ready": at_ready, "at_first_token": at_first,
            "phases": {k: round(v, 4) for k, v in report.phases}}


async def _rounds(binary: str, gguf: Path, work: Path, repeat: int, say: Any) -> dict[str, list[dict[str, Any]]]:
    from warmstart.config import ModelConfig
    from warmstart.engines.llamacpp import LlamaCppEngine
    from warmstart.store.pagecache import evict, resident_fraction
    from warmstart.store.tiers import RamTier

    def config(name: str, **extra: Any) -> ModelConfig:
        return ModelConfig(name=name, engine="llamacpp", path=str(gguf), options=MappingProxyType(OPTIONS | extra))

    plain, routed = config("bench-7b", server=binary), config("bench-7b-r", server=binary, router=True)
    routed_warm = config("bench-7b-rw", server=binary, router=True, warmup=True)
    # the baseline is llama.cpp's own default (warm-up on); warmstart's starts run none unless a model sets it
    configs = {"disk_binary": config("bench-7b-dw", server=binary, warmup=True),
               "disk_binary_no_warmup": plain,
               "ram_binary": plain, "ram_router": routed, "ram_router_warmup": routed_warm,
               "ram_router_tmpfs": routed, "ram_worker": config("bench-7b-w")}
    disk_copy = gguf.with_name(gguf.stem + ".disk.gguf")  # evictable: the tier's mlock keeps the original's pages
    if not disk_copy.exists() or disk_copy.stat().st_size != gguf.stat().st_size:
        say(f"copying {gguf.name} for the disk arms")
        shutil.copyfile(gguf, disk_copy)
    engine = LlamaCppEngine(work / "server-data", models=(routed, routed_warm))
    await engine.open()
    for router in engine.routers.values():
        await asyncio.wait_for(router.listening.wait(), 30)
    tier = RamTier(method="auto", tmpfs_dir=Path("/dev/shm") / f"warmstart-bench-server-{os.getpid()}")
    tmpfs = RamTier(method="tmpfs", tmpfs_dir=Path("/dev/shm") / f"warmstart-bench-tmpfs-{os.getpid()}")
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    try:
        held = tier.hold("bench-7b", [gguf])
        tmpfs.hold("bench-7b", [gguf])
        paths = {"ram": tier.path_for("bench-7b", gguf), "tmpfs": tmpfs.path_for("bench-7b", gguf)}
        for i in range(repeat):
            for arm in ARMS:
                if arm.startswith("disk"):
                    path, left = disk_copy, evict(disk_copy)
                else:
                    path = paths["tmpfs" if arm.endswith("tmpfs") else "ram"]
                    left = resident_fraction(path)
                say(f"{arm}, round {i + 1}: resident before {left:.3f}")
                run = await _once(engine, configs[arm], path, f"bench-{arm}-{i}")
                runs[arm].append(run | {"resident_before": left, "tier": "tmpfs" if arm.endswith("tmpfs") else (
                    "disk" if arm.startswith("disk") else held.method)})
    finally:
        tier.release("bench-7b")
        tmpfs.release("bench-7b")
        for t in (tier, tmpfs):
            shutil.rmtree(t.tmpfs_dir, ignore_errors=True)
        await engine.close()
    return runs


def _cpu(runs: list[dict[str, Any]], at: str) -> float:
    return median([r[at].get("cpu_s", 0.0) for r in runs])


def measure_server_starts(binary: str, gguf: Path, work: Path, repeat: int, say: Any) -> dict[str, Any]:
    runs = asyncio.run(_rounds(binary, gguf, work, repeat, say))
    out: dict[str, Any] = {"binary": binary, "options": OPTIONS}
    for arm, rs in runs.items():
        phases = sorted({p for r in rs for p in r["phases"]}, key=lambda p: list(rs[0]["phases"]).index(p)
                        if p in rs[0]["phases"] else 99)
        out[arm] = {"median_s": median([r["total_s"] for r in rs]),
                    "first_token_s": median([r["first_token_s"] for r in rs]),
                    "cpu_to_ready_s": _cpu(rs, "at_ready"), "cpu_to_first_token_s": _cpu(rs, "at_first_token"),
                    "minflt_to_ready": median([r["at_ready"].get("minflt", 0) for r in rs]),
                    "load_average": [r["load_average"] for r in rs], "tier": rs[0]["tier"],
                    "phases": {p: median([r["phases"].get(p, 0.0) for r in rs]) for p in phases}, "runs": rs}
    disk, nowarm, ram = out["disk_binary"], out["disk_binary_no_warmup"], out["ram_router"]
    out["ram_router_vs_disk_binary"] = disk["median_s"] / ram["median_s"]
    out["ram_router_vs_ram_binary"] = out["ram_binary"]["median_s"] / ram["median_s"]
    out["ratios"] = {
        "ready": disk["median_s"] / ram["median_s"],
        "first_token": disk["first_token_s"] / ram["first_token_s"],
        "ready_cpu": disk["cpu_to_ready_s"] / max(1e-9, ram["cpu_to_ready_s"]),
        "ready_vs_disk_no_warmup": nowarm["median_s"] / ram["median_s"],
        "first_token_vs_disk_no_warmup": nowarm["first_token_s"] / ram["first_token_s"],
    }
    return out


def server_table(s: dict[str, Any], size: int) -> list[str]:
    lines = ["", f"llama-server binary ({s['binary']}), the {size / 1e9:.2f} GB GGUF, repack off, medians:",
             f"  {'arm':22} {'tier':6} {'ready':>6} {'1st tok':>7} {'CPU@rdy':>7} {'CPU@1st':>7} {'faults':>7}  phases"]
    for arm in ARMS:
        e = s[arm]
        lines.append(f"  {arm:22} {e['tier']:6} {e['median_s']:6.2f} {e['first_token_s']:7.2f} "
                     f"{e['cpu_to_ready_s']:7.2f} {e['cpu_to_first_token_s']:7.2f} {e['minflt_to_ready']:7.0f}  "
                     + ", ".join(f"{p} {v:.3f}" for p, v in e["phases"].items()))
    r = s["ratios"]
    lines.append(f"  RAM tier in the pre-started router against a plain start from disk: {r['ready']:.1f}x to ready "
                 f"({r['ready_cpu']:.1f}x in CPU seconds), {r['first_token']:.1f}x to the first token; against a "
                 f"disk start without warm-up: {r['ready_vs_disk_no_warmup']:.1f}x / "
                 f"{r['first_token_vs_disk_no_warmup']:.1f}x")
    return lines
