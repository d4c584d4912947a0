"""The llama.cpp engine: a replica is llama.cpp's own server (llama-server, from the prebuilt xllamacpp
wheel) run by `python -m warmstart.engines.llamacpp_worker` on one GGUF file, with one slot per
concurrent request (`max_concurrency`), each slot holding the model's whole context. With the option
`server`, the replica is that llama-server binary itself (llamacpp_server.py); with `router` too, a router
started with warmstart waits for the model and a start loads it there (llamacpp_router.py)."""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmstart.config import ModelConfig
from warmstart.engines.base import IMPORT, READY, SPAWN, VERIFY, Capabilities, NoRuntimes, StartReport
from warmstart.engines.gguf import check_complete, gguf_file, read_gguf
from warmstart.engines.health import wait_healthy
from warmstart.engines.ledger import ProcessLedger
from warmstart.engines.llamacpp_router import Router, RouterInstance, RouterUnavailable
from warmstart.engines.llamacpp_server import binary_version, find_binary, server_flags, start_options, start_server
from warmstart.engines.process import ManagedProcess, replica_log_path
from warmstart.errors import EngineError

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("warmstart.engines.llamacpp")

# OpenAI request fields llama-server takes without a word and ignores (measured on xllamacpp 2026.10.11549),
# or that ask for what no local engine does (storing answers, a service tier, moderation, a cache retention
# policy, reasoning controls of OpenAI's own models): a client asking for one of these gets a 400 naming it,
# not an answer that silently lacks it. tests/integration/test_openai_fields.py walks every field of the
# `openai` package's request types through a real engine.
UNSUPPORTED_FIELDS = ("best_of", "echo", "suffix", "functions", "function_call", "audio", "modalities",
                      "prediction", "web_search_options", "store", "service_tier", "moderation",
                      "prompt_cache_retention", "prompt_cache_options", "reasoning_effort", "verbosity")
# tools reach the model through its chat template (llama-server renders it with Jinja): a template that never
# mentions tools drops them, so for such a model they are refused
TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
MAX_CHOICES = 16  # `n`: llama-server runs each choice as its own sequence


def slot_context(model: ModelConfig, path: Path) -> int:
    """The context each slot holds: the model's `n_ctx` option, else the one it was trained with."""
    return int(model.options.get("n_ctx") or read_gguf(path).context_length or 4096)


