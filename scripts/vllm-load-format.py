"""Measure vLLM's weight loading with one load format against another, on a model folder.

    PYTHONPATH=. .venv/bin/python scripts/vllm-load-format.py MODEL_DIR [--repeat 3] [--cold] [--json OUT]

Starts vLLM's OpenAI server (`--enforce-eager`, from .venv-vllm, with warmstart's plugin folder on its
PYTHONPATH, as the vllm engine does) once per format per round, formats interleaved, reads its log
until "Loading weights took", then stops it. `--cold` drops the weight files from the page cache
before each start (the fast loader then reads with O_DIRECT; vLLM's default maps the files).
Prints vLLM's own "Loading weights took" figure; each start's log is kept under --logs."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from warmstart.engines.vllm import API_SERVER, VllmEngine, default_python, free_port
from warmstart.store.loader import folder_files
from warmstart.store.pagecache import evict

WEIGHTS = re.compile(r"Loading weights took ([\d.]+) seconds(.*)")


def one_start(python: str, model: Path, load_format: str, env: dict[str, str], timeout: float,
              log_path: Path) -> dict:
    argv = [python, "-m", API_SERVER, "--model", str(model), "--load-format", load_format, "--enforce-eager",
            "--max-model-len", "512", "--port", str(free_port()), "--host", "127.0.0.1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out: dict = {"format": load_format}
    t0 = time.monotonic()
    watchdog = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        assert proc.stdout is not None
        with open(log_path, "w") as log:
            for line in proc.stdout:
                log.write(line)
                if m := WEIGHTS.search(line):
                    out["weights_s"], out["note"] = float(m.group(1)), m.group(2).strip()
                    break
    finally:
        watchdog.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out["wall_s"] = round(time.monotonic() - t0, 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--formats", default="safetensors,warmstart")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--logs", type=Path, default=Path(".cache/vllm-load-format"))
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="warmstart-vllm-load-"))
    env = {**VllmEngine(data).base_env(), "VLLM_CPU_KVCACHE_SPACE": "1"}
    args.logs.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(args.repeat):
        for fmt in args.formats.split(","):
            if args.cold:
                for f in folder_files(args.model):
                    evict(f)
            run = one_start(default_python(), args.model.resolve(), fmt, env, timeout=600,
                            log_path=args.logs / f"{fmt}-{i}.log")
            run["round"] = i
            print(json.dumps(run), flush=True)
            runs.append(run)
    for fmt in args.formats.split(","):
        got = [r["weights_s"] for r in runs if r["format"] == fmt and "weights_s" in r]
        if got:
            print(f"{fmt}: Loading weights took median {statistics.median(got):.2f} s "
                  f"(runs {', '.join(f'{x:.2f}' for x in got)})")
    if args.json:
        args.json.write_text(json.dumps({"cold": args.cold, "model": str(args.model), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
