"""Where one llama-server start spends its time: the server's own log (verbosity 4) split at its phase
markers, with the server's CPU seconds (user, sys) and page faults in each phase from /proc/PID/stat sampled
every 10 ms, then ready (/health) and a first request's time and CPU. Prints one JSON line; the stamped log
lines go to LOG.lines. The figures of docs/llamacpp.md ("Warm-up, and where a start ... spends its time").

    .venv/bin/python scripts/llamacpp-start-timeline.py GGUF [--no-warmup] [--threads N] [--load-mode M]
        [--evict] [--extra 'FLAGS'] [--env NAME=VALUE] [--prefix 'strace -f -tt -o OUT -e trace=mmap,madvise']

Run arms alternately, several times each: the machine is shared. `--evict` drops the file's pages first
(posix_fadvise DONTNEED, checked with mincore); without it the file is read into the page cache first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from warmstart.engines.llamacpp_server import server_flags
from warmstart.store.pagecache import evict, resident_fraction

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) ")
# (name, text): the edges of the timeline, in the order a start logs them
EDGES = (("tensors", "load_tensors: loading model tensors"), ("context", "constructing llama_context"),
         ("threadpool", "llama threadpool init"), ("slots", "load_model: initializing"),
         ("listening", "listening on"))


def usage(pid: int) -> dict[str, float] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return {"minflt": int(fields[7]), "majflt": int(fields[9]), "user": int(fields[11]) / tick,
            "sys": int(fields[12]) / tick}


def request(url: str) -> dict[str, Any]:
    body = json.dumps({"prompt": "The capital of Norway is", "n_predict": 1, "temperature": 0,
                       "cache_prompt": False}).encode()
    req = urllib.request.Request(url + "/completion", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return dict(json.loads(r.read()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--binary", default=str(ROOT / ".cache" / "llama-server" / "bin" / "llama-server"))
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--load-mode")
    ap.add_argument("--evict", action="store_true")
    ap.add_argument("--extra", default="", help="more llama-server flags")
    ap.add_argument("--env", default="", help="NAME=VALUE for the server")
    ap.add_argument("--prefix", default="", help="a command to run the server under (strace, perf record)")
    ap.add_argument("--log", default="/tmp/llamacpp-start-timeline.log")
    ap.add_argument("--port", type=int, default=0, help="0: a free one (read from its log)")
    a = ap.parse_args()
    options: dict[str, Any] = {"n_ctx": 512, "repack": False}
    if a.no_warmup:
        options["warmup"] = False
    if a.threads:
        options["n_threads"] = a.threads
    flags = server_flags(options, 1, 512) + (["--load-mode", a.load_mode] if a.load_mode else []) + a.extra.split()
    if a.evict:
        evict(Path(a.gguf))
    else:
        subprocess.run(["cat", a.gguf], stdout=subprocess.DEVNULL, check=True)
    resident = resident_fraction(Path(a.gguf))
    argv = [*a.prefix.split(), a.binary, "--model", a.gguf, *flags, "--host", "127.0.0.1", "--port", str(a.port)]
    env = {**os.environ, **dict([a.env.split("=", 1)] if a.env else [])}
    load_average = os.getloadavg()[0]
    log = open(a.log, "wb")  # noqa: SIM115 (the server writes it until it is stopped)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    pid = proc.pid
    for _ in range(400 if a.prefix else 0):  # under a prefix, the server is the wrapper's child
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if kids:
            pid = int(kids[0])
            break
        time.sleep(0.005)
    samples: list[tuple[float, dict[str, float]]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            u = usage(pid)
            if u:
                samples.append((time.monotonic() - t0, u))
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()
    lines: list[tuple[float, float, str]] = []  # (the log's stamp, when we read it, text)
    port, offset = None, 0
    try:
        while port is None:
            if proc.poll() is not None:
                raise SystemExit(f"llama-server exited: {Path(a.log).read_text()[-2000:]}")
            with open(a.log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            cut = chunk.rfind(b"\n") + 1
            offset += cut
            for raw in chunk[:cut].decode("utf-8", "replace").splitlines():
                m = STAMP.match(raw)
                if m:
                    mi, se, ms, us = map(int, m.groups())
                    lines.append((mi * 60 + se + ms / 1e3 + us / 1e6, time.monotonic() - t0, raw[m.end():]))
                    if (p := re.search(r"listening on https?://\S+?:(\d+)", raw)) is not None:
                        port = int(p.group(1))
            time.sleep(0.003)
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.005)
        ready = time.monotonic() - t0
        at_ready = usage(pid) or {}
        answer = request(url)
        first = time.monotonic() - t0
        at_first = usage(pid) or {}
    finally:
        done.set()
        for p in {pid, proc.pid}:
            try:
                os.kill(p, 15)
            except ProcessLookupError:
                pass
        proc.wait(15)
        log.close()
    zero = lines[0][1] - lines[0][0]  # the log's clock on ours: when its first line was read, less its stamp
    edges = [("spawn", 0.0)] + [(name, zero + next(s for s, _, t in lines if text in t))
                                for name, text in EDGES if any(text in t for _, _, t in lines)] + [("ready", ready)]

    def at(t: float) -> dict[str, float]:
        return next((u for ts, u in reversed(samples) if ts <= t), {"minflt": 0, "majflt": 0, "user": 0, "sys": 0})

    phases = [{"from": n0, "to": n1, "wall": round(e1 - e0, 3),
               **{k: round(at(e1)[k] - at(e0)[k], 3) for k in ("user", "sys", "minflt", "majflt")}}
              for (n0, e0), (n1, e1) in itertools.pairwise(edges)]
    print(json.dumps({"gguf": a.gguf, "resident_before": round(resident, 3), "flags": flags, "env": a.env,
                      "load_average": load_average, "ready_s": round(ready, 3), "first_token_s": round(first, 3),
                      "cpu_to_ready_s": round(at_ready.get("user", 0) + at_ready.get("sys", 0), 2),
                      "cpu_of_request_s": round(sum(at_first.get(k, 0) - at_ready.get(k, 0) for k in ("user", "sys")),
                                                2),
                      "server_timings": answer.get("timings"), "phases": phases}))
    Path(a.log + ".lines").write_text("".join(f"{s:9.3f} {t:9.3f} {text}\n" for s, t, text in lines))


if __name__ == "__main__":
    main()
