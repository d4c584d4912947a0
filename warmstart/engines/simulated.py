"""An engine whose replicas exist only on a clock: each start takes given phase durations.

Used where no real process can run: on virtual time (the simulator, scenario tests of the pool's
lifecycle). It serves no requests; nothing on the HTTP path ever reaches it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path

from warmstart.clock import Clock
from warmstart.config import ModelConfig
from warmstart.engines.base import Capabilities, NoRuntimes, StartReport
from warmstart.errors import EngineError

_pids = itertools.count(1_000_000)


class SimulatedProcess:
    def __init__(self) -> None:
        self.pid = next(_pids)
        self.base_url = f"simulated://{self.pid}"
        self._exited = asyncio.Event()
        self._code: int | None = None
        self.stopped_by_request = False

    @property
    def returncode(self) -> int | None:
        return self._code

    async def wait_exit(self) -> int:
        await self._exited.wait()
        assert self._code is not None
        return self._code

    async def stop(self, timeout: float) -> None:
        self.stopped_by_request = True
        self._exit(0)

    def kill(self) -> None:
        self._exit(-9)

    def _exit(self, code: int) -> None:
        if self._code is None:
            self._code = code
            self._exited.set()


class SimulatedEngine(NoRuntimes):
    kind = "simulated"

    def __init__(self, clock: Clock, phases: Sequence[tuple[str, float]] = (("load", 30.0),),
                 fail_with: str | None = None, ram_phases: Sequence[tuple[str, float]] | None = None,
                 ram_dir: Path | None = None) -> None:
        """`ram_phases`: the phases of a start that reads weights under `ram_dir` (the RAM tier's copy)."""
        self.clock = clock
        self.phases = list(phases)
        self.ram_phases = list(ram_phases) if ram_phases is not None else self.phases
        self.ram_dir = ram_dir
        self.fail_with = fail_with
        self.started: list[SimulatedProcess] = []

    def version(self, model: ModelConfig | None = None) -> str:
        return "simulated"

    def inspect(self, model: ModelConfig, path: Path) -> Capabilities:
        return Capabilities(chat=True, context_length=2048)

    async def start(self, model: ModelConfig, path: Path, report: StartReport, name: str) -> SimulatedProcess:
        from_ram = self.ram_dir is not None and Path(path).is_relative_to(self.ram_dir)
        for phase, seconds in self.ram_phases if from_ram else self.phases:
            report.enter(phase)
            await self.clock.sleep(seconds)
            report.done(phase, seconds)
        if self.fail_with:
            raise EngineError(self.fail_with)
        proc = SimulatedProcess()
        self.started.append(proc)
        return proc
