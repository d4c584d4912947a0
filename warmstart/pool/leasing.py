"""Leases and the queue: a request gets a free slot of a warm replica at once, or waits (bounded, up to a
deadline) while replicas start for it; as many start as the waiting requests need."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from functools import partial
from typing import Any

from warmstart.errors import DeadlineExceeded, QueueFull, Unavailable
from warmstart.pool import rules
from warmstart.pool.books import Books
from warmstart.pool.entry import ModelEntry, Waiter
from warmstart.pool.lease import Lease, LeaseOwner
from warmstart.pool.lifecycle import Lifecycle
from warmstart.pool.replica import Replica
from warmstart.pool.states import ReplicaState

S = ReplicaState


class Leasing:
    def __init__(self, books: Books, lifecycle: Lifecycle, owner: LeaseOwner,
                 arrived: Callable[[str, float | None], None]) -> None:
        self._books = books
        self._lifecycle = lifecycle
        self._owner = owner
        self._arrived = arrived  # tells the arrival listeners, as each request arrives
        self.closing = False

    def try_acquire(self, entry: ModelEntry, keep_alive: float | None, put_off: bool = False) -> Lease | None:
        """The warm fast path: a lease at once if a warm replica has a free slot and nobody waits. `put_off`: only
        the slot is taken now; the rest (see `_taken`) waits for `Lease.settle` (or its release)."""
        if self.closing:
            return None
        decision = rules.admit(entry.replicas, len(entry.waiters), self._books.config.server.queue_size)
        if not isinstance(decision, rules.Serve):
            return None
        replica, wall = decision.replica, self._books.clock.wall()
        if put_off:
            replica.in_flight += 1
            settle = partial(self._taken, entry, replica, wall)
            return Lease(self._owner, replica, False, 0.0, keep_alive, settle=settle)
        # what the request need not wait for (its wait of 0 counted, the arrival told) is done once it is on its
        # way to the engine, at its arrival's time
        asyncio.get_running_loop().call_soon(self._served_at_once, entry, wall)
        return self._lease(entry, replica, cold=False, waited=None, keep_alive=keep_alive)

    def _taken(self, entry: ModelEntry, replica: Replica, wall: float) -> None:
        """A slot taken at `wall` with its bookkeeping put off: the replica is no longer idle (its unload timer
        disarmed; one that fired meanwhile found the slot taken and left the replica be), the wait of 0 counted,
        the arrival told."""
        self._busy(replica)
        self._served_at_once(entry, wall)

    def _served_at_once(self, entry: ModelEntry, wall: float) -> None:
        entry.wait_histogram.observe(0.0)
        self._arrived(entry.name, wall)

    async def acquire(self, entry: ModelEntry, keep_alive: float | None, deadline_s: float | None) -> Lease:
        """A lease on a warm replica, starting one if needed; held up to the deadline.

        Raises QueueFull at once when the model's queue is full, DeadlineExceeded past the deadline.
        """
        books = self._books
        if self.closing:
            raise Unavailable("warmstart is shutting down", retry_after=5)
        now = books.clock.now()
        self._arrived(entry.name, None)
        self.reap_failed(entry)
        decision = rules.admit(entry.replicas, len(entry.waiters), books.config.server.queue_size)
        if isinstance(decision, rules.Serve):  # never held: no wait, whatever the bookkeeping above cost
            return self._lease(entry, decision.replica, cold=False, waited=0.0, keep_alive=keep_alive)
        if isinstance(decision, rules.Refuse):
            raise QueueFull(
                f"model '{entry.name}' has {decision.waiting} requests waiting, the most it holds; retry later",
                retry_after=_retry_after(entry))
        waiter = Waiter(asyncio.get_running_loop().create_future(), now, decision.cold, keep_alive)
        entry.waiters.append(waiter)
        self.scale(entry)
        books.changed(entry)
        deadline = books.config.server.queue_deadline if deadline_s is None else deadline_s
        timer = asyncio.ensure_future(books.clock.sleep(deadline))
        try:
            either: set[asyncio.Future[Any]] = {waiter.future, timer}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if waiter.future.done():
                return waiter.future.result()
            waiter.future.cancel()
            raise DeadlineExceeded(_deadline_message(entry, deadline), retry_after=_retry_after(entry))
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
            books.changed(entry)
            leased = waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None
            if not leased:  # held, then refused or abandoned: the wait still happened (a lease records its own)
                books.metrics.request_wait_seconds.labels(entry.name).observe(max(0.0, books.clock.now() - now))

    def _lease(self, entry: ModelEntry, replica: Replica, cold: bool, waited: float | None,
               keep_alive: float | None) -> Lease:
        """A slot of `replica` for a request that was held `waited` seconds (0 for one never queued: two
        clock reads around the bookkeeping would charge it for a thread switch it never waited for; None: the
        same, its wait counted by the caller)."""
        replica.in_flight += 1
        self._busy(replica)
        if waited is not None:
            entry.wait_histogram.observe(waited)
        return Lease(self._owner, replica, cold, waited or 0.0, keep_alive)

    def _busy(self, replica: Replica) -> None:
        """A slot of `replica` is taken: it is not idle, and its unload timer is disarmed."""
        replica.idle_since = None
        self._lifecycle.disarm_expiry(replica)

    def dispatch(self, entry: ModelEntry) -> None:
        """Hand free slots of warm replicas to the requests waiting, first come first served."""
        while entry.waiters:
            replica = rules.free_replica(entry.replicas)
            if replica is None:
                break
            waiter = entry.waiters.popleft()
            if waiter.future.done():
                continue
            waited = max(0.0, self._books.clock.now() - waiter.arrived)
            waiter.future.set_result(self._lease(entry, replica, waiter.cold, waited, waiter.keep_alive))
        self._books.changed(entry)

    def release(self, entry: ModelEntry, lease: Lease) -> None:
        replica = lease.replica
        replica.in_flight = max(0, replica.in_flight - 1)
        replica.served += 1
        replica.keep_alive = lease.keep_alive  # None: the model's own, settled when the idle clock starts
        replica.keep_alive_by_request = lease.keep_alive is not None
        if replica.state is not S.WARM:
            return
        if entry.waiters:
            self.dispatch(entry)
        if replica.in_flight == 0:
            replica.idle_since = self._books.clock.now()
            self._lifecycle.arm_expiry(entry, replica)

    def scale(self, entry: ModelEntry) -> None:
        """Start as many replicas as the requests waiting need (`rules.to_start`)."""
        if self.closing:
            return
        if entry.waiters:
            self.reap_failed(entry)  # failed replicas are replaced by the requests that wait
        n = rules.to_start(entry.replicas, sum(1 for w in entry.waiters if not w.future.done()),
                           capacity=entry.config.max_concurrency, max_replicas=entry.config.max_replicas)
        for _ in range(n):
            self._lifecycle.start(entry, "request")

    def reap_failed(self, entry: ModelEntry) -> None:
        """Take failed replicas out of the table (their failure stays in the model's record)."""
        for replica in [r for r in entry.replicas if r.state is S.FAILED]:
            replica.move(S.COLD)
            entry.replicas.remove(replica)
        self._books.changed(entry)

    def close(self) -> None:
        """Shutting down: refuse new requests (the pool answers the held ones)."""
        self.closing = True


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


def _retry_after(entry: ModelEntry) -> float:
    recent = [s.total_s for s in entry.starts if s.outcome == "ok"]
    return float(max(1, math.ceil(max(recent[-5:], default=1.0))))
