"""The pool's side of many machines: the facts placement reads (nodes as their agents report them, replicas as
the pool's table has them), and a placed start carried out: a peer fetch when the node lacks the weights (a
`fetch` phase, its bytes and GB/s in metrics and the audit record), then the engine on that node.

Ray-free: `nodes` is anything shaped like warmstart.cluster.ray_nodes.RayNodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from warmstart.cluster.chunks import chunk_digests
from warmstart.cluster.weights import Weights, of_path
from warmstart.config import ModelConfig
from warmstart.engines.base import StartReport
from warmstart.errors import EngineError, StoreError
from warmstart.policy import tiering
from warmstart.pool import placement, rules
from warmstart.pool.states import LIVE, ReplicaState
from warmstart.store.digest import DigestCache
from warmstart.telemetry.metrics import Metrics

FETCH = "fetch"  # the cold-start phase of copying the weights from a peer
ENGINE_OVERHEAD = 256 << 20  # bytes an engine takes beyond its weights (llama.cpp: context, buffers)


class NodeLost(EngineError):
    """The node a start was placed on left the cluster (its agent died) before the engine was up: the start is
    placed again on the nodes that remain."""


def need_bytes(model: ModelConfig, size: int) -> int:
    """The memory a replica of `model` takes once loaded: its weights and the engine's own (an estimate), and a
    vLLM model's KV cache where its size is set (`kv_cache_space_gib`: vLLM on CPUs allocates all of it at start)."""
    if model.options.get("memory_bytes"):
        return int(model.options["memory_bytes"])
    kv_cache = int(model.options.get("kv_cache_space_gib") or 0) << 30 if model.engine == "vllm" else 0
    return need_bytes_for(size) + kv_cache


def need_bytes_for(size: int) -> int:
    return size + ENGINE_OVERHEAD


class PlacedReplica(Protocol):
    id: str
    model: str
    state: ReplicaState
    node: str | None
    need_bytes: int
    in_flight: int
    idle_since: float | None
    evicting: bool


def node_facts(nodes: Iterable[Any], replicas: Iterable[PlacedReplica]) -> list[placement.NodeFacts]:
    """Placement's view: each node's memory and tiers as its agent reported them, its used memory, loaded
    models and idle ones (the LRU candidates) from the pool's own replicas."""
    by_node: dict[str, list[PlacedReplica]] = {}
    for r in replicas:
        if r.node is not None and r.state in LIVE:
            by_node.setdefault(r.node, []).append(r)
    facts = []
    for node in nodes:
        mine = by_node.get(node.name, [])
        tiers = dict(node.status.get("tiers", {}))
        tiers = {m: t for m, t in tiers.items() if t != placement.LOADED}  # what runs there: the pool's table says
        for r in mine:
            if r.state in rules.RUNNING:
                tiers[r.model] = placement.LOADED
        idle = tuple(placement.IdleModel(r.model, r.id, r.need_bytes, r.idle_since) for r in mine
                     if r.state is ReplicaState.WARM and r.in_flight == 0 and r.idle_since is not None
                     and not r.evicting)  # already promised to a start under way
        starting = sum(1.0 for r in mine if r.state is ReplicaState.STARTING)
        fetched = node.status.get("fetched_bps")
        rates = placement.NodeRates(net_bps=fetched) if fetched else placement.NodeRates()
        facts.append(placement.NodeFacts(node.name, node.alive, node.memory_bytes, sum(r.need_bytes for r in mine),
                                     tiers, idle, rates, starting_s=starting * rates.overhead_s))
    return facts


