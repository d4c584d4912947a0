"""Replay a trace across several nodes, each with its own memory, through the placement the live pool uses.

Every model's arrivals are merged into one stream on virtual time. A request for a model with no replica
starts one where `placement.place` says, on the facts `warmstart.cluster.placing.node_facts` builds from the
replicas (the same two functions a live cluster's pool calls before each start): the node with the shortest
estimated start that has the memory, after unloading its least recently used idle models (`evicted`); a
node without the model's file fetches it from a holder first and keeps it. No node with room: the request
is refused (the live server's 503). An idle replica unloads when `rules.unload_at` says (the keep-alive).

As in warmstart.sim.replay, requests take no time once a replica is ready, so a model needs one replica. A
start takes the measured `cold_start` (from the node's disk), plus the fetch (`size / net_bps`) when the
node had to copy the weights. The RAM tier and the warming controller are not replayed across nodes:
`warmstart simulate --nodes` takes fixed keep-alive policies only.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warmstart.cluster.placing import need_bytes_for, node_facts
from warmstart.pool import placement, rules
from warmstart.pool.replica import Replica
from warmstart.pool.states import ReplicaState
from warmstart.sim.traces import Trace

S = ReplicaState
READY, EXPIRE, FETCHED = 0, 1, 2  # events on the virtual clock, besides arrivals


@dataclass
class SimNode:
    """A node as placement sees it (shaped like warmstart.cluster.ray_nodes.Node): its memory for engines and
    the models whose files it holds; and what happened on it."""

    name: str
    memory_bytes: int
    files: set[str] = field(default_factory=set)
    net_bps: float | None = None
    alive: bool = True
    starts: int = 0
    fetches: int = 0
    fetched_bytes: int = 0
    evictions: int = 0
    unloads: int = 0
    loaded_s: float = 0.0
    used_bytes: int = 0  # of the engines loaded or loading here (a start's from when its weights are here)
    peak_bytes: int = 0

    @property
    def status(self) -> dict[str, Any]:
        return {"tiers": dict.fromkeys(self.files, placement.DISK), "fetched_bps": self.net_bps}

    def report(self) -> dict[str, Any]:
        return {"memory_bytes": self.memory_bytes, "starts": self.starts, "fetches": self.fetches,
                "fetched_bytes": self.fetched_bytes, "evictions": self.evictions, "keep_alive_unloads": self.unloads,
                "loaded_replica_s": self.loaded_s, "peak_used_bytes": self.peak_bytes}


def spread_files(models: Sequence[str], nodes: Sequence[SimNode], mode: str) -> None:
    """Where the models' files are when the replay begins: on every node ("all"), or each on one node, in
    turn ("spread"), so the others fetch it from that one."""
    for i, model in enumerate(sorted(models)):
        for j, node in enumerate(nodes):
            if mode == "all" or i % len(nodes) == j:
                node.files.add(model)


@dataclass
class _Replay:
    nodes: dict[str, SimNode]
    size: int
    cold_start: float
    keep_alive: float
    net_bps: float
    replicas: dict[str, Replica] = field(default_factory=dict)  # model -> its one replica
    events: list[tuple[float, int, int, Replica]] = field(default_factory=list)
    by_id: dict[str, Replica] = field(default_factory=dict)  # replicas loaded, by id (what evictions name)
    victims: dict[str, list[Replica]] = field(default_factory=dict)  # a fetching start's id -> whom it unloads
    seq: int = 0
    waits: list[float] = field(default_factory=list)
    requests: int = 0
    refused: int = 0
    started: int = 0
    start_log: list[tuple[float, str, str]] | None = None  # (time placed, node, model), when asked for

    def push(self, when: float, kind: int, replica: Replica) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, replica))

    def advance(self, now: float) -> None:
        """Carry out every start finishing and every keep-alive running out up to `now`."""
        while self.events and self.events[0][0] <= now:
            when, _, kind, replica = heapq.heappop(self.events)
            if self.replicas.get(replica.model) is not replica:
                continue  # unloaded since (evicted)
            if kind == FETCHED:  # the weights are on the node now: unload the victims, the engine loads
                self.load(replica, self.victims.pop(replica.id, []), when)
            elif kind == READY:
                replica.move(S.WARM)
                replica.idle_since = replica.warm_at = when  # held requests are served the moment it is ready
                self.arm(replica, when)
            elif kind == EXPIRE and replica.state is S.WARM:
                deadline = self.deadline(replica, when)
                if deadline is not None and deadline <= when:
                    self.unload(replica, when, evicted=False)

    def deadline(self, replica: Replica, now: float) -> float | None:
        return rules.unload_at(replica, (replica,), now, configured=self.keep_alive, model=self.keep_alive,
                               warm_until=-math.inf)

    def arm(self, replica: Replica, now: float) -> None:
        deadline = self.deadline(replica, now)
        if deadline is not None and math.isfinite(deadline):
            self.push(deadline, EXPIRE, replica)

    def unload(self, replica: Replica, now: float, *, evicted: bool) -> None:
        node = self.nodes[replica.node or ""]
        replica.move(S.STOPPING)
        replica.move(S.COLD)
        del self.replicas[replica.model]
        self.by_id.pop(replica.id, None)
        node.loaded_s += now - replica.created_at
        node.used_bytes -= replica.need_bytes
        if evicted:
            node.evictions += 1
        else:
            node.unloads += 1

    def arrive(self, model: str, now: float) -> None:
        self.advance(now)
        self.requests += 1
        replica = self.replicas.get(model)
        if replica is None:
            replica = self.start(model, now)
            if replica is None:
                self.refused += 1
                return
        if replica.state is S.STARTING:  # held until it is ready; its idle clock starts then
            assert replica.warm_at is not None
            self.waits.append(replica.warm_at - now)
            return
        replica.idle_since = now  # served warm at once
        self.arm(replica, now)

    def start(self, model: str, now: float) -> Replica | None:
        need = need_bytes_for(self.size)
        live = list(self.replicas.values())
        decision = placement.place(model, node_facts(self.nodes.values(), live), size=self.size, need=need)
        if isinstance(decision, placement.NoRoom):
            return None
        node = self.nodes[decision.node]
        fetch = 0.0
        if decision.where == placement.PEER:  # copied from a holder first, and kept there
            fetch = self.size / self.net_bps
            node.fetches += 1
            node.fetched_bytes += self.size
            node.files.add(model)
        victims = [v for idle in decision.evict if (v := self.by_id.get(idle.replica)) is not None]
        seconds = fetch + self.cold_start
        self.started += 1
        if self.start_log is not None:
            self.start_log.append((now, node.name, model))
        replica = Replica(id=f"{model}#{self.started}", model=model, trigger="request", capacity=1, keep_alive=None,
                          created_at=now, created_wall=now, node=node.name, need_bytes=need)
        replica.move(S.STARTING)
        replica.warm_at = now + seconds
        self.replicas[model] = replica
        self.by_id[replica.id] = replica
        node.starts += 1
        if fetch:  # as the live pool does: the victims unloaded once the weights are there, after the fetch
            for victim in victims:
                victim.evicting = True  # as the live pool marks them: not offered as room again meanwhile
            self.victims[replica.id] = victims
            self.push(now + fetch, FETCHED, replica)
        else:
            self.load(replica, victims, now)
        self.push(replica.warm_at, READY, replica)
        return replica

    def load(self, replica: Replica, victims: list[Replica], now: float) -> None:
        """The start's weights are on its node: unload its victims (still idle), then its engine loads."""
        for victim in victims:
            victim.evicting = False
            if self.replicas.get(victim.model) is victim and victim.state is S.WARM and victim.in_flight == 0:
                self.unload(victim, now, evicted=True)
        node = self.nodes[replica.node or ""]
        node.used_bytes += replica.need_bytes
        node.peak_bytes = max(node.peak_bytes, node.used_bytes)

    def finish(self, end: float) -> None:
        """Count what is still loaded at the trace's end (up to its keep-alive, when that comes first)."""
        self.advance(end)
        for replica in list(self.replicas.values()):
            self.nodes[replica.node or ""].loaded_s += end - replica.created_at


