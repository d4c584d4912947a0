"""The pool: the one owner of the replica table. Gateways take leases; policies hand it a desired warm set.

All mutation happens in plain (non-async) methods on the event loop's thread, so no two
changes interleave; process work (start, stop) runs in tasks that report back through them.
The table itself is private: others ask through the methods below, which hand out leases, read-only
records and views, never the table's own objects (a lease's replica aside).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmstart.clock import Clock
from warmstart.config import Config, ModelConfig
from warmstart.engines.base import Capabilities, Engine, distinct
from warmstart.engines.runtime import account_runtimes
from warmstart.errors import ModelNotFound, StoreError, Unavailable
from warmstart.pool import rules
from warmstart.pool.books import Books
from warmstart.pool.changes import ModelChanges
from warmstart.pool.entry import AuditSink, ModelEntry, NullAudit
from warmstart.pool.files import ModelFiles
from warmstart.pool.lease import Lease, LeaseOwner
from warmstart.pool.leasing import Leasing
from warmstart.pool.lifecycle import Lifecycle
from warmstart.pool.replica import Replica
from warmstart.pool.roster import Roster
from warmstart.pool.states import LIVE, ReplicaState, model_state
from warmstart.pool.view import ReplicaInfo, model_view, replica_info
from warmstart.store.files import folder_files
from warmstart.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from warmstart.cluster.placing import Cluster
    from warmstart.store.model_store import ModelStore

S = ReplicaState


class Pool:
    def __init__(self, config: Config, engines: Mapping[str, Engine], clock: Clock, metrics: Metrics,
                 audit: AuditSink | None = None, store: ModelStore | None = None) -> None:
        self._books = books = Books(config, clock, metrics, audit or NullAudit(), store)
        self._clock = clock
        self._engines = engines
        self._models: dict[str, ModelEntry] = {
            m.name: ModelEntry(config=m, engine=engines[m.engine],
                               wait_histogram=metrics.request_wait_seconds.labels(m.name))
            for m in config.models
        }
        # asked when a lookup misses and before a listing: a model may just have been added to the store (the
        # catalog sets it; True when the models served changed)
        self.refresh: Callable[[], bool] = lambda: False
        self._arrival_listeners: list[Callable[[str, float], None]] = []
        self._files = ModelFiles(books)
        self._lifecycle = Lifecycle(books, self._files, dispatch=lambda e: self._leasing.dispatch(e),
                                    scale=lambda e: self._leasing.scale(e), table=lambda: self._models)
        owner = LeaseOwner(release=self._release, broken=self._broken)
        self._leasing = Leasing(books, self._lifecycle, owner, self._arrived)
        self._roster = Roster(books, self._models, engines, self._files, self._lifecycle, self._leasing)
        for entry in self._models.values():
            books.changed(entry)
            books.init_series(entry.name)

    # ---- lookups -------------------------------------------------------------------------

    def _entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None and self.refresh():  # the catalog found the model just added to the store
            entry = self._models.get(name)
        if entry is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"The model '{name}' does not exist. Models served here: {known}.", param="model")
        return entry

    def check_model(self, name: str) -> None:
        """Raise ModelNotFound (naming the models served here) unless `name` is one."""
        self._entry(name)

    def model_names(self) -> tuple[str, ...]:
        """The models served here, in configured order."""
        self.refresh()
        return tuple(self._models)

    def has_model(self, name: str) -> bool:
        return name in self._models

    @property
    def accepting(self) -> bool:
        """Whether the pool still takes requests (False once shutdown began)."""
        return not self._leasing.closing

    def known_capabilities(self, name: str) -> Capabilities | None:
        """What `capabilities` found for the model, if it has been asked yet (never inspects)."""
        return self._entry(name).capabilities

    def replicas(self, name: str) -> tuple[ReplicaInfo, ...]:
        """The model's replicas as they are now, as read-only records."""
        return tuple(replica_info(r) for r in self._entry(name).replicas)

    def live_replicas(self, name: str) -> int:
        """How many of the model's replicas hold (or are loading, or releasing) its weights."""
        return sum(1 for r in self._entry(name).replicas if r.state in LIVE)

    def resolved_paths(self) -> list[Path]:
        """The weights' paths of the models resolved so far."""
        return [entry.path for entry in self._models.values() if entry.path is not None]

    def attach_store(self, store: ModelStore) -> None:
        """The model store (integrity checks, RAM tier), built after the pool because it asks it `live_replicas`."""
        self._books.store = store

    def attach_cluster(self, cluster: Cluster) -> None:
        """Many machines (warmstart.cluster): every start is placed on a node by `placement.place` from now on."""
        self._books.cluster = cluster

    @property
    def cluster(self) -> Cluster | None:
        return self._books.cluster

    def nodes_view(self) -> list[dict[str, Any]] | None:
        """The cluster's nodes with memory and models per tier (`warmstart nodes`); None on a single box."""
        if self._books.cluster is None:
            return None
        return self._books.cluster.view([r for e in self._models.values() for r in e.replicas])

    async def capabilities(self, name: str) -> Capabilities:
        """What a model can do, found from its file without loading it (resolved once)."""
        return await self._files.capabilities(self._entry(name))

    async def prepare(self) -> None:
        """Resolve, inspect and (for the store's manifest) hash every model in the background at start-up,
        so a first request does not pay for it; problems are logged, not fatal. Engines that keep
        pre-initialized runtimes start filling them first."""
        for engine in distinct(self._engines.values()):
            await engine.open()
        for entry in list(self._models.values()):
            await self._files.prepare(entry)

    # ---- leases --------------------------------------------------------------------------

    def held(self, name: str) -> int:
        """How many requests for `name` wait for a slot (0 for a model not served here)."""
        entry = self._models.get(name)
        return 0 if entry is None else len(entry.waiters)

    def try_acquire(self, name: str, keep_alive: float | None = None, put_off: bool = False) -> Lease | None:
        """The warm fast path: a lease at once if a warm replica has a free slot and nobody waits. `put_off`: the
        pool's bookkeeping of it (the replica's idle clock, the wait counted, the arrival told) waits for
        `Lease.settle` or the release, so that a request sent from a callback reaches its engine first."""
        return self._leasing.try_acquire(self._entry(name), keep_alive, put_off)

    async def acquire(self, name: str, keep_alive: float | None = None, deadline_s: float | None = None) -> Lease:
        """A lease on a warm replica of `name`, starting one if needed; held up to the deadline.

        Raises QueueFull at once when the model's queue is full, DeadlineExceeded past the deadline.
        """
        return await self._leasing.acquire(self._entry(name), keep_alive, deadline_s)

    def _arrived(self, name: str, wall: float | None = None) -> None:
        """Tell the arrival listeners of a request for `name` (that arrived at `wall`, or now)."""
        wall = self._clock.wall() if wall is None else wall
        for listener in self._arrival_listeners:
            listener(name, wall)

    def _release(self, lease: Lease) -> None:
        self._leasing.release(self._roster.owner(lease.replica), lease)

    def _broken(self, replica: Replica, reason: str) -> None:
        self._lifecycle.broken(self._roster.owner(replica), replica, reason)

    def idle_warm(self) -> list[Replica]:
        """Warm replicas with no request in flight (their engines are watched by a liveness probe; a busy
        one is watched by its requests)."""
        return [r for entry in self._models.values() for r in entry.replicas
                if r.state is S.WARM and r.in_flight == 0 and r.process is not None]

    def fail_wedged(self, replica: Replica, reason: str) -> None:
        """An idle replica's engine failed its liveness probe: kill it, so the next request starts another."""
        if replica.state is S.WARM and replica.in_flight == 0:
            self._broken(replica, reason)

    # ---- commands from the CLI, hints and the warming controller ----------------------------

    def ensure_warm(self, name: str, trigger: str, keep_alive: float | None = None) -> ReplicaState:
        """Start a replica of `name` unless one is live; returns the model's state."""
        entry = self._entry(name)
        self._leasing.reap_failed(entry)
        self._carry_out(entry, rules.ensure_warm(entry.replicas, trigger, keep_alive,
                                                 configured=entry.config.keep_alive))
        return self.state_of(name)

    def set_warm_until(self, name: str, until: float, trigger: str) -> None:
        """The controller's desired warm set: keep at least one replica loaded until `until`."""
        entry = self._entry(name)
        entry.warm_until, entry.warm_trigger = until, trigger
        now = self._clock.now()
        if until > now:
            self._leasing.reap_failed(entry)
        self._carry_out(entry, rules.warm_until(entry.replicas, now, until, trigger,
                                                configured=entry.config.keep_alive))

    def _carry_out(self, entry: ModelEntry,
                   decisions: Sequence[rules.Start | rules.Rewarm[Replica] | rules.Rearm[Replica]]) -> None:
        """The actuator for what `rules.ensure_warm` and `rules.warm_until` decide."""
        for decision in decisions:
            if isinstance(decision, rules.Start):
                replica = self._lifecycle.start(entry, decision.trigger)
                replica.keep_alive = decision.keep_alive
                continue
            if isinstance(decision, rules.Rewarm) and not decision.replica.rewarm(decision.keep_alive,
                                                                                  self._clock.now()):
                continue
            self._lifecycle.arm_expiry(entry, decision.replica)

    async def wait_warm(self, name: str, timeout: float) -> ReplicaState:
        """Wait until the model is warm, failed or cold again (or the timeout passes)."""
        entry = self._entry(name)
        timer = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            while not timer.done():
                state = self.state_of(name)
                if state in (S.WARM, S.FAILED, S.COLD):
                    return state
                changed = asyncio.ensure_future(entry.changed.wait())
                await asyncio.wait({changed, timer}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
            return self.state_of(name)
        finally:
            timer.cancel()

    async def hold_in_ram(self, name: str, keep_alive: float | None) -> None:
        """Hold the model's weights in the RAM tier now (loaded or not) for `keep_alive` seconds (None: the
        model's default); 0 lets them go. Raises StoreError (TierRefused) with the limit that refused it."""
        entry = self._entry(name)
        if self._books.cluster is not None:  # many machines: in the RAM tier of the node a start would use
            if keep_alive is None:
                keep_alive = entry.config.ram_keep_alive or 3600.0
            await self._books.cluster.hold(entry.name, keep_alive, await self._files.resolve(entry),
                                           [r for e in self._models.values() for r in e.replicas])
            return
        store = self._books.store
        if store is None:
            raise StoreError("the model store is off in this server, so there is no RAM tier")
        await store.hold(entry.config, await self._files.resolve(entry), keep_alive)

    async def unload(self, name: str) -> int:
        """Stop every replica of `name`: idle ones now, busy ones when their last request ends."""
        entry = self._entry(name)
        entry.warm_until = -math.inf
        stops = []
        for decision in rules.on_unload(entry.replicas):
            if isinstance(decision, rules.Stop):
                stops.append(self._lifecycle.stop(entry, decision.replica, "manual"))
            else:
                decision.replica.unload_when_idle = True
        await asyncio.gather(*stops)
        store = self._books.store
        if store is not None and not any(r.state in LIVE for r in entry.replicas):
            await store.evict(name, "manual unload")
        return len(stops)

    async def shutdown(self) -> None:
        self._leasing.close()
        stops = []
        for entry in self._models.values():
            entry.refuse_waiters(Unavailable("warmstart is shutting down", retry_after=5))
            for replica in list(entry.replicas):
                stops.append(self._lifecycle.stop(entry, replica, "shutdown"))
        await asyncio.gather(*stops, return_exceptions=True)
        await asyncio.gather(*(e.close() for e in distinct(self._engines.values())),
                             return_exceptions=True)
        if self._books.store is not None:
            await self._books.store.close()
        if self._books.cluster is not None:  # the agents end the engines on their nodes
            await self._books.cluster.close()
        await self._books.cancel_tasks()

    # ---- the models served, changed while the server runs (a reload, a model added to the store) ------------

    def configs(self) -> tuple[ModelConfig, ...]:
        """The settings of the models served now, in order."""
        return tuple(entry.config for entry in self._models.values())

    def apply(self, changes: ModelChanges) -> None:
        """Add, remove, restart and update models as `changes` says (`Roster.apply`)."""
        self._roster.apply(changes)

    def draining(self) -> tuple[str, ...]:
        """Models taken out of service whose replicas still finish their requests."""
        return self._roster.draining()

    # ---- what the warming runner may ask and set (it never touches the table) ------------------------

    def subscribe_arrivals(self, listener: Callable[[str, float], None]) -> Callable[[], None]:
        """Call `listener(model, wall time)` for every request as it arrives; returns the unsubscribe."""
        self._arrival_listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._arrival_listeners.remove(listener)

        return unsubscribe

    def set_keep_alive_floor(self, name: str, seconds: float | None) -> None:
        """The pool's own idle keep-alive for the model's last replica while the warming controller picks
        its keep-alive (keep_alive "auto"); None: the configured one again."""
        self._entry(name).keep_alive_override = seconds

    def start_seconds(self, name: str, last: int = 20, tier: str | None = None) -> list[float]:
        """How long the model's `last` successful starts took (from `tier` only: "ram" or "disk"), oldest
        first."""
        return [s.total_s for s in self._entry(name).starts
                if s.outcome == "ok" and (tier is None or s.tier == tier)][-last:]

    def set_ram_until(self, name: str, until: float | None) -> None:
        """The warming controller's RAM horizon for a model whose tiers it picks: its weights stay in RAM
        until then (monotonic) once it unloads (`rules.tier_on_stop`'s `planned`); None: its own
        ram_keep_alive."""
        self._entry(name).ram_until = until

    def ram_price_s(self, name: str) -> float | None:
        """What a second of the model's weights held in RAM costs in loaded replica-seconds (store.ram_price,
        per GiB-hour where a loaded replica-hour costs 1, times the weights' GiB); None without a RAM tier."""
        store = self._books.store
        if store is None:
            return None
        entry = self._entry(name)
        path = entry.path or Path(entry.config.path)
        try:
            size = sum(f.stat().st_size for _, f in folder_files(path)) if path.is_dir() else path.stat().st_size
        except OSError:
            return None
        return store.settings.ram_price * size / (1 << 30)

    def outlook(self, name: str, cold_start: float) -> rules.Outlook:
        """How long the model stays loaded as things stand (`rules.outlook`)."""
        entry = self._entry(name)
        return rules.outlook(entry.replicas, model=entry.keep_alive, cold_start=cold_start, now=self._clock.now())

    # ---- views ----------------------------------------------------------------------------

    def is_warm(self, name: str) -> bool:
        """Whether `name` has a warm replica (ModelNotFound unless it is a model served here)."""
        return any(r.state is S.WARM for r in self._entry(name).replicas)

    def state_of(self, name: str) -> ReplicaState:
        return model_state([r.state for r in self._entry(name).replicas])

    def account_all(self) -> None:
        """Count every replica's and runtime's loaded seconds up to now (before a scrape or a view)."""
        for entry in self._models.values():
            for replica in entry.replicas:
                self._books.account(replica)
        account_runtimes(distinct(self._engines.values()), self._books.metrics, self._clock.now())
        if self._books.store is not None:
            self._books.store.account()
        if self._books.cluster is not None:
            self._books.cluster.account([r for e in self._models.values() for r in e.replicas])

    def snapshot(self) -> list[dict[str, Any]]:
        self.refresh()
        now = self._clock.now()
        self.account_all()
        return [model_view(entry, self.state_of(entry.name), now, self._books.store)
                for entry in self._models.values()]

    def view(self, name: str) -> dict[str, Any]:
        """One model as `snapshot` shows it (ModelNotFound for an unknown name)."""
        entry = self._entry(name)
        now = self._clock.now()
        self.account_all()
        return model_view(entry, self.state_of(name), now, self._books.store)
