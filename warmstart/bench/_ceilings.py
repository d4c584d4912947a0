"""What the hardware allows, measured with plain code: the ceilings a loader is judged against.

- cold read: O_DIRECT preads by N threads into an already-touched buffer (the disk's rate);
- cache read: buffered preads by N threads of a file in the page cache into an already-touched buffer;
- memcpy: touched buffer to touched buffer;
- fresh read: the same cache read into never-touched memory (what first-touch page faults cost).
Each is taken at its best thread count, so a loader cannot look good against a weak ceiling.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from warmstart.store.buffers import PAGE, Arena, round_up

CHUNK = 16 << 20


def touched(size: int) -> Arena:
    arena = Arena(size)
    arena.prefault()
    return arena


def parallel_read(path: Path, into: memoryview, threads: int, *, direct: bool, chunk: int = CHUNK) -> float:
    """Seconds to read the whole file into `into` (same offsets) with `threads` readers taking the
    next chunk as they finish one (a stalled reader does not hold up the others)."""
    size = path.stat().st_size
    starts = iter(range(0, size, chunk))
    lock = threading.Lock()

    def worker(_: int) -> None:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
        try:
            while True:
                with lock:
                    start = next(starts, None)
                if start is None:
                    return
                length = min(chunk, size - start)
                view = into[start:start + (round_up(length, PAGE) if direct else length)]
                done = 0
                while done < length:
                    n = os.preadv(fd, [view[done:]], start + done)
                    if n == 0:
                        raise OSError(f"{path} ended early")
                    done += n
        finally:
            os.close(fd)

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(worker, range(threads)))
    return time.perf_counter() - t


def memcpy_seconds(src: Arena, dst: Arena, size: int, threads: int) -> float:
    """Seconds to copy `size` bytes between two touched buffers with `threads` threads."""
    a = np.frombuffer(src.view, dtype=np.uint8)[:size]
    b = np.frombuffer(dst.view, dtype=np.uint8)[:size]
    step = round_up(size // threads + 1, PAGE)
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda i: np.copyto(b[i:i + step], a[i:i + step]), range(0, size, step)))
    return time.perf_counter() - t


def fresh_read_seconds(path: Path, threads: int) -> float:
    """A cached read into a new anonymous mapping whose pages are faulted by the read itself."""
    size = path.stat().st_size
    fresh = mmap.mmap(-1, round_up(size, PAGE), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        with memoryview(fresh) as view:
            return parallel_read(path, view, threads, direct=False)
    finally:
        fresh.close()