class LlamaCppEngine(NoRuntimes):
    kind = "llamacpp"

    def __init__(self, data_dir: Path, python: str = sys.executable, host: str = "127.0.0.1",
                 models: tuple[ModelConfig, ...] = ()) -> None:
        self.data_dir = data_dir
        self.python = python
        self.host = host  # where its engines listen: loopback, or a cluster node's address on its private network
        self.ledger = ProcessLedger(data_dir / "run" / "engines")
        # a router per model configured with one: started by open(), waiting for its model; a reload
        # (models_changed) starts one for a model that gains one and retires those no model uses any more
        self.routers: dict[str, Router] = {}
        # the settings each router was started for: a model whose settings changed gets a new router
        self._router_settings: dict[str, tuple[Any, ...]] = {}
        self._retired: list[Router] = []  # routers a reload let go of, closed once no replica runs in them
        self._closing: set[asyncio.Task[None]] = set()
        self._generations: dict[str, int] = {}  # routers made per model: a second one gets a log of its own
        self._opened = False
        for model in models:
            if _wants_router(model):
                self._add_router(model)

    def _add_router(self, model: ModelConfig) -> Router:
        self._router_settings[model.name] = _router_settings(model)
        router = self.routers[model.name] = Router(
            model.name, str(model.options["server"]), functools.partial(self._router_flags, model), self.data_dir,
            self.host, self.ledger, generation=self._generations.get(model.name, 0))
        self._generations[model.name] = self._generations.get(model.name, 0) + 1
        return router

    def models_changed(self, models: Sequence[ModelConfig]) -> None:
        """The models served changed (a reload, the store): a model that gains a router, or whose router settings
        changed, gets one started in the background; a router no served model uses (or started for settings
        since changed) is handed out no more and closes once its replica, if any, has ended."""
        wanted = {m.name: m for m in models if _wants_router(m)}
        for name in list(self.routers):
            model = wanted.get(name)
            if model is None or self._router_settings.get(name) != _router_settings(model):
                self._retire(name)
        for name, model in wanted.items():
            if name not in self.routers:
                router = self._add_router(model)
                if self._opened:
                    router.refill()
                log.info("%s set up for a model added or changed", router.name)

    def _retire(self, name: str) -> None:
        router = self.routers.pop(name)
        self._router_settings.pop(name, None)
        self._retired.append(router)
        task = asyncio.get_running_loop().create_task(router.close_when_idle(), name=f"retire {router.name}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.info("%s retired: it closes once no replica runs in it", router.name)

    def _router_flags(self, model: ModelConfig) -> list[str]:
        """A router's flags, when it starts: the slots' context comes from the model file (StoreError if none).
        Its instances run no warm-up unless the model sets `warmup`: the flags are fixed before a start knows
        whether its weights are in memory (a second preset entry would need a second name, which clients would
        see), and a router is there for fast starts; from disk too the warm-up only repeats the decode of the
        server's context probe, after a load that read every page (MAP_POPULATE)."""
        from warmstart.store.sources import resolve_model_path

        path = gguf_file(resolve_model_path(model.path, self.data_dir))
        return server_flags({"warmup": False, **model.options}, model.max_concurrency, slot_context(model, path))

    def router_for(self, model: ModelConfig) -> Router | None:
        """The model's router, if it has one started for the model's settings as they are now."""
        if self._router_settings.get(model.name) != _router_settings(model):
            return None
        return self.routers.get(model.name)

    async def open(self) -> None:
        self._opened = True
        for router in self.routers.values():
            router.refill()

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in (*self._retired, *self.routers.values())),
                             return_exceptions=True)

    def runtime_pools(self) -> Sequence[Any]:
        # a retired router is listed until it has closed and its gauges were set to what it holds then (none);
        # while it drains, its gauges add to those of the model's new router, of the same name
        self._retired = [r for r in self._retired if not (r.closed and _holds_nothing(r.last_stats))]
        return (*self._retired, *self.routers.values())

    def runtime_view(self, model: ModelConfig) -> dict[str, Any] | None:
        router = self.router_for(model)
        if router is None:
            return None
        return router.last_stats if router.last_stats is not None else router.stats()

    def version(self, model: ModelConfig | None = None) -> str:
        if model is not None and model.options.get("server"):
            return binary_version(str(model.options["server"]))
        try:
            return "xllamacpp " + importlib.metadata.version("xllamacpp")
        except importlib.metadata.PackageNotFoundError:
            return "xllamacpp (not installed)"

    def inspect(self, model: ModelConfig, path: Path) -> Capabilities:
        path = gguf_file(path)
        info = read_gguf(path)
        chat = model.chat if model.chat is not None else bool(
            info.chat_template or model.options.get("chat_format"))
        notes: tuple[str, ...] = () if chat else ("no chat template in the GGUF: completions only",)
        template = model.options.get("chat_format") or info.chat_template or ""
        tools = "tools" in str(template)
        if not tools:
            notes += ("tools: its chat template takes none",)
        if model.options.get("server") and shutil.which(str(model.options["server"])) is None:
            notes += (f"server {model.options['server']!r} is not an executable: its starts fail",)
        if self.router_for(model) is not None:
            notes += ("a pre-started llama-server router waits for it: a start is POST /models/load",)
        return Capabilities(chat=chat, completions=True, sleep=False, context_length=slot_context(model, path),
                            max_token_bytes=info.max_token_bytes,
                            unsupported_fields=UNSUPPORTED_FIELDS + (() if tools else TOOL_FIELDS),
                            max_choices=MAX_CHOICES, content_types=("text",),
                            embeddings=bool(model.options.get("embedding")), stream_usage=True, engine="llama.cpp",
                            notes=notes + ("sleep: not supported by llama.cpp; a replica is loaded or cold",))

    async def start(self, model: ModelConfig, path: Path, report: StartReport,
                    name: str) -> ManagedProcess | RouterInstance:
        checking = time.monotonic()
        path = gguf_file(path)  # a folder (a Hugging Face snapshot): the model it holds
        if path.is_file():  # a truncated file is named as such, not left to llama.cpp's "failed to load"
            report.enter(VERIFY)
            await asyncio.to_thread(check_complete, path)
            report.done(VERIFY, time.monotonic() - checking)
        # no warm-up run unless the model sets one: it would only repeat the decode of llama-server's context probe
        options = start_options(model.options)
        if options.get("server"):
            return await self._start_binary(model, options, path, report, name)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        report.enter(SPAWN)
        spawning = time.monotonic()
        proc = await ManagedProcess.spawn(
            [self.python, "-m", "warmstart.engines.llamacpp_worker", "--model", str(path),
             "--name", model.name, "--host", self.host, "--parallel", str(model.max_concurrency),
             "--ctx", str(slot_context(model, path)), "--options", json.dumps(options)],
            env=env, log_path=replica_log_path(self.data_dir, name), with_reports=True,
            ledger=self.ledger, replica=name,
        )
        try:
            port, loaded = await self._follow(proc, report, spawning)
            proc.base_url = f"http://{self.host}:{port}"
            _count_slots(proc)
            report.enter(READY)
            await wait_healthy(proc, proc.base_url + "/health", timeout=30.0)
            # ready: from the end of the last phase (the server made, in the worker) to a healthy answer
            report.done(READY, time.monotonic() - loaded)
            return proc
        except BaseException:
            await proc.abandon()
            raise

    async def _start_binary(self, model: ModelConfig, options: dict[str, Any], path: Path, report: StartReport,
                            name: str) -> ManagedProcess | RouterInstance:
        """The `server` binary: a start in the model's router when it waits idle, else a process of its own."""
        router = self.router_for(model)
        if router is not None:
            router.refill()  # a router that died is started again, for the next start
            if router.take():
                try:
                    proc: ManagedProcess | RouterInstance = await router.load(path, report)
                    _count_slots(proc)
                    return proc
                except RouterUnavailable as exc:  # the router failed, not the model: start without it
                    log.warning("%s; starting llama-server without the router", exc)
                    report.phases.clear()  # the wasted time stays in the start's total, not in a phase
        flags = server_flags(options, model.max_concurrency, slot_context(model, path))
        binary = find_binary(str(model.options["server"]))
        proc = await start_server(binary, ["--model", str(path), "--alias", model.name, *flags], report,
                                  data_dir=self.data_dir, replica=name, host=self.host, ledger=self.ledger)
        _count_slots(proc)
        return proc

    async def _follow(self, proc: ManagedProcess, report: StartReport, spawning: float) -> tuple[int, float]:
        """Phase reports until the engine listens; returns its port and when its last phase ended (the
        worker's monotonic clock is this process's: CLOCK_MONOTONIC is one clock for the whole machine)."""
        error = None
        async for message in proc.read_reports():
            if "started" in message:
                report.done(SPAWN, float(message["started"]) - spawning)
            elif "enter" in message:
                report.enter(str(message["enter"]))
            elif "phase" in message:
                report.done(str(message["phase"]), float(message["seconds"]))
            elif "listening" in message:
                proc.close_reports()  # the worker's last report
                return int(message["listening"]), float(message["since"])
            elif "error" in message:
                error = str(message["error"])
        code = await proc.wait_exit()
        detail = error or proc.log_tail(5) or "no output"
        phase = report.current or IMPORT
        raise EngineError(f"llama.cpp engine exited with code {code} during {phase}: {detail}")


