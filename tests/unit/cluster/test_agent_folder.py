"""A model of several files (a checkpoint folder) moved between node agents: every file down one stream, each
checked against the head's sha256 before the copy is put in place, a bad or cut file refused and the files
still missing asked of the next holder, a partly fetched folder never listed, offered or started. Real agents
(plain Python: no Ray; a peer's handle is the agent itself, called the way Ray calls it) and real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from warmstart.cluster import chunks
from warmstart.cluster.agent import NodeAgent, model_file, model_folder, staging
from warmstart.cluster.chunks import VERIFY_CHUNK, chunk_digests
from warmstart.cluster.weights import Weights, mismatch, of_path
from warmstart.config import ModelConfig
from warmstart.errors import StoreError
from warmstart.store.digest import sha256_file

M = "tiny-ckpt"
# sorted as a fetch sends them; the shard in the middle is the one a bad holder corrupts
FILES = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', "model-00001-of-00002.safetensors": None,
         "model-00002-of-00002.safetensors": None, "tokenizer.json": b'{"version": "1.0"}' * 50}


class Handle:
    """An agent as another agent reaches it through Ray: `handle.method.remote(...)` is awaited."""

    def __init__(self, agent: Any) -> None:
        self._agent = agent

    def __getattr__(self, name: str) -> SimpleNamespace:
        method = getattr(self._agent, name)
        return SimpleNamespace(remote=lambda *a, **kw: method(*a, **kw))


def write_folder(root: Path) -> None:
    rng = random.Random(7)
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data if data is not None else rng.randbytes(VERIFY_CHUNK + 4099))


def head_weights(root: Path) -> Weights:
    return of_path(root, sha256_file, lambda p, _: chunk_digests(p))


async def close(*agents: NodeAgent) -> None:
    await asyncio.gather(*(a.shutdown() for a in agents))


def same_files(a: Path, b: Path) -> bool:
    return all((a / rel).read_bytes() == (b / rel).read_bytes() for rel in FILES)


@pytest.mark.parametrize("transport", ["stream", "stream-buffered", "object_store"])
async def test_a_folder_held_in_a_peers_ram_arrives_whole_checked_and_is_then_listed(tmp_path: Path,
                                                                                     transport: str) -> None:
    n1 = NodeAgent("n1", str(tmp_path / "n1"), "127.0.0.1", ram_method="tmpfs")
    n2 = NodeAgent("n2", str(tmp_path / "n2"), "127.0.0.1")
    try:
        write_folder(model_folder(n1.models_dir, M))
        weights = head_weights(model_folder(n1.models_dir, M))
        assert weights.folder and len(weights.files) == 4 and weights.size == sum(
            f.stat().st_size for f in model_folder(n1.models_dir, M).iterdir())
        assert await n1.hold(M) == weights.size and n1.tiers() == {M: "ram"}
        [served] = n1._served(M, ["tokenizer.json"])  # what a peer gets: the RAM tier's copy
        assert n1.tier.tmpfs_dir in served.parents
        stale = model_file(n2.models_dir, M)
        stale.write_bytes(b"an older single-file copy")  # replaced by the folder, not listed beside it
        answer = await n2.fetch(M, weights, [("n1", Handle(n1))], transport)
        assert "error" not in answer, answer
        assert answer["bytes"] == weights.size and answer["from"] == {"n1": weights.size} and answer["files"] == 4
        assert answer["refused"] == []
        copy = model_folder(n2.models_dir, M)
        assert n2.tiers() == {M: "disk"} and n2.path_of(M) == copy
        assert same_files(copy, model_folder(n1.models_dir, M))
        assert mismatch(weights, copy, sha256_file) is None
        # what a start checks: from the digests the fetch recorded, without reading the files again
        assert mismatch(weights, copy, n2._sha256) is None and n2.digests.hashed == 0
        assert sorted(p.name for p in n2.models_dir.iterdir()) == [M.replace("/", "%2F")]  # no staging left
    finally:
        await close(n1, n2)


async def test_a_bad_file_is_refused_and_only_the_files_still_missing_come_from_the_next_holder(
        tmp_path: Path) -> None:
    n1, n2, n3 = (NodeAgent(n, str(tmp_path / n), "127.0.0.1") for n in ("n1", "n2", "n3"))
    try:
        for node in (n1, n3):
            write_folder(model_folder(node.models_dir, M))
        weights = head_weights(model_folder(n3.models_dir, M))
        shard = model_folder(n1.models_dir, M) / "model-00002-of-00002.safetensors"
        data = bytearray(shard.read_bytes())
        data[-1] ^= 0xFF  # same size, one byte: only the digest can tell
        shard.write_bytes(data)
        answer = await n2.fetch(M, weights, [("n1", Handle(n1)), ("n3", Handle(n3))])
        assert answer["source"] == "n3", answer
        [refusal] = answer["refused"]
        assert refusal["source"] == "n1" and "model-00002-of-00002.safetensors: piece 1" in refusal["reason"]
        assert "sha256" in refusal["reason"] and "refused" in refusal["reason"]
        sizes = {f.path: f.size for f in weights.files}
        # the files before the bad one were checked: kept; the bad one and those after it came from n3
        assert answer["from"] == {"n1": sizes["config.json"] + sizes["model-00001-of-00002.safetensors"],
                                  "n3": sizes["model-00002-of-00002.safetensors"] + sizes["tokenizer.json"]}
        assert answer["bytes"] == weights.size == sum(answer["from"].values())
        assert same_files(model_folder(n2.models_dir, M), model_folder(n3.models_dir, M))
    finally:
        await close(n1, n2, n3)


class StallingPeer:
    """A holder that sends the model's first file and then goes silent, holding the connection open."""

    def __init__(self, root: Path, release: threading.Event) -> None:
        self.root, self.release = root, release

    async def offer(self, model: str, files: list[str]) -> dict:
        server = socket.create_server(("127.0.0.1", 0))
        token = b"s" * 16

        def serve() -> None:
            with server, server.accept()[0] as conn:
                conn.recv(16)
                conn.sendall((self.root / files[0]).read_bytes())
                self.release.wait(30)

        threading.Thread(target=serve, daemon=True).start()
        return {"host": "127.0.0.1", "port": server.getsockname()[1], "token": token.hex()}


