"""warmstart.cluster.placing: the facts placement reads, from agents' reports and the pool's own replicas."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.cluster.placing import ENGINE_OVERHEAD, need_bytes, node_facts
from warmstart.config_loader import parse_config
from warmstart.pool import placement
from warmstart.pool.states import ReplicaState as S


@dataclass
class Node:  # what RayNodes keeps per node: a plain record, no Ray in it
    name: str
    memory_bytes: int
    status: dict[str, Any] = field(default_factory=dict)
    alive: bool = True


@dataclass
class Replica:
    id: str
    model: str
    state: S
    node: str | None
    need_bytes: int
    in_flight: int = 0
    idle_since: float | None = None
    evicting: bool = False


def test_loaded_used_and_idle_come_from_the_pools_table_and_tiers_from_the_agent() -> None:
    nodes = [Node("a", 1000, {"tiers": {"m": "disk", "k": "ram", "gone": "loaded"}, "fetched_bps": 5e8}),
             Node("b", 1000, {"tiers": {}})]
    replicas = [Replica("m#1", "m", S.WARM, "a", 300, idle_since=5.0),
                Replica("k#1", "k", S.WARM, "a", 200, in_flight=1),
                Replica("s#1", "s", S.STARTING, "a", 100),
                Replica("x#1", "x", S.COLD, "a", 999),  # stopped: takes nothing
                Replica("h#1", "h", S.WARM, None, 999)]  # a single-box replica: on no node
    a, b = node_facts(nodes, replicas)
    assert a.used_bytes == 600 and a.free_bytes == 400
    assert a.tiers == {"m": placement.LOADED, "k": placement.LOADED, "s": placement.LOADED}  # "gone": not in the table
    assert a.idle == (placement.IdleModel("m", "m#1", 300, 5.0),)
    assert a.rates.net_bps == 5e8 and a.starting_s == a.rates.overhead_s
    assert b.used_bytes == 0 and b.tiers == {} and b.rates == placement.NodeRates()


async def test_every_engine_kind_runs_on_a_node(tmp_path: Path) -> None:
    # placement sends every model to a node: a node agent must run every engine a config can name
    from warmstart.cluster.agent import NodeAgent
    from warmstart.engines.registry import ENGINES

    agent = NodeAgent("n", str(tmp_path / "n"), "127.0.0.1")
    try:
        assert sorted(agent.kinds) == sorted(ENGINES)
        assert all(engine.kind == kind for kind, engine in agent.kinds.items())
    finally:
        await agent.shutdown()


def test_an_idle_model_promised_to_a_start_under_way_is_not_offered_as_room_again() -> None:
    # node a (1000 bytes) runs m and k, both idle; a start fetching its weights there has promised to unload m
    nodes = [Node("a", 1000, {"tiers": {"new": "disk"}})]
    replicas = [Replica("m#1", "m", S.WARM, "a", 400, idle_since=1.0, evicting=True),
                Replica("k#1", "k", S.WARM, "a", 400, idle_since=2.0),
                Replica("f#1", "f", S.STARTING, "a", 400)]
    [a] = node_facts(nodes, replicas)
    assert a.used_bytes == 1200  # m is still loaded until the fetch ends
    assert a.idle == (placement.IdleModel("k", "k#1", 400, 2.0),)
    # a second start needing 700 bytes: counting on m as well would have unloaded m and k for it, on top of
    # the start that already counts on m's bytes (1000 < 400 + 700); with k alone there is no room
    assert isinstance(placement.place("new", [a], size=100, need=700), placement.NoRoom)
    unpromised = [Replica("m#1", "m", S.WARM, "a", 400, idle_since=1.0), *replicas[1:]]
    assert len(placement.place("new", node_facts(nodes, unpromised), size=100, need=700).evict) == 2  # type: ignore[union-attr]


def test_a_replicas_memory_counts_a_vllm_models_kv_cache_where_its_size_is_set(tmp_path: Path) -> None:
    """And `options.memory_bytes`, as documented, replaces the estimate for any engine (it was refused as an
    unknown option before)."""
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    models = [{"name": "v", "engine": "vllm", "path": str(tmp_path), "options": {"kv_cache_space_gib": 2}},
              {"name": "v-default", "engine": "vllm", "path": str(tmp_path)},
              {"name": "set", "engine": "vllm", "path": str(tmp_path),
               "options": {"kv_cache_space_gib": 2, "memory_bytes": 5 << 30}},
              {"name": "l", "engine": "llamacpp", "path": str(weights)},
              {"name": "l-set", "engine": "llamacpp", "path": str(weights), "options": {"memory_bytes": 3 << 30}}]
    config = parse_config({"server": {"data_dir": str(tmp_path / "data")}, "models": models}, base_dir=tmp_path)
    need = {m.name: need_bytes(m, 1 << 30) for m in config.models}
    assert need == {"v": (3 << 30) + ENGINE_OVERHEAD, "v-default": (1 << 30) + ENGINE_OVERHEAD,
                    "set": 5 << 30, "l": (1 << 30) + ENGINE_OVERHEAD, "l-set": 3 << 30}
