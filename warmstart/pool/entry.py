"""What the pool keeps per model (its entry, its held requests, its finished starts) and the lease a
request holds on a replica."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from warmstart.config import ModelConfig
from warmstart.engines.base import Capabilities, Engine
from warmstart.pool.replica import Replica

if TYPE_CHECKING:
    from warmstart.pool.pool import Pool


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


class AuditSink(Protocol):
    """Where the pool reports initializations, unloads and failures (the audit log)."""

    async def record(self, event: str, *, model: ModelConfig, path: Path | None, replica: Replica,
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
    inspect_error: str | None = None
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

    @property
    def keep_alive(self) -> float:
        return self.config.keep_alive if self.keep_alive_override is None else self.keep_alive_override


class Lease:
    """A request's claim on one slot of a warm replica; release it exactly once."""

    __slots__ = ("_pool", "replica", "cold", "waited_s", "keep_alive", "_released")

    def __init__(self, pool: Pool, replica: Replica, cold: bool, waited_s: float, keep_alive: float | None):
        self._pool, self.replica, self.cold = pool, replica, cold
        self.waited_s, self.keep_alive, self._released = waited_s, keep_alive, False

    @property
    def base_url(self) -> str:
        assert self.replica.process is not None
        return self.replica.process.base_url

    @property
    def start(self) -> str:
        return "cold" if self.cold else "warm"

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self)

    def fail(self, reason: str) -> None:
        """The replica broke under this request (connection refused or cut): replace it."""
        self._pool._replica_broken(self.replica, reason)
