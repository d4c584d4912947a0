"""The replay across nodes: placement by the live pool's placement.place on a trace checked by hand, the same
figures as the single-box replay when one node has room for everything, and `warmstart simulate --nodes`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from warmstart.cli import main
from warmstart.sim.nodes import SimNode, simulate_nodes, spread_files
from warmstart.sim.run import make_policy, simulate
from warmstart.sim.traces import Trace


def test_starts_are_placed_evict_fetch_and_refuse_as_the_live_pool_would():
    # two nodes with room for one model each (1 GB of weights + the engine's 256 MiB), files spread: a and c
    # on n1, b on n2; keep-alive 100 s, a start 10 s, a fetch 1 GB at 1 GB/s = 1 s
    #   t=0  a -> n1 (its disk), ready 10           t=5  b -> n2 (its disk), ready 15
    #   t=20 c -> n1 from disk (2 s estimated) rather than n2 after a fetch (2.125 s): a (idle) evicted
    #   t=22 a: n1 is starting c (no room) -> n2 fetches a from n1; b (idle) evicted once it is there, at 23;
    #        ready 33
    #   t=25 b: both nodes busy starting -> refused      t=50 c warm
    #   keep-alive unloads: c at 150 (n1), a at 133 (n2); loaded n1 20 + 130, n2 18 + 111
    arrivals = {"a": np.array([0.0, 22.0]), "b": np.array([5.0, 25.0]), "c": np.array([20.0, 50.0])}
    nodes = [SimNode("n1", 1_500_000_000), SimNode("n2", 1_500_000_000)]
    spread_files(list(arrivals), nodes, "spread")
    assert (nodes[0].files, nodes[1].files) == ({"a", "c"}, {"b"})
    out = simulate_nodes(Trace("hand", arrivals, 0.0, 200.0), nodes, keep_alive=100.0, cold_start=10.0,
                         size=1_000_000_000, net_bps=1e9)
    assert (out["requests"], out["refused"], out["cold_requests"]) == (6, 1, 4)
    assert out["warm_fraction"] == pytest.approx(1 / 6)
    n1, n2 = out["nodes"]["n1"], out["nodes"]["n2"]
    assert (n1["starts"], n1["fetches"], n1["evictions"], n1["keep_alive_unloads"]) == (2, 0, 1, 1)
    assert (n2["starts"], n2["fetches"], n2["evictions"], n2["keep_alive_unloads"]) == (2, 1, 1, 1)
    assert n2["fetched_bytes"] == 1_000_000_000 and "a" in nodes[1].files  # the fetched copy is kept
    assert n1["loaded_replica_s"] == pytest.approx(150.0) and n2["loaded_replica_s"] == pytest.approx(129.0)
    assert n1["peak_used_bytes"] == n2["peak_used_bytes"] == 1_000_000_000 + (256 << 20)  # never overcommitted
    assert out["wait_p50_s"] == 10.0 and out["wait_p99_s"] == pytest.approx(10.97)  # waits 10, 10, 10, 11


def test_one_node_with_room_for_every_model_is_the_single_box_replay():
    rng = np.random.default_rng(1)
    arrivals = {m: np.cumsum(rng.exponential(scale, 400)) for m, scale in (("a", 60.0), ("b", 400.0), ("c", 900.0))}
    trace = Trace("t", arrivals, 0.0, float(max(a[-1] for a in arrivals.values())))
    for keep in (0.0, 120.0, 1800.0):
        one = simulate(trace, make_policy(f"keepalive-{keep:g}s"), 30.0)
        nodes = [SimNode("n1", 1 << 50)]
        spread_files(list(arrivals), nodes, "all")
        many = simulate_nodes(trace, nodes, keep_alive=keep, cold_start=30.0, size=16 << 30, net_bps=1.25e9)
        for key in ("requests", "cold_requests", "warm_fraction", "wait_p50_s", "wait_p99_s", "cost_fraction"):
            assert many[key] == pytest.approx(one[key]), (keep, key)
        assert many["loaded_replica_s"] == pytest.approx(one["loaded_replica_s"])
        assert many["starts"] == sum(one["starts"].values()) and many["refused"] == 0


def test_simulate_with_nodes_reports_each_node(tmp_path: Path, capsys):
    rows = [{"model": m, "t": float(t)} for m in ("a", "b", "c") for t in range(0, 3000, 70)]
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "r.json"
    assert main(["simulate", "--trace", str(trace), "--nodes", "2", "--node-memory", "40GiB,20GiB",
                 "--model-gib", "16", "--policy", "keepalive-60s,keepalive-600s", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["policies"]) == {"keepalive-60s", "keepalive-600s"}
    assert report["nodes"] == {"n1": 40 << 30, "n2": 20 << 30}
    r = report["policies"]["keepalive-600s"]
    assert set(r["nodes"]) == {"n1", "n2"} and r["requests"] == len(rows)
    assert r["nodes"]["n2"]["peak_used_bytes"] <= 20 << 30 and r["nodes"]["n1"]["peak_used_bytes"] <= 40 << 30
    printed = capsys.readouterr().out
    assert "fetches" in printed and "n2" in printed


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "0"], "--nodes 0: expected at least 1 node"),
    (["--nodes", "3", "--node-memory", "8GiB,8GiB"], "give one size above 0 for every node, or 3 sizes"),
    (["--nodes", "2", "--node-memory", "lots"], "--node-memory 'lots'"),
    (["--nodes", "2", "--policy", "keepalive-60s,predictive"], "with --nodes only keepalive-<seconds>s"),
])
def test_simulate_with_nodes_says_what_is_wrong(tmp_path: Path, capsys, args: list[str], message: str):
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"model": "a", "t": 1.0}) + "\n")
    assert main(["simulate", "--trace", str(trace), *args]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
