"""Pre-initialized runtimes ("warm runtime, cold model"): processes of one engine interpreter that
have already imported the engine and wait on stdin for a model. A cold start takes one instead of
spawning from nothing; the pool refills once that start has finished, so the refill does not take
CPU from the start it is meant to speed up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.engines.ledger import ProcessLedger
from warmstart.engines.process import ManagedProcess, can_restore_priority, restore_priority
from warmstart.engines.procfs import tree_rss
from warmstart.errors import EngineError

log = logging.getLogger("warmstart.engines.runtime")
_FAILURES_BEFORE_GIVING_UP = 3


@dataclass
class Runtime:
    """One pre-initialized process, from spawn until it is handed a model (or dies waiting)."""

    process: ManagedProcess
    spawned_at: float
    imported: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: asyncio.Future[float] | None = None
    import_s: float | None = None
    error: str | None = None
    reader: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self.imported.is_set() and self.process.returncode is None

    async def wait_imported_or_exit(self) -> None:
        """Returns once the runtime has finished its imports or has exited, whichever comes first."""
        exited = asyncio.ensure_future(self.process.wait_exit())
        imported = asyncio.ensure_future(self.imported.wait())
        try:
            await asyncio.wait({exited, imported}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            imported.cancel()

    async def hand(self, order: bytes, timeout: float = 60.0) -> float:
        """Send the model order; returns when the runtime has accepted it (monotonic time)."""
        self.accepted = asyncio.get_running_loop().create_future()
        await self.process.send(order)
        exited = asyncio.ensure_future(self.process.wait_exit())
        try:
            either: set[asyncio.Future[Any]] = {self.accepted, exited}
            done, _ = await asyncio.wait(either, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if self.accepted.done():
            return self.accepted.result()
        if exited in done:
            raise EngineError(f"pre-initialized runtime {self.process.pid} exited before it took the model: "
                              f"{self.error or self.process.log_tail(3) or 'no output'}")
        raise EngineError(f"pre-initialized runtime {self.process.pid} did not take the model within {timeout:g} s")


class RuntimePool:
    """Up to `size` runtimes of one command line. One owner: the engine that made it."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path, size: int,
                 ledger: ProcessLedger | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_dir = log_dir
        self.size = size
        self.ledger = ledger  # so that a warmstart restarted after a crash ends runtimes left behind
        self.idle: list[Runtime] = []
        self.handed_out = 0
        self.spawned = 0
        self.failures = 0  # consecutive runtimes that died before they were ready
        self.last_error: str | None = None
        self.closed = False
        self._refilling: asyncio.Task | None = None
        self._stopping: set[asyncio.Task[None]] = set()  # surplus runtimes a resize stops
        self._seq = 0
        # Runtimes prepare at idle CPU priority so a refill never slows the replicas serving
        # requests (on 2 cores it tripled generation time); given normal priority when taken.
        self.idle_priority = can_restore_priority()
        # bookkeeping for metrics (account_runtimes)
        self.accounted_to: float | None = None
        self.handoffs_counted = 0
        self.last_stats: dict[str, Any] | None = None  # stats() as of the last account_runtimes (walks /proc)

    # ---- lifecycle ----------------------------------------------------------------------------

    def refill(self) -> None:
        """Bring the pool back to its size in the background (one spawn at a time)."""
        if self.closed or self.size <= 0 or self.failures >= _FAILURES_BEFORE_GIVING_UP:
            return
        if self._refilling is None or self._refilling.done():
            self._refilling = asyncio.get_running_loop().create_task(self._fill(), name=f"refill {self.name}")

    async def _fill(self) -> None:
        while not self.closed and len(self.idle) < self.size and self.failures < _FAILURES_BEFORE_GIVING_UP:
            try:
                runtime = await self._spawn()
            except EngineError as exc:
                self._failed(str(exc))
                continue
            self.idle.append(runtime)
            if len(self.idle) > self.size:  # resized smaller while it spawned
                self.resize(self.size)
                continue
            # one at a time: two runtimes importing at once take twice the CPU for no earlier gain
            await runtime.wait_imported_or_exit()

    async def _spawn(self) -> Runtime:
        self._seq += 1
        log_path = self.log_dir / f"runtime-{self.name}-{os.getpid()}-{self._seq}.log"
        proc = await ManagedProcess.spawn(self.argv, env=self.env, log_path=log_path, with_reports=True,
                                          with_stdin=True, idle=self.idle_priority, ledger=self.ledger,
                                          replica=f"runtime {self.name}")
        self.spawned += 1
        runtime = Runtime(proc, time.monotonic())
        runtime.reader = asyncio.get_running_loop().create_task(self._read(runtime), name=f"runtime {proc.pid}")
        return runtime

    async def _read(self, runtime: Runtime) -> None:
        async for message in runtime.process.read_reports():
            if "imported" in message:
                runtime.import_s = float(message["imported"])
                runtime.imported.set()
                self.failures = 0
            elif "accepted" in message and runtime.accepted is not None and not runtime.accepted.done():
                runtime.accepted.set_result(float(message["accepted"]))
            elif "error" in message:
                runtime.error = str(message["error"])
        code = await runtime.process.wait_exit()
        if runtime in self.idle:  # died while waiting for a model
            self.idle.remove(runtime)
            if not self.closed:
                self._failed(runtime.error or f"runtime {runtime.process.pid} exited with code {code}: "
                             f"{runtime.process.log_tail(3) or 'no output'}")
                self.refill()

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        log.warning("pre-initialized runtime for %s failed (%d in a row): %s", self.name, self.failures, error)

    def take(self) -> Runtime | None:
        """The most advanced idle runtime (imported beats still importing), or None."""
        live = [r for r in self.idle if r.process.returncode is None]
        if not live:
            return None
        runtime = max(live, key=lambda r: (r.ready, -r.spawned_at))
        self.idle.remove(runtime)
        self.handed_out += 1
        if self.idle_priority and not restore_priority(runtime.process.pid):
            self.idle_priority = False  # refused after all: prepare the next ones at normal priority
            log.warning("could not give runtime %d normal CPU priority back", runtime.process.pid)
        return runtime

    def resize(self, size: int) -> None:
        """Keep `size` runtimes from now on (a reload changed the models using the pool): a bigger pool fills at
        the next refill; surplus idle runtimes (the least advanced first) stop in the background."""
        self.size = max(0, size)
        surplus = sorted(self.idle, key=lambda r: (r.ready, -r.spawned_at))[:max(0, len(self.idle) - self.size)]
        for runtime in surplus:
            self.idle.remove(runtime)
            self._stopping.add(task := asyncio.get_running_loop().create_task(
                runtime.process.stop(5.0), name=f"stop runtime {runtime.process.pid}"))
            task.add_done_callback(self._stopping.discard)

    async def close(self, timeout: float = 5.0) -> None:
        self.closed = True
        if self._refilling is not None:
            self._refilling.cancel()
            with contextlib.suppress(BaseException):
                await self._refilling
        idle, self.idle = self.idle, []
        await asyncio.gather(*(r.process.stop(timeout) for r in idle), *self._stopping, return_exceptions=True)
        for runtime in idle:
            if runtime.reader is not None:
                runtime.reader.cancel()

    # ---- views ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        live = [r for r in self.idle if r.process.returncode is None]
        return {
            "engine": self.name,
            "size": self.size,
            "ready": sum(1 for r in live if r.ready),
            "starting": sum(1 for r in live if not r.ready),
            "pids": [r.process.pid for r in live],
            "rss_bytes": sum(tree_rss(r.process.pid) for r in live),
            "import_s": [round(r.import_s, 3) for r in live if r.import_s is not None],
            "handed_out": self.handed_out,
            "spawned": self.spawned,
            "failures_in_a_row": self.failures,
            "last_error": self.last_error,
        }