def simulate_nodes(trace: Trace, nodes: Sequence[SimNode], *, keep_alive: float, cold_start: float,
                   size: int, net_bps: float, log_starts: bool = False) -> dict[str, Any]:
    """Replay `trace` across `nodes` (their files already placed, see spread_files) with every model's
    weights `size` bytes; returns the totals and each node's figures (`log_starts`: and "start_log", every
    start's (time placed, node, model))."""
    for node in nodes:
        node.net_bps = net_bps  # placement estimates a fetch at the rate the replay charges for it
    replay = _Replay({n.name: n for n in nodes}, size, cold_start, keep_alive, net_bps,
                     start_log=[] if log_starts else None)
    stream = _merged(trace.arrivals)
    for model, t in stream:
        replay.arrive(model, t)
    replay.finish(trace.end)
    waits = np.asarray(replay.waits)
    span = (trace.end - trace.start) * len(trace.arrivals)
    loaded = sum(n.loaded_s for n in nodes)
    served = replay.requests - replay.refused
    return {
        "requests": replay.requests, "refused": replay.refused, "cold_requests": len(waits),
        "warm_fraction": (served - len(waits)) / replay.requests if replay.requests else math.nan,
        "wait_p50_s": float(np.percentile(waits, 50)) if len(waits) else 0.0,
        "wait_p99_s": float(np.percentile(waits, 99)) if len(waits) else 0.0,
        "loaded_replica_s": loaded, "cost_fraction": loaded / span if span else math.nan,
        "starts": sum(n.starts for n in nodes), "fetches": sum(n.fetches for n in nodes),
        "evictions": sum(n.evictions for n in nodes),
        "nodes": {n.name: n.report() for n in nodes},
        **({"start_log": replay.start_log} if replay.start_log is not None else {}),
    }


def _merged(arrivals: Mapping[str, np.ndarray]) -> list[tuple[str, float]]:
    """Every model's arrivals as one stream, in time order (ties: by model name)."""
    names = sorted(arrivals)
    times = np.concatenate([arrivals[m] for m in names]) if names else np.empty(0)
    which = np.concatenate([np.full(len(arrivals[m]), i) for i, m in enumerate(names)]) if names else np.empty(0)
    order = np.lexsort((which, times))
    return [(names[int(which[i])], float(times[i])) for i in order]
