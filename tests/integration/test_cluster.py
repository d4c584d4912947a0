"""Many machines on a real Ray cluster of several nodes on this machine (ray.cluster_utils.Cluster: one
raylet per node, a custom resource naming each), with Ray's token authentication on, real node agents and
real llama.cpp engines on SmolLM2. One cluster and one server for the module, the tests in order:

  n1: 200 MiB for engines (too little to run one): holds smol-b, and smol-c corrupted
  n2: 600 MiB (room for one replica): holds smollm2 on disk
  n3: 600 MiB: holds smollm2, which the test holds in its RAM tier
  n4: joins late, holds smol-d only, then smol-cmd (the command engine: llama.cpp's own server)

then, once n3 is gone, models of several files held only on n1: smol-dir (a folder: the GGUF and files beside
it, run by the command engine) and tiny-vllm (a Llama checkpoint made here, two safetensors shards, run by vLLM).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import browser, browser_missing  # noqa: F401 - the browser fixture
from tests.e2e.test_pages import until
from tests.faults import metric_sum
from tests.integration.test_command_engine import llama_cpp_server
from tests.integration.test_serving import sse_events
from tests.integration.test_vllm_engine import OPTIONS as VLLM_OPTIONS
from tests.integration.test_vllm_engine import descendants
from tests.support import SMOLLM2, Server, chat, config_text, free_port, pid_alive, smollm2
from warmstart.bench._tiny_llama import build_in
from warmstart.cluster.chunks import chunk_digests
from warmstart.cluster.weights import Weights, of_path
from warmstart.engines.vllm import default_python
from warmstart.store.digest import sha256_file

# Ray reads its authentication mode once, when it is imported: the token is set before that, for this process,
# the cluster's processes (started from it) and the server (given the same environment)
TOKEN = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)}
os.environ.update(TOKEN)
ray = pytest.importorskip("ray", reason="the cluster extra (Ray) is installed by ./install.sh --test")
cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SMOL, B, C, D, CMD = "smollm2-135m-instruct", "smol-b", "smol-c", "smol-d", "smol-cmd"
DIR, TINY = "smol-dir", "tiny-vllm"  # models of several files
VLLM = ".venv-vllm" in default_python()  # vLLM's CPU build, installed by ./install.sh --test
MiB = 1 << 20
NO_EOS = {"2": -100}  # SmolLM2's end-of-text token: a long answer that does not stop early


def model_file(node_dir: Path, node: str, model: str) -> Path:
    return node_dir / node / "models" / f"{model}.gguf"


def folder_of(node_dir: Path, node: str, model: str) -> Path:
    return node_dir / node / "models" / model


def head_weights(path: Path) -> Weights:
    """The model as the head describes it to the nodes (each file's sha256 and pieces)."""
    return of_path(path, sha256_file, lambda p, _: chunk_digests(p))


def place(src: Path, node_dir: Path, node: str, model: str, corrupt: bool = False) -> None:
    target = model_file(node_dir, node, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    if corrupt:  # same size, 4 KiB flipped in the middle: only the digest can tell
        with open(target, "r+b") as f:
            f.seek(target.stat().st_size // 2)
            block = f.read(4096)
            f.seek(-len(block), os.SEEK_CUR)
            f.write(bytes(b ^ 0xFF for b in block))


class World:
    def __init__(self, cluster: object, srv: Server, node_dir: Path, weights: Path, folders: dict[str, Path]
                 ) -> None:
        self.cluster, self.srv, self.node_dir, self.weights = cluster, srv, node_dir, weights
        self.folders = folders  # the head's copies of the models of several files
        self.sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
        self.ray_nodes: dict[str, object] = {}

    def agent(self, node: str) -> object:
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["name"].startswith(f"warmstart-agent-{node}-"):
                return ray.get_actor(entry["name"], namespace=entry["namespace"])
        raise AssertionError(f"no agent on {node}")

    def nodes(self) -> dict[str, dict]:
        status, payload = self.srv.get("/admin/nodes")
        assert status == 200 and payload["cluster"] is True
        return {n["name"]: n for n in payload["nodes"]}

    def replica(self, model: str) -> dict:
        [r] = [r for r in self.srv.model(model)["replicas"] if r["state"] == "warm"]
        return r


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from warmstart.store.sources import resolve_model_path

    tmp = tmp_path_factory.mktemp("cluster")
    weights = resolve_model_path(SMOLLM2, tmp)
    node_dir = tmp / "nodes"
    place(weights, node_dir, "n1", B)
    place(weights, node_dir, "n1", C, corrupt=True)
    place(weights, node_dir, "n2", SMOL)
    place(weights, node_dir, "n3", SMOL)
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "resources": {"warmstart_node_head": 1}})
    for name, memory in (("n1", 200 * MiB), ("n2", 600 * MiB), ("n3", 600 * MiB)):
        cluster.add_node(num_cpus=0, memory=memory, resources={f"warmstart_node_{name}": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    models = [smollm2(keep_alive="10m", max_concurrency=1)] + [smollm2(name=m, keep_alive="10m") for m in (B, C, D)]
    models.append({**llama_cpp_server(), "name": CMD})
    folders = {DIR: tmp / DIR}  # the GGUF, and files beside it as a checkpoint has them
    folders[DIR].mkdir()
    shutil.copyfile(weights, folders[DIR] / "smol.gguf")
    (folders[DIR] / "config.json").write_text(json.dumps({"model_type": "llama", "note": "beside the weights"}))
    (folders[DIR] / "tokenizer").mkdir()
    (folders[DIR] / "tokenizer" / "special_tokens_map.json").write_text('{"eos_token": "<|im_end|>"}')
    in_folder = llama_cpp_server()
    in_folder["options"]["command"] = [a.replace("{model_path}", "{model_path}/smol.gguf")
                                       for a in in_folder["options"]["command"]]
    models.append({**in_folder, "name": DIR, "path": str(folders[DIR])})
    if VLLM:
        folders[TINY] = build_in(default_python(), tmp / TINY, shards=2)
        # placement would count its 1 GiB KV cache (kv_cache_space_gib) beyond these nodes' budgets: the model
        # says what it is placed by instead (options.memory_bytes); n1's 200 MiB still has no room for it
        models.append({"name": TINY, "engine": "vllm", "path": str(folders[TINY]), "keep_alive": "10m",
                       "options": {**VLLM_OPTIONS, "memory_bytes": 400 * MiB}})
    config = tmp / "warmstart.toml"
    config.write_text(config_text(models, {"queue_deadline": "300s", "engine_timeout": "20s"}, {
        "cluster": {"backend": "ray", "address": cluster.address, "node_dir": str(node_dir), "head_engines": False,
                    "memory_reserve": "0", "engine_host": "127.0.0.1", "watch_interval": "1s"}}))
    srv = Server(config_path=config, data_dir=tmp / "data", port=free_port(), env=TOKEN)
    try:
        srv.start(timeout=120)
        w = World(cluster, srv, node_dir, weights, folders)
        nodes = w.nodes()
        assert sorted(nodes) == ["n1", "n2", "n3"], nodes  # the head runs no engines here
        yield w
    finally:
        srv.stop()
        ray.shutdown()
        cluster.shutdown()



def test_nodes_report_memory_and_models_per_tier(world: World) -> None:
    nodes = world.nodes()
    assert nodes["n1"]["tiers"] == {B: "disk", C: "disk"}
    assert nodes["n2"]["tiers"] == {SMOL: "disk"} and nodes["n2"]["memory_bytes"] == 600 * MiB
    ray.get(world.agent("n3").hold.remote(SMOL))
    world.srv.wait_for(lambda: world.nodes()["n3"]["tiers"] == {SMOL: "ram"}, timeout=20)
    rows = {line.split()[0]: line.split() for line in cli(world.srv, "nodes").splitlines()[1:]}
    assert rows["n1"][2:] == ["up", "0.2G", "0.0G", "0", "-", "-", f"{B},{C}"]
    assert rows["n3"][2:] == ["up", "0.6G", "0.0G", "0", "-", SMOL, "-"]


def test_a_model_is_placed_on_the_node_holding_it_in_ram(world: World) -> None:
    # n2 (disk) would win a tie by its name: n3 wins on its estimate, the weights being in its RAM
    status, headers, body = world.srv.post("/v1/chat/completions", chat(max_tokens=8))
    assert status == 200, body
    assert headers["x-warmstart-node"] == "n3" and headers["x-warmstart-start"] == "cold"
    assert world.replica(SMOL)["node"] == "n3"
    assert world.nodes()["n3"]["tiers"][SMOL] == "loaded"
    assert metric_sum(world.srv, "warmstart_node_replicas", node="n3", model=SMOL, state="warm") == 1
    assert metric_sum(world.srv, "warmstart_node_up", node="n2") == 1
    # the per-model metrics name the node the replica ran on
    assert metric_sum(world.srv, "warmstart_cold_start_seconds_count", model=SMOL, phase="total", node="n3") == 1
    assert metric_sum(world.srv, "warmstart_starts_total", model=SMOL, outcome="ok", node="n3") == 1
    assert metric_sum(world.srv, "warmstart_requests_total", model=SMOL, start="cold", code="200", node="n3") == 1
    assert metric_sum(world.srv, "warmstart_time_to_first_token_seconds_count", model=SMOL, node="n3") == 1
    header, *rows = cli(world.srv, "ps").splitlines()
    assert "NODE" in header.split()
    assert [r.split()[5] for r in rows if r.startswith(SMOL)] == ["n3"]


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_dashboard_shows_the_nodes(world: World, browser: object) -> None:  # noqa: F811 - the fixture
    status, data = world.srv.get("/api/dashboard")
    assert status == 200 and [n["name"] for n in data["nodes"]] == ["n1", "n2", "n3"]
    [smol] = [m for m in data["models"] if m["name"] == SMOL]
    assert [r["node"] for r in smol["replicas"]] == ["n3"]
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(world.srv.url + "/")
    until(page, "!document.getElementById('nodes').hidden && document.querySelectorAll('#node-rows tr').length === 3")
    rows = page.evaluate("Array.from(document.querySelectorAll('#node-rows tr'), tr => "
                         "Array.from(tr.children, td => td.textContent))")
    none = "\u2013"  # the page's dash for an empty cell
    assert rows[2] == ["n3", "up", "0.3 GiB / 0.6 GiB", SMOL, none, none]
    assert rows[0][0] == "n1" and rows[0][5] == f"{B}, {C}"


def test_a_model_held_only_on_a_peer_is_fetched_checked_and_started(world: World) -> None:
    status, headers, body = world.srv.post("/v1/chat/completions", chat(model=B, max_tokens=8))
    assert status == 200, body
    node = headers["x-warmstart-node"]
    # n1 has no room; n3 would have to unload smollm2: the fetch goes to n2
    assert node == "n2"
    last = world.srv.model(B)["last_start"]
    assert last["phases"]["fetch"] > 0 and last["phases"]["verify"] >= 0
    copy = model_file(world.node_dir, node, B)
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == world.sha256
    assert not copy.with_name(copy.name + ".partial").exists()
    assert metric_sum(world.srv, "warmstart_fetch_bytes_total", model=B, node=node, source="n1") == copy.stat().st_size
    [record] = [r for r in audit_records(world.srv) if r["model"] == B and r["event"] == "start"]
    fetch = record["details"]["fetch"]
    assert fetch["source"] == "n1" and fetch["sha256"] == world.sha256 and fetch["gbps"] > 0
    assert record["node"] == node and any(p["phase"] == "fetch" for p in record["phases"])
    assert metric_sum(world.srv, "warmstart_cold_start_seconds_count", model=B, phase="fetch", node=node) == 1
    assert metric_sum(world.srv, "warmstart_cold_start_last_seconds", model=B, phase="fetch", node=node) > 0


def test_a_corrupted_transfer_is_refused_and_no_engine_sees_it(world: World) -> None:
    status, _, body = world.srv.post("/v1/chat/completions", chat(model=C, max_tokens=4))
    assert status == 503, body
    message = body["error"]["message"]
    assert "could not fetch model 'smol-c'" in message and "sha256" in message and "n1" in message, message
    for node in ("n2", "n3"):
        assert not model_file(world.node_dir, node, C).exists()
        assert not list((world.node_dir / node / "models").glob("*.partial"))
    assert metric_sum(world.srv, "warmstart_fetch_refusals_total", model=C, source="n1") == 1


def test_a_refused_transfer_is_retried_from_another_holder(world: World) -> None:
    place(world.weights, world.node_dir, "n2", C)  # a good copy appears on n2
    size = world.weights.stat().st_size
    answer = ray.get(world.agent("n3").fetch.remote(C, head_weights(world.weights), [("n1", world.agent("n1")),
                                                                                    ("n2", world.agent("n2"))]))
    assert answer["source"] == "n2" and answer["bytes"] == size, answer
    assert [r["source"] for r in answer["refused"]] == ["n1"] and "sha256" in answer["refused"][0]["reason"]
    assert hashlib.sha256(model_file(world.node_dir, "n3", C).read_bytes()).hexdigest() == world.sha256


def test_a_full_node_unloads_its_least_recently_used_idle_model(world: World) -> None:
    # n2 runs smol-b, n3 smollm2, both idle; each has room for one: smol-c (on both disks now) goes to n2
    # (the tie broken by name) in place of smol-b, and smollm2 on n3 is left alone
    # the copies of smol-c on n2 and n3 are seen by the head at its next look at the nodes
    world.srv.wait_for(lambda: all(world.nodes()[n]["tiers"].get(C) == "disk" for n in ("n2", "n3")), timeout=20)
    # `warmstart hold` on a cluster: in the RAM tier of the node a start would pick
    cli(world.srv, "hold", C, "--keep-alive", "10m")
    world.srv.wait_for(lambda: world.nodes()["n2"]["tiers"].get(C) == "ram", timeout=20)
    status, headers, body = world.srv.post("/v1/chat/completions", chat(model=C, max_tokens=4))
    assert status == 200, body
    assert headers["x-warmstart-node"] == "n2"
    assert world.srv.model(B)["state"] == "cold"
    assert world.srv.model(SMOL)["state"] == "warm"
    assert metric_sum(world.srv, "warmstart_unloads_total", model=B, reason="evicted", node="n2") == 1


def test_a_node_that_joins_late_is_used(world: World) -> None:
    status, _, body = world.srv.post("/v1/chat/completions", chat(model=D, max_tokens=4))
    assert status == 503 and "no live node holds model 'smol-d'" in body["error"]["message"], body
    place(world.weights, world.node_dir, "n4", D)
    world.cluster.add_node(num_cpus=0, memory=600 * MiB, resources={"warmstart_node_n4": 1})
    world.srv.wait_for(lambda: world.nodes().get("n4", {}).get("tiers") == {D: "disk"}, timeout=60, interval=0.5)
    status, headers, body = world.srv.post("/v1/chat/completions", chat(model=D, max_tokens=4))
    assert status == 200, body
    assert headers["x-warmstart-node"] == "n4"


def test_a_command_engine_runs_on_a_node(world: World) -> None:
    # the agent runs the same CommandEngine as one box: its server listens on the node's address, its
    # phases come back to the head; n4 is full (smol-d, idle): the only holder unloads it to make room
    place(world.weights, world.node_dir, "n4", CMD)
    world.srv.wait_for(lambda: world.nodes()["n4"]["tiers"].get(CMD) == "disk", timeout=20)
    status, headers, body = world.srv.post("/v1/chat/completions", chat(model=CMD, max_tokens=12))
    assert status == 200, body
    assert headers["x-warmstart-node"] == "n4" and "Oslo" in body["choices"][0]["message"]["content"]
    replica = world.replica(CMD)
    cmdline = Path(f"/proc/{replica['pid']}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1].endswith(b"llama_server.py") and str(model_file(world.node_dir, "n4", CMD)).encode() in cmdline
    phases = world.srv.model(CMD)["last_start"]["phases"]
    assert {"verify", "spawn", "load", "ready"} <= set(phases), phases
    assert metric_sum(world.srv, "warmstart_cold_start_seconds_count", model=CMD, engine="command", phase="total",
                      node="n4") == 1
    status, headers, raw = world.srv.request("POST", "/v1/chat/completions", chat(model=CMD, max_tokens=6,
                                                                                  stream=True))
    assert status == 200 and headers["x-warmstart-start"] == "warm" and headers["x-warmstart-node"] == "n4"
    assert raw.decode().rstrip().endswith("data: [DONE]")
    assert metric_sum(world.srv, "warmstart_unloads_total", model=D, reason="evicted", node="n4") == 1


def test_a_node_killed_mid_stream_loses_no_request_that_had_not_started_streaming(world: World) -> None:
    srv = world.srv
    assert world.replica(SMOL)["node"] == "n3"
    n3 = next(n for n in world.cluster.worker_nodes if "warmstart_node_n3" in n._ray_params.resources)
    req = urllib.request.Request(srv.url + "/v1/completions", method="POST", data=json.dumps(
        {"model": SMOL, "prompt": "Count:", "max_tokens": 1500, "stream": True, "logit_bias": NO_EOS}).encode(),
        headers={"content-type": "application/json"})
    queued: dict[str, tuple] = {}
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.headers["x-warmstart-node"] == "n3"
        first = resp.readline()
        assert first.startswith(b"data: ")
        # a second request waits behind the streaming one (one slot): it has not started streaming
        waiter = threading.Thread(target=lambda: queued.setdefault("r", srv.post(
            "/v1/chat/completions", chat(max_tokens=4), timeout=120)))
        waiter.start()
        srv.wait_for(lambda: srv.model(SMOL)["queue_depth"] == 1, timeout=30)
        world.cluster.remove_node(n3, allow_graceful=False)  # its raylet, agent and engines killed
        rest = resp.read()  # must end, not hang
    events = sse_events(first + rest)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "stream_interrupted"
    waiter.join(120)
    status, headers, body = queued["r"]
    assert status == 200, body  # placed again, on a live node
    assert headers["x-warmstart-node"] not in ("n3", "n1"), headers
    srv.wait_for(lambda: not world.nodes()["n3"]["alive"], timeout=60, interval=0.5)
    failures = [r for r in audit_records(srv) if r["event"] == "failure" and r["model"] == SMOL]
    assert failures and failures[-1]["node"] == "n3"
    assert metric_sum(srv, "warmstart_replica_failures_total", model=SMOL, stage="running", node="n3") == 1


def cli(srv: Server, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "warmstart", *args, "--url", srv.url], capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout


def audit_records(srv: Server) -> list[dict]:
    records = []
    for f in sorted((srv.data_dir / "audit").glob("*.jsonl")):
        records += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return records


def test_a_model_folder_held_only_on_a_peer_is_fetched_whole_checked_and_served(world: World) -> None:
    # after n3 is gone: n1 (no room) holds the folder; n2 and n4 each run one idle model, one of them unloads it
    shutil.copytree(world.folders[DIR], folder_of(world.node_dir, "n1", DIR))
    world.srv.wait_for(lambda: world.nodes()["n1"]["tiers"].get(DIR) == "disk", timeout=20)
    status, headers, body = world.srv.post("/v1/chat/completions", chat(model=DIR, max_tokens=12))
    assert status == 200, body
    node = headers["x-warmstart-node"]
    assert node in ("n2", "n4") and "Oslo" in body["choices"][0]["message"]["content"]
    weights = head_weights(world.folders[DIR])
    copy = folder_of(world.node_dir, node, DIR)
    assert sorted(f.path for f in weights.files) == ["config.json", "smol.gguf", "tokenizer/special_tokens_map.json"]
    for f in weights.files:  # every file, byte for byte, and nothing left half-way
        assert sha256_file(f.under(copy)) == f.sha256
    assert [p.name for p in copy.parent.iterdir() if p.name.startswith(".")] == []
    assert world.nodes()[node]["tiers"][DIR] == "loaded"
    # the engine runs on the fetched folder, on the node
    cmdline = Path(f"/proc/{world.replica(DIR)['pid']}/cmdline").read_bytes().split(b"\0")
    assert str(copy / "smol.gguf").encode() in cmdline
    # the fetch phase counts every file's bytes
    assert metric_sum(world.srv, "warmstart_fetch_bytes_total", model=DIR, node=node, source="n1") == weights.size
    [record] = [r for r in audit_records(world.srv) if r["model"] == DIR and r["event"] == "start"]
    fetch = record["details"]["fetch"]
    assert fetch["source"] == "n1" and fetch["bytes"] == weights.size and fetch["files"] == 3
    assert fetch["sha256"] == weights.sha256 and record["node"] == node

    # a holder whose copy differs in one file: refused, naming the file; the files still missing come from the
    # next holder (those it sent checked are kept), on the node that has none (n2 or n4, the other one)
    other = {"n2": "n4", "n4": "n2"}[node]
    bad = folder_of(world.node_dir, "n1", DIR) / "tokenizer" / "special_tokens_map.json"
    bad.write_text('{"eos_token": "<|im_END|>"}')  # same size
    answer = ray.get(world.agent(other).fetch.remote(DIR, weights, [("n1", world.agent("n1")),
                                                                    (node, world.agent(node))]))
    assert answer["source"] == node and answer["bytes"] == weights.size, answer
    [refusal] = answer["refused"]
    assert refusal["source"] == "n1" and "tokenizer/special_tokens_map.json" in refusal["reason"]
    assert "sha256" in refusal["reason"]
    sizes = {f.path: f.size for f in weights.files}
    assert answer["from"] == {"n1": sizes["config.json"] + sizes["smol.gguf"],
                              node: sizes["tokenizer/special_tokens_map.json"]}
    for f in weights.files:
        assert sha256_file(f.under(folder_of(world.node_dir, other, DIR))) == f.sha256


@pytest.mark.vllm
@pytest.mark.skipif(not VLLM, reason="vLLM's CPU build (.venv-vllm) is installed by ./install.sh --test")
def test_vllm_starts_on_a_node_from_a_checkpoint_fetched_from_a_peer(world: World) -> None:
    shutil.copytree(world.folders[TINY], folder_of(world.node_dir, "n1", TINY))
    world.srv.wait_for(lambda: world.nodes()["n1"]["tiers"].get(TINY) == "disk", timeout=20)
    status, headers, body = world.srv.post("/v1/completions", {"model": TINY, "prompt": "the model answers",
                                                               "max_tokens": 4}, timeout=300)
    assert status == 200, body
    node = headers["x-warmstart-node"]  # n2 or n4 in the module's order (n3 gone); alone (-m vllm), n2 or n3
    assert node != "n1" and body["usage"]["completion_tokens"] == 4  # n1 has no room: fetched elsewhere
    weights = head_weights(world.folders[TINY])
    assert sum(f.path.endswith(".safetensors") for f in weights.files) == 2
    copy = folder_of(world.node_dir, node, TINY)
    assert all(sha256_file(f.under(copy)) == f.sha256 for f in weights.files)
    # vLLM's server on the node, on the fetched folder; its start's phases read from its log, as on one box
    cmdline = Path(f"/proc/{world.replica(TINY)['pid']}/cmdline").read_bytes().split(b"\0")
    assert str(copy).encode() in cmdline and b"--host" in cmdline
    phases = world.srv.model(TINY)["last_start"]["phases"]
    assert {"fetch", "verify", "load", "ready"} <= set(phases), phases
    assert metric_sum(world.srv, "warmstart_fetch_bytes_total", model=TINY, node=node, source="n1") == weights.size


def test_a_head_killed_leaves_no_engine_running_on_the_nodes(world: World) -> None:
    # last: it ends the module's server. The agents belong to the head's Ray driver: Ray ends them with it,
    # and each agent's engines end with their parent
    pids = [r["pid"] for m in world.srv.get("/v1/models")[1]["data"] for r in m["replicas"] if r["state"] == "warm"]
    assert pids and all(pid_alive(p) for p in pids)
    pids += [child for p in pids for child in descendants(p)]  # vLLM's engine core, its workers
    world.srv.proc.send_signal(signal.SIGKILL)
    world.srv.proc.wait(10)
    try:
        world.srv.wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=60, interval=0.5)
    except AssertionError:
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in pids if pid_alive(p)}
        raise AssertionError(f"still running: {left}") from None
