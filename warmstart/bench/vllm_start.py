"""`warmstart bench vllm-start`: request-to-first-token of a cold vLLM model, plain vLLM versus
warmstart with a pre-initialized runtime, side by side in one run.

- plain: what a cold request costs without warmstart. The request arrives, `python -m
  vllm.entrypoints.openai.api_server --enforce-eager` is started, the client polls /health and then
  sends its streaming request; the clock runs from the start of the server to the first token.
  Run twice for the tiny model: once with empty vLLM caches (a first deployment), once with the caches
  the first run left (steady state: the baseline for the ratio).
- warmstart: `warmstart serve` with the same model, one pre-initialized runtime waiting; the clock
  runs from the request to its first token through the gateway.
Both use a tiny Llama (1.4 M parameters) and a 1.1 B one (Llama 3.2 1B's shape, random weights),
each with a BPE tokenizer trained here: nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from warmstart.bench._harness import Client, ServerProcess, free_port, machine, request_json, table, write_json
from warmstart.bench._tiny_llama import build_in
from warmstart.cli.base import Parser
from warmstart.engines.ipc import release_socket_dir, socket_dir
from warmstart.engines.vllm import API_SERVER, PACKAGE_ROOT, default_python
from warmstart.engines.vllm_log import PhaseClock, split_lines
from warmstart.progress import step

FLAGS = ["--enforce-eager", "--max-model-len", "1024"]
PROMPT = {"prompt": "the model answers questions about", "max_tokens": 8, "temperature": 0}
PHASES = ("import", "handoff", "engine_init", "load", "compile", "kv_init", "warmup", "ready")


def plain_start(python: str, model_dir: Path, work: Path, cache: Path, name: str) -> dict[str, Any]:
    """Start vLLM's own server cold and measure start -> first token, with its log read into phases."""
    port = free_port()
    for d in ("home", "tmp"):
        (work / d).mkdir(parents=True, exist_ok=True)
    sockets = socket_dir(work / "tmp")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(work / "home"), "TMPDIR": str(work / "tmp"),
           "VLLM_RPC_BASE_PATH": str(sockets),
           "VLLM_CACHE_ROOT": str(cache / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
           "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
    log_path = work / f"plain-{name}.log"
    step(f"vLLM's own server, cold: {name}")
    phases: dict[str, float] = {}

    def done(phase: str, seconds: float) -> None:
        phases[phase] = phases.get(phase, 0.0) + seconds

    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([python, "-m", API_SERVER, "--model", str(model_dir), "--served-model-name", name,
                                 "--host", "127.0.0.1", "--port", str(port), "--disable-uvicorn-access-log", *FLAGS],
                                stdout=log, stderr=log, env=env, start_new_session=True)
    clock = PhaseClock(t0, done, lambda _p: None)
    offset, pending = 0, b""
    try:
        base = f"http://127.0.0.1:{port}"
        while True:
            with open(log_path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            lines, pending = split_lines(pending + chunk)
            for line in lines:
                clock.feed(line, time.perf_counter())
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {proc.returncode}; see {log_path}")
            if "warmup" in clock.seen:
                try:
                    if request_json(base, "GET", "/health", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        healthy = time.perf_counter()
        done("ready", healthy - clock.last)
        client = Client(base)
        first, _, _ = client.first_token("/v1/completions", {"model": name, **PROMPT})
        gen = _generation_s(client, name)
        client.close()
        return {"ttft_s": healthy - t0 + first, "phases": phases, "gen64_s": gen}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        release_socket_dir(work / "tmp", sockets)


def warmstart_starts(python: str, models: dict[str, Path], work: Path) -> dict[str, dict[str, Any]]:
    """One `warmstart serve` with every model; each cold start takes the waiting runtime."""
    lines = []
    for name, path in models.items():
        lines += ["[[models]]", f'name = "{name}"', 'engine = "vllm"', f"path = {json.dumps(str(path))}",
                  'keep_alive = "30m"', "[models.options]", f"python = {json.dumps(python)}", "runtimes = 1",
                  "enforce_eager = true", "max_model_len = 1024", "kv_cache_space_gib = 1", ""]
    results: dict[str, dict[str, Any]] = {}
    shutil.rmtree(work / "warmstart", ignore_errors=True)
    (work / "warmstart").mkdir(parents=True)
    with ServerProcess("\n".join(lines), work / "warmstart") as srv:
        for name in models:
            step(f"warmstart, cold start from a runtime: {name}")
            pool = _wait_runtime(srv.url, name)
            client = Client(srv.url)
            first, _, headers = client.first_token("/v1/completions", {"model": name, **PROMPT})
            gen = _generation_s(client, name)
            client.close()
            if headers.get("x-warmstart-start") != "cold":
                raise RuntimeError(f"{name} was not cold")
            view = _model(srv.url, name)
            results[name] = {"ttft_s": first, "phases": view["last_start"]["phases"], "gen64_s": gen,
                             "runtime_rss_bytes": pool["rss_bytes"], "runtime_import_s": pool["import_s"][0]}
            request_json(srv.url, "POST", f"/admin/models/{name}/unload", {})
    return results


def _generation_s(client: Client, name: str) -> float:
    """64 tokens once warm: a forked engine must generate as fast as a spawned one."""
    body = {"model": name, "prompt": PROMPT["prompt"], "max_tokens": 64, "temperature": 0, "ignore_eos": True}
    client.first_token("/v1/completions", body)  # first decode after start allocates; not counted
    return client.first_token("/v1/completions", body)[1]


def _model(url: str, name: str) -> dict[str, Any]:
    return next(m for m in request_json(url, "GET", "/v1/models")[1]["data"] if m["id"] == name)


def _wait_runtime(url: str, name: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = _model(url, name)["runtime_pool"]
        if pool and pool["ready"] >= 1:
            return pool
        time.sleep(0.5)
    raise RuntimeError("the pre-initialized runtime did not become ready")


def phase_rows(runs: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for label, run in runs.items():
        rows.append((label, *(f"{run['phases'][p]:.2f}" if p in run["phases"] else "-" for p in PHASES),
                     f"{run['ttft_s']:.2f}", f"{run['gen64_s']:.2f}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="warmstart bench vllm-start", description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--python", default=default_python(), help="vLLM's interpreter (default: .venv-vllm)")
    parser.add_argument("--work", default=str(PACKAGE_ROOT / ".cache" / "bench" / "vllm-start"),
                        help="models and logs (the 1.1 B model, 2.2 GB, is built once and kept here)")
    parser.add_argument("--no-1b", action="store_true", help="only the tiny model")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    sizes = ["tiny"] + ([] if args.no_1b else ["1b"])
    models = {f"bench-{s}": build_in(args.python, work / "models" / s, s) for s in sizes}

    cache = work / "plain-cache"
    shutil.rmtree(cache, ignore_errors=True)
    plain = {"tiny, plain, empty caches": plain_start(args.python, models["bench-tiny"], work, cache, "bench-tiny"),
             "tiny, plain": plain_start(args.python, models["bench-tiny"], work, cache, "bench-tiny")}
    if "1b" in sizes:
        plain["1b, plain"] = plain_start(args.python, models["bench-1b"], work, cache, "bench-1b")
    ws = warmstart_starts(args.python, models, work)
    runs = {**plain, "tiny, warmstart": ws["bench-tiny"]}
    if "1b" in sizes:
        runs["1b, warmstart"] = ws["bench-1b"]

    result: dict[str, Any] = {
        "plain_s": round(plain["tiny, plain"]["ttft_s"], 3),
        "warmstart_s": round(ws["bench-tiny"]["ttft_s"], 3),
        "speedup": round(plain["tiny, plain"]["ttft_s"] / ws["bench-tiny"]["ttft_s"], 2),
        "plain_empty_caches_s": round(plain["tiny, plain, empty caches"]["ttft_s"], 3),
        "runtime_rss_bytes": ws["bench-tiny"]["runtime_rss_bytes"],
        "runtime_import_s": round(ws["bench-tiny"]["runtime_import_s"], 2),
        "runs": {label: {"ttft_s": round(r["ttft_s"], 3), "gen64_s": round(r["gen64_s"], 3),
                         "phases": {k: round(v, 3) for k, v in r["phases"].items()}}
                 for label, r in runs.items()},
        "machine": {**machine(), "load_avg_before": load_before[:2], "load_avg_after": os.getloadavg()[:2]},
    }
    if "1b" in sizes:
        result["1b"] = {"plain_s": round(plain["1b, plain"]["ttft_s"], 3),
                        "warmstart_s": round(ws["bench-1b"]["ttft_s"], 3),
                        "speedup": round(plain["1b, plain"]["ttft_s"] / ws["bench-1b"]["ttft_s"], 2),
                        "parameters": json.loads(
                            (models["bench-1b"] / "warmstart-model.json").read_text())["parameters"]}

    rows = [("tiny (1.4M)", f"{result['plain_s']:.2f}", f"{result['warmstart_s']:.2f}", f"{result['speedup']:.1f}x")]
    if "1b" in sizes:
        b = result["1b"]
        rows.append(("1b (1.1B)", f"{b['plain_s']:.2f}", f"{b['warmstart_s']:.2f}", f"{b['speedup']:.1f}x"))
    print("cold request to first token, vLLM CPU --enforce-eager (seconds)")
    print(table(rows, ("model", "plain vllm", "warmstart", "speedup")))
    print(f"\nplain with empty vLLM caches (first deployment): {result['plain_empty_caches_s']:.2f} s")
    print(f"pre-initialized runtime: {result['runtime_rss_bytes'] / 2**20:.0f} MiB resident while it waits, "
          f"{result['runtime_import_s']:.1f} s to prepare (paid before any request)")
    print("\nphases (seconds)")
    print(table(phase_rows(runs), ("run", *PHASES, "first token", "64 tokens warm")))
    print(f"\nload average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    write_json(args.json, result)
    return 0
