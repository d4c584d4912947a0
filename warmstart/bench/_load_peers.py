"""One loader measured in its own process (fresh memory, no state carried from another loader).

    python -m warmstart.bench._load_peers LOADER PATH cold|warm REPEAT

Prints one JSON object: per run the seconds and the file's page-cache residency before it.
Every loader ends with every byte of every tensor in memory: copying loaders by their copy, mapping
loaders (`copies: false`) by touching every page of the mapping inside the timed part.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warmstart.store.buffers import PAGE, ArenaPool
from warmstart.store.loader import FastLoader, read_header
from warmstart.store.pagecache import evict, resident_fraction

Result = tuple[Any, float | None]  # (what keeps the tensors alive, seconds spent mapping or None)


def _touch_pages(tensors: dict[str, Any]) -> int:
    import torch

    total = 0
    for t in tensors.values():
        flat = t.reshape(-1).view(torch.uint8) if t.dtype != torch.uint8 else t.reshape(-1)
        total += int(flat[::PAGE].sum())
    return total


def warmstart_reused(path: Path, pool: ArenaPool) -> Result:
    ckpt = FastLoader(pool=pool).load(path)
    return ckpt, None


def warmstart_fresh(path: Path) -> Result:
    # a new buffer every time, faulted during the load: what the first load of a process pays
    ckpt = FastLoader(pool=ArenaPool(), prefault=True).load(path)
    return ckpt, None


def safetensors_mmap(path: Path) -> Result:
    from safetensors.torch import load_file

    t = time.perf_counter()
    tensors = load_file(str(path))
    mapped = time.perf_counter() - t
    _touch_pages(tensors)
    return tensors, mapped


def safetensors_pread(path: Path) -> Result:
    from safetensors.torch import load_file

    return load_file(str(path), backend="pread"), None


def runai_owned(path: Path) -> Result:
    from runai_model_streamer import SafetensorsStreamer

    out = {}
    with SafetensorsStreamer() as streamer:
        streamer.stream_file(str(path))
        for name, tensor in streamer.get_tensors():
            out[name] = tensor
    return out, None


def runai_ring(path: Path, pool: ArenaPool) -> Result:
    """runai's reused ring buffers (owned=False), each tensor copied into a destination allocated and
    touched beforehand, the way an engine copies into parameters it has already allocated."""
    import torch
    from runai_model_streamer import SafetensorsStreamer

    header = read_header(path)
    arena = pool.take(header.file_size)
    dest = torch.frombuffer(arena.view, dtype=torch.uint8)
    with SafetensorsStreamer() as streamer:
        streamer.stream_file(str(path), owned=False)
        for name, tensor in streamer.get_tensors():
            info = header.tensors[name]
            dest[info.start:info.end].copy_(tensor.reshape(-1).view(torch.uint8))
    pool.give_back(arena)
    return dest, None


def tensorizer_load(path: Path) -> Result:
    from tensorizer import TensorDeserializer

    deserializer = TensorDeserializer(str(path), device="cpu")
    tensors = dict(deserializer.items())
    deserializer.close()
    return tensors, None


def tensorizer_prepare(source: Path, target: Path) -> None:
    from safetensors.torch import load_file
    from tensorizer import TensorSerializer

    serializer = TensorSerializer(str(target))
    serializer.write_state_dict(load_file(str(source)))
    serializer.close()


def make_resident(path: Path) -> None:
    buf = bytearray(16 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _ceiling_run(path: Path, mode: str, pool: ArenaPool) -> float:
    from warmstart.bench._ceilings import parallel_read

    arena = pool.take(path.stat().st_size)
    try:
        if mode == "cold":
            evict(path)
            return parallel_read(path, arena.view, 16, direct=True)
        make_resident(path)  # twice, so the pages are on the active list for both reads of the pair
        make_resident(path)
        return parallel_read(path, arena.view, os.cpu_count() or 2, direct=False)
    finally:
        pool.give_back(arena)


def measure(name: str, path: Path, mode: str, repeat: int) -> dict[str, Any]:
    pool = ArenaPool()
    size = path.stat().st_size
    loaders: dict[str, Callable[[Path], Result]] = {
        "warmstart": lambda p: warmstart_reused(p, pool),
        "warmstart-fresh-buffer": warmstart_fresh,
        "safetensors-mmap": safetensors_mmap,
        "safetensors-pread": safetensors_pread,
        "runai-model-streamer": runai_owned,
        "runai-model-streamer-ring": lambda p: runai_ring(p, pool),
        "tensorizer": tensorizer_load,
    }
    load = loaders[name]
    if name in ("warmstart", "runai-model-streamer-ring"):
        pool.reserve(size)  # allocated and touched once, before the clock: the buffer strategy
    runs = []
    for i in range(repeat):
        paired = None
        if name == "warmstart" and i % 2 == 0:
            # a ceiling read into the same touched buffer right before (even runs) or after (odd runs) the
            # load: a ratio that load from other processes skews far less than a ceiling minutes away
            paired = _ceiling_run(path, mode, pool)
        if mode == "cold":
            evict(path)
        else:
            make_resident(path)
            make_resident(path)
        before = resident_fraction(path)
        gc.collect()
        t = time.perf_counter()
        kept, mapped = load(path)
        seconds = time.perf_counter() - t
        runs.append({"seconds": seconds, "resident_before": round(before, 4),
                     **({"map_s": mapped} if mapped is not None else {}),
                     **({"ceiling_s": paired} if paired is not None else {})})
        if hasattr(kept, "release"):
            kept.release()
        del kept
        gc.collect()
        if name == "warmstart" and i % 2 == 1:
            runs[-1]["ceiling_s"] = _ceiling_run(path, mode, pool)
    return {"loader": name, "mode": mode, "bytes": size, "runs": runs}


def main(argv: list[str]) -> int:
    if argv[0] == "prepare-tensorizer":
        tensorizer_prepare(Path(argv[1]), Path(argv[2]))
        return 0
    name, path, mode, repeat = argv[0], Path(argv[1]), argv[2], int(argv[3])
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    print(json.dumps(measure(name, path, mode, repeat)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
