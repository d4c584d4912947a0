"""The fast safetensors loader: parallel, chunked reads straight into a reused, pre-faulted buffer;
tensors are views of that buffer (numpy or torch), no copy after the read.

Each chunk is read with O_DIRECT when its pages are not in the page cache (the disk's sequential
rate, no second copy through the cache) and with a plain pread when they are (memcpy speed); the
buffer's offsets equal the file's, so O_DIRECT's alignment holds. On a GPU, `load_to_cuda` stages
chunks through pinned buffers and overlaps the reads with host-to-device copies.

    with FastLoader().load("model.safetensors") as ckpt:
        weights = ckpt.torch()      # or ckpt.numpy()
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.errors import StoreError
from warmstart.store.buffers import PAGE, Arena, ArenaPool, round_up
from warmstart.store.pagecache import chunk_residency

# safetensors dtype -> (bytes per element, numpy name or None, torch attribute)
DTYPES: dict[str, tuple[int, str | None, str]] = {
    "F64": (8, "float64", "float64"), "F32": (4, "float32", "float32"), "F16": (2, "float16", "float16"),
    "BF16": (2, None, "bfloat16"), "I64": (8, "int64", "int64"), "I32": (4, "int32", "int32"),
    "I16": (2, "int16", "int16"), "I8": (1, "int8", "int8"), "U8": (1, "uint8", "uint8"),
    "U16": (2, "uint16", "uint16"), "U32": (4, "uint32", "uint32"), "U64": (8, "uint64", "uint64"),
    "BOOL": (1, "bool", "bool"), "F8_E4M3": (1, None, "float8_e4m3fn"), "F8_E5M2": (1, None, "float8_e5m2"),
}
_MAX_HEADER = 100 << 20
DEFAULT_CHUNK = 16 << 20


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Header:
    path: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int
    file_size: int


def read_header(path: Path | str) -> Header:
    """Parse and validate a safetensors header; StoreError names what is wrong."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) != 8:
                raise StoreError(f"{path} is not a safetensors file: shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER or 8 + n > size:
                raise StoreError(f"{path} is not a safetensors file: header length {n} is implausible")
            text = f.read(n)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{path}: the safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise StoreError(f"{path}: the safetensors header is not a JSON object")
    data_start = 8 + n
    metadata = doc.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    for name, spec in doc.items():
        try:
            dtype, shape, (begin, end) = spec["dtype"], tuple(int(d) for d in spec["shape"]), spec["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{path}: tensor {name!r} has a malformed header entry") from exc
        if dtype not in DTYPES:
            raise StoreError(f"{path}: tensor {name!r} has dtype {dtype}, which this loader does not read "
                             f"(it reads {', '.join(DTYPES)})")
        expected = math.prod(shape) * DTYPES[dtype][0]
        if not (0 <= begin <= end and data_start + end <= size and end - begin == expected):
            raise StoreError(f"{path}: tensor {name!r} spans bytes {begin}..{end}, which does not match its "
                             f"shape {list(shape)} x {dtype} or the file size")
        tensors[name] = TensorInfo(name, dtype, shape, data_start + begin, data_start + end)
    return Header(path, tensors, {str(k): str(v) for k, v in metadata.items()}, data_start, size)


INDEX = "model.safetensors.index.json"


def _natural(path: Path) -> list[Any]:
    # model-00002-of-00010 before model-00010-of-00010, as vLLM orders shards
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def folder_files(folder: Path | str) -> list[Path]:
    """The safetensors files of a Hugging Face model folder, in shard order. With an index
    (model.safetensors.index.json) only the files it names: a folder can also hold a consolidated
    copy of the same weights, and reading both would load every tensor twice."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"), key=_natural)
    index = folder / INDEX
    if index.is_file():
        try:
            named = {str(f) for f in json.loads(index.read_text())["weight_map"].values()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"{index}: cannot read its weight_map ({exc})") from exc
        missing = sorted(named - {f.name for f in files})
        if missing:
            raise StoreError(f"{index} names weight files that are not in {folder}: {', '.join(missing)}")
        files = [f for f in files if f.name in named]
    if not files:
        raise StoreError(f"no *.safetensors weights in {folder}")
    return files


@dataclass(frozen=True)
class LoadStats:
    bytes: int
    seconds: float
    direct_bytes: int  # read with O_DIRECT (was not in the page cache)
    threads: int

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else math.inf


class Checkpoint:
    """A loaded file: the buffer it was read into and views of its tensors. Views are valid until
    `release()` (the buffer then goes back to the pool for the next load); use it as a context manager."""

    def __init__(self, header: Header, arena: Arena, pool: ArenaPool | None, stats: LoadStats) -> None:
        self.header, self.stats = header, stats
        self._arena: Arena | None = arena
        self._pool = pool

    @property
    def buffer(self) -> memoryview:
        if self._arena is None:
            raise StoreError("this checkpoint was released; its tensors are no longer valid")
        return self._arena.view

    def raw(self, name: str) -> memoryview:
        info = self.header.tensors[name]
        return self.buffer[info.start:info.end]

    def numpy(self) -> dict[str, Any]:
        import numpy as np

        out = {}
        for name, info in self.header.tensors.items():
            np_name = DTYPES[info.dtype][1]
            if np_name is None:
                raise StoreError(f"tensor {name!r} is {info.dtype}, which numpy cannot represent; use .torch()")
            count = math.prod(info.shape)
            out[name] = np.frombuffer(self.buffer, dtype=np_name, count=count, offset=info.start).reshape(info.shape)
        return out

    def torch(self) -> dict[str, Any]:
        import torch

        out = {}
        for name, info in self.header.tensors.items():
            dtype = getattr(torch, DTYPES[info.dtype][2])
            count = math.prod(info.shape)
            if count == 0:
                out[name] = torch.empty(info.shape, dtype=dtype)
            else:
                out[name] = torch.frombuffer(self.buffer, dtype=dtype, count=count,
                                             offset=info.start).reshape(info.shape)
        return out

    def release(self) -> None:
        arena, self._arena = self._arena, None
        if arena is not None and self._pool is not None:
            self._pool.give_back(arena)

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _chunks(total: int, chunk: int) -> list[tuple[int, int]]:
    return [(off, min(chunk, total - off)) for off in range(0, total, chunk)]


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    """pread until `view` is full or the file ends; returns bytes read."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


class FastLoader:
    """Loads safetensors files in `chunk`-byte pieces: up to `io_threads` O_DIRECT reads in flight (the
    disk wants depth), at most `threads` page-cache copies at once (they want CPUs, no more).

    direct: "auto" (O_DIRECT for chunks not in the page cache), "never" or "always".
    """

    def __init__(self, *, threads: int | None = None, io_threads: int = 16, chunk: int = DEFAULT_CHUNK,
                 direct: str = "auto", pool: ArenaPool | None = None, prefault: bool = True) -> None:
        if direct not in ("auto", "never", "always"):
            raise ValueError("direct must be auto, never or always")
        if chunk <= 0 or chunk % PAGE:
            raise ValueError(f"chunk must be a positive multiple of {PAGE}")
        self.threads = threads or max(2, os.cpu_count() or 1)
        self.io_threads = max(io_threads, self.threads)
        self.chunk = chunk
        self.direct = direct
        self.pool = pool if pool is not None else ArenaPool()
        self.prefault = prefault

    def load(self, path: Path | str) -> Checkpoint:
        import time

        header = read_header(path)
        arena = self.pool.take(round_up(header.file_size, PAGE))
        try:
            if self.prefault:
                arena.prefault()
            t = time.perf_counter()
            direct_bytes = self.read_file(header.path, header.file_size, arena.view)
            seconds = time.perf_counter() - t
        except BaseException:
            self.pool.give_back(arena)
            raise
        stats = LoadStats(header.file_size - header.data_start, seconds, direct_bytes, self.threads)
        return Checkpoint(header, arena, self.pool, stats)

    def read_file(self, path: str, size: int, into: memoryview,
                  on_chunk: Callable[[int, int], None] | None = None) -> int:
        """Read bytes [0, size) of `path` into `into` at the same offsets; returns bytes read with O_DIRECT."""
        plan = self._plan(path, size)
        local = threading.local()
        no_direct: list[bool] = []  # set once O_DIRECT is refused here (tmpfs, some FUSE)
        copies = threading.BoundedSemaphore(self.threads)
        fds: list[int] = []
        fds_lock = threading.Lock()

        def fd_for(direct: bool) -> int:
            attr = "direct" if direct else "cached"
            fd = getattr(local, attr, None)
            if fd is None:
                flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
                fd = os.open(path, flags)
                with fds_lock:
                    fds.append(fd)
                setattr(local, attr, fd)
            return fd

        def work(item: tuple[int, int, bool]) -> int:
            offset, length, direct = item
            if direct and not no_direct:
                try:
                    # O_DIRECT wants aligned lengths; reading past the end just stops at it
                    got = _read_into(fd_for(True), into[offset:offset + round_up(length, PAGE)], offset)
                except OSError:  # no O_DIRECT on this filesystem (tmpfs, some FUSE): read through the cache
                    no_direct.append(True)
                    direct = False
                    with copies:
                        got = _read_into(fd_for(False), into[offset:offset + length], offset)
            else:
                direct = False
                with copies:
                    got = _read_into(fd_for(False), into[offset:offset + length], offset)
            if got < length:
                raise StoreError(f"{path} ended early at byte {offset + got} (expected {size} bytes); "
                                 "was it truncated while loading?")
            if on_chunk is not None:
                on_chunk(offset, length)
            return length if direct else 0

        if len(into) < round_up(size, PAGE):
            raise StoreError(f"buffer of {len(into)} bytes is too small for {path} ({size} bytes)")
        try:
            workers = self.io_threads if any(d for _, _, d in plan) else self.threads
            with ThreadPoolExecutor(max_workers=min(workers, len(plan)) or 1,
                                    thread_name_prefix="warmstart-load") as ex:
                return sum(ex.map(work, plan))
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)

    def _plan(self, path: str, size: int) -> list[tuple[int, int, bool]]:
        chunks = _chunks(size, self.chunk)
        if self.direct == "never":
            return [(o, n, False) for o, n in chunks]
        if self.direct == "always":
            return [(o, n, True) for o, n in chunks]
        resident = chunk_residency(Path(path), self.chunk)
        return [(o, n, fraction < 0.5) for (o, n), fraction in zip(chunks, resident, strict=False)]


