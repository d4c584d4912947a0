"""Placement on many machines, a pure rule like warmstart.pool.rules: which node starts a replica (`Place`, with
the idle models to unload there, or `NoRoom`), from each node's estimated start (where the weights are) and its
memory. The live pool (pool/placed.py, cluster/placing.py) and the simulator's replay across nodes (sim/nodes.py)
both decide with it.

Loading-aware, after ServerlessLLM's storage-aware scheduler: each node's start time is estimated from
where the weights are on it (a node's queue of starts + its measured start overhead + the bytes over the
rate of the tier they are read from), and the fastest node with the memory wins. Where ServerlessLLM
skips nodes without the checkpoint, a node here may fetch it from a peer's RAM or disk; where it
migrates running instances to make room, the least recently used idle model is unloaded (as Ollama does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LOADED, RAM, DISK, PEER = "loaded", "ram", "disk", "peer"


@dataclass(frozen=True, slots=True)
class NodeRates:
    """A node's measured (or assumed) rates: bytes per second from its disk, from RAM, from a peer over the
    network, and the seconds a start takes beyond reading the weights (spawn, import, KV cache, warm-up)."""

    disk_bps: float = 1e9
    ram_bps: float = 8e9
    net_bps: float = 1.25e9
    overhead_s: float = 1.0


@dataclass(frozen=True, slots=True)
class IdleModel:
    """A model loaded on a node with no request in flight: a candidate to unload for room."""

    model: str
    replica: str
    bytes: int
    idle_since: float


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What placement reads of a node: `tiers` maps a model to the best tier it is in there (LOADED, RAM or
    DISK); `used_bytes` is held by its engines (and starts under way), `starting_s` the seconds of starts
    already queued there (ServerlessLLM's node waiting time)."""

    name: str
    alive: bool
    memory_bytes: int
    used_bytes: int
    tiers: Mapping[str, str]
    idle: tuple[IdleModel, ...] = ()
    rates: NodeRates = NodeRates()
    starting_s: float = 0.0

    @property
    def free_bytes(self) -> int:
        return max(0, self.memory_bytes - self.used_bytes)


@dataclass(frozen=True, slots=True)
class Place:
    """Start the model on `node`, reading its weights from `where` (LOADED/RAM/DISK there, or PEER: fetched
    first from `sources`, the holders in the order to try, RAM before disk); unload `evict` first."""

    node: str
    where: str
    estimate_s: float
    sources: tuple[str, ...] = ()
    evict: tuple[IdleModel, ...] = ()


@dataclass(frozen=True, slots=True)
class NoRoom:
    """No live node can start the model: `reason` says which memory is short (or that no node holds it)."""

    reason: str


def holders(model: str, nodes: Sequence[NodeFacts]) -> tuple[str, ...]:
    """The live nodes that hold the model's files, RAM (or loaded) first, then disk, by name on a tie."""
    rank = {LOADED: 0, RAM: 0, DISK: 1}
    held = [n for n in nodes if n.alive and n.tiers.get(model) in rank]
    return tuple(n.name for n in sorted(held, key=lambda n: (rank[n.tiers[model]], n.name)))


def start_estimate(node: NodeFacts, model: str, size: int, sources: Sequence[str],
                   nodes: Mapping[str, NodeFacts]) -> tuple[str, float] | None:
    """Where `node` would read the weights from and how long its start would take; None when neither it
    nor any peer holds them."""
    r = node.rates
    tier = node.tiers.get(model)
    if tier in (LOADED, RAM):
        where, read = (LOADED if tier == LOADED else RAM), size / r.ram_bps
    elif tier == DISK:
        where, read = DISK, size / r.disk_bps
    else:
        peers = [nodes[s] for s in sources if s != node.name]
        if not peers:
            return None
        src = peers[0]  # the first holder: from its RAM at the network's rate, from its disk at the slower of both
        src_bps = src.rates.ram_bps if src.tiers.get(model) in (LOADED, RAM) else src.rates.disk_bps
        # fetched into this node's page cache, then read from there
        where, read = PEER, size / min(r.net_bps, src_bps) + size / r.ram_bps
    return where, node.starting_s + r.overhead_s + read


def lru_room(node: NodeFacts, need: int) -> tuple[IdleModel, ...] | None:
    """The least recently used idle models to unload so `need` bytes fit; None when even all of them do not
    make room."""
    free, chosen = node.free_bytes, []
    for idle in sorted(node.idle, key=lambda m: (m.idle_since, m.replica)):
        if free >= need:
            break
        chosen.append(idle)
        free += idle.bytes
    return tuple(chosen) if free >= need else None


def place(model: str, nodes: Sequence[NodeFacts], *, size: int, need: int) -> Place | NoRoom:
    """Where to start `model` (`size` bytes of weights, `need` bytes of memory once loaded): the live node
    with the shortest estimated start that has the memory, counting what unloading its least recently used
    idle models frees (fewer unloads first on a tie, then the node's name). NoRoom says why none can."""
    by_name = {n.name: n for n in nodes}
    sources = holders(model, nodes)
    best: tuple[float, int, str] | None = None
    choice: Place | NoRoom = NoRoom(f"no live node holds model '{model}' (on disk or in RAM), so none can start it")
    short = []
    for node in nodes:
        if not node.alive:
            continue
        estimate = start_estimate(node, model, size, sources, by_name)
        if estimate is None:
            continue
        where, seconds = estimate
        evict = lru_room(node, need)
        if evict is None:
            short.append(f"{node.name} has {_gib(node.free_bytes)} free of {_gib(node.memory_bytes)}"
                         + (f" and {len(node.idle)} idle model(s) to unload" if node.idle else ""))
            continue
        key = (seconds, len(evict), node.name)
        if best is None or key < best:
            best = key
            choice = Place(node.name, where, seconds, tuple(s for s in sources if s != node.name)
                           if where == PEER else (), evict)
    if best is None and short:
        return NoRoom(f"model '{model}' needs {_gib(need)} of memory and no node has it: " + "; ".join(short))
    return choice


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"
