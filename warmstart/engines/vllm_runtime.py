"""A pre-initialized vLLM runtime: a process that has paid vLLM's start-up tax and waits for a model.

Runs in vLLM's Python (not warmstart's), with only the standard library and vLLM:
    python -m warmstart.engines.vllm_runtime
It imports torch and vLLM's API server, engine core, executor and worker modules, reports
`{"imported": seconds}` on the report pipe, then blocks on stdin for one JSON line
`{"argv": [...], "env": {...}, "fork": true}`. It then runs vLLM's own OpenAI server module as
`python -m vllm.entrypoints.openai.api_server ARGV` would, in this process, so nothing is imported
twice. With "fork", vLLM's engine-core and worker processes are forked from this one and inherit
its imports instead of importing everything again (vLLM's CPU platform forces spawn; see
docs/vllm.md for why fork is safe here). EOF on stdin before a model arrives: exit quietly.
"""

from __future__ import annotations

import time

_T0 = time.monotonic()  # before the heavy imports: the end of the spawn phase

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from warmstart.engines.child import die_with_parent  # noqa: E402

API_SERVER = "vllm.entrypoints.openai.api_server"
# What a start imports in the API server, engine-core and worker processes, known before any model.
PRELOAD = (
    "torch",
    "vllm",
    "vllm.entrypoints.launchers.api_server.entry",
    "vllm.entrypoints.launchers.cli_args",
    "vllm.engine.arg_utils",
    "vllm.v1.engine.async_llm",
    "vllm.v1.engine.core",
    "vllm.v1.engine.core_client",
    "vllm.v1.executor.multiproc_executor",
    "vllm.v1.executor.uniproc_executor",
    "vllm.model_executor.model_loader",
    "vllm.model_executor.models.llama",
    "vllm.model_executor.models.qwen2",
    "warmstart.engines.vllm_loader",  # load_format "warmstart": imported here, registered by vLLM's plugin call
    "transformers",
    "transformers.models.llama",
    "transformers.tokenization_utils_fast",
)
# the worker that this platform's engine core will run (finding the platform touches no GPU: NVML only)
PRELOAD_CPU = ("vllm.v1.worker.cpu_worker", "vllm.v1.worker.cpu_model_runner")
PRELOAD_GPU = ("vllm.v1.worker.gpu_worker", "vllm.v1.worker.gpu_model_runner")


def _report(message: dict) -> None:
    fd = os.environ.get("WARMSTART_REPORT_FD")
    if fd:
        try:
            os.write(int(fd), (json.dumps(message) + "\n").encode())
        except OSError:
            pass


def _close_report() -> None:
    fd = os.environ.pop("WARMSTART_REPORT_FD", None)
    if fd:
        try:
            os.close(int(fd))
        except OSError:
            pass


def preload() -> list[str]:
    """Import what every start needs; a module this vLLM build lacks is skipped, not fatal."""
    import importlib
    import warnings

    missing = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importlib.import_module(API_SERVER)
        try:
            from vllm.platforms import current_platform

            workers: tuple[str, ...] = PRELOAD_CPU if current_platform.is_cpu() else PRELOAD_GPU
        except Exception:
            workers = PRELOAD_CPU + PRELOAD_GPU
        for name in PRELOAD + workers:
            try:
                importlib.import_module(name)
            except Exception:  # another platform's worker, an older vLLM layout
                missing.append(name)
    return missing


def preinspect(architectures: list[str]) -> None:
    """Inspect the configured model classes now, in this process: vLLM otherwise does it on each
    start in a subprocess that imports torch and vLLM again (10-20 s) unless its modelinfos cache
    has the answer. Importing a model class touches no GPU; vLLM's subprocess is caution for plugins."""
    try:
        from vllm.model_executor.models import registry
    except ImportError:
        return
    if hasattr(registry, "_run_in_subprocess"):
        registry._run_in_subprocess = lambda fn: fn()
    for arch in architectures:
        if arch and arch in getattr(registry.ModelRegistry, "models", {}):
            try:
                registry.ModelRegistry._try_inspect_model_cls(arch)
            except Exception:  # an inspection that fails here is retried by vLLM's own start
                pass


def keep_fork() -> None:
    """vLLM's CPU platform sets VLLM_WORKER_MULTIPROC_METHOD=spawn while it builds the config;
    put back fork right after, so the engine core and worker inherit this process's imports."""
    from vllm.platforms import current_platform

    cls = type(current_platform)
    original = cls.check_and_update_config.__func__

    def check_and_update_config(klass, vllm_config):
        original(klass, vllm_config)
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"

    cls.check_and_update_config = classmethod(check_and_update_config)


def bind_forked_cpu_workers() -> None:
    """vLLM's CPU executor pins a worker's OpenMP threads by setting OMP_NUM_THREADS and OMP_PLACES
    just before it starts the worker (utils/ompmultiprocessing.py), for libgomp to read when a fresh
    process loads it. A forked worker has libgomp loaded already (torch was imported), so those
    variables arrive too late: two unpinned threads then fight the engine core's busy loop and
    generation runs several times slower. Apply them by hand when the worker starts."""
    try:
        from vllm.v1.worker import cpu_worker
    except ImportError:
        return
    original = cpu_worker.CPUWorker.init_device

    def init_device(self):
        import re

        import torch

        threads = os.environ.get("OMP_NUM_THREADS")
        # one of these, by which OpenMP runtime is preloaded (libgomp, Intel's, or none)
        places = os.environ.get("OMP_PLACES") or os.environ.get("GOMP_CPU_AFFINITY") or \
            os.environ.get("KMP_AFFINITY", "").partition("proclist=")[2]
        cpus = [int(c) for c in re.findall(r"\d+", places)]
        if threads and threads.isdigit():
            torch.set_num_threads(int(threads))
        if cpus:
            os.sched_setaffinity(0, cpus)  # this thread, and the OpenMP threads it starts
        print(f"warmstart: forked CPU worker {os.getpid()}: {threads or 'default'} OpenMP threads "
              f"on CPUs {cpus or 'all'}", flush=True)
        return original(self)

    cpu_worker.CPUWorker.init_device = init_device


def main() -> int:
    die_with_parent()
    _report({"started": _T0})
    t = time.monotonic()
    try:
        missing = preload()
    except Exception as exc:
        _report({"error": f"importing vLLM failed: {type(exc).__name__}: {exc}"})
        raise
    preinspect(os.environ.get("WARMSTART_VLLM_ARCHITECTURES", "").split(","))
    _report({"imported": time.monotonic() - t, "missing": missing, "pid": os.getpid()})
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # warmstart closed the pool
    order = json.loads(line)
    os.environ.update({str(k): str(v) for k, v in order.get("env", {}).items()})
    if order.get("cwd"):
        os.chdir(order["cwd"])
    if order.get("fork", True):
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"
        keep_fork()
        bind_forked_cpu_workers()
    _report({"accepted": time.monotonic()})
    _close_report()
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the order pipe is done with
    print(f"warmstart: pre-initialized runtime {os.getpid()} takes model: {' '.join(order['argv'])}", flush=True)
    import runpy

    sys.modules.pop(API_SERVER, None)  # run as __main__ below, as `python -m` would
    sys.argv = [API_SERVER, *order["argv"]]
    runpy.run_module(API_SERVER, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
