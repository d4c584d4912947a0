"""The pool's models as data: what /v1/models, `warmstart ps` and the dashboard show."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warmstart.pool.entry import ModelEntry
from warmstart.pool.replica import Replica
from warmstart.pool.states import ReplicaState

if TYPE_CHECKING:
    from warmstart.store.model_store import ModelStore


@dataclass(frozen=True)
class ReplicaInfo:
    """A replica as it was when asked: what the pages and the tests read, never the pool's own record."""

    id: str
    model: str
    state: ReplicaState
    trigger: str
    created_at: float
    in_flight: int
    served: int
    pid: int | None


def replica_info(r: Replica) -> ReplicaInfo:
    return ReplicaInfo(id=r.id, model=r.model, state=r.state, trigger=r.trigger, created_at=r.created_at,
                       in_flight=r.in_flight, served=r.served, pid=r.pid)


def model_view(entry: ModelEntry, state: ReplicaState, now: float, store: ModelStore | None) -> dict[str, Any]:
    """A model as /v1/models, `warmstart ps` and the dashboard show it."""
    cfg = entry.config
    replicas = []
    for r in entry.replicas:
        replicas.append({
            "id": r.id,
            "state": r.state.value,
            "phase": r.report.current if r.state is ReplicaState.STARTING else None,
            "phases": {name: round(s, 4) for name, s in r.report.phases},
            "pid": r.pid,
            "node": r.node,
            "url": r.process.base_url if r.process is not None else None,
            "in_flight": r.in_flight,
            "served": r.served,
            "trigger": r.trigger,
            "keep_alive_s": _seconds(entry.keep_alive if r.keep_alive is None else r.keep_alive),
            # (a busy replica is not idle, though a lease's bookkeeping may not have said so yet: Pool.try_acquire)
            "idle_s": None if r.idle_since is None or r.in_flight else round(now - r.idle_since, 3),
            "expires_in_s": None if r.expires_at is None or r.in_flight else round(max(0.0, r.expires_at - now), 3),
            "error": r.error,
        })
    last = entry.starts[-1].to_dict() if entry.starts else None
    caps = entry.capabilities.to_dict() if entry.capabilities else None
    return {
        "name": cfg.name,
        "engine": cfg.engine,
        "state": state.value,
        "replicas": replicas,
        "queue_depth": len(entry.waiters),
        "keep_alive_s": None if math.isinf(cfg.keep_alive) else cfg.keep_alive,
        "max_replicas": cfg.max_replicas,
        "max_concurrency": cfg.max_concurrency,
        "warm_until_s": None if entry.warm_until <= now else (
            None if math.isinf(entry.warm_until) else round(entry.warm_until - now, 3)),
        "last_start": last,
        "starts": [s.to_dict() for s in list(entry.starts)[-10:]],
        "last_failure": entry.last_failure,
        "problem": entry.problem,
        "capabilities": caps,
        "runtime_pool": entry.engine.runtime_view(cfg),
        "path": str(entry.path) if entry.path else cfg.path,
        "tier": store.view(cfg.name) if store is not None else None,
    }


def _seconds(value: float) -> float | None:
    return None if math.isinf(value) else value
