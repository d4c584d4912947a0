"""Where a weight load's time goes in a fresh process, without vLLM: vLLM's default (safetensors' mmap
views, then a copy into fresh tensors, as model.load_weights does) against warmstart's FastLoader
(pre-fault a new buffer, read into it, then the same copy).

    PYTHONPATH=. .venv-vllm/bin/python scripts/vllm-load-breakdown.py FILE.safetensors {mmap,fast}

Run each mode in its own process, several times, alternating: a fresh process is what a vLLM worker is.
"""

import sys
import time

import torch

from warmstart.store.buffers import PAGE, round_up
from warmstart.store.loader import FastLoader, read_header

path, mode = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)  # as a vLLM CPU worker on this machine
t0 = time.perf_counter()
if mode == "fast":
    loader = FastLoader()
    arena = loader.pool.take(round_up(read_header(path).file_size, PAGE))
    arena.prefault()  # what FastLoader.load does first, timed on its own
    t1 = time.perf_counter()
    loader.pool.give_back(arena)
    ckpt = loader.load(path)  # reuses the pre-faulted arena: this is the read alone
    t2 = time.perf_counter()
    tensors = ckpt.torch()
else:
    from safetensors import safe_open

    f = safe_open(path, "pt")
    t1 = t2 = time.perf_counter()
    tensors = {k: f.get_tensor(k) for k in f}
t3 = time.perf_counter()
for v in tensors.values():
    torch.empty_like(v).copy_(v)
t4 = time.perf_counter()
print(f"{mode}: prefault {t1 - t0:.2f} s, read {t2 - t1:.2f} s, views {t3 - t2:.2f} s, copy {t4 - t3:.2f} s, "
      f"total {t4 - t0:.2f} s")
