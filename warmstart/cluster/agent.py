"""The node agent: on one machine of the cluster, it owns that machine's engine processes, its model files and
its RAM tier, and serves its files to peers. Plain Python (no Ray here): warmstart.cluster.ray_nodes runs it as
a Ray actor pinned to its node, and the same engine and store code as a single box does the work.

Model files live in NODE_DIR/models, named by the model: a single file (a GGUF) as MODEL.gguf, a model of
several files (a Hugging Face checkpoint folder, for vLLM) as the folder MODEL/. A fetch lands under a hidden
name (.MODEL.partial/, never listed or served) and is renamed into place only once every file in it matches
the sha256 the head took from its manifest, so no engine ever opens a copy that is partial or does not match.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import shutil
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from warmstart.cluster.chunks import not_the_manifests, offer_files, receive_files
from warmstart.cluster.weights import ONE_FILE, WeightFile, Weights, mismatch
from warmstart.config import ModelConfig
from warmstart.engines.base import StartReport
from warmstart.engines.command import CommandEngine
from warmstart.engines.ledger import ProcessLedger
from warmstart.engines.llamacpp import LlamaCppEngine
from warmstart.engines.llamacpp_router import RouterInstance
from warmstart.engines.process import ManagedProcess
from warmstart.engines.procfs import rss
from warmstart.engines.vllm import VllmEngine
from warmstart.errors import IntegrityError, StoreError
from warmstart.store.digest import DigestCache
from warmstart.store.tiers import RamTier

CHUNK = 8 << 20  # bytes per chunk of a peer fetch through Ray's object store
WINDOW = 4  # chunks in flight at once (through Ray's object store)
# how a peer fetch moves the bytes: "stream", one TCP connection between the two agents (set up through Ray,
# a one-time token) carrying every file asked for, or "object_store", chunks returned through Ray's object
# store. Measured here (warmstart bench cluster): the stream at the raw TCP ceiling's rate less hashing, the
# object store at about a tenth ("stream-buffered": the stream read through a buffer of our own rather than
# spliced into the file, for the bench)
TRANSPORTS = ("stream", "stream-buffered", "object_store")


def model_file(models_dir: Path, model: str) -> Path:
    """Where a single-file model lives on a node."""
    return models_dir / (urllib.parse.quote(model, safe="") + ".gguf")


def model_folder(models_dir: Path, model: str) -> Path:
    """Where a model of several files (a checkpoint folder) lives on a node."""
    return models_dir / urllib.parse.quote(model, safe="")


def staging(models_dir: Path, model: str) -> Path:
    """Where a fetch of the model lands until every file is checked: hidden (a model's name starts with a letter
    or digit), so it is never listed as held, offered to a peer or started."""
    return models_dir / ("." + urllib.parse.quote(model, safe="") + ".partial")


class NodeAgent:
    def __init__(self, name: str, node_dir: str, host: str, *, seed: dict[str, str] | None = None,
                 ram_method: str = "auto") -> None:
        self.name = name
        self.dir = Path(node_dir)
        self.models_dir = self.dir / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        # engines an earlier agent here left running (its head died and Ray ended it, or the node restarted): the
        # whole process group of each, as a single box does at start (warmstart.engines.ledger)
        ProcessLedger(self.dir / "run" / "engines").sweep()
        # the engines a node runs, by kind: the same classes as on one box, listening on the node's address
        # (vLLM's from nothing: no pre-initialized runtimes on nodes)
        self.kinds: dict[str, LlamaCppEngine | CommandEngine | VllmEngine] = {
            "llamacpp": LlamaCppEngine(self.dir, host=host), "command": CommandEngine(self.dir, host=host),
            "vllm": VllmEngine(self.dir, host=host)}
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
        self._fetching: dict[str, asyncio.Lock] = {}  # one fetch of a model at a time on this node

    # ---- what the node holds ---------------------------------------------------------------------------

    def path_of(self, model: str) -> Path | None:
        """The model's file or folder on this node (seeded, or in NODE_DIR/models), None when it has none."""
        for local in (model_file(self.models_dir, model), model_folder(self.models_dir, model)):
            if local.exists():
                return local
        seeded = self.seeded.get(model)
        return seeded if seeded is not None and seeded.exists() else None

    def tiers(self) -> dict[str, str]:
        """Each model this node holds and where: "loaded" (an engine runs it), "ram" or "disk"."""
        out = {}
        for f in self.models_dir.iterdir():
            if f.name.startswith("."):  # a fetch under way
                continue
            if f.is_file() and f.suffix == ".gguf":
                out[urllib.parse.unquote(f.stem)] = "disk"
            elif f.is_dir():
                out[urllib.parse.unquote(f.name)] = "disk"
        for m, p in self.seeded.items():
            if p.exists():
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
                "engines": [{"pid": pid, "model": m, "rss_bytes": rss(pid) or None}  # None: it is gone
                            for pid, (m, _) in self.engines.items()],
                "fetched_bps": self.fetched_bps}

    # ---- engines ---------------------------------------------------------------------------------------

    async def start(self, model: ModelConfig, replica: str, weights: Weights) -> dict[str, Any]:
        """Start an engine on the model's file or folder here (its RAM copy when held), after checking every file
        against `weights`; returns its pid, URL and the start's phases, or the error that stopped it."""
        engine = self.kinds.get(model.engine)
        if engine is None:
            return {"error": f"model '{model.name}': engine {model.engine} does not run on cluster nodes (only "
                             f"{', '.join(self.kinds)})"}
        path = self.path_of(model.name)
        if path is None:
            return {"error": f"node {self.name} holds no copy of model '{model.name}'"}
        began = time.monotonic()
        why = await asyncio.to_thread(mismatch, weights, path, self._sha256)
        if why is not None:
            return {"error": str(IntegrityError(
                f"model '{model.name}' on node {self.name}: {why}; remove it there (it is fetched again from a "
                "peer)"))}
        verify_s = time.monotonic() - began
        report = StartReport()
        try:
            proc = await engine.start(model, self.tier.path_for(model.name, path), report, replica)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}", "phases": report.phases}
        self.engines[proc.pid] = (model.name, proc)
        return {"pid": proc.pid, "base_url": proc.base_url, "phases": [("verify", verify_s), *report.phases]}

    def _sha256(self, path: Path) -> str:
        return self.digests.digest(path).sha256

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
        """Forget the model's fetched copy (and its RAM copy); seeded files are left alone."""
        await self.release(model)
        f, folder = model_file(self.models_dir, model), model_folder(self.models_dir, model)
        if f.is_file():
            f.unlink()
            return True
        if folder.is_dir():
            await asyncio.to_thread(shutil.rmtree, folder)
            return True
        return False

    # ---- peer fetch ------------------------------------------------------------------------------------

    def _served(self, model: str, files: Sequence[str]) -> list[Path]:
        """The model's `files` (paths relative to its folder; ONE_FILE for its one file) as this node serves them:
        from its RAM copy when held, else from its disk. Raises StoreError."""
        root = self.path_of(model)
        if root is None:
            raise StoreError(f"node {self.name} holds no copy of model '{model}'")
        base = self.tier.path_for(model, root)
        out = []
        for rel in files:
            if rel.startswith("/") or ".." in rel.split("/"):
                raise StoreError(f"{rel!r} is not a path inside model '{model}'")
            out.append(WeightFile(rel, 0, "").under(base))
        return out

    async def read_chunk(self, model: str, offset: int, length: int, file: str = ONE_FILE) -> bytes:
        """`length` bytes of the model's file from `offset`, from its RAM copy when held (else the disk)."""
        [path] = self._served(model, [file])
        return await asyncio.to_thread(_read, path, offset, length)

    async def offer(self, model: str, files: Sequence[str] = (ONE_FILE,)) -> dict[str, Any]:
        """Serve the model's `files`, one after the other, to one peer over one TCP connection on this node's
        address: returns where to connect and the one-time token the peer must send first."""
        return offer_files(self.host, self._served(model, files))

    async def fetch(self, model: str, weights: Weights, sources: Sequence[tuple[str, Any]],
                    transport: str = "stream") -> dict[str, Any]:
        """Copy every file of the model from the first of `sources` (name, agent handle) that gives the bytes
        `weights` names, each checked as it arrives; a transfer that is cut, short or whose sha256 differs is
        refused and the files still missing asked of the next source (those already checked are kept). The
        copy is put in place only whole. Returns the source, bytes, seconds, bytes per source and refusals."""
        lock = self._fetching.setdefault(model, asyncio.Lock())
        async with lock:
            return await self._fetch(model, weights, sources, transport)

    async def _fetch(self, model: str, weights: Weights, sources: Sequence[tuple[str, Any]],
                     transport: str) -> dict[str, Any]:
        stage = staging(self.models_dir, model)
        await asyncio.to_thread(shutil.rmtree, stage, True)  # what a fetch cut short left (an agent that died)
        free = shutil.disk_usage(self.models_dir).free
        if free < weights.size:  # refused before a byte moves, not part-way by whichever file runs out of room
            return {"error": f"node {self.name} has {free / 2**30:.2f} GiB free in {self.models_dir}, model "
                             f"'{model}' needs {weights.size / 2**30:.2f} GiB; free disk space there",
                    "refused": [], "from": {}}
        copy = stage / "copy"  # the model's file, or its folder
        refused: list[dict[str, str]] = []
        landed: list[WeightFile] = []  # files received whole and checked, whichever source gave them
        moved: dict[str, int] = {}
        asked: list[float] = []  # seconds the peer took to answer the offer (the Ray call), for the bench
        began = time.monotonic()
        for source, handle in sources:
            todo = [f for f in weights.files if f not in landed]
            before = len(landed)
            try:
                await self._pull(handle, model, todo, copy, transport, asked, landed.append)
            except Exception as exc:
                refused.append({"source": source, "reason": _refusal(exc)})
            if len(landed) > before:
                moved[source] = moved.get(source, 0) + sum(f.size for f in landed[before:])
            if len(landed) == len(weights.files):
                target = await asyncio.to_thread(self._put_in_place, model, weights, copy)
                seconds = time.monotonic() - began
                self.fetched_bps = weights.size / seconds if seconds > 0 else None
                # every piece was checked against the head's as it landed: the first start need not hash them
                await asyncio.to_thread(self.digests.remember, {f.under(target): f.sha256 for f in weights.files})
                return {"source": source, "bytes": weights.size, "seconds": seconds, "refused": refused,
                        "from": moved, "files": len(weights.files), "transport": transport,
                        "offer_seconds": asked[-1] if asked else None}
        await asyncio.to_thread(shutil.rmtree, stage, True)
        return {"error": f"no peer gave model '{model}' intact", "refused": refused, "from": moved}

    def _put_in_place(self, model: str, weights: Weights, copy: Path) -> Path:
        """The checked copy renamed into place, its staging folder gone; any other copy of the model here (a
        folder where a file now goes, or the reverse, and a RAM copy of it) is dropped, so one copy is listed."""
        file, folder = model_file(self.models_dir, model), model_folder(self.models_dir, model)
        target, other = (folder, file) if weights.folder else (file, folder)
        self.tier.release(model)
        for stale in (target, other):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists() and stale is other:
                stale.unlink()
        os.replace(copy, target)
        shutil.rmtree(copy.parent, ignore_errors=True)
        return target

    async def _pull(self, handle: Any, model: str, files: list[WeightFile], copy: Path, transport: str,
                    asked: list[float], landed: Any) -> None:
        if transport == "object_store":
            for wf in files:
                await self._pull_chunks(handle, model, wf, wf.under(copy))
                landed(wf)
            return
        t = time.monotonic()
        offer = await handle.offer.remote(model, [f.path for f in files])
        asked.append(time.monotonic() - t)
        await asyncio.to_thread(receive_files, offer, [(wf, wf.under(copy)) for wf in files], transport == "stream",
                                landed)

    async def _pull_chunks(self, handle: Any, model: str, wf: WeightFile, partial: Path) -> None:
        h = hashlib.sha256()
        pending: list[Any] = []
        partial.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as out:
            for offset in range(0, wf.size, CHUNK):
                pending.append(handle.read_chunk.remote(model, offset, min(CHUNK, wf.size - offset), wf.path))
                if len(pending) >= WINDOW:
                    await asyncio.to_thread(_write_hashed, out, h, await pending.pop(0))
            while pending:
                await asyncio.to_thread(_write_hashed, out, h, await pending.pop(0))
            written = out.tell()
        if written != wf.size:
            raise StoreError(f"got {written} bytes of {wf.size}")
        if h.hexdigest() != wf.sha256:
            raise not_the_manifests(h.hexdigest(), wf.sha256)


def _refusal(exc: BaseException) -> str:
    """Why a source's transfer was refused, in a line."""
    if isinstance(exc, IntegrityError):
        return f"{exc}; the copy was refused"[:300]
    return f"transfer cut: {type(exc).__name__}: {exc}"[:300]


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _write_hashed(out: Any, h: Any, data: bytes) -> None:
    h.update(data)
    out.write(data)

