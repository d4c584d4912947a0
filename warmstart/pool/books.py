"""What every part of the pool shares: its settings, clock, metrics, audit log and model store, the tasks
it runs, and the bookkeeping of its gauges and loaded seconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from warmstart.clock import Clock
from warmstart.config import Config
from warmstart.pool.entry import AuditSink, ModelEntry, StartRecord
from warmstart.pool.replica import Replica
from warmstart.pool.states import LIVE, ReplicaState
from warmstart.telemetry.metrics import TRIGGERS, Metrics

if TYPE_CHECKING:
    from warmstart.cluster.placing import Cluster
    from warmstart.store.model_store import ModelStore

log = logging.getLogger("warmstart.pool")


class Books:
    """The pool's shared dependencies and bookkeeping (one per pool)."""

    def __init__(self, config: Config, clock: Clock, metrics: Metrics, audit: AuditSink,
                 store: ModelStore | None) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.audit = audit
        # integrity before starts and the RAM tier between them (warmstart.store); None: neither
        self.store = store
        # many machines (warmstart.cluster): replicas are placed on nodes (placement.place); None: this box only
        self.cluster: Cluster | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- tasks -----------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pool task %s failed", task.get_name(), exc_info=task.exception())

    async def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- metrics -------------------------------------------------------------------------------

    def account(self, replica: Replica) -> None:
        """Count the replica's loaded seconds up to now."""
        now = self.clock.now()
        if replica.accounted_to is not None and replica.state in LIVE:
            loaded = self.metrics.replica_loaded_seconds.labels(replica.model, *self.metrics.at(replica.node))
            loaded.inc(max(0.0, now - replica.accounted_to))
            if self.store is not None:
                self.store.add_loaded_seconds(replica.model, max(0.0, now - replica.accounted_to))
        replica.accounted_to = now

    def init_series(self, name: str) -> None:
        """Create the counters' series at zero, so the first start or failure shows as an increase."""
        m = self.metrics
        if m.node_label:  # a cluster: a series per node, made when a replica there first counts
            return
        m.replica_loaded_seconds.labels(name)
        for trigger in TRIGGERS:
            for outcome in ("ok", "failed"):
                m.starts.labels(name, trigger, outcome)
        for stage in ("start", "running", "audit"):
            m.replica_failures.labels(name, stage)
        for start in ("warm", "cold"):
            m.requests.labels(name, start, "200")

    def changed(self, entry: ModelEntry) -> None:
        """The model's replicas or queue changed: wake whoever waits for that, and set its gauges."""
        # wake whoever waits for a change of this model, then arm a fresh event for the next one
        entry.changed.set()
        entry.changed = asyncio.Event()
        counts = dict.fromkeys(ReplicaState, 0)
        for replica in entry.replicas:
            counts[replica.state] += 1
        for state, n in counts.items():
            self.metrics.replicas.labels(entry.name, state.value).set(n)
        self.metrics.queue_depth.labels(entry.name).set(len(entry.waiters))

    def start_finished(self, entry: ModelEntry, replica: Replica, outcome: str, total: float,
                       error: str | None) -> None:
        """A start ended (ok, failed or cancelled): keep its record and measure its phases."""
        phases = tuple(replica.report.phases)
        entry.starts.append(StartRecord(replica.id, replica.trigger, outcome, phases, total,
                                        replica.created_wall, error, replica.tier))
        node = self.metrics.at(replica.node)
        self.metrics.starts.labels(entry.name, replica.trigger, outcome, *node).inc()
        if outcome == "ok":
            hist, last = self.metrics.cold_start_seconds, self.metrics.cold_start_last_seconds
            engine = entry.config.engine
            for name, seconds in phases:
                hist.labels(entry.name, engine, name, *node).observe(seconds)
            hist.labels(entry.name, engine, "total", *node).observe(total)
            # the last start (on that node) replaces the previous one's phases, including any this one skipped
            for sample in list(next(iter(last.collect())).samples):
                if sample.labels["model"] == entry.name and node == self.metrics.at(sample.labels.get("node")):
                    last.remove(entry.name, sample.labels["engine"], sample.labels["phase"], *node)
            for name, seconds in phases:
                last.labels(entry.name, engine, name, *node).set(seconds)
            last.labels(entry.name, engine, "total", *node).set(total)
