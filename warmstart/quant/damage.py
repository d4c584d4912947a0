"""A deliberately damaged copy of a GGUF model, for the tests and the benchmark to show that the gate
catches damage: the weight matrices of one layer zeroed, or their blocks shuffled (same values, wrong
places, as a bad conversion or a mixed-up shard would leave them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from warmstart.quant import recipe


def damage(src: Path, dst: Path, *, layer: int, how: str = "shuffle", seed: int = 0) -> list[str]:
    """Copy `src` to `dst` and damage layer `layer`'s matrices in the copy; returns the tensors touched."""
    from gguf import GGML_QUANT_SIZES, GGUFReader

    if how not in ("zero", "shuffle"):
        raise ValueError(f"how must be zero or shuffle, not {how!r}")
    shutil.copyfile(src, dst)
    reader = GGUFReader(dst, mode="r+")
    rng = np.random.default_rng(seed)
    touched = []
    for t in reader.tensors:
        if not t.name.startswith(f"blk.{layer}.") or not recipe.quantizable(t.name, len(t.shape)):
            continue
        raw = t.data.view(np.uint8).reshape(-1)
        if how == "zero":
            raw[:] = 0
        else:
            block_bytes = GGML_QUANT_SIZES[t.tensor_type][1]
            blocks = raw.reshape(-1, block_bytes)
            blocks[:] = blocks[rng.permutation(len(blocks))]
        touched.append(t.name)
    reader.data.flush()
    del reader
    return touched
