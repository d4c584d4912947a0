"""A replica: one engine process serving one model, and where it is in its lifecycle."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from warmstart.engines.base import EngineProcess, StartReport
from warmstart.pool.states import ReplicaState, transition

_ids = itertools.count(1)


def next_replica_id(model: str) -> str:
    return f"{model}#{next(_ids)}"


@dataclass
class Replica:
    id: str
    model: str
    trigger: str
    capacity: int
    keep_alive: float | None  # set by a request or a command; None: the model's own
    created_at: float
    created_wall: float
    state: ReplicaState = ReplicaState.COLD
    in_flight: int = 0
    served: int = 0
    idle_since: float | None = None
    warm_at: float | None = None
    error: str | None = None
    process: EngineProcess | None = None
    report: StartReport = field(default_factory=StartReport)
    # the idle timer that unloads this replica when keep-alive runs out
    expiry_task: asyncio.Task[None] | None = None
    expires_at: float | None = None
    # the time up to which loaded seconds have been counted
    accounted_to: float | None = None
    # where its weights were read from: "ram" (the RAM tier's copy) or "disk"
    tier: str = "disk"
    unload_when_idle: bool = False
    # `keep_alive` came with the request just served (Ollama's semantics: it wins over the warming
    # controller's warm-until, so 0 unloads after the request even under keep_alive "auto")
    keep_alive_by_request: bool = False
    # many machines: the node it runs on (None on a single box) and the memory placement counted for it there
    node: str | None = None
    need_bytes: int = 0
    # chosen to make room for a start on its node, unloaded once that start's weights are there: its memory
    # is not offered as room again meanwhile (two starts would count on the same bytes)
    evicting: bool = False

    def move(self, target: ReplicaState) -> None:
        self.state = transition(self.state, target)

    def rewarm(self, keep_alive: float | None, now: float) -> bool:
        """Carry out `rules.Rewarm`: keep this replica (no unload when idle), with `keep_alive` if given; a
        warm idle one restarts its idle clock now. Returns whether it did (its expiry is then re-armed)."""
        self.unload_when_idle = False
        if keep_alive is not None:
            self.keep_alive, self.keep_alive_by_request = keep_alive, False
        if self.state is not ReplicaState.WARM or self.in_flight > 0:
            return False
        self.idle_since = now
        return True

    @property
    def free_slots(self) -> int:
        if self.state is not ReplicaState.WARM:
            return 0
        return max(0, self.capacity - self.in_flight)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None
