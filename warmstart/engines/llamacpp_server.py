"""llama.cpp's own server binary as the engine process: the `llamacpp` engine's option `server` (a GPU build,
a distribution's llama.cpp-tools, or .cache/llama-server from scripts/install.d/25-llama-server.sh).

The model's options become llama-server's flags (`server_flags`), meaning what they mean to the xllamacpp
worker's CommonParams. A start is read from the server's own log (llamacpp_log.py) as it is written:
spawn (exec until the log's first line), load, kv_init, warmup, then ready (its "listening" line until
/health answers). The binary logs at verbosity 4 for its whole life: its phase markers need it, and a
native server cannot be turned down after its start as the worker turns xllamacpp down.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from warmstart.engines.base import READY, SPAWN, WARMUP, StartReport
from warmstart.engines.health import wait_healthy
from warmstart.engines.ledger import ProcessLedger
from warmstart.engines.llamacpp_log import PhaseClock, stamp_of
from warmstart.engines.process import ManagedProcess, read_from, replica_log_path
from warmstart.errors import EngineError

VERBOSITY = 4  # llama.cpp logs its context and warm-up steps (the phase markers) from level 4
LISTENING = re.compile(r"listening on https?://\S+?:(\d+)")
_LOAD_MODES = {(True, False): "mmap", (True, True): "mmap+mlock", (False, False): "none", (False, True): "mlock"}


def find_binary(server: str) -> str:
    """The `server` option as an executable's path; EngineError naming the option and the fix if there is none."""
    found = shutil.which(server)
    if found is None:
        raise EngineError(f"llamacpp option server = {server!r} is not an executable: give the path of llama-server "
                          "(Debian trixie/sid: apt install llama.cpp-tools; without them, "
                          "scripts/install.d/25-llama-server.sh builds .cache/llama-server/bin/llama-server)")
    return found


def start_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A model's options for one start. Unless the model sets `warmup`, a start runs no warm-up:
    llama-server maps the file with MAP_POPULATE in its load phase and decodes two tokens (its context probe)
    before it listens anyway, so the warm-up run only repeats a forward pass over every weight. Measured on the
    3.87 GB GGUF (docs/llamacpp.md): from the RAM tier the first request costs the same CPU with or without it;
    from disk, without it, the start is ready 4.1 s sooner and the first token comes 4.4 s sooner. A GPU build
    may want it back (`warmup = true`) if its first request pays for kernels the probe did not run."""
    out = dict(options)
    out.setdefault("warmup", False)
    return out


def default_threads(options: Mapping[str, Any]) -> int:
    # half the CPUs, as the worker does: two replicas on all of them spin OpenMP threads against each other
    return int(options.get("n_threads", max(1, (os.cpu_count() or 2) // 2)))


def server_flags(options: Mapping[str, Any], parallel: int, ctx: int) -> list[str]:
    """llama-server's flags for a model's options: `parallel` slots of `ctx` tokens each, metrics and slots
    endpoints on, its web UI off, no fitting (warmstart sizes the context; fitting costs a dry load)."""
    threads = default_threads(options)
    flags = ["--parallel", str(parallel), "--ctx-size", str(ctx * parallel), "--no-kv-unified",
             "--threads", str(threads), "--threads-batch", str(options.get("n_threads_batch", threads)),
             "--fit", "off", "--no-webui", "--metrics", "--slots", "--jinja",
             "--log-verbosity", str(VERBOSITY), "--log-colors", "off"]
    if options.get("warmup", True) is False:
        flags.append("--no-warmup")
    if options.get("repack", True) is False:
        flags.append("--no-repack")
    for key, flag in (("n_batch", "--batch-size"), ("n_ubatch", "--ubatch-size"),
                      ("n_gpu_layers", "--n-gpu-layers"), ("seed", "--seed")):
        if key in options:
            flags += [flag, str(options[key])]
    if "flash_attn" in options:
        flags += ["--flash-attn", "on" if options["flash_attn"] else "off"]
    if "use_mmap" in options or "use_mlock" in options:
        flags += ["--load-mode", _LOAD_MODES[(options.get("use_mmap", True), options.get("use_mlock", False))]]
    if options.get("embedding"):
        flags.append("--embedding")
        if "pooling" in options:
            flags += ["--pooling", options["pooling"]]
    if "chat_format" in options:  # a built-in template name or a Jinja template, as for the worker
        flags += ["--chat-template", options["chat_format"]]
    return flags


@functools.lru_cache(maxsize=8)
def binary_version(binary: str) -> str:
    """`llama-server --version`'s line, for the audit record (the binary's path when it says nothing)."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        line = next((x.strip() for x in (done.stdout + done.stderr).splitlines() if x.startswith("version")), "")
    except (OSError, subprocess.TimeoutExpired):
        line = ""
    return f"llama-server {line.removeprefix('version: ') or 'unknown version'} ({binary})"


