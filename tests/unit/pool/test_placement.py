"""placement.place: loading-aware placement across nodes, a pure rule (no Ray, no clock)."""

from __future__ import annotations

import pytest

from warmstart.pool import placement
from warmstart.pool.placement import DISK, LOADED, PEER, RAM, IdleModel, NodeFacts, NodeRates, NoRoom, Place

MiB, GiB = 1 << 20, 1 << 30
SIZE, NEED = 100 * MiB, 400 * MiB


def node(name: str, tiers: dict[str, str] | None = None, *, memory: int = 4 * GiB, used: int = 0,
         idle: tuple[IdleModel, ...] = (), alive: bool = True, **rates: float) -> NodeFacts:
    return NodeFacts(name, alive, memory, used, tiers or {}, idle, NodeRates(**rates))


def place(nodes: list[NodeFacts], model: str = "m") -> Place | NoRoom:
    return placement.place(model, nodes, size=SIZE, need=NEED)


def test_the_node_holding_the_weights_in_ram_wins_over_one_reading_disk() -> None:
    decision = place([node("a", {"m": DISK}), node("b", {"m": RAM})])
    assert isinstance(decision, Place) and (decision.node, decision.where) == ("b", RAM)


def test_a_disk_beats_a_peer_fetch_and_a_fetch_names_its_sources_ram_first() -> None:
    assert place([node("a", {"m": DISK}), node("b")]).node == "a"
    decision = place([node("a", {"m": DISK}, memory=0), node("b", {"m": RAM}, memory=0), node("c")])
    assert (decision.node, decision.where, decision.sources) == ("c", PEER, ("b", "a"))


def test_a_fast_network_from_a_peers_ram_can_beat_a_slow_local_disk() -> None:
    slow_disk = node("a", {"m": DISK}, disk_bps=50e6)
    fast_net = node("b", net_bps=10e9)
    holder = node("c", {"m": RAM}, memory=0)
    decision = place([slow_disk, fast_net, holder])
    assert (decision.node, decision.where) == ("b", PEER)
    assert decision.estimate_s < placement.start_estimate(slow_disk, "m", SIZE, ("c", "a"),
                                                      {n.name: n for n in (slow_disk, fast_net, holder)})[1]


def test_the_queue_of_starts_on_a_node_counts() -> None:
    busy = NodeFacts("a", True, 4 * GiB, 0, {"m": RAM}, starting_s=30.0)
    assert place([busy, node("b", {"m": DISK})]).node == "b"


def test_dead_nodes_are_never_chosen_nor_fetched_from() -> None:
    assert place([node("a", {"m": RAM}, alive=False), node("b", {"m": DISK})]).node == "b"
    decision = place([node("a", {"m": RAM}, alive=False), node("b")])
    assert isinstance(decision, NoRoom) and "no live node holds model 'm'" in decision.reason


def test_a_full_node_unloads_its_least_recently_used_idle_models_just_enough() -> None:
    idle = (IdleModel("x", "x#1", 200 * MiB, idle_since=50.0), IdleModel("y", "y#1", 200 * MiB, idle_since=10.0),
            IdleModel("z", "z#1", 200 * MiB, idle_since=30.0))
    decision = place([node("a", {"m": DISK}, memory=1 * GiB, used=900 * MiB, idle=idle)])
    # 124 MiB free, 400 needed: y (idle longest) then z, and not x
    assert [i.model for i in decision.evict] == ["y", "z"]


def test_a_node_with_room_wins_a_tie_over_one_that_must_unload() -> None:
    full = node("a", {"m": DISK}, memory=NEED, used=NEED, idle=(IdleModel("x", "x#1", NEED, 1.0),))
    decision = place([full, node("b", {"m": DISK})])
    assert decision.node == "b" and decision.evict == ()


def test_no_room_anywhere_says_which_memory_is_short() -> None:
    decision = place([node("a", {"m": DISK}, memory=1 * GiB, used=900 * MiB), node("b", memory=200 * MiB)])
    assert isinstance(decision, NoRoom)
    assert "needs 0.39 GiB" in decision.reason
    assert "a has 0.12 GiB free of 1.00 GiB" in decision.reason and "b has 0.20 GiB free" in decision.reason


@pytest.mark.parametrize("tier", [LOADED, RAM])
def test_loaded_elsewhere_on_the_node_reads_at_memory_speed(tier: str) -> None:
    decision = place([node("a", {"m": tier}), node("b", {"m": DISK})])
    assert decision.node == "a" and decision.where == tier
