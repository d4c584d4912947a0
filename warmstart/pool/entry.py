"""What the pool keeps per model: its entry, its held requests, its finished starts; and where it reports them."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from warmstart.config import ModelConfig
from warmstart.engines.base import Capabilities, Engine, StartReport
from warmstart.pool.lease import Lease
from warmstart.pool.replica import Replica


@dataclass(frozen=True)
class StartRecord:
    """One finished start (or failed one), kept for `ps`, /v1/models and the dashboard."""

    replica: str
    trigger: str
    outcome: str
    phases: tuple[tuple[str, float], ...]
    total_s: float
    at: float  # wall time the start began
    error: str | None = None
    tier: str = "disk"  # where the weights were read from: "ram" or "disk"

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "phases": {name: round(s, 4) for name, s in self.phases},
            "total_s": round(self.total_s, 4),
            "at": self.at,
            "error": self.error,
            "tier": self.tier,
        }


class Attempt(Protocol):
    """What the audit log records of a start: a replica, or a refusal before any replica existed."""

    @property
    def id(self) -> str: ...

    @property
    def trigger(self) -> str: ...

    @property
    def created_wall(self) -> float: ...

    @property
    def report(self) -> StartReport: ...


@dataclass(frozen=True)
class Refusal:
    """A model refused before any start (its file is missing or not a model), as the audit log records it."""

    id: str
    created_wall: float
    trigger: str = "inspect"
    report: StartReport = field(default_factory=StartReport)


class AuditSink(Protocol):
    """Where the pool reports initializations, unloads and failures (the audit log)."""

    async def record(self, event: str, *, model: ModelConfig, path: Path | None, replica: Attempt,
                     engine: Engine, outcome: str, error: str | None = None, reason: str | None = None,
                     seconds: float | None = None) -> None:
        """`seconds`: for a start, how long it took; for an unload or failure, how long the replica lived."""


class NullAudit:
    async def record(self, event: str, **_: Any) -> None:
        return None


@dataclass
class Waiter:
    future: asyncio.Future[Lease]
    arrived: float
    cold: bool
    keep_alive: float | None


@dataclass
class ModelEntry:
    config: ModelConfig
    engine: Engine
    replicas: list[Replica] = field(default_factory=list)
    waiters: deque[Waiter] = field(default_factory=deque)
    starts: deque[StartRecord] = field(default_factory=lambda: deque(maxlen=50))
    path: Path | None = None
    capabilities: Capabilities | None = None
    # why the model cannot start now (its file is missing, truncated, not a model, fails its digest), found
    # before any request asks; cleared once it is inspected or starts without fault
    problem: str | None = None
    refused_audited: str | None = None  # the refusal last written to the audit log
    inspect_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # set by the warming controller: keep at least one replica loaded until then
    warm_until: float = -math.inf
    warm_trigger: str = "schedule"
    # set by the warming controller for models whose keep-alive it picks: the pool's own idle keep-alive
    keep_alive_override: float | None = None
    # set by the warming controller for models whose RAM tier it picks: until when (monotonic) the weights stay
    # in RAM once the model unloads (-inf: straight to disk); None: the model's own ram_keep_alive
    ram_until: float | None = None
    last_failure: str | None = None
    wait_histogram: Any = None  # this model's warmstart_request_wait_seconds child

    @property
    def name(self) -> str:
        return self.config.name

    def refuse_waiters(self, exc: Exception) -> None:
        """Answer every held request with `exc` now."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(exc)

    @property
    def keep_alive(self) -> float:
        return self.config.keep_alive if self.keep_alive_override is None else self.keep_alive_override
