"""Replicas' starts and stops: the engine process started with its phases, audited and measured; watched
while it runs; unloaded when its keep-alive runs out, on command or on shutdown; failed when it breaks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable

from warmstart.engines.base import VERIFY
from warmstart.errors import AuditError, ModelStartFailed, WarmstartError
from warmstart.pool import rules
from warmstart.pool.books import Books
from warmstart.pool.entry import ModelEntry, NullAudit
from warmstart.pool.files import ModelFiles
from warmstart.pool.placed import start_placed
from warmstart.pool.replica import Replica, next_replica_id
from warmstart.pool.states import ReplicaState
from warmstart.telemetry.metrics import TRIGGERS

log = logging.getLogger("warmstart.pool")
S = ReplicaState
# the last phase of a start: its audit record is written (and fsynced) before the replica is warm
AUDIT_PHASE = "audit"
# what the queue is told after a replica changes: serve the requests waiting, start replicas for them
Demand = Callable[[ModelEntry], None]


class Lifecycle:
    def __init__(self, books: Books, files: ModelFiles, *, dispatch: Demand, scale: Demand,
                 table: Callable[[], dict[str, ModelEntry]] | None = None) -> None:
        self._books = books
        self._files = files
        self._dispatch = dispatch
        self._scale = scale
        self._table = table or dict  # every model's entry: what placement on a cluster reads

    # ---- starts -------------------------------------------------------------------------------

    def start(self, entry: ModelEntry, trigger: str) -> Replica:
        """A new replica of the model, STARTING; its engine starts in a task of its own."""
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown start trigger {trigger!r}; one of {', '.join(TRIGGERS)}")
        books = self._books
        if books.store is not None:
            books.store.replica_starting(entry.name)
        now = books.clock.now()
        replica = Replica(
            id=next_replica_id(entry.name), model=entry.name, trigger=trigger,
            capacity=entry.config.max_concurrency, keep_alive=None,
            created_at=now, created_wall=books.clock.wall(), accounted_to=now,
        )
        replica.move(S.STARTING)
        entry.replicas.append(replica)
        books.changed(entry)
        books.spawn(self._run_start(entry, replica), name=f"start {replica.id}")
        return replica

    async def _run_start(self, entry: ModelEntry, replica: Replica) -> None:
        books = self._books
        clock, server, audit = books.clock, books.config.server, books.audit
        began = clock.now()
        cfg = entry.config
        try:
            replica.report.enter(VERIFY)  # every second of a start is in one of its phases
            path = await self._files.resolve(entry)
            if entry.capabilities is None:
                await self._files.capabilities(entry)
            if books.store is not None:  # refuses files that do not match the manifest; RAM tier's path
                replica.tier = "ram" if books.store.in_ram(cfg.name) else "disk"
                path = await books.store.before_start(cfg, path)
            replica.report.done(VERIFY, clock.now() - began)
            start = entry.engine.start(cfg, path, replica.report, replica.id) if books.cluster is None else (
                start_placed(books, self._table(), entry, replica, path, self.stop))
            proc = await asyncio.wait_for(start, server.start_timeout)
            replica.process = proc
            if replica.state is not S.STARTING:  # unloaded while starting
                await proc.stop(server.stop_timeout)
                await self._start_cancelled(entry, replica, began)
                return
            audited = not isinstance(audit, NullAudit)  # no audit log, no audit phase
            if audited:
                replica.report.enter(AUDIT_PHASE)
            audit_began = clock.now()
            await audit.record("start", model=cfg, path=path, replica=replica, engine=entry.engine,
                               outcome="ok", seconds=audit_began - began)
            if audited:
                replica.report.done(AUDIT_PHASE, clock.now() - audit_began)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _describe(exc, cfg.name, server.start_timeout)
            if replica.process is not None:
                await replica.process.stop(server.stop_timeout)
            if replica.state is not S.STARTING:
                await self._start_cancelled(entry, replica, began)
                return
            with contextlib.suppress(Exception):
                await audit.record("start", model=cfg, path=entry.path, replica=replica,
                                   engine=entry.engine, outcome="failed", error=error,
                                   seconds=clock.now() - began)
            stage = "audit" if isinstance(exc, AuditError) else "start"
            self._start_failed(entry, replica, error, began, stage)
            return
        self._now_warm(entry, replica, clock.now() - began)

    def _now_warm(self, entry: ModelEntry, replica: Replica, total: float) -> None:
        books = self._books
        books.start_finished(entry, replica, "ok", total, None)
        entry.problem = None
        log.info("replica %s warm: started in %.2f s (%s)", replica.id, total, replica.trigger)
        books.account(replica)
        replica.move(S.WARM)
        replica.warm_at = books.clock.now()
        replica.idle_since = replica.warm_at
        books.changed(entry)
        books.spawn(self._monitor(entry, replica), name=f"monitor {replica.id}")
        self._dispatch(entry)
        if replica.in_flight == 0:
            self.arm_expiry(entry, replica)
        self._scale(entry)

    async def _start_cancelled(self, entry: ModelEntry, replica: Replica, began: float) -> None:
        """The replica was unloaded while its engine was starting; the engine has been stopped now."""
        books = self._books
        now = books.clock.now
        # stop() counted up to its move to COLD; the engine process was loaded until now
        books.metrics.replica_loaded_seconds.labels(entry.name, *books.metrics.at(replica.node)).inc(
            max(0.0, now() - (replica.accounted_to or began)))
        books.start_finished(entry, replica, "cancelled", now() - began, None)
        with contextlib.suppress(Exception):
            await books.audit.record("start", model=entry.config, path=entry.path, replica=replica,
                                     engine=entry.engine, outcome="cancelled", reason="unloaded while starting",
                                     seconds=now() - began)

    def _start_failed(self, entry: ModelEntry, replica: Replica, error: str, began: float,
                      stage: str = "start") -> None:
        books = self._books
        books.account(replica)
        replica.error = error
        entry.last_failure = error
        replica.move(S.FAILED)
        books.start_finished(entry, replica, "failed", books.clock.now() - began, error)
        books.metrics.replica_failures.labels(entry.name, stage, *books.metrics.at(replica.node)).inc()
        log.warning("replica %s failed to start: %s", replica.id, error)
        if not any(r.state in (S.STARTING, S.WARM) for r in entry.replicas):
            # nothing else will serve them: tell every held request now rather than at the deadline
            entry.refuse_waiters(ModelStartFailed(error, retry_after=None))
        books.changed(entry)

    # ---- failures ----------------------------------------------------------------------------

    async def _monitor(self, entry: ModelEntry, replica: Replica) -> None:
        proc = replica.process
        assert proc is not None
        code = await proc.wait_exit()
        if replica.state in (S.WARM, S.SLEEPING):
            self._fail(entry, replica, f"engine process {proc.pid} exited unexpectedly (code {code})")

    def broken(self, entry: ModelEntry, replica: Replica, reason: str) -> None:
        """The replica's engine stopped answering (a request saw it, or a liveness probe): kill it."""
        if replica.state is S.WARM:
            if replica.process is not None:
                replica.process.kill()
            self._fail(entry, replica, f"engine process stopped answering: {reason}")

    def _fail(self, entry: ModelEntry, replica: Replica, error: str) -> None:
        books = self._books
        now = books.clock.now()
        books.account(replica)
        self.disarm_expiry(replica)
        replica.error = error
        entry.last_failure = error
        replica.move(S.FAILED)
        books.metrics.replica_failures.labels(entry.name, "running", *books.metrics.at(replica.node)).inc()
        log.warning("replica %s failed: %s", replica.id, error)
        books.spawn(books.audit.record("failure", model=entry.config, path=entry.path, replica=replica,
                                       engine=entry.engine, outcome="failed", error=error,
                                       seconds=now - replica.created_at), name="audit")
        books.changed(entry)
        self._scale(entry)

    # ---- keep-alive and stops -------------------------------------------------------------

    def arm_expiry(self, entry: ModelEntry, replica: Replica) -> None:
        """Unload the idle replica when `rules.unload_at` says (never, for a keep-alive of forever)."""
        self.disarm_expiry(replica)
        books = self._books
        deadline = rules.unload_at(replica, entry.replicas, books.clock.now(), configured=entry.config.keep_alive,
                                   model=entry.keep_alive, warm_until=entry.warm_until)
        if deadline is None or math.isinf(deadline):
            return
        replica.expires_at = deadline
        replica.expiry_task = books.spawn(self._expire_at(entry, replica, deadline), name=f"expiry {replica.id}")

    def disarm_expiry(self, replica: Replica) -> None:
        task, replica.expiry_task, replica.expires_at = replica.expiry_task, None, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _expire_at(self, entry: ModelEntry, replica: Replica, deadline: float) -> None:
        clock = self._books.clock
        await clock.sleep(deadline - clock.now())
        if replica.state is S.WARM and replica.in_flight == 0 and replica.expires_at == deadline:
            replica.expiry_task = None
            await self.stop(entry, replica, "keep-alive")

    async def stop(self, entry: ModelEntry, replica: Replica, reason: str) -> None:
        """Unload the replica (a starting one is stopped once its engine is up); `reason` goes to the metrics
        and the audit log."""
        if replica.state not in (S.STARTING, S.WARM, S.SLEEPING):
            return
        books = self._books
        self.disarm_expiry(replica)
        books.account(replica)
        replica.move(S.STOPPING)
        books.changed(entry)
        if books.cluster is not None and replica.node is not None:  # the node's RAM tier, not the head's
            await books.cluster.before_stop(replica, entry.replicas, reason, entry.config.ram_keep_alive,
                                            books.clock.now())
        elif books.store is not None:  # the last replica on keep-alive: weights to the RAM tier, not to disk
            last = rules.last_running(replica, entry.replicas)
            await books.store.before_stop(entry.config, entry.path, reason, last, planned=entry.ram_until)
        if replica.process is not None:
            await replica.process.stop(books.config.server.stop_timeout)
        books.account(replica)
        replica.move(S.COLD)
        with contextlib.suppress(ValueError):
            entry.replicas.remove(replica)
        books.metrics.unloads.labels(entry.name, reason, *books.metrics.at(replica.node)).inc()
        log.info("replica %s unloaded (%s)", replica.id, reason)
        if replica.warm_at is not None:
            with contextlib.suppress(Exception):
                await books.audit.record("unload", model=entry.config, path=entry.path, replica=replica,
                                         engine=entry.engine, outcome="ok", reason=reason,
                                         seconds=books.clock.now() - replica.created_at)
        books.changed(entry)
        self._scale(entry)


def _describe(exc: BaseException, model: str, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"model '{model}' did not start within {timeout:g} s"
    if isinstance(exc, WarmstartError):
        return str(exc)
    return f"model '{model}' failed to start: {type(exc).__name__}: {exc}"