def account_runtimes(engines: Any, metrics: Any, now: float) -> None:
    """Set the runtime gauges and add the runtime-seconds since the last call (for the cost report); `engines`:
    each engine once (engines.base.distinct)."""
    # pools of one name (a model's retired router, draining after a reload, and its new one) add up
    gauges: dict[str, list[int]] = {}
    for engine in engines:
        for pool in engine.runtime_pools():
            if pool.size <= 0 and pool.accounted_to is None:  # never kept any: no series
                continue
            stats = pool.last_stats = pool.stats()
            totals = gauges.setdefault(pool.name, [0, 0, 0])
            totals[0] += stats["ready"]
            totals[1] += stats["starting"]
            totals[2] += stats["rss_bytes"]
            live = stats["ready"] + stats["starting"]
            if pool.accounted_to is not None and now > pool.accounted_to:
                metrics.runtime_seconds.labels(pool.name).inc(live * (now - pool.accounted_to))
            pool.accounted_to = now
            handed = pool.handed_out - pool.handoffs_counted
            if handed > 0:
                metrics.runtime_handoffs.labels(pool.name).inc(handed)
                pool.handoffs_counted = pool.handed_out
    for name, (ready, starting, rss) in gauges.items():
        metrics.runtimes.labels(name, "ready").set(ready)
        metrics.runtimes.labels(name, "starting").set(starting)
        metrics.runtime_rss_bytes.labels(name).set(rss)
