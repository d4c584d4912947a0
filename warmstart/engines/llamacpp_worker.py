"""The llama.cpp engine process: llama.cpp's own server (llama-server, from the prebuilt xllamacpp wheel)
on one GGUF, serving the OpenAI API on loopback with one slot per concurrent request, reporting each
start phase to its parent on a pipe.

Run by the pool as `python -m warmstart.engines.llamacpp_worker --model PATH --parallel N --ctx TOKENS
--options JSON`. The phases after `import` are read from the server's own log (llamacpp_log.py): its
stderr passes through this process until the server listens, then goes straight to the replica's log.
"""

from __future__ import annotations

import time

_T0 = time.monotonic()  # before any import: the end of the spawn phase

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from typing import Any  # noqa: E402

from warmstart.engines.child import die_with_parent  # noqa: E402

START_VERBOSITY = 4  # llama.cpp logs its context and warm-up steps (the phase markers) from level 4
SERVE_VERBOSITY = 3  # then one line per request's timings, and warnings and errors


class _Reporter:
    def __init__(self) -> None:
        fd = os.environ.get("WARMSTART_REPORT_FD")
        self._out = os.fdopen(int(fd), "w", buffering=1) if fd else None
        self._lock = threading.Lock()  # the log follower's thread reports too

    def send(self, **message: object) -> None:
        with self._lock:
            if self._out is not None:
                try:
                    self._out.write(json.dumps(message) + "\n")
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                try:
                    self._out.close()
                except OSError:
                    pass
                self._out = None


