"""What the simulator predicts of a cluster is what the server does: one trace of several models through the
live `Pool` with a cluster attached (placement, peer fetches, evictions of idle models) on the virtual clock,
and through `simulate_nodes`; both start the same models on the same nodes at the same moments, evict and
fetch the same, and serve the same requests warm.

Both call `placement.place` on `cluster.placing.node_facts`. The nodes here are `ClockNodes`, which carry out a
fetch and a start by waiting on the clock (no Ray and no engine process can run on virtual time); the
`Cluster` between them and the pool is the live one. Starts and fetches take whole seconds and arrivals fall
on 1/64 s, so both sides add the same exact floats.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from warmstart.clock import VirtualClock
from warmstart.cluster.placing import Cluster, need_bytes_for
from warmstart.cluster.weights import Weights
from warmstart.config_loader import parse_config
from warmstart.engines.simulated import SimulatedEngine, SimulatedProcess
from warmstart.errors import Unavailable
from warmstart.pool.pool import Pool
from warmstart.sim.nodes import SimNode, simulate_nodes, spread_files
from warmstart.sim.traces import Trace
from warmstart.store.digest import DigestCache
from warmstart.telemetry.metrics import Metrics

COLD = 5.0  # seconds a start takes on a node
SIZE = 4096  # bytes of each model's weights
NET = 4096.0  # bytes per second from a peer: a fetch takes 1 s
MODELS = ("m1", "m2", "m3", "m4", "m5")


class ClockNodes:
    """The cluster's nodes on a virtual clock, shaped like warmstart.cluster.ray_nodes.RayNodes."""

    def __init__(self, clock: VirtualClock, nodes: list[SimNode]) -> None:
        self.clock = clock
        self.nodes = {n.name: n for n in nodes}
        self.placed: list[tuple[float, str, str]] = []  # (time placed: its fetch or its start, node, model)
        self.fetched: list[tuple[float, str, str]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def live(self) -> list[SimNode]:
        return list(self.nodes.values())

    async def fetch(self, node: str, model: str, weights: Weights, sources: tuple[str, ...],
                    transport: str = "stream") -> dict[str, Any]:
        self.fetched.append((self.clock.now(), node, model))
        self.placed.append((self.clock.now(), node, model))
        await self.clock.sleep(weights.size / NET)
        self.nodes[node].files.add(model)
        return {"source": sources[0], "bytes": weights.size, "seconds": weights.size / NET, "refused": [],
                "from": {sources[0]: weights.size}}

    async def start(self, node: str, model: Any, replica: str, weights: Weights) -> tuple[SimulatedProcess, list]:
        if not self.fetched or self.fetched[-1] != (self.clock.now() - SIZE / NET, node, model.name):
            self.placed.append((self.clock.now(), node, model.name))  # not fetched first: placed now
        await self.clock.sleep(COLD)
        return SimulatedProcess(), [("load", COLD)]

    async def hold(self, node: str, model: str, seconds: float, strict: bool = False) -> None:
        pass

    async def release(self, node: str, model: str) -> None:
        pass


class ClockCluster(Cluster):
    """The live Cluster, with each file's digest taken before the trace: hashing runs on a thread, which the
    virtual clock does not wait for."""

    known: dict[Path, Weights]

    async def weights(self, path: Path) -> Weights:
        return self.known[Path(path)]


def nodes() -> list[SimNode]:
    # room for two models each (weights + the engine's estimate), not three
    out = [SimNode(name, 2 * need_bytes_for(SIZE) + 1000) for name in ("n1", "n2")]
    spread_files(MODELS, out, "spread")
    for n in out:
        n.net_bps = NET
    return out


@pytest.fixture
def trace() -> Trace:
    rng = np.random.default_rng(7)
    arrivals = {}
    for i, m in enumerate(MODELS):
        gaps = rng.exponential(5.0 * (i + 1), 300)
        arrivals[m] = np.unique(np.round(np.cumsum(gaps) * 64) / 64)
    end = float(min(a[-1] for a in arrivals.values()))
    return Trace("five models", {m: a[a < end] for m, a in arrivals.items()}, 0.0, end)


async def serve_live(tmp_path: Path, trace: Trace, keep_alive: float) -> dict[str, Any]:
    models = []
    for m in MODELS:
        (tmp_path / f"{m}.gguf").write_bytes(m.encode().ljust(SIZE, b"w"))
        models.append({"name": m, "engine": "llamacpp", "path": str(tmp_path / f"{m}.gguf"),
                       "keep_alive": keep_alive, "max_concurrency": 64})
    config = parse_config({"server": {"data_dir": str(tmp_path), "queue_deadline": "1h", "queue_size": 100_000},
                           "models": models}, base_dir=tmp_path)
    clock = VirtualClock(start=0.0)
    metrics = Metrics(node_label=True)
    pool = Pool(config, {"llamacpp": SimulatedEngine(clock)}, clock, metrics)
    cluster_nodes = ClockNodes(clock, nodes())
    cluster = ClockCluster(cluster_nodes, metrics, DigestCache(tmp_path / "digests.json"))
    cluster.known = {tmp_path / f"{m}.gguf": await Cluster.weights(cluster, tmp_path / f"{m}.gguf") for m in MODELS}
    pool.attach_cluster(cluster)
    for m in MODELS:
        await pool.capabilities(m)
    cold: dict[tuple[str, float], bool] = {}
    refused: list[tuple[str, float]] = []

    async def request(model: str, t: float) -> None:
        try:
            lease = pool.try_acquire(model) or await pool.acquire(model)
        except Unavailable:  # no node has room (a 503)
            refused.append((model, t))
            return
        cold[(model, t)] = lease.cold
        lease.release()  # requests take no time

    stream = sorted((float(t), m) for m, a in trace.arrivals.items() for t in a)
    tasks = []
    for t, m in stream:
        await clock.advance(t - clock.now())
        tasks.append(asyncio.get_running_loop().create_task(request(m, t)))
        await clock.settle()
    await clock.advance(trace.end - clock.now())
    for (t, m), task in zip(stream, tasks, strict=True):
        if not task.done():  # held at the end of the trace, for a start still under way: cold, as the replay counts it
            cold[(m, t)] = True
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    evicted = {n: 0.0 for n in ("n1", "n2")}
    for family in metrics.registry.collect():
        if family.name == "warmstart_unloads":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["reason"] == "evicted":
                    evicted[s.labels["node"]] += s.value
    await pool.shutdown()
    return {"placed": cluster_nodes.placed, "fetched": cluster_nodes.fetched, "evicted": evicted,
            "cold": sum(cold.values()), "refused": len(refused)}


@pytest.mark.parametrize("keep_alive", [30.0, 300.0])
async def test_a_cluster_serves_a_trace_as_the_simulator_predicts(tmp_path, trace, keep_alive):
    sim_nodes = nodes()
    predicted = simulate_nodes(trace, sim_nodes, keep_alive=keep_alive, cold_start=COLD, size=SIZE, net_bps=NET,
                               log_starts=True)
    live = await serve_live(tmp_path, trace, keep_alive)
    assert live["placed"] == predicted["start_log"]  # every start: the same moment, node and model
    assert {n: sum(1 for _, node, _ in live["fetched"] if node == n) for n in ("n1", "n2")} == \
        {n: r["fetches"] for n, r in predicted["nodes"].items()}
    assert live["evicted"] == {n: r["evictions"] for n, r in predicted["nodes"].items()}
    assert live["cold"] == predicted["cold_requests"] and live["refused"] == predicted["refused"]
    # the trace is worth comparing: both nodes full at times, idle models evicted, weights fetched
    assert predicted["evictions"] > 30 and predicted["fetches"] >= 3 and predicted["starts"] > 40