def _count_slots(proc: ManagedProcess | RouterInstance) -> None:
    proc.count_active = functools.partial(_active_requests, proc.base_url + "/metrics")
    # llama-server looks at a non-streamed request's connection only after a second with no result
    # in its queue, and each /metrics answer is one: asked more often, a client that left is never seen
    proc.count_interval = 1.5


async def _active_requests(url: str, session: aiohttp.ClientSession) -> int | None:
    """The requests llama-server is still working on, in its slots or waiting for one (its /metrics)."""
    import aiohttp

    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        if resp.status != 200:
            return None
        values = dict(line.split(maxsplit=1) for line in (await resp.text()).splitlines()
                      if line.startswith("llamacpp:requests_"))
        return int(float(values.get("llamacpp:requests_processing", 0))
                   + float(values.get("llamacpp:requests_deferred", 0)))


def _holds_nothing(stats: dict[str, Any] | None) -> bool:
    return stats is not None and stats["ready"] == 0 and stats["starting"] == 0 and not stats["pids"]


def _wants_router(model: ModelConfig) -> bool:
    return model.engine == "llamacpp" and bool(model.options.get("router")) and bool(model.options.get("server"))


def _router_settings(model: ModelConfig) -> tuple[Any, ...]:
    """What a router's flags are made of (its model's file, options and slots)."""
    return (model.path, tuple(sorted((k, repr(v)) for k, v in model.options.items())), model.max_concurrency)