class StartLog:
    """A server start read from its log into phases: spawn (`began` until the log's first line was read),
    then load, kv_init, warmup as the log's stamps time them from that line. `listening_at` is when the
    server listened on this process's clock: the first line's reading plus the stamps since, so that the
    phases add up to the start whatever the delays in reading the log. `pick` gives the server's own line
    for a raw log line (a router's log holds its instances' lines too), or None."""

    def __init__(self, report: StartReport, began: float, pick: Callable[[str], str | None] = lambda x: x) -> None:
        self.report = report
        self.began = began
        self.pick = pick
        self.clock = PhaseClock(on_done=report.done, on_enter=report.enter)
        self.port: int | None = None
        self.listening_at: float | None = None
        self._first: tuple[float, float] | None = None  # the first stamped line: (read at, its stamp)
        self._pending = b""

    def feed(self, chunk: bytes, now: float) -> None:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for raw in lines:
            line = self.pick(raw.decode("utf-8", "replace"))
            if line is None:
                continue
            at = stamp_of(line)
            if at is not None and self._first is None:
                self._first = (now, at)
                self.report.done(SPAWN, now - self.began)
            if self.clock.feed(line) == WARMUP and self._first is not None and at is not None:
                m = LISTENING.search(line)
                self.port = int(m.group(1)) if m else None
                read_first, first_stamp = self._first
                self.listening_at = min(now, read_first + at - first_stamp)

    async def follow(self, log_path: Path, offset: int, failed: Callable[[], str | None]) -> int:
        """Read the log from `offset` until the server listens (returns its port); `failed` says why the
        start cannot finish (its process exited), which is raised with the log's first errors."""
        while self.listening_at is None:
            chunk = read_from(log_path, offset)
            offset += len(chunk)
            self.feed(chunk, time.monotonic())
            if self.listening_at is not None:
                break
            problem = failed()
            if problem is not None:
                why = "; ".join(self.clock.errors[:2]) or "no error in its log"
                raise EngineError(f"{problem} during {self.report.current or SPAWN}: {why}")
            await asyncio.sleep(0.005 if self.clock.last is None else 0.01)
        if self.port is None:
            raise EngineError("llama-server listens, but its log line names no port")
        return self.port


async def start_server(binary: str, argv: list[str], report: StartReport, *, data_dir: Path, replica: str,
                       host: str, ledger: ProcessLedger) -> ManagedProcess:
    """Run `binary argv` (port 0: it takes a free one and logs it) and follow its start to a healthy answer."""
    report.enter(SPAWN)
    log_path = replica_log_path(data_dir, replica)
    offset = log_path.stat().st_size if log_path.is_file() else 0  # it may hold an earlier replica's lines
    proc = await ManagedProcess.spawn([binary, *argv, "--host", host, "--port", "0"], env=dict(os.environ),
                                      log_path=log_path, ledger=ledger, replica=replica)
    try:
        start = StartLog(report, proc.spawned_at)
        port = await start.follow(proc.log_path, offset, lambda: _exited(proc))
        proc.base_url = f"http://{host}:{port}"
        report.enter(READY)
        await wait_healthy(proc, proc.base_url + "/health", timeout=30.0)
        report.done(READY, time.monotonic() - (start.listening_at or time.monotonic()))
        return proc
    except BaseException:
        await proc.abandon()
        raise


def _exited(proc: ManagedProcess) -> str | None:
    code = proc.returncode
    return None if code is None else f"llama-server exited with code {code}"