def server_params(xlc: Any, model: str, name: str, options: dict[str, Any], parallel: int, ctx: int,
                  host: str, port: int) -> Any:
    """xllamacpp's CommonParams (llama-server's flags) for one replica: `parallel` slots of `ctx` tokens each."""
    p = xlc.CommonParams()
    p.model.path = model
    p.model_alias = {name}
    p.n_parallel = parallel
    p.n_ctx = ctx * parallel  # llama-server splits its context evenly across its slots
    p.kv_unified = False
    p.hostnames = [host]
    p.port = port
    p.fit_params = False  # warmstart sizes the context itself; fitting costs a dry load of the model
    p.ui = False
    p.endpoint_metrics = True
    p.endpoint_slots = True
    p.verbosity = START_VERBOSITY
    p.warmup = bool(options.get("warmup", True))
    p.no_extra_bufts = options.get("repack", True) is False
    for key in ("n_batch", "n_ubatch", "n_gpu_layers"):
        if key in options:
            setattr(p, key, options[key])
    # half the CPUs by default (llama-cpp-python's default too): llama-server's own is all of them, and two
    # replicas then spin OpenMP threads against each other (measured: 24 tokens in 64 s instead of 1 s)
    threads = options.get("n_threads", max(1, (os.cpu_count() or 2) // 2))
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = options.get("n_threads_batch", threads)
    if "seed" in options:
        p.sampling.seed = options["seed"]
    if "flash_attn" in options:
        kind = xlc.llama_flash_attn_type
        p.flash_attn_type = kind.LLAMA_FLASH_ATTN_TYPE_ENABLED if options["flash_attn"] else \
            kind.LLAMA_FLASH_ATTN_TYPE_DISABLED
    if "use_mmap" in options or "use_mlock" in options:
        mode = xlc.llama_load_mode
        mmap, mlock = options.get("use_mmap", True), options.get("use_mlock", False)
        p.load_mode = {(True, False): mode.LLAMA_LOAD_MODE_MMAP, (True, True): mode.LLAMA_LOAD_MODE_MMAP_MLOCK,
                       (False, False): mode.LLAMA_LOAD_MODE_NONE, (False, True): mode.LLAMA_LOAD_MODE_MLOCK}[
            (mmap, mlock)]
    if options.get("embedding"):  # /v1/embeddings besides completions
        p.embedding = True
        if "pooling" in options:
            p.pooling_type = getattr(xlc.llama_pooling_type, "LLAMA_POOLING_TYPE_" + options["pooling"].upper())
    if "chat_format" in options:  # a built-in template name (chatml, llama3, ...) or a Jinja template
        p.chat_template = options["chat_format"]
    return p


class _LogFollower:
    """The server's stderr through a pipe while it starts: every line still reaches the replica's log,
    the phase it enters is reported as it starts, and the phases' lengths are kept for `phases()`.
    `release()` gives the log its file back."""

    def __init__(self, report: _Reporter) -> None:
        from warmstart.engines.llamacpp_log import PhaseClock  # imported in the import phase already

        self.done: dict[str, float] = {}
        self.clock = PhaseClock(on_done=self.done.__setitem__, on_enter=lambda name: report.send(enter=name))
        self.finished = threading.Event()
        self._log_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._follow, args=(read_fd,), daemon=True, name="server-log")
        self._thread.start()

    def _follow(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                os.write(self._log_fd, chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self.clock.feed(line.decode("utf-8", "replace"))
                if self.clock.finished:
                    self.finished.set()
        self.finished.set()

    def phases(self, seconds: float) -> list[tuple[str, float]]:
        """load, kv_init, warmup of a server start that took `seconds`: kv_init and warmup as its log
        timed them, load the rest (the log's first line comes a moment after the start)."""
        kv_init, warmup = self.done.get("kv_init", 0.0), self.done.get("warmup", 0.0)
        return [("load", max(0.0, seconds - kv_init - warmup)), ("kv_init", kv_init), ("warmup", warmup)]

    def release(self, timeout: float) -> None:
        # the server logs from its own thread: wait (briefly) for its "listening" line to come through
        self.finished.wait(timeout)
        sys.stderr.flush()
        os.dup2(self._log_fd, 2)  # closes the pipe's only write end: the follower reads to its end and stops
        self._thread.join(timeout)
        os.close(self._log_fd)


def _set_verbosity(xlc: Any, level: int) -> None:
    # llama.cpp's log threshold is one global in the same library; xllamacpp does not wrap its setter
    import ctypes

    try:
        ctypes.CDLL(xlc.xllamacpp.__file__)["_Z30common_log_set_verbosity_tholdi"](level)
    except (OSError, AttributeError):
        pass  # another build: the server keeps logging at start-up detail


def main(argv: list[str] | None = None) -> int:
    # SIGTERM and SIGINT are taken by sigwait below; blocked before the server's threads exist, they
    # inherit the mask, so the signal reaches only the main thread
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    die_with_parent()
    report = _Reporter()
    report.send(started=_T0)
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=0, help="context per slot, in tokens (0: the model's own)")
    parser.add_argument("--options", default="{}")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    try:
        report.send(enter="import")
        import xllamacpp

        import warmstart.engines.llamacpp_log  # noqa: F401 (the log follower's, timed here with the rest)

        # each phase runs from the end of the one before, so the phases add up to the start: import from
        # _T0 (this module's own imports are imports too), load from the end of import
        t = time.monotonic()
        report.send(phase="import", seconds=t - _T0)
        params = server_params(xllamacpp, args.model, args.name, options, args.parallel, args.ctx,
                               args.host, args.port)
        log = _LogFollower(report)
        try:
            server = xllamacpp.Server(params)
        except RuntimeError as exc:  # xllamacpp says only "failed to init server": the log says why
            log.release(timeout=0.2)
            raise RuntimeError("; ".join(log.clock.errors[:2]) or str(exc)) from None
        loaded = time.monotonic()
        seconds = loaded - t
        log.release(timeout=5.0)
        for name, phase_seconds in log.phases(seconds):
            report.send(phase=name, seconds=phase_seconds)
        _set_verbosity(xllamacpp, SERVE_VERBOSITY)
        address = server.listening_address
        # the parent times `ready` from the moment the server was made, on the same monotonic clock
        report.send(listening=int(address.rsplit(":", 1)[1]), since=loaded)
        report.close()
    except Exception as exc:  # reported to the parent, which names it in the failed start
        report.send(error=f"{type(exc).__name__}: {exc}")
        print(f"llamacpp worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    # in-flight requests end with the process; the server's destructor would only wait for them
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
