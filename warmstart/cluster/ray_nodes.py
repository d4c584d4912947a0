"""The head's side of a Ray cluster: a node agent (warmstart.cluster.agent) on every node, pinned there, the
cluster's membership watched, and engines started, watched and stopped on a node through its agent.

Imported only when `[cluster] backend = "ray"`: Ray supplies membership, per-node resources, placement of the
agents, failure detection and the transfer of weights between nodes; warmstart adds no protocol of its own.
A node is named by a custom resource `warmstart_node_NAME` if it has one (`ray start --resources`), else by
its host and Ray node id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from warmstart.cluster.agent import NodeAgent
from warmstart.cluster.placing import NodeLost
from warmstart.cluster.weights import Weights
from warmstart.config import ClusterConfig, ModelConfig
from warmstart.errors import EngineError, StoreError, WarmstartError

log = logging.getLogger("warmstart.cluster")
NODE_RESOURCE = "warmstart_node_"
HEAD_RESOURCE = "node:__internal_head__"  # the resource Ray gives the head node (the one `ray start --head` ran on)
STATUS_TIMEOUT = 5.0  # seconds an agent has to say what it holds before its node counts as unreachable
_Agent = ray.remote(NodeAgent)


class ClusterUnreachable(WarmstartError):
    """The Ray cluster named by cluster.address could not be joined."""


@dataclass
class Node:
    id: str
    name: str
    host: str
    memory_bytes: int
    agent: Any
    alive: bool = True
    status: dict[str, Any] = field(default_factory=dict)
    joined_at: float = field(default_factory=time.time)
    head: bool = False
    gpus: float = 0.0  # Ray's GPU resource on the node

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "host": self.host, "alive": self.alive, "head": self.head,
                "memory_bytes": self.memory_bytes, "gpus": self.gpus, "tiers": dict(self.status.get("tiers", {})),
                "ram_bytes": self.status.get("ram_bytes", 0), "engines": list(self.status.get("engines", [])),
                "fetched_bps": self.status.get("fetched_bps")}


def node_name(info: dict[str, Any]) -> str:
    for resource in info.get("Resources", {}):
        if resource.startswith(NODE_RESOURCE):
            return resource[len(NODE_RESOURCE):]
    return f"{info.get('NodeManagerHostname', 'node')}-{info['NodeID'][:6]}"


class RemoteProcess:
    """An engine process on a node, seen from the head: the pool's EngineProcess, carried out by the agent."""

    health_path = "/health"

    def __init__(self, node: Node, pid: int, base_url: str) -> None:
        self.node, self.pid, self.base_url = node, pid, base_url
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._code

    async def wait_exit(self) -> int:
        try:
            code = await self.node.agent.wait_exit.remote(self.pid)
        except RayError as exc:  # the node (or its agent) died: so did the engine, with its process group
            log.warning("node %s lost: %s", self.node.name, type(exc).__name__)
            self.node.alive = False
            code = -1
        self._code = code
        return code

    async def stop(self, timeout: float) -> None:
        with contextlib.suppress(RayError):
            await self.node.agent.stop.remote(self.pid, timeout)
        self._code = 0 if self._code is None else self._code

    def kill(self) -> None:
        with contextlib.suppress(RayError):
            self.node.agent.kill.remote(self.pid)


