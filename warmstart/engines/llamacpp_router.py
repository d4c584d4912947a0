"""A pre-started llama-server in router mode waiting for its model ("warm runtime, cold model"), for the
`llamacpp` engine's option `router` (with `server`): one router per model, started with the model's flags
and a preset of one entry, the model, whose file is a link warmstart points at the path a start gets
(the RAM tier's copy, or the file on disk).

A start is `POST /models/load`: the router runs an instance of its own binary (`/proc/self/exe`) with those
flags, whose log lines reach the router's log prefixed `[PORT] `; they are read into the same phases as a
plain start (spawn, load, kv_init, warmup, ready). Requests go to the instance directly, not through the
router's proxy. A stop is `POST /models/unload` (the router tells the instance to exit). The router itself
is a few MiB and serves one replica at a time; a second replica of the model starts as a plain process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warmstart.engines.base import READY, SPAWN, StartReport
from warmstart.engines.health import wait_healthy
from warmstart.engines.ledger import ProcessLedger
from warmstart.engines.llamacpp_log import instance_line
from warmstart.engines.llamacpp_server import LISTENING, StartLog, find_binary
from warmstart.engines.process import ManagedProcess, read_from
from warmstart.engines.procfs import alive, children, rss
from warmstart.errors import EngineError, StoreError
from warmstart.names import safe_name

log = logging.getLogger("warmstart.engines.llamacpp_router")
_FAILURES_BEFORE_GIVING_UP = 3


class RouterUnavailable(EngineError):
    """The router itself failed a start (it is gone, or did not answer): a plain start may still work.
    The model failing to start in it is a plain EngineError, which a plain start would only repeat."""


class _Instance:
    """Which lines of the router's log are the instance of `name`: from "spawning server instance with
    name=NAME on port P" on, the lines prefixed `[P] `; its "exited with status" line is kept."""

    def __init__(self, name: str, offset: int = 0) -> None:
        self.offset = offset  # where its lines begin in the router's log
        self.spawning = re.compile(r"spawning server instance with name=" + re.escape(name) + r" on port (\d+)")
        self.exit = re.compile(r"instance name=" + re.escape(name) + r" exited with status (-?\d+)")
        self.port: int | None = None
        self.exit_code: int | None = None

    def pick(self, line: str) -> str | None:
        if self.port is not None:
            own = instance_line(line, self.port)
            if own is not None:
                return own
        elif (m := self.spawning.search(line)) is not None:
            self.port = int(m.group(1))
        if (m := self.exit.search(line)) is not None:
            self.exit_code = int(m.group(1))
        return None


class RouterInstance:
    """The model as a router loaded it: its own llama-server process (the router's child), which the
    pool serves from and stops like any engine process; `stop` asks the router to unload it."""

    def __init__(self, router: Router, pid: int, host: str, port: int) -> None:
        self.router = router
        self.pid = pid
        self.base_url = f"http://{host}:{port}"
        self.health_path = "/health"
        self.log_path = router.log_path
        self.count_active: Any = None
        self.count_interval = 0.1
        self._code: int | None = None
        self._exited = asyncio.get_running_loop().create_future()
        self._watch = asyncio.get_running_loop().create_task(self._wait(), name=f"router instance {pid}")

    async def _wait(self) -> None:
        # not our child, so no waitpid: a pidfd becomes readable when the process ends
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:
            fd = -1
        try:
            if fd >= 0:
                ended: asyncio.Future[None] = loop.create_future()

                def on_end() -> None:
                    if not ended.done():
                        ended.set_result(None)

                loop.add_reader(fd, on_end)
                try:
                    await ended
                finally:
                    loop.remove_reader(fd)
            else:
                while alive(self.pid):
                    await asyncio.sleep(0.2)
        finally:
            if fd >= 0:
                os.close(fd)
            # the router reaps it and logs its status: a moment for that line to be written
            code = None
            for _ in range(50):
                code = self.router.exit_code_of(self)
                if code is not None or self.router.process is None or self.router.process.returncode is not None:
                    break
                await asyncio.sleep(0.02)
            self._code = -1 if code is None else code
            self.router.released(self)
            if not self._exited.done():
                self._exited.set_result(self._code)

    @property
    def returncode(self) -> int | None:
        return self._code

    async def wait_exit(self) -> int:
        return int(await asyncio.shield(self._exited))

    async def stop(self, timeout: float) -> None:
        if self._code is None:
            with contextlib.suppress(EngineError):
                await self.router.post("/models/unload")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        if self._code is None:
            self.kill()
        await self.wait_exit()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)


