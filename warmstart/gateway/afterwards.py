"""Work a client need not wait for, done once it has had time to read its answer.

A whole answer goes to its client from the callback that read the engine's last byte (front.py); what is left
then (the request's task resumed, the request counted, its access-log line, its engine connection kept) takes
the gateway 0.1-0.3 ms. Done at once, it delays the client by as much: writing to a socket wakes the reader
as a "sync" wake-up (the writer is expected to sleep next), so Linux puts the client on the gateway's CPU, where
it waits while the gateway works on. Measured on a 2-vCPU machine, SmolLM2 on llama.cpp on both CPUs: from the
gateway's write to the client holding the answer 570-640 us when the work followed at once, 375-385 us when it
waited 1 ms (the gateway's added latency 0.2-0.3 ms lower, docs in the README's "Serving").

So that nothing is seen out of order, the work waits at most AFTER_S, and less when the gateway reads anything
first: each read of a client's bytes (`run`), and the start of a pipelined request, does the work put off before
it, so a request (a metric scrape, the next request on the model) sees everything answered before it arrived
counted, and the slots of the replicas that answered given back (see Relay._sender).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("warmstart.gateway")
AFTER_S = 0.001

# puts off a call (a callable and its arguments) until the client has had time to read its answer
Later = Callable[..., None]


class Afterwards:
    __slots__ = ("_pending", "_timer", "delay")

    def __init__(self, delay: float = AFTER_S) -> None:
        self.delay = delay
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def later(self, call: Callable[..., Any], *args: Any) -> None:
        """`call(*args)` within `delay` seconds, or at the next `run`, in the order put off."""
        self._pending.append((call, args))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self.run)

    def run(self) -> None:
        """Do now all that was put off."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        for call, args in pending:
            try:
                call(*args)
            except Exception:
                log.exception("work put off after an answer failed")
