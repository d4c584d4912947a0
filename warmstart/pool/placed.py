"""A start on many machines: placed on a node by `placement.place` (on the table as it is now), the weights fetched
there when it lacks them, the least recently used idle models there unloaded to make room, then the engine
started on that node. A node lost on the way: placed again on those that remain."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from warmstart.errors import ModelStartFailed
from warmstart.pool import placement
from warmstart.pool.books import Books
from warmstart.pool.entry import ModelEntry
from warmstart.pool.replica import Replica
from warmstart.pool.states import ReplicaState

log = logging.getLogger("warmstart.pool")
PLACE = "place"  # the start phase of placing (and, on a node that lacks the weights, of fetching them: "fetch")
ATTEMPTS = 3
Stop = Callable[[ModelEntry, Replica, str], Awaitable[None]]


async def start_placed(books: Books, table: Mapping[str, ModelEntry], entry: ModelEntry, replica: Replica,
                       path: Path, stop: Stop) -> Any:
    """The engine process of `replica`, started on the node placement chose; records the node on the replica.
    NoRoom refuses the start (ModelStartFailed: a 503 naming the memory that is short)."""
    from warmstart.cluster.placing import NodeLost, need_bytes

    cluster = books.cluster
    assert cluster is not None
    weights = await cluster.weights(path)
    size = weights.size
    need = need_bytes(entry.config, size)
    for attempt in range(ATTEMPTS):
        replica.report.enter(PLACE)
        replicas = [r for e in table.values() for r in e.replicas]
        decision = placement.place(entry.name, cluster.facts(replicas), size=size, need=need)
        if isinstance(decision, placement.NoRoom):
            raise ModelStartFailed(decision.reason, retry_after=None)
        replica.node, replica.need_bytes = decision.node, need
        by_id = {r.id: r for r in replicas}
        victims = [v for idle in decision.evict if (v := by_id.get(idle.replica)) is not None]
        for victim in victims:  # promised to this start: no other start counts on their memory meanwhile
            victim.evicting = True
        try:
            await cluster.fetch_for(decision, entry.name, weights, replica.report)
            for victim in victims:  # only once the weights are there: a failed fetch unloads nothing
                if victim.state is ReplicaState.WARM and victim.in_flight == 0:  # still idle
                    await stop(table[victim.model], victim, "evicted")
            return await cluster.start(decision, entry.config, weights, replica.report, replica.id)
        except NodeLost as exc:
            if attempt == ATTEMPTS - 1:
                raise
            log.warning("replica %s: %s; placing it again", replica.id, exc)
        finally:
            for victim in victims:  # those not unloaded (a fetch failed, a request came): room again
                victim.evicting = False
    raise AssertionError("unreachable")