def _child_on_port(router_pid: int, port: int) -> int | None:
    for child in children(router_pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"--port" in argv and argv[argv.index(b"--port") + 1:][:1] == [str(port).encode()]:
                return child
    return None


class Router:
    """One pre-started router for one model. Seen by the metrics and `ps` as a runtime pool of size 1."""

    def __init__(self, model: str, binary: str, flags: Callable[[], list[str]], data_dir: Path, host: str,
                 ledger: ProcessLedger, generation: int = 0) -> None:
        self.model = model
        self.name = f"llama-server router {model}"
        self.binary = binary
        self.flags = flags
        self.host = host
        self.ledger = ledger
        # a router started by a reload for a model whose old router still holds a draining replica: a folder
        # (preset, link) and log of its own, so that neither reads the other's instance lines
        own = safe_name(model) + (f".{generation}" if generation else "")
        self.folder = data_dir / "run" / "routers" / own
        self.link = self.folder / "model.gguf"
        self.log_path = data_dir / "logs" / f"router-{own}.log"
        self.size = 1
        self.process: ManagedProcess | None = None
        self.url: str | None = None
        self.listening = asyncio.Event()
        self.loaded: RouterInstance | None = None
        self.busy = False
        self._free = asyncio.Event()  # set each time a start or its instance lets go of the router
        self._instance: _Instance | None = None
        self.handed_out = 0
        self.spawned = 0
        self.failures = 0
        self.last_error: str | None = None
        self.closed = False
        self._task: asyncio.Task | None = None
        # bookkeeping of account_runtimes, as for a RuntimePool
        self.accounted_to: float | None = None
        self.handoffs_counted = 0
        self.last_stats: dict[str, Any] | None = None

    # ---- the router process -------------------------------------------------------------------

    def refill(self) -> None:
        """Start the router in the background unless it runs (or has failed too often)."""
        if self.closed or self.failures >= _FAILURES_BEFORE_GIVING_UP:
            return
        if (self.process is None or self.process.returncode is not None) and (
                self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        self.listening.clear()
        self.url = None
        self.folder.mkdir(parents=True, exist_ok=True)
        preset = self.folder / "preset.ini"
        preset.write_text(f"[{self.model}]\nmodel = {self.link}\n")
        offset = self.log_path.stat().st_size if self.log_path.is_file() else 0
        try:
            binary = find_binary(self.binary)
            flags = await asyncio.to_thread(self.flags)  # reads the model file's header
            proc = await ManagedProcess.spawn(
                [binary, "--models-preset", str(preset), "--models-max", "1", "--no-models-autoload",
                 *flags, "--host", self.host, "--port", "0"], env=dict(os.environ), log_path=self.log_path,
                ledger=self.ledger, replica=self.name)
        except (EngineError, StoreError, OSError) as exc:
            self._failed(str(exc))  # tried again at the next start of the model
            return
        self.process = proc
        self.spawned += 1
        pending = b""
        while proc.returncode is None and self.url is None:
            chunk = read_from(self.log_path, offset)
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:  # the router's own line: no [PORT] prefix
                m = LISTENING.search(line.decode("utf-8", "replace"))
                if m is not None and not line.startswith(b"["):
                    self.url = f"http://{self.host}:{m.group(1)}"
            await asyncio.sleep(0.01)
        if self.url is not None:
            self.failures = 0
            self.listening.set()
        code = await proc.wait_exit()
        self.listening.clear()
        if not self.closed:
            self._failed(f"router exited with code {code}: {proc.log_tail(3) or 'no output'}")
            self.refill()

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        log.warning("%s failed (%d in a row): %s", self.name, self.failures, error)

    async def close(self, timeout: float = 5.0) -> None:
        self.closed = True
        if self.process is not None:
            await self.process.stop(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def post(self, path: str) -> dict[str, Any]:
        import aiohttp  # when first used: engines start before the gateway (which needs it) is imported

        if self.url is None:
            raise RouterUnavailable(f"{self.name} is not running")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
                    session.post(self.url + path, json={"model": self.model}) as resp:
                body = await resp.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise RouterUnavailable(f"{self.name} did not answer {path}: {type(exc).__name__}") from exc
        if resp.status != 200:
            raise RouterUnavailable(f"{self.name} refused {path}: HTTP {resp.status} {body[:300]}")
        try:
            return dict(json.loads(body))
        except (ValueError, TypeError):
            return {}

    # ---- a start --------------------------------------------------------------------------------

    def take(self) -> bool:
        """Claim the router for one start; False when it is not up or already holds the model."""
        if self.busy or not self.listening.is_set() or self.process is None or self.process.returncode is not None:
            return False
        self.busy = True
        self.handed_out += 1
        return True

    async def load(self, path: Path, report: StartReport) -> RouterInstance:
        """Load the model from `path` in a claimed router; returns once the instance answers /health."""
        assert self.process is not None and self.busy
        router = self.process
        tmp = self.folder / "model.gguf.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path(path).resolve())
        tmp.replace(self.link)
        offset = self.log_path.stat().st_size
        self._instance = instance = _Instance(self.model, offset)
        report.enter(SPAWN)
        began = time.monotonic()
        try:
            await self.post("/models/load")
            start = StartLog(report, began, instance.pick)

            def failed() -> str | None:
                if router.returncode is not None:
                    return f"the router exited with code {router.returncode}"
                if instance.exit_code is not None:
                    return f"llama-server exited with code {instance.exit_code}"
                return None

            try:
                port = await start.follow(self.log_path, offset, failed)
            except EngineError as exc:
                if router.returncode is not None:
                    raise RouterUnavailable(str(exc)) from None
                raise
            pid = _child_on_port(router.pid, port)
            if pid is None:
                raise RouterUnavailable(f"{self.name}: no instance process listens on port {port}")
            self.loaded = loaded = RouterInstance(self, pid, self.host, port)
            report.enter(READY)
            await wait_healthy(loaded, loaded.base_url + "/health", timeout=30.0)
            report.done(READY, time.monotonic() - (start.listening_at or time.monotonic()))
            return loaded
        except BaseException:
            if self.loaded is not None:
                self.loaded.kill()  # its watcher frees the router once it has ended
            else:  # failed or cancelled while the instance was starting: end it, whatever the router thinks
                child = _child_on_port(router.pid, instance.port) if instance.port is not None else None
                if child is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(child, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await self.post("/models/unload")
                self._let_go()
            raise

    def exit_code_of(self, loaded: RouterInstance) -> int | None:
        """The status the router logged for the instance's exit since it was loaded (None: not logged)."""
        instance = self._instance
        if instance is None:
            return None
        try:
            with open(self.log_path, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                f.seek(max(instance.offset, end - 16384))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        codes = instance.exit.findall(tail)
        return int(codes[-1]) if codes else None

    def released(self, loaded: RouterInstance) -> None:
        """The instance has ended: the router waits for the next start."""
        if self.loaded is loaded:
            self.loaded = None
            self._let_go()

    def _let_go(self) -> None:
        self.busy = False
        self._free.set()

    async def close_when_idle(self) -> None:
        """Close the router once no replica runs in it (a reload removed its model or changed its settings;
        the engine no longer hands it out): a draining replica's instance, the router's child, ends first."""
        while self.busy and not self.closed:
            self._free.clear()
            await self._free.wait()
        await self.close()

    # ---- views ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        up = self.listening.is_set() and self.process is not None and self.process.returncode is None
        return {
            "engine": self.name,
            "size": self.size,
            "ready": int(up and not self.busy),
            "starting": int(not up and not self.closed and self.failures < _FAILURES_BEFORE_GIVING_UP),
            "pids": [self.process.pid] if up and self.process is not None else [],
            "rss_bytes": rss(self.process.pid) if up and self.process is not None else 0,  # the router alone
            "import_s": [],
            "handed_out": self.handed_out,
            "spawned": self.spawned,
            "failures_in_a_row": self.failures,
            "last_error": self.last_error,
        }

