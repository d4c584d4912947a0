"""The node agent: on one machine of the cluster, it owns that machine's engine processes, its model files and
its RAM tier, and serves its files to peers in chunks. Plain Python (no Ray here): warmstart.cluster.ray_nodes
runs it as a Ray actor pinned to its node, and the same engine and store code as a single box does the work.

Model files live in NODE_DIR/models, one per model (a single GGUF file), named by the model. A fetched file
is written under a temporary name and renamed into place only once its sha256 matches the one the head
took from its manifest, so no engine ever opens a file that is partial or does not match.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from warmstart.cluster.chunks import offer_file, receive_checked
from warmstart.config import ModelConfig
from warmstart.engines.base import StartReport
from warmstart.engines.command import CommandEngine
from warmstart.engines.llamacpp import LlamaCppEngine
from warmstart.engines.llamacpp_router import RouterInstance
from warmstart.engines.process import ManagedProcess
from warmstart.errors import IntegrityError, StoreError
from warmstart.store.digest import DigestCache
from warmstart.store.tiers import RamTier

CHUNK = 8 << 20  # bytes per chunk of a peer fetch
WINDOW = 4  # chunks in flight at once (through Ray's object store)
OFFER_TIMEOUT = 30.0  # seconds a stream from a peer may go silent
# how a peer fetch moves the bytes: "stream", one TCP connection between the two agents (set up through Ray,
# a one-time token), or "object_store", chunks returned through Ray's object store. Measured here (warmstart
# bench cluster): the stream at the raw TCP ceiling's rate less hashing, the object store at about a tenth
# ("stream-buffered": the stream read through a buffer of our own rather than spliced into the file, for the bench)
TRANSPORTS = ("stream", "stream-buffered", "object_store")


def model_file(models_dir: Path, model: str) -> Path:
    return models_dir / (urllib.parse.quote(model, safe="") + ".gguf")


class NodeAgent:
    def __init__(self, name: str, node_dir: str, host: str, *, seed: dict[str, str] | None = None,
                 ram_method: str = "auto") -> None:
        self.name = name
        self.dir = Path(node_dir)
        self.models_dir = self.dir / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        # the engines a node runs on a model's one file, by kind: the same classes as on one box, listening on
        # the node's address (vLLM's models are checkpoint folders, which nodes do not hold or fetch yet)
        self.kinds: dict[str, LlamaCppEngine | CommandEngine] = {
            "llamacpp": LlamaCppEngine(self.dir, host=host), "command": CommandEngine(self.dir, host=host)}
        self.digests = DigestCache(self.dir / "digests.json")
        # a tmpfs folder of its own: several nodes (and several clusters) may share one machine's /dev/shm
        tag = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:12]
        self.tier = RamTier(method=ram_method, reserve_bytes=0,
                            tmpfs_dir=Path("/dev/shm") / f"warmstart-{os.getuid()}-node-{tag}")
        # models whose files are elsewhere on this machine (the head's configured files, on the head's node)
        self.seeded = {m: Path(p) for m, p in (seed or {}).items()}
        self.engines: dict[int, tuple[str, ManagedProcess | RouterInstance]] = {}  # pid -> (model, process)
        self.fetched_bps: float | None = None  # the last peer fetch's rate, for placement's estimate
        self._ram_timers: dict[str, asyncio.TimerHandle] = {}  # RAM keep-alives running out

    # ---- what the node holds ---------------------------------------------------------------------------

    def path_of(self, model: str) -> Path | None:
        """The model's file on this node (seeded or in NODE_DIR/models), None when it has none."""
        local = model_file(self.models_dir, model)
        if local.is_file():
            return local
        seeded = self.seeded.get(model)
        return seeded if seeded is not None and seeded.is_file() else None

    def tiers(self) -> dict[str, str]:
        """Each model this node holds and where: "loaded" (an engine runs it), "ram" or "disk"."""
        out = {}
        for f in self.models_dir.glob("*.gguf"):
            out[urllib.parse.unquote(f.stem)] = "disk"
        for m, p in self.seeded.items():
            if p.is_file():
                out[m] = "disk"
        for m in list(out):
            r = self.tier.resident(m)
            if r is not None and r.alive:
                out[m] = "ram"
        for model, proc in self.engines.values():
            if proc.returncode is None:
                out[model] = "loaded"
        return out

    async def status(self) -> dict[str, Any]:
        return {"name": self.name, "host": self.host, "tiers": self.tiers(), "ram_bytes": self.tier.held_bytes,
                "engines": [{"pid": pid, "model": m, "rss_bytes": _rss(pid)} for pid, (m, _) in self.engines.items()],
                "fetched_bps": self.fetched_bps}

    # ---- engines ---------------------------------------------------------------------------------------

    async def start(self, model: ModelConfig, replica: str, sha256: str) -> dict[str, Any]:
        """Start an engine on the model's file here (its RAM copy when held), after checking the file against
        `sha256`; returns its pid, URL and the start's phases, or the error that stopped it."""
        engine = self.kinds.get(model.engine)
        if engine is None:
            return {"error": f"model '{model.name}': engine {model.engine} does not run on cluster nodes (only "
                             f"{' and '.join(self.kinds)}, on one model file)"}
        path = self.path_of(model.name)
        if path is None:
            return {"error": f"node {self.name} holds no file of model '{model.name}'"}
        began = time.monotonic()
        digest = await asyncio.to_thread(self.digests.digest, path)
        if digest.sha256 != sha256:
            return {"error": str(IntegrityError(
                f"model '{model.name}' on node {self.name}: {path} has sha256 {digest.sha256[:16]}..., the head's "
                f"manifest says {sha256[:16]}...; remove the file there (it is fetched again from a peer)"))}
        verify_s = time.monotonic() - began
        report = StartReport()
        try:
            proc = await engine.start(model, self.tier.path_for(model.name, path), report, replica)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}", "phases": report.phases}
        self.engines[proc.pid] = (model.name, proc)
        return {"pid": proc.pid, "base_url": proc.base_url, "phases": [("verify", verify_s), *report.phases]}

    async def wait_exit(self, pid: int) -> int:
        """Returns the engine's exit code once it has exited (-1 if this agent never ran it)."""
        entry = self.engines.get(pid)
        if entry is None:
            return -1
        code = await entry[1].wait_exit()
        self.engines.pop(pid, None)
        return code

    async def stop(self, pid: int, timeout: float) -> None:
        entry = self.engines.pop(pid, None)
        if entry is not None:
            await entry[1].stop(timeout)

    async def kill(self, pid: int) -> None:
        entry = self.engines.get(pid)
        if entry is not None:
            entry[1].kill()

    async def shutdown(self, timeout: float = 5.0) -> None:
        await asyncio.gather(*(self.stop(pid, timeout) for pid in list(self.engines)), return_exceptions=True)
        await asyncio.to_thread(self.tier.close)

    # ---- the RAM tier ----------------------------------------------------------------------------------

    async def hold(self, model: str, seconds: float = math.inf) -> int:
        """Hold the model's file in this node's RAM tier for `seconds` (the model's RAM keep-alive; a later
        hold replaces the deadline); returns the bytes held. Raises StoreError."""
        path = self.path_of(model)
        if path is None:
            raise StoreError(f"node {self.name} holds no file of model '{model}' to keep in RAM")
        held = (await asyncio.to_thread(self.tier.hold, model, [path])).bytes
        timer = self._ram_timers.pop(model, None)
        if timer is not None:
            timer.cancel()
        if math.isfinite(seconds):
            self._ram_timers[model] = asyncio.get_running_loop().call_later(
                max(0.0, seconds), lambda: asyncio.ensure_future(self._ram_expired(model)))
        return held

    async def _ram_expired(self, model: str) -> None:
        self._ram_timers.pop(model, None)
        if not any(m == model and p.returncode is None for m, p in self.engines.values()):  # not while loaded
            await self.release(model)

    async def release(self, model: str) -> bool:
        return await asyncio.to_thread(self.tier.release, model)

    async def drop(self, model: str) -> bool:
        """Forget the model's fetched file (and its RAM copy); seeded files are left alone."""
        await self.release(model)
        f = model_file(self.models_dir, model)
        if f.is_file():
            f.unlink()
            return True
        return False

    # ---- peer fetch ------------------------------------------------------------------------------------

    async def read_chunk(self, model: str, offset: int, length: int) -> bytes:
        """`length` bytes of the model's file from `offset`, from its RAM copy when held (else the disk)."""
        path = self.path_of(model)
        if path is None:
            raise StoreError(f"node {self.name} holds no file of model '{model}'")
        return await asyncio.to_thread(_read, self.tier.path_for(model, path), offset, length)

    async def fetch(self, model: str, sha256: str, size: int, sources: Sequence[tuple[str, Any]],
                    transport: str = "stream", chunks: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Copy the model's file from the first of `sources` (name, agent handle) that gives the bytes the head's
        manifest names, hashed as they arrive; a transfer that is cut, short or whose sha256 differs is
        refused and the next source tried. Returns the source, bytes, seconds and refusals."""
        target = model_file(self.models_dir, model)
        refused: list[dict[str, str]] = []
        asked: list[float] = []  # seconds the peer took to answer the offer (the Ray call), for the bench
        if transport.startswith("stream") and chunks:  # checked piece by piece on every core (cluster.chunks)
            async def pull(handle: Any, model: str, size: int, partial: Path) -> str:
                t = time.monotonic()
                offer = await handle.offer.remote(model)
                asked.append(time.monotonic() - t)
                await asyncio.to_thread(receive_checked, offer, size, partial, tuple(chunks),
                                        transport == "stream")
                return sha256  # every piece is the head's: the file is the one the manifest's sha256 names
        else:
            pull = self._pull_stream if transport.startswith("stream") else self._pull
        for source, handle in sources:
            partial = target.with_name(target.name + ".partial")
            began = time.monotonic()
            try:
                digest = await pull(handle, model, size, partial)
            except Exception as exc:
                partial.unlink(missing_ok=True)
                refused.append({"source": source, "reason": f"transfer cut: {type(exc).__name__}: {exc}"[:300]})
                continue
            if digest != sha256:
                partial.unlink(missing_ok=True)
                refused.append({"source": source, "reason": f"sha256 {digest[:16]}... is not the manifest's "
                                                            f"{sha256[:16]}...; the copy was refused"})
                continue
            os.replace(partial, target)
            seconds = time.monotonic() - began
            self.fetched_bps = size / seconds if seconds > 0 else None
            return {"source": source, "bytes": size, "seconds": seconds, "refused": refused, "transport": transport,
                    "offer_seconds": asked[-1] if asked else None}
        return {"error": f"no peer gave model '{model}' intact", "refused": refused}

    async def offer(self, model: str) -> dict[str, Any]:
        """Serve the model's file (its RAM copy when held) to one peer over one TCP connection on this node's
        address: returns where to connect and the one-time token the peer must send first."""
        path = self.path_of(model)
        if path is None:
            raise StoreError(f"node {self.name} holds no file of model '{model}'")
        return offer_file(self.host, self.tier.path_for(model, path))

    async def _pull_stream(self, handle: Any, model: str, size: int, partial: Path) -> str:
        offer = await handle.offer.remote(model)
        return await asyncio.to_thread(_receive, offer, size, partial)

    async def _pull(self, handle: Any, model: str, size: int, partial: Path) -> str:
        h = hashlib.sha256()
        pending: list[Any] = []
        with open(partial, "wb") as out:
            for offset in range(0, size, CHUNK):
                pending.append(handle.read_chunk.remote(model, offset, min(CHUNK, size - offset)))
                if len(pending) >= WINDOW:
                    await asyncio.to_thread(_write_hashed, out, h, await pending.pop(0))
            while pending:
                await asyncio.to_thread(_write_hashed, out, h, await pending.pop(0))
            written = out.tell()
        if written != size:
            raise StoreError(f"got {written} bytes of {size}")
        return h.hexdigest()


def _receive(offer: dict[str, Any], size: int, partial: Path) -> str:
    """Connect to a peer's offer, read `size` bytes into `partial`, hashing them; returns the sha256. The socket
    is read on one thread and hashed and written on this one (both let go of the GIL), so a fetch runs at the
    slower of the network and sha256, not at their sum."""
    h = hashlib.sha256()
    filled: queue.Queue[tuple[memoryview, int] | BaseException | None] = queue.Queue()
    free: queue.Queue[memoryview] = queue.Queue()
    for _ in range(4):
        free.put(memoryview(bytearray(CHUNK)))

    def read(conn: socket.socket) -> None:
        total = 0
        try:
            while total < size:
                view, n = free.get(), 0
                while n < len(view) and total + n < size and (got := conn.recv_into(view[n:])):
                    n += got  # a whole buffer per hand-over: few, large sha256 updates
                if not n:
                    break
                total += n
                filled.put((view, n))
            filled.put(None)
        except BaseException as exc:
            filled.put(exc)

    total = 0
    with socket.create_connection((offer["host"], offer["port"]), timeout=OFFER_TIMEOUT) as conn, \
            open(partial, "wb") as out:
        conn.sendall(bytes.fromhex(offer["token"]))
        reader = threading.Thread(target=read, args=(conn,), daemon=True)
        reader.start()
        while (item := filled.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            view, n = item
            h.update(view[:n])
            out.write(view[:n])
            total += n
            free.put(view)
        reader.join()
    if total != size:
        raise StoreError(f"got {total} bytes of {size}")
    return h.hexdigest()


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _write_hashed(out: Any, h: Any, data: bytes) -> None:
    h.update(data)
    out.write(data)


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