class RayNodes:
    """The cluster's nodes and their agents; `refresh` (run every `watch_interval`) notices joins and leaves."""

    def __init__(self, config: ClusterConfig, data_dir: Path, seed: dict[str, str]) -> None:
        self.config = config
        self.node_dir = config.node_dir or data_dir / "nodes"
        self.seed = seed  # model -> file on the head's machine, served by the head's node when head_engines
        self.nodes: dict[str, Node] = {}  # by Ray node id
        self.head_id: str | None = None
        self._watch: asyncio.Task | None = None

    async def open(self) -> None:
        address = None if self.config.address == "auto" and not os.environ.get("RAY_ADDRESS") else (
            self.config.address)
        try:
            # on the main thread (Ray sets signal handlers there), before the server answers anything
            ray.init(address=address or "auto", namespace="warmstart", log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterUnreachable(f"cannot join the Ray cluster at {self.config.address}: {exc}; start it first "
                               "(`ray start --head`, see docs/cluster.md) or set cluster.address") from None
        await self.refresh()
        deadline = time.monotonic() + 60  # agents take a worker process each: wait for them to answer once
        while any(n.alive and not n.status for n in self.nodes.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await self.refresh()
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop(), name="cluster watch")

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.watch_interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("looking at the cluster failed")

    async def refresh(self) -> None:
        """Agents for nodes that joined, dead marks for nodes that left, and every agent's holdings."""
        infos = await asyncio.to_thread(ray.nodes)
        for info in infos:
            if HEAD_RESOURCE in info.get("Resources", {}):
                self.head_id = info["NodeID"]
        for info in infos:
            node_id = info["NodeID"]
            if not info.get("Alive"):
                if node_id in self.nodes and self.nodes[node_id].alive:
                    log.warning("node %s left the cluster", self.nodes[node_id].name)
                    self.nodes[node_id].alive = False
                continue
            if node_id == self.head_id and not self.config.head_engines:
                continue
            if node_id not in self.nodes:  # a node that is lost never comes back under its id (a restart: a new id)
                self.nodes[node_id] = self._agent_for(info)
                log.info("node %s joined (%s)", self.nodes[node_id].name, info.get("NodeManagerAddress"))
        live = [n for n in self.nodes.values() if n.alive]
        answers = await asyncio.gather(*(self._status(n) for n in live), return_exceptions=True)
        for node, answer in zip(live, answers, strict=True):
            if isinstance(answer, RayError):  # its agent died (with its node, or on its own): nothing goes there
                log.warning("node %s lost: %s", node.name, type(answer).__name__)
                node.alive = False
            elif isinstance(answer, BaseException):  # slow (an agent still starting): asked again next time
                log.info("node %s did not answer in time: %r", node.name, answer)
            else:
                node.status = answer

    def _agent_for(self, info: dict[str, Any]) -> Node:
        node_id, name = info["NodeID"], node_name(info)
        host = self.config.engine_host or info.get("NodeManagerAddress") or "127.0.0.1"
        head = node_id == self.head_id
        memory = int(info.get("Resources", {}).get("memory", 0)) - self.config.memory_reserve
        agent = _Agent.options(
            num_cpus=0, max_concurrency=64, name=f"warmstart-agent-{name}-{node_id[:8]}", get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(name, str(self.node_dir / name), host, seed=self.seed if head else None)
        return Node(node_id, name, host, max(0, memory), agent, head=head,
                    gpus=float(info.get("Resources", {}).get("GPU", 0)))

    @staticmethod
    async def _status(node: Node) -> dict[str, Any]:
        return await asyncio.wait_for(node.agent.status.remote(), STATUS_TIMEOUT)

    def live(self) -> list[Node]:
        """Nodes alive whose agent has answered at least once (what placement may choose from)."""
        return [n for n in self.nodes.values() if n.alive and n.status]

    def by_name(self, name: str) -> Node:
        for node in self.nodes.values():
            if node.name == name and node.alive:
                return node
        raise NodeLost(f"node {name} is not in the cluster (it left, or never joined)")

    # ---- what the pool asks of a node ------------------------------------------------------------------

    async def fetch(self, node: str, model: str, weights: Weights, sources: tuple[str, ...],
                    transport: str = "stream") -> dict[str, Any]:
        """Have `node` copy the model's files from the first of `sources` that gives them intact."""
        handles = []
        for name in sources:
            with contextlib.suppress(EngineError):
                handles.append((name, self.by_name(name).agent))
        try:
            return await self.by_name(node).agent.fetch.remote(model, weights, handles, transport)
        except RayError as exc:
            self.by_name(node).alive = False
            raise NodeLost(f"node {node} was lost while fetching model '{model}': {type(exc).__name__}") from None

    async def start(self, node: str, model: ModelConfig, replica: str, weights: Weights
                    ) -> tuple[RemoteProcess, list[tuple[str, float]]]:
        target = self.by_name(node)
        try:
            answer = await target.agent.start.remote(model, replica, weights)
        except RayError as exc:
            target.alive = False
            raise NodeLost(f"node {node} was lost while starting model '{model.name}': "
                              f"{type(exc).__name__}") from None
        if "error" in answer:
            raise EngineError(f"on node {node}: {answer['error']}")
        return RemoteProcess(target, int(answer["pid"]), str(answer["base_url"])), list(answer["phases"])

    async def hold(self, node: str, model: str, seconds: float, strict: bool = False) -> None:
        """Hold the model's weights in `node`'s RAM tier for `seconds`; a refusal leaves them on its disk (and
        with `strict` raises StoreError saying why)."""
        try:
            await self.by_name(node).agent.hold.remote(model, seconds)
        except (RayError, EngineError) as exc:
            log.warning("node %s did not hold model '%s' in RAM: %s", node, model, exc)
            if strict:
                cause = getattr(exc, "cause", None) or exc
                raise StoreError(f"node {node} did not hold model '{model}' in RAM: {cause}") from None

    async def release(self, node: str, model: str) -> None:
        with contextlib.suppress(RayError, EngineError):
            await self.by_name(node).agent.release.remote(model)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await asyncio.gather(*(n.agent.shutdown.remote() for n in self.nodes.values() if n.alive),
                             return_exceptions=True)
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                ray.kill(node.agent)
        await asyncio.to_thread(ray.shutdown)
