"""The pool: the one owner of the replica table. Gateways take leases; policies hand it a desired warm set.

All mutation happens in plain (non-async) methods on the event loop's thread, so no two
changes interleave; process work (start, stop) runs in tasks that report back through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmstart.clock import Clock
from warmstart.config import Config
from warmstart.engines.base import Capabilities, Engine
from warmstart.errors import (
    AuditError,
    DeadlineExceeded,
    ModelNotFound,
    ModelStartFailed,
    QueueFull,
    StoreError,
    Unavailable,
    WarmstartError,
)
from warmstart.pool import rules
from warmstart.pool.entry import AuditSink, Lease, ModelEntry, NullAudit, StartRecord, Waiter
from warmstart.pool.replica import Replica, next_replica_id
from warmstart.pool.states import LIVE, ReplicaState, model_state
from warmstart.pool.view import model_view
from warmstart.store.sources import resolve_model_path
from warmstart.telemetry.metrics import TRIGGERS, Metrics

if TYPE_CHECKING:
    from warmstart.cluster.placing import Cluster
    from warmstart.store.model_store import ModelStore

log = logging.getLogger("warmstart.pool")
S = ReplicaState
# the last phase of a start: its audit record is written (and fsynced) before the replica is warm
AUDIT_PHASE = "audit"


class Pool:
    def __init__(self, config: Config, engines: Mapping[str, Engine], clock: Clock, metrics: Metrics,
                 audit: AuditSink | None = None, store: ModelStore | None = None) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.audit: AuditSink = audit or NullAudit()
        # integrity before starts and the RAM tier between them (warmstart.store); None: neither
        self.store = store
        # many machines (warmstart.cluster): replicas are placed on nodes (rules.place); None: this box only
        self.cluster: Cluster | None = None
        self.models: dict[str, ModelEntry] = {
            m.name: ModelEntry(config=m, engine=engines[m.engine],
                               wait_histogram=metrics.request_wait_seconds.labels(m.name))
            for m in config.models
        }
        self.engines = engines
        self._arrival_listeners: list[Callable[[str, float], None]] = []
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        for entry in self.models.values():
            self._update_gauges(entry)
            self._init_series(entry.name)

    # ---- lookups -------------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"The model '{name}' does not exist. Models served here: {known}.",
                                param="model") from None

    async def capabilities(self, name: str) -> Capabilities:
        """What a model can do, found from its file without loading it (resolved once)."""
        entry = self.entry(name)
        if entry.capabilities is not None:
            return entry.capabilities
        async with entry.inspect_lock:
            if entry.capabilities is None:
                try:
                    path = await self._resolve(entry)
                    try:
                        entry.capabilities = await asyncio.to_thread(entry.engine.inspect, entry.config, path)
                    except StoreError as exc:
                        raise ModelStartFailed(f"model '{name}' cannot be used: {exc}", retry_after=None) from exc
                except ModelStartFailed as exc:
                    self._audit_refusal(entry, exc.message)
                    raise
        return entry.capabilities

    def _audit_refusal(self, entry: ModelEntry, error: str) -> None:
        """A model refused before any start (its file is missing, truncated or not a model): one audit
        record per distinct reason, not one per request, so requests cannot flood the log."""
        if entry.refused_audited == error:
            return
        entry.refused_audited = error
        now = self.clock.now()
        attempt = Replica(id=next_replica_id(entry.name), model=entry.name, trigger="inspect",
                          capacity=entry.config.max_concurrency, keep_alive=entry.config.keep_alive,
                          created_at=now, created_wall=self.clock.wall())
        self._spawn(self.audit.record("start", model=entry.config, path=entry.path, replica=attempt,
                                      engine=entry.engine, outcome="refused", error=error, seconds=0.0),
                    name="audit")

    async def prepare(self) -> None:
        """Resolve, inspect and (for the store's manifest) hash every model in the background at start-up,
        so a first request does not pay for it (an `assemble:` model is written once); problems are
        logged, not fatal. Engines that keep pre-initialized runtimes start filling them first."""
        for engine in {id(e): e for e in self.engines.values()}.values():
            if hasattr(engine, "open"):
                await engine.open()
        for name in list(self.models):
            try:
                await self.capabilities(name)
                if self.store is not None and self.store.settings.verify_on_start:
                    # hash a model without a manifest now rather than on its first start
                    await self.store.check(self.models[name].config, await self._resolve(self.models[name]))
            except WarmstartError as exc:
                log.warning("%s", exc)

    async def _resolve(self, entry: ModelEntry) -> Path:
        if entry.path is None:
            try:
                entry.path = await asyncio.to_thread(
                    resolve_model_path, entry.config.path, self.config.server.data_dir)
            except StoreError as exc:
                entry.inspect_error = str(exc)
                raise ModelStartFailed(f"model '{entry.name}' cannot be started: {exc}", retry_after=None) from exc
        return entry.path

    # ---- leases --------------------------------------------------------------------------

    def try_acquire(self, name: str, keep_alive: float | None = None) -> Lease | None:
        """The warm fast path: a lease at once if a warm replica has a free slot and nobody waits."""
        entry = self.entry(name)
        if self._closing:
            return None
        decision = rules.admit(entry.replicas, len(entry.waiters), self.config.server.queue_size)
        if not isinstance(decision, rules.Serve):
            return None
        wall = self.clock.wall()
        for listener in self._arrival_listeners:
            listener(name, wall)
        return self._lease(entry, decision.replica, cold=False, waited=0.0, keep_alive=keep_alive)

    async def acquire(self, name: str, keep_alive: float | None = None, deadline_s: float | None = None) -> Lease:
        """A lease on a warm replica of `name`, starting one if needed; held up to the deadline.

        Raises QueueFull at once when the model's queue is full, DeadlineExceeded past the deadline.
        """
        entry = self.entry(name)
        if self._closing:
            raise Unavailable("warmstart is shutting down", retry_after=5)
        now = self.clock.now()
        for listener in self._arrival_listeners:
            listener(name, self.clock.wall())
        self._reap_failed(entry)
        decision = rules.admit(entry.replicas, len(entry.waiters), self.config.server.queue_size)
        if isinstance(decision, rules.Serve):  # never held: no wait, whatever the bookkeeping above cost
            return self._lease(entry, decision.replica, cold=False, waited=0.0, keep_alive=keep_alive)
        if isinstance(decision, rules.Refuse):
            raise QueueFull(
                f"model '{name}' has {decision.waiting} requests waiting, the most it holds; retry later",
                retry_after=self._retry_after(entry))
        waiter = Waiter(asyncio.get_running_loop().create_future(), now, decision.cold, keep_alive)
        entry.waiters.append(waiter)
        self._scale(entry)
        self._update_gauges(entry)
        deadline = self.config.server.queue_deadline if deadline_s is None else deadline_s
        timer = asyncio.ensure_future(self.clock.sleep(deadline))
        try:
            await asyncio.wait({waiter.future, timer}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.future.done():
                return waiter.future.result()
            waiter.future.cancel()
            raise DeadlineExceeded(self._deadline_message(entry, deadline), retry_after=self._retry_after(entry))
        except asyncio.CancelledError:
            # the client went away while held: give back a lease it may just have received
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                waiter.future.result().release()
            waiter.future.cancel()
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                entry.waiters.remove(waiter)
            self._update_gauges(entry)
            leased = waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None
            if not leased:  # held, then refused or abandoned: the wait still happened (a lease records its own)
                self.metrics.request_wait_seconds.labels(name).observe(max(0.0, self.clock.now() - now))

    @staticmethod
    def _deadline_message(entry: ModelEntry, deadline: float) -> str:
        """Why a held request gave up: the model never got warm, or it was warm and every slot stayed busy."""
        warm = [r for r in entry.replicas if r.state is S.WARM]
        if warm:
            slots = sum(r.capacity for r in warm)
            return (f"model '{entry.name}' is warm, but all {slots} request slot(s) of its {len(warm)} replica(s) "
                    f"stayed busy for {deadline:g} s ({len(entry.waiters)} requests waiting); retry later")
        starting = sum(1 for r in entry.replicas if r.state is S.STARTING)
        if starting:
            return f"model '{entry.name}' was still starting after {deadline:g} s; retry later"
        return f"model '{entry.name}' did not become ready within {deadline:g} s; retry later"

    def _lease(self, entry: ModelEntry, replica: Replica, cold: bool, waited: float,
               keep_alive: float | None) -> Lease:
        """A slot of `replica` for a request that was held `waited` seconds (0 for one never queued: two
        clock reads around the bookkeeping would charge it for a thread switch it never waited for)."""
        replica.in_flight += 1
        replica.idle_since = None
        self._disarm_expiry(replica)
        entry.wait_histogram.observe(waited)
        return Lease(self, replica, cold, waited, keep_alive)

    def _dispatch(self, entry: ModelEntry) -> None:
        while entry.waiters:
            replica = rules.free_replica(entry.replicas)
            if replica is None:
                break
            waiter = entry.waiters.popleft()
            if waiter.future.done():
                continue
            waiter.future.set_result(self._lease(entry, replica, waiter.cold,
                                                 max(0.0, self.clock.now() - waiter.arrived), waiter.keep_alive))
        self._update_gauges(entry)

    def _release(self, lease: Lease) -> None:
        replica = lease.replica
        entry = self.models[replica.model]
        replica.in_flight = max(0, replica.in_flight - 1)
        replica.served += 1
        replica.keep_alive = lease.keep_alive  # None: the model's own, settled when the idle clock starts
        replica.keep_alive_by_request = lease.keep_alive is not None
        if replica.state is not S.WARM:
            return
        if entry.waiters:
            self._dispatch(entry)
        if replica.in_flight == 0:
            replica.idle_since = self.clock.now()
            self._arm_expiry(entry, replica)

    def _retry_after(self, entry: ModelEntry) -> float:
        recent = [s.total_s for s in entry.starts if s.outcome == "ok"]
        return float(max(1, math.ceil(max(recent[-5:], default=1.0))))

    # ---- scaling and starts --------------------------------------------------------------

    def _scale(self, entry: ModelEntry) -> None:
        if self._closing:
            return
        if entry.waiters:
            self._reap_failed(entry)  # failed replicas are replaced by the requests that wait
        n = rules.to_start(entry.replicas, sum(1 for w in entry.waiters if not w.future.done()),
                           capacity=entry.config.max_concurrency, max_replicas=entry.config.max_replicas)
        for _ in range(n):
            self._start_replica(entry, "request")

    def _reap_failed(self, entry: ModelEntry) -> None:
        for replica in [r for r in entry.replicas if r.state is S.FAILED]:
            replica.move(S.COLD)
            entry.replicas.remove(replica)
        self._update_gauges(entry)

    def _start_replica(self, entry: ModelEntry, trigger: str) -> Replica:
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown start trigger {trigger!r}; one of {', '.join(TRIGGERS)}")
        if self.store is not None:
            self.store.replica_starting(entry.name)
        now = self.clock.now()
        replica = Replica(
            id=next_replica_id(entry.name), model=entry.name, trigger=trigger,
            capacity=entry.config.max_concurrency, keep_alive=None,
            created_at=now, created_wall=self.clock.wall(), accounted_to=now,
        )
        replica.move(S.STARTING)
        entry.replicas.append(replica)
        self._update_gauges(entry)
        self._spawn(self._run_start(entry, replica), name=f"start {replica.id}")
        return replica

    async def _run_start(self, entry: ModelEntry, replica: Replica) -> None:
        began = self.clock.now()
        cfg = entry.config
        try:
            path = await self._resolve(entry)
            if entry.capabilities is None:
                await self.capabilities(entry.name)
            if self.store is not None:  # refuses files that do not match the manifest; RAM tier's path
                path = await self.store.before_start(cfg, path)
            start = entry.engine.start(cfg, path, replica.report, replica.id) if self.cluster is None else (
                self._start_placed(entry, replica, path))
            proc = await asyncio.wait_for(start, self.config.server.start_timeout)
            replica.process = proc
            if replica.state is not S.STARTING:  # unloaded while starting
                await proc.stop(self.config.server.stop_timeout)
                await self._start_cancelled(entry, replica, began)
                return
            audited = not isinstance(self.audit, NullAudit)  # no audit log, no audit phase
            if audited:
                replica.report.enter(AUDIT_PHASE)
            audit_began = self.clock.now()
            await self.audit.record("start", model=cfg, path=path, replica=replica, engine=entry.engine,
                                    outcome="ok", seconds=audit_began - began)
            if audited:
                replica.report.done(AUDIT_PHASE, self.clock.now() - audit_began)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _describe(exc, cfg.name, self.config.server.start_timeout)
            if replica.process is not None:
                await replica.process.stop(self.config.server.stop_timeout)
            if replica.state is not S.STARTING:
                await self._start_cancelled(entry, replica, began)
                return
            with contextlib.suppress(Exception):
                await self.audit.record("start", model=cfg, path=entry.path, replica=replica,
                                        engine=entry.engine, outcome="failed", error=error,
                                        seconds=self.clock.now() - began)
            stage = "audit" if isinstance(exc, AuditError) else "start"
            self._start_failed(entry, replica, error, began, stage)
            return
        total = self.clock.now() - began
        self._record_start(entry, replica, "ok", total, None)
        self._account(replica)
        replica.move(S.WARM)
        replica.warm_at = self.clock.now()
        replica.idle_since = replica.warm_at
        self._update_gauges(entry)
        self._spawn(self._monitor(entry, replica), name=f"monitor {replica.id}")
        self._dispatch(entry)
        if replica.in_flight == 0:
            self._arm_expiry(entry, replica)
        self._scale(entry)

    async def _start_placed(self, entry: ModelEntry, replica: Replica, path: Path) -> Any:
        """Many machines: place the replica (`rules.place`, on the table as it is now), fetch the weights when
        its node lacks them, unload the least recently used idle models that must make room there, then start
        it on that node. A node lost on the way: placed again on those that remain. NoRoom refuses the start
        (503) with the memory that is short."""
        from warmstart.cluster.placing import PLACE, NodeLost, need_bytes

        assert self.cluster is not None
        sha256, size = await self.cluster.digest(path)
        need = need_bytes(entry.config, size)
        for attempt in range(3):
            replica.report.enter(PLACE)
            replicas = [r for e in self.models.values() for r in e.replicas]
            decision = rules.place(entry.name, self.cluster.facts(replicas), size=size, need=need)
            if isinstance(decision, rules.NoRoom):
                raise ModelStartFailed(decision.reason, retry_after=self._retry_after(entry))
            replica.node, replica.need_bytes = decision.node, need
            try:
                await self.cluster.fetch_for(decision, entry.name, sha256, size, replica.report)
                by_id = {r.id: r for r in replicas}  # only once the weights are there: a failed fetch unloads nothing
                for idle in decision.evict:
                    victim = by_id.get(idle.replica)
                    if victim is not None and victim.state is S.WARM and victim.in_flight == 0:  # still idle now
                        await self._stop(self.models[idle.model], victim, "evicted")
                return await self.cluster.start(decision, entry.config, sha256, replica.report, replica.id)
            except NodeLost as exc:
                if attempt == 2:
                    raise
                log.warning("replica %s: %s; placing it again", replica.id, exc)
        raise AssertionError("unreachable")

    async def _start_cancelled(self, entry: ModelEntry, replica: Replica, began: float) -> None:
        """The replica was unloaded while its engine was starting; the engine has been stopped now."""
        # _stop counted up to its move to COLD; the engine process was loaded until now
        self.metrics.replica_loaded_seconds.labels(entry.name).inc(
            max(0.0, self.clock.now() - (replica.accounted_to or began)))
        self._record_start(entry, replica, "cancelled", self.clock.now() - began, None)
        with contextlib.suppress(Exception):
            await self.audit.record("start", model=entry.config, path=entry.path, replica=replica,
                                    engine=entry.engine, outcome="cancelled", reason="unloaded while starting",
                                    seconds=self.clock.now() - began)

    def _start_failed(self, entry: ModelEntry, replica: Replica, error: str, began: float,
                      stage: str = "start") -> None:
        self._account(replica)
        replica.error = error
        entry.last_failure = error
        replica.move(S.FAILED)
        self._record_start(entry, replica, "failed", self.clock.now() - began, error)
        self.metrics.replica_failures.labels(entry.name, stage).inc()
        log.warning("replica %s failed to start: %s", replica.id, error)
        if not any(r.state in (S.STARTING, S.WARM) for r in entry.replicas):
            # nothing else will serve them: tell every held request now rather than at the deadline
            while entry.waiters:
                waiter = entry.waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_exception(ModelStartFailed(error, retry_after=None))
        self._update_gauges(entry)

    def _record_start(self, entry: ModelEntry, replica: Replica, outcome: str, total: float,
                      error: str | None) -> None:
        phases = tuple(replica.report.phases)
        entry.starts.append(StartRecord(replica.id, replica.trigger, outcome, phases, total,
                                        replica.created_wall, error))
        self.metrics.starts.labels(entry.name, replica.trigger, outcome).inc()
        if outcome == "ok":
            hist, last = self.metrics.cold_start_seconds, self.metrics.cold_start_last_seconds
            engine = entry.config.engine
            for name, seconds in phases:
                hist.labels(entry.name, engine, name).observe(seconds)
            hist.labels(entry.name, engine, "total").observe(total)
            # the last start replaces the previous one's phases, including any this start did not go through
            for sample in list(last.collect()[0].samples):
                if sample.labels["model"] == entry.name:
                    last.remove(entry.name, sample.labels["engine"], sample.labels["phase"])
            for name, seconds in phases:
                last.labels(entry.name, engine, name).set(seconds)
            last.labels(entry.name, engine, "total").set(total)

    async def _monitor(self, entry: ModelEntry, replica: Replica) -> None:
        proc = replica.process
        assert proc is not None
        code = await proc.wait_exit()
        if replica.state in (S.WARM, S.SLEEPING):
            self._fail_replica(entry, replica, f"engine process {proc.pid} exited unexpectedly (code {code})")

    def _fail_replica(self, entry: ModelEntry, replica: Replica, error: str) -> None:
        now = self.clock.now()
        self._account(replica)
        self._disarm_expiry(replica)
        replica.error = error
        entry.last_failure = error
        replica.move(S.FAILED)
        self.metrics.replica_failures.labels(entry.name, "running").inc()
        log.warning("replica %s failed: %s", replica.id, error)
        self._spawn(self.audit.record("failure", model=entry.config, path=entry.path, replica=replica,
                                      engine=entry.engine, outcome="failed", error=error,
                                      seconds=now - replica.created_at), name="audit")
        self._update_gauges(entry)
        self._scale(entry)

    def idle_warm(self) -> list[Replica]:
        """Warm replicas with no request in flight (their engines are watched by a liveness probe; a busy
        one is watched by its requests)."""
        return [r for entry in self.models.values() for r in entry.replicas
                if r.state is S.WARM and r.in_flight == 0 and r.process is not None]

    def fail_wedged(self, replica: Replica, reason: str) -> None:
        """An idle replica's engine failed its liveness probe: kill it, so the next request starts another."""
        if replica.state is S.WARM and replica.in_flight == 0:
            self._replica_broken(replica, reason)

    def _replica_broken(self, replica: Replica, reason: str) -> None:
        entry = self.models[replica.model]
        if replica.state is S.WARM:
            if replica.process is not None:
                replica.process.kill()
            self._fail_replica(entry, replica, f"engine process stopped answering: {reason}")

    # ---- keep-alive and stops -------------------------------------------------------------

    def _arm_expiry(self, entry: ModelEntry, replica: Replica) -> None:
        self._disarm_expiry(replica)
        deadline = rules.unload_at(replica, entry.replicas, self.clock.now(), configured=entry.config.keep_alive,
                                   model=entry.keep_alive, warm_until=entry.warm_until)
        if deadline is None or math.isinf(deadline):
            return
        replica.expires_at = deadline
        replica.expiry_task = self._spawn(self._expire_at(entry, replica, deadline), name=f"expiry {replica.id}")

    def _disarm_expiry(self, replica: Replica) -> None:
        task, replica.expiry_task, replica.expires_at = replica.expiry_task, None, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _expire_at(self, entry: ModelEntry, replica: Replica, deadline: float) -> None:
        await self.clock.sleep(deadline - self.clock.now())
        if replica.state is S.WARM and replica.in_flight == 0 and replica.expires_at == deadline:
            replica.expiry_task = None
            await self._stop(entry, replica, "keep-alive")

    async def _stop(self, entry: ModelEntry, replica: Replica, reason: str) -> None:
        if replica.state not in (S.STARTING, S.WARM, S.SLEEPING):
            return
        self._disarm_expiry(replica)
        self._account(replica)
        replica.move(S.STOPPING)
        self._update_gauges(entry)
        if self.cluster is not None and replica.node is not None:  # the node's RAM tier, not the head's
            await self.cluster.before_stop(replica, entry.replicas, reason, entry.config.ram_keep_alive,
                                           self.clock.now())
        elif self.store is not None:  # the last replica on keep-alive: weights to the RAM tier, not to disk
            last = rules.last_running(replica, entry.replicas)
            await self.store.before_stop(entry.config, entry.path, reason, last)
        if replica.process is not None:
            await replica.process.stop(self.config.server.stop_timeout)
        self._account(replica)
        replica.move(S.COLD)
        with contextlib.suppress(ValueError):
            entry.replicas.remove(replica)
        self.metrics.unloads.labels(entry.name, reason).inc()
        log.info("replica %s unloaded (%s)", replica.id, reason)
        if replica.warm_at is not None:
            with contextlib.suppress(Exception):
                await self.audit.record("unload", model=entry.config, path=entry.path, replica=replica,
                                        engine=entry.engine, outcome="ok", reason=reason,
                                        seconds=self.clock.now() - replica.created_at)
        self._update_gauges(entry)
        self._scale(entry)

    # ---- commands from the CLI, hints and the warming controller ----------------------------

    def ensure_warm(self, name: str, trigger: str, keep_alive: float | None = None) -> ReplicaState:
        """Start a replica of `name` unless one is live; returns the model's state."""
        entry = self.entry(name)
        self._reap_failed(entry)
        self._carry_out(entry, rules.ensure_warm(entry.replicas, trigger, keep_alive,
                                                 configured=entry.config.keep_alive))
        return self.state_of(name)

    def set_warm_until(self, name: str, until: float, trigger: str) -> None:
        """The controller's desired warm set: keep at least one replica loaded until `until`."""
        entry = self.entry(name)
        entry.warm_until, entry.warm_trigger = until, trigger
        now = self.clock.now()
        if until > now:
            self._reap_failed(entry)
        self._carry_out(entry, rules.warm_until(entry.replicas, now, until, trigger,
                                                configured=entry.config.keep_alive))

    def _carry_out(self, entry: ModelEntry,
                   decisions: Sequence[rules.Start | rules.Rewarm[Replica] | rules.Rearm[Replica]]) -> None:
        """The actuator for what `rules.ensure_warm` and `rules.warm_until` decide."""
        for decision in decisions:
            if isinstance(decision, rules.Start):
                replica = self._start_replica(entry, decision.trigger)
                replica.keep_alive = decision.keep_alive
                continue
            if isinstance(decision, rules.Rewarm) and not decision.replica.rewarm(decision.keep_alive,
                                                                                  self.clock.now()):
                continue
            self._arm_expiry(entry, decision.replica)

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
        self.entry(name).keep_alive_override = seconds

    def start_seconds(self, name: str, last: int = 20) -> list[float]:
        """How long the model's `last` successful starts took, oldest first."""
        return [s.total_s for s in self.entry(name).starts if s.outcome == "ok"][-last:]

    def outlook(self, name: str, cold_start: float) -> rules.Outlook:
        """How long the model stays loaded as things stand (`rules.outlook`)."""
        entry = self.entry(name)
        return rules.outlook(entry.replicas, model=entry.keep_alive, cold_start=cold_start, now=self.clock.now())

    async def wait_warm(self, name: str, timeout: float) -> ReplicaState:
        """Wait until the model is warm, failed or cold again (or the timeout passes)."""
        entry = self.entry(name)
        timer = asyncio.ensure_future(self.clock.sleep(timeout))
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
        entry = self.entry(name)
        if self.store is None:
            raise StoreError("the model store is off in this server, so there is no RAM tier")
        await self.store.hold(entry.config, await self._resolve(entry), keep_alive)

    async def unload(self, name: str) -> int:
        """Stop every replica of `name`: idle ones now, busy ones when their last request ends."""
        entry = self.entry(name)
        entry.warm_until = -math.inf
        stops = []
        for decision in rules.on_unload(entry.replicas):
            if isinstance(decision, rules.Stop):
                stops.append(self._stop(entry, decision.replica, "manual"))
            else:
                decision.replica.unload_when_idle = True
        await asyncio.gather(*stops)
        if self.store is not None and not any(r.state in LIVE for r in entry.replicas):
            await self.store.evict(name, "manual unload")
        return len(stops)

    async def shutdown(self) -> None:
        self._closing = True
        stops = []
        for entry in self.models.values():
            while entry.waiters:
                waiter = entry.waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_exception(Unavailable("warmstart is shutting down", retry_after=5))
            for replica in list(entry.replicas):
                stops.append(self._stop(entry, replica, "shutdown"))
        await asyncio.gather(*stops, return_exceptions=True)
        await asyncio.gather(*(e.close() for e in {id(e): e for e in self.engines.values()}.values()
                               if hasattr(e, "close")), return_exceptions=True)
        if self.store is not None:
            await self.store.close()
        if self.cluster is not None:  # the agents end the engines on their nodes
            await self.cluster.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- views ----------------------------------------------------------------------------

    def state_of(self, name: str) -> ReplicaState:
        return model_state([r.state for r in self.entry(name).replicas])

    def account_all(self) -> None:
        for entry in self.models.values():
            for replica in entry.replicas:
                self._account(replica)
        from warmstart.engines.runtime import account_runtimes

        account_runtimes(self.engines.values(), self.metrics, self.clock.now())
        if self.store is not None:
            self.store.account()

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        self.account_all()
        return [model_view(entry, self.state_of(entry.name), now, self.store) for entry in self.models.values()]

    def view(self, name: str) -> dict[str, Any]:
        """One model as `snapshot` shows it (ModelNotFound for an unknown name)."""
        entry = self.entry(name)
        now = self.clock.now()
        self.account_all()
        return model_view(entry, self.state_of(name), now, self.store)

    # ---- bookkeeping ------------------------------------------------------------------------

    def _account(self, replica: Replica) -> None:
        now = self.clock.now()
        if replica.accounted_to is not None and replica.state in LIVE:
            self.metrics.replica_loaded_seconds.labels(replica.model).inc(max(0.0, now - replica.accounted_to))
            if self.store is not None:
                self.store.add_loaded_seconds(replica.model, max(0.0, now - replica.accounted_to))
        replica.accounted_to = now

    def _init_series(self, name: str) -> None:
        """Create the counters' series at zero, so the first start or failure shows as an increase."""
        m = self.metrics
        m.replica_loaded_seconds.labels(name)
        for trigger in TRIGGERS:
            for outcome in ("ok", "failed"):
                m.starts.labels(name, trigger, outcome)
        for stage in ("start", "running", "audit"):
            m.replica_failures.labels(name, stage)
        for start in ("warm", "cold"):
            m.requests.labels(name, start, "200")

    def _update_gauges(self, entry: ModelEntry) -> None:
        # wake whoever waits for a change of this model, then arm a fresh event for the next one
        entry.changed.set()
        entry.changed = asyncio.Event()
        counts = {state: 0 for state in S}
        for replica in entry.replicas:
            counts[replica.state] += 1
        for state, n in counts.items():
            self.metrics.replicas.labels(entry.name, state.value).set(n)
        self.metrics.queue_depth.labels(entry.name).set(len(entry.waiters))

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pool task %s failed", task.get_name(), exc_info=task.exception())


def _describe(exc: BaseException, model: str, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"model '{model}' did not start within {timeout:g} s"
    if isinstance(exc, WarmstartError):
        return str(exc)
    return f"model '{model}' failed to start: {type(exc).__name__}: {exc}"
