"""Whether a replica's engine still works: idle replicas patrolled, each request's engine watched while it is
silent, and a client's abandoned request drained before its slot is given back. An engine that does not answer
its health check is failed (killed and replaced)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from warmstart.pool.lease import Lease
from warmstart.pool.pool import Pool
from warmstart.pool.replica import Replica

log = logging.getLogger("warmstart.gateway")

# how long a liveness probe of a silent engine may take before the engine counts as wedged
PROBE_TIMEOUT = 5.0
# while a client that left waits for its engine to go idle: how often to ask
DRAIN_INTERVAL = 0.1


class Liveness:
    """Whether a replica's engine still works: a request that sees no byte for `engine_timeout` probes the
    engine's health check, and an engine that does not answer it is failed (killed and replaced)."""

    def __init__(self, session: aiohttp.ClientSession, engine_timeout: float) -> None:
        self.session = session
        self.engine_timeout = engine_timeout

    async def patrol(self, pool: Pool) -> None:
        """Probe the engines of idle warm replicas every `engine_timeout`: one that fails two probes in a row
        (a loaded machine may miss one) is failed and replaced before a request finds it wedged. A busy
        replica is watched by its requests."""
        missed: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.engine_timeout)
            try:
                replicas = pool.idle_warm()
                reasons = await asyncio.gather(*(self._probe(r) for r in replicas))
                missed = {r.id: missed.get(r.id, 0) + 1 for r, why in zip(replicas, reasons, strict=True)
                          if why is not None}
                for replica, why in zip(replicas, reasons, strict=True):
                    if why is not None and missed[replica.id] >= 2:
                        reason = f"idle, and twice {why}"
                        log.warning("replica %s is wedged: %s; killing it", replica.id, reason)
                        pool.fail_wedged(replica, reason)
            except Exception:  # the patrol goes on; one failed round is logged
                log.exception("liveness patrol failed; trying again in %g s", self.engine_timeout)

    def watch(self, lease: Lease, armed: bool = True) -> Watch:
        """Watch one request's engine from now until `close()` (`armed` False: its timer set only by `arm()`)."""
        return Watch(self, lease, armed)

    async def probe(self, lease: Lease) -> str | None:
        """None if the engine answers its health check in time, else what went wrong."""
        return await self._probe(lease.replica)

    async def _probe(self, replica: Replica) -> str | None:
        process = replica.process
        if process is None or process.returncode is not None:
            return "its process has exited"
        url = process.base_url + getattr(process, "health_path", "/health")
        timeout = min(PROBE_TIMEOUT, self.engine_timeout)
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status == 200:
                    return None
                return f"its health check answered HTTP {resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError):
            return f"did not answer its health check within {timeout:g} s"

    async def drain(self, lease: Lease) -> None:
        """The client left: the slot is given back once the engine has stopped working on the request (engines
        that report their active requests), so no new request is sent into a busy engine. An engine still
        busy after `engine_timeout` is probed like a silent one."""
        try:
            process = lease.replica.process
            count = getattr(process, "count_active", None)
            if count is None:
                return
            deadline = asyncio.get_running_loop().time() + self.engine_timeout
            while lease.replica.in_flight > 0:
                try:
                    active = await count(self.session)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    active = None
                # this lease is one of the replica's in-flight requests; idle means no more than the others
                if active is None or active < lease.replica.in_flight:
                    return
                if asyncio.get_running_loop().time() > deadline:
                    why = await self.probe(lease)
                    if why is not None:
                        lease.fail(f"the engine kept working for a client that left and {why}")
                        return
                    deadline += self.engine_timeout
                await asyncio.sleep(getattr(process, "count_interval", DRAIN_INTERVAL))
        finally:
            lease.release()


class Watch:
    """One request's watch over its engine, with no task per read and none per request: the reads mark
    progress, and one timer looks when `engine_timeout` would have passed since the last. Silent that
    long, the engine is asked its health check, and one that does not answer is failed (its process
    group killed), which ends the request's reads with a connection error. An engine that answers is
    given more time: a non-streamed answer sends nothing until it is done. Made unarmed, it sets its timer
    only when `arm()`ed (the relay arms it when a request outlasts the disconnect grace: a warm answer that
    comes first never makes a timer), for the same moment: `engine_timeout` after the last progress."""

    def __init__(self, liveness: Liveness, lease: Lease, armed: bool = True) -> None:
        self.liveness, self.lease = liveness, lease
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.reason: str | None = None  # why the engine was failed, when this watch failed it
        self._closed = False
        self._probe: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        if armed:
            self.arm()

    def arm(self) -> None:
        if not self._closed and self._timer is None and self._probe is None:
            self._timer = self.loop.call_at(self.last + self.liveness.engine_timeout, self._look)

    def progress(self) -> None:
        self.last = self.loop.time()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._probe is not None:
            self._probe.cancel()

    def _look(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._silent():
            self._probe = self.loop.create_task(self._ask())
        else:
            self._timer = self.loop.call_at(self.last + self.liveness.engine_timeout, self._look)

    def _silent(self) -> bool:
        return self.loop.time() - self.last >= self.liveness.engine_timeout

    async def _ask(self) -> None:
        timeout = self.liveness.engine_timeout
        why = await self.liveness.probe(self.lease)
        if self._closed:
            return
        if self._silent() and why is not None:
            self.reason = f"the engine sent nothing for {timeout:g} s and {why}"
            log.warning("replica %s is wedged: %s; killing it", self.lease.replica.id, self.reason)
            self.lease.fail(self.reason)
            return
        if self._silent():  # it answers its health check: more time
            log.info("replica %s sent nothing for %g s but answers its health check; waiting on",
                     self.lease.replica.id, timeout)
            self.last = self.loop.time()
        self._probe = None
        self._timer = self.loop.call_at(self.last + timeout, self._look)