class Cluster:
    """What the pool asks of the cluster: facts to place by, the weights' digest, a placed start."""

    def __init__(self, nodes: Any, metrics: Metrics, digests: DigestCache) -> None:
        self.nodes = nodes
        self.metrics = metrics
        self.digests = digests
        self._chunks: dict[str, tuple[str, ...]] = {}  # sha256 of a head's file -> its pieces' sha256

    async def open(self) -> None:
        await self.nodes.open()

    async def close(self) -> None:
        await self.nodes.close()

    def facts(self, replicas: Iterable[PlacedReplica]) -> list[placement.NodeFacts]:
        return node_facts(self.nodes.live(), replicas)

    def account(self, replicas: Iterable[PlacedReplica]) -> None:
        """The node metrics as things are now (before a scrape): up, memory total and used, replicas by
        model and state per node."""
        replicas = list(replicas)
        used = {f.name: f.used_bytes for f in node_facts(self.nodes.nodes.values(), replicas)}
        counts: dict[tuple[str, str, str], int] = {}
        for r in replicas:
            if r.node is not None:
                key = (r.node, r.model, r.state.value)
                counts[key] = counts.get(key, 0) + 1
        m = self.metrics
        for node in self.nodes.nodes.values():
            m.node_up.labels(node.name).set(1 if node.alive else 0)
            m.node_memory_bytes.labels(node.name, "total").set(node.memory_bytes)
            m.node_memory_bytes.labels(node.name, "used").set(used.get(node.name, 0) if node.alive else 0)
        m.node_replicas.clear()  # a replica gone leaves no series behind
        for (node_name, model, state), n in counts.items():
            m.node_replicas.labels(node_name, model, state).set(n)

    def view(self, replicas: Iterable[PlacedReplica]) -> list[dict[str, Any]]:
        """Every node the cluster has seen, for `warmstart nodes` and the dashboard: memory, what its replicas
        take, and the models it holds per tier (loaded, ram, disk)."""
        replicas = list(replicas)
        facts = {f.name: f for f in node_facts(self.nodes.nodes.values(), replicas)}
        out = []
        for node in sorted(self.nodes.nodes.values(), key=lambda n: n.name):
            view = node.to_dict()
            f = facts[node.name]
            view["used_bytes"] = f.used_bytes
            view["tiers"] = dict(f.tiers) if node.alive else {}
            view["replicas"] = [r.id for r in replicas if r.node == node.name and r.state in LIVE]
            out.append(view)
        return out

    async def weights(self, path: Path) -> Weights:
        """The model's file or folder on the head, as every node's copy must be: each file's sha256 (the store's
        digest cache: what the manifest holds) and its pieces' sha256, which a fetch checks the copy against."""
        return await asyncio.to_thread(of_path, Path(path), self._sha256, self._pieces)

    def _sha256(self, path: Path) -> str:
        return self.digests.digest(path).sha256

    def _pieces(self, path: Path, sha256: str) -> tuple[str, ...]:
        if sha256 not in self._chunks:  # once per file: hashed in pieces the first time it is asked for
            self._chunks[sha256] = chunk_digests(path)
        return self._chunks[sha256]

    async def hold(self, model: str, seconds: float, path: Path, replicas: Iterable[PlacedReplica]) -> str:
        """`warmstart hold` on a cluster: hold the weights in the RAM tier of the node `placement.place` would start
        the model on (or, when that node must fetch them, of the peer it would fetch from) for `seconds`
        (0: let them go on every node). Returns the node; StoreError when no node holds the model."""
        if seconds == 0:
            for node in self.nodes.live():
                await self.nodes.release(node.name, model)
            return ""
        size = (await self.weights(path)).size
        decision = placement.place(model, self.facts(replicas), size=size, need=need_bytes_for(size))
        if isinstance(decision, placement.NoRoom):
            holders = placement.holders(model, self.facts(replicas))
            if not holders:
                raise StoreError(decision.reason)
            node = holders[0]
        else:
            node = decision.sources[0] if decision.where == placement.PEER else decision.node
        await self.nodes.hold(node, model, seconds, strict=True)
        return node

    async def fetch_for(self, place: placement.Place, model: str, weights: Weights, report: StartReport) -> None:
        """The first part of a placed start: when `place.node` lacks the weights, copy them from a peer (a
        `fetch` phase), before anything is unloaded there to make room."""
        if place.where == placement.PEER:
            await self._fetch(place, model, weights, report)

    async def start(self, place: placement.Place, model: ModelConfig, weights: Weights, report: StartReport,
                    replica: str) -> Any:
        """Start the engine on `place.node`; the agent's phases are added to `report`."""
        report.enter("spawn")
        proc, phases = await self.nodes.start(place.node, model, replica, weights)
        for name, seconds in phases:
            report.done(name, seconds)
        return proc

    async def before_stop(self, replica: PlacedReplica, replicas: Iterable[PlacedReplica], reason: str,
                          ram_keep_alive: float, now: float) -> None:
        """The model's last replica on its node stops on keep-alive: its weights stay in that node's RAM tier
        for the model's RAM keep-alive (`rules.tier_on_stop`, as on one box; the node's agent keeps the timer)."""
        on_node = [r for r in replicas if r.node == replica.node]
        decision = rules.tier_on_stop(replica, on_node, reason=reason, ram_keep_alive=ram_keep_alive,  # type: ignore[arg-type]
                                      now=now)
        if isinstance(decision, tiering.HoldInRam) and replica.node is not None:
            await self.nodes.hold(replica.node, replica.model, decision.until - now)

    async def _fetch(self, place: placement.Place, model: str, weights: Weights, report: StartReport) -> None:
        report.enter(FETCH)
        answer = await self.nodes.fetch(place.node, model, weights, place.sources)
        for refusal in answer.get("refused", []):
            self.metrics.fetch_refusals.labels(model, place.node, refusal["source"]).inc()
        report.details.setdefault("fetch_refused", []).extend(answer.get("refused", []))
        for source, moved in answer.get("from", {}).items():  # every byte that arrived checked, by its source
            self.metrics.fetch_bytes.labels(model, place.node, source).inc(moved)
        if "error" in answer:
            reasons = "; ".join(f"{r['source']}: {r['reason']}" for r in answer.get("refused", []))
            raise EngineError(f"node {place.node} could not fetch model '{model}': {answer['error']} ({reasons})")
        seconds, size = float(answer["seconds"]), weights.size
        gbps = size / seconds / 1e9 if seconds > 0 else 0.0
        report.done(FETCH, seconds)
        report.details["fetch"] = {"source": answer["source"], "bytes": size, "files": len(weights.files),
                                   "seconds": round(seconds, 6), "gbps": round(gbps, 4), "sha256": weights.sha256}
        if len(answer.get("from", {})) > 1:
            report.details["fetch"]["from"] = answer["from"]
        self.metrics.fetch_last_gbps.labels(model, place.node).set(gbps)
