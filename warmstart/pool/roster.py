"""The models the pool serves, changed while it runs (warmstart.catalog: a reload, a model added to or removed
from the store): entries added, updated in place, or retired, so that a retired model's replicas drain (their
requests in flight finish) and unload while no new request finds it."""

from __future__ import annotations

import math
from collections.abc import Mapping

from warmstart.config import ModelConfig
from warmstart.engines.base import Engine, distinct
from warmstart.errors import Unavailable
from warmstart.pool import rules
from warmstart.pool.books import Books
from warmstart.pool.changes import ModelChanges
from warmstart.pool.entry import ModelEntry
from warmstart.pool.files import ModelFiles
from warmstart.pool.leasing import Leasing
from warmstart.pool.lifecycle import Lifecycle
from warmstart.pool.replica import Replica
from warmstart.pool.states import LIVE, ReplicaState

S = ReplicaState


class Roster:
    def __init__(self, books: Books, models: dict[str, ModelEntry], engines: Mapping[str, Engine],
                 files: ModelFiles, lifecycle: Lifecycle, leasing: Leasing) -> None:
        self._books = books
        self._models = models  # the pool's table: the models a request can find
        self._engines = engines
        self._files = files
        self._lifecycle = lifecycle
        self._leasing = leasing
        # models taken out of service whose replicas still drain
        self._retired: list[ModelEntry] = []

    def apply(self, changes: ModelChanges) -> None:
        """A removed model is found by no new request, its held requests are refused, and its replicas drain
        (in-flight requests finish) and unload; a restarted one's replicas drain so while its next start uses
        the new settings; an updated one takes them at once (a new keep-alive counts from the idle clock
        already running). The engines then start, or let go of, what they keep ready for the models (a llama.cpp
        router, vLLM's pre-initialized runtimes)."""
        for name in changes.removed:
            self._retire(self._models.pop(name), "removed")
        for config in changes.restarted:
            self._retire(self._models.pop(config.name), "restarted on new settings")
            self._add(config)
        for config in changes.updated:
            self._update(config)
        for config in changes.added:
            self._add(config)
        if self._books.cluster is None:  # on a cluster the nodes' engines run every start: the head keeps none
            served = tuple(entry.config for entry in self._models.values())
            for engine in distinct(self._engines.values()):
                engine.models_changed(served)

    def _add(self, config: ModelConfig) -> None:
        books = self._books
        entry = ModelEntry(config=config, engine=self._engines[config.engine],
                           wait_histogram=books.metrics.request_wait_seconds.labels(config.name))
        self._models[config.name] = entry
        books.changed(entry)
        books.init_series(config.name)
        if books.store is not None:
            books.store.track(config)
        books.spawn(self._files.prepare(entry), name=f"prepare {config.name}")

    def _update(self, config: ModelConfig) -> None:
        entry = self._models[config.name]
        entry.config = config
        if self._books.store is not None:
            self._books.store.track(config)
        for replica in entry.replicas:
            if replica.state is S.WARM and replica.in_flight == 0:
                self._lifecycle.arm_expiry(entry, replica)
        self._leasing.scale(entry)
        self._books.changed(entry)

    def _retire(self, entry: ModelEntry, why: str) -> None:
        entry.warm_until = -math.inf
        entry.refuse_waiters(Unavailable(f"model '{entry.name}' was {why} while this request waited; retry",
                                         retry_after=1))
        self._retired.append(entry)
        for decision in rules.on_unload(entry.replicas):
            if isinstance(decision, rules.Stop):
                self._books.spawn(self._lifecycle.stop(entry, decision.replica, "reload"),
                                  name=f"drain {decision.replica.id}")
            else:  # stops when its last request ends (`rules.unload_at`)
                decision.replica.unload_when_idle = True
                self._lifecycle.disarm_expiry(decision.replica)
        self._books.spawn(self._drained(entry), name=f"drained {entry.name}")

    async def _drained(self, entry: ModelEntry) -> None:
        while any(r.state in LIVE for r in entry.replicas):
            await entry.changed.wait()
        self._prune()

    def owner(self, replica: Replica) -> ModelEntry:
        """The entry a replica belongs to: a retired model's while it drains, else its model's."""
        for entry in self._retired:
            if replica in entry.replicas:
                return entry
        current = self._models.get(replica.model)
        if current is not None:
            return current
        # gone from every table already: an entry of its own, so its release is still counted
        return ModelEntry(config=ModelConfig(replica.model, "command", ""), engine=next(iter(self._engines.values())))

    def _prune(self) -> None:
        """Let go of retired models whose replicas are all gone; a removed one's RAM copy goes too."""
        for entry in [e for e in self._retired if not any(r.state in LIVE for r in e.replicas)]:
            self._retired.remove(entry)
            current = self._models.get(entry.name)
            if current is not None:  # the gauges are the served model's again, not the drained one's
                self._books.changed(current)
            elif self._books.store is not None:
                self._books.spawn(self._books.store.forget(entry.name), name=f"forget {entry.name}")

    def draining(self) -> tuple[str, ...]:
        self._prune()
        return tuple(e.name for e in self._retired)