def load_to_cuda(path: Path | str, device: str = "cuda", *, threads: int = 8, chunk: int = 64 << 20,
                 depth: int = 4) -> dict[str, Any]:
    """GPU path (runs only where torch sees CUDA): chunks are read by `threads` readers into `depth`
    pinned staging buffers and copied to one device allocation on a side stream, so the reads of
    chunk i+1.. overlap the host-to-device copy of chunk i. Tensors are views of that allocation."""
    import torch

    if not torch.cuda.is_available():
        raise StoreError("load_to_cuda needs a CUDA device; none is visible to torch here")
    header = read_header(path)
    size = header.file_size
    dest = torch.empty(size, dtype=torch.uint8, device=device)
    staging = [torch.empty(chunk, dtype=torch.uint8).pin_memory() for _ in range(depth)]
    views = [memoryview(s.numpy()) for s in staging]
    stream = torch.cuda.Stream(device=device)
    events: list[Any] = [None] * depth
    plan = _chunks(size, chunk)
    fd = os.open(str(path), os.O_RDONLY)

    def read(i: int, after: Any) -> int:
        if after is not None:
            after.synchronize()  # the staging buffer is free once its previous copy is done
        offset, length = plan[i]
        got = _read_into(fd, views[i % depth][:length], offset)
        if got < length:
            raise StoreError(f"{path} ended early at byte {offset + got}")
        return i

    try:
        with ThreadPoolExecutor(max_workers=min(threads, depth)) as ex:
            pending = {i: ex.submit(read, i, None) for i in range(min(depth, len(plan)))}
            for i in range(len(plan)):
                pending.pop(i).result()
                offset, length = plan[i]
                slot = i % depth
                with torch.cuda.stream(stream):
                    dest[offset:offset + length].copy_(staging[slot][:length], non_blocking=True)
                    events[slot] = torch.cuda.Event()
                    events[slot].record(stream)
                if i + depth < len(plan):
                    pending[i + depth] = ex.submit(read, i + depth, events[slot])
        stream.synchronize()
    finally:
        os.close(fd)
    out = {}
    for name, info in header.tensors.items():
        dtype = getattr(torch, DTYPES[info.dtype][2])
        piece = dest[info.start:info.end]
        itemsize = DTYPES[info.dtype][0]
        if info.start % itemsize:  # a view needs an aligned start: copy the odd tensor
            piece = piece.clone()
        out[name] = piece.view(dtype).reshape(info.shape)
    return out