async def test_a_folder_cut_mid_fetch_is_never_listed_offered_or_started(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks, "TIMEOUT", 1.0)
    src = tmp_path / "src"
    write_folder(src)
    weights = head_weights(src)
    n2 = NodeAgent("n2", str(tmp_path / "n2"), "127.0.0.1")
    release = threading.Event()
    try:
        fetch = asyncio.ensure_future(n2.fetch(M, weights, [("n1", Handle(StallingPeer(src, release)))]))
        stage = staging(n2.models_dir, M)
        for _ in range(200):  # the first file has landed in the staging folder: the fetch is under way
            if (stage / "copy" / "config.json").is_file():
                break
            await asyncio.sleep(0.01)
        assert (stage / "copy" / "config.json").is_file()
        assert n2.tiers() == {} and n2.path_of(M) is None
        with pytest.raises(StoreError, match="holds no copy"):
            await n2.offer(M, ["config.json"])
        answer = await fetch
        release.set()
        assert answer["error"] == f"no peer gave model '{M}' intact"
        assert "transfer cut" in answer["refused"][0]["reason"]
        assert answer["from"] == {"n1": len(FILES["config.json"])}  # checked, then dropped with the rest
        assert not stage.exists() and list(n2.models_dir.iterdir()) == []
        model = ModelConfig(M, "vllm", str(src))
        assert "holds no copy" in (await n2.start(model, "r#1", weights))["error"]
    finally:
        release.set()
        await close(n2)


async def test_a_copy_that_is_not_the_heads_is_refused_at_start_naming_what_differs(tmp_path: Path) -> None:
    n2 = NodeAgent("n2", str(tmp_path / "n2"), "127.0.0.1")
    src = tmp_path / "src"
    write_folder(src)
    weights = head_weights(src)
    copy = model_folder(n2.models_dir, M)
    model = ModelConfig(M, "vllm", str(src))
    try:
        shutil.copytree(src, copy)
        (copy / "notes.txt").write_text("left here by hand")
        error = (await n2.start(model, "r#1", weights))["error"]
        assert "has files the head's model has not: notes.txt" in error and "fetched again" in error
        (copy / "notes.txt").unlink()
        (copy / "tokenizer.json").unlink()
        assert "tokenizer.json is missing" in (await n2.start(model, "r#2", weights))["error"]
        (copy / "tokenizer.json").write_bytes(FILES["tokenizer.json"][::-1])  # same size, other bytes
        assert "tokenizer.json has sha256" in (await n2.start(model, "r#3", weights))["error"]
        (copy / "tokenizer.json").write_bytes(FILES["tokenizer.json"])
        (copy / ".cache").mkdir()  # hidden: not part of the model (a download's cache)
        (copy / ".cache" / "x").write_bytes(b"x")
        assert mismatch(weights, copy, sha256_file) is None
        assert weights.sha256 == head_weights(copy).sha256 != hashlib.sha256(b"").hexdigest()
        assert os.path.isdir(copy)
    finally:
        await close(n2)


async def test_a_node_without_the_disk_space_refuses_the_fetch_before_a_byte_moves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write_folder(src)
    weights = head_weights(src)
    n2 = NodeAgent("n2", str(tmp_path / "n2"), "127.0.0.1")
    asked: list[str] = []

    class Peer:
        async def offer(self, model: str, files: list[str]) -> dict:
            asked.append(model)
            raise AssertionError("no transfer should start")

    room = shutil.disk_usage(n2.models_dir)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: room._replace(free=weights.size - 1))
    try:
        answer = await n2.fetch(M, weights, [("n1", Handle(Peer()))])
        assert "needs" in answer["error"] and "free disk space" in answer["error"] and asked == []
        assert list(n2.models_dir.iterdir()) == []
    finally:
        await close(n2)
