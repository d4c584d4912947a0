"""Rewrite a GGUF file tensor by tensor into another type mix: every metadata key is copied, each
weight matrix is read, dequantized to float32 where needed (gguf's numpy code) and quantized by
llama.cpp's kernels from the wheel (`ggml.quantize_rows`); tensors are written in order, a few
quantized ahead on threads (the kernels release the GIL), so memory stays bounded by those few."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.errors import StoreError
from warmstart.quant import recipe
from warmstart.quant.ggml import quantize_rows

FLOAT_TYPES = (recipe.F32, recipe.F16, recipe.BF16)


@dataclass(frozen=True)
class Converted:
    path: Path
    mix: str
    bytes: int
    seconds: float
    types: dict[str, int]  # tensor count per ggml type name


def _reader(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise StoreError(f"{path} is not a readable GGUF file: {exc}") from exc


def _floats(tensor: Any) -> np.ndarray:
    from gguf import quants

    kind = int(tensor.tensor_type)
    if kind == recipe.F32:
        return np.asarray(tensor.data, dtype=np.float32)
    if kind == recipe.F16:
        return np.asarray(tensor.data).astype(np.float32)
    return quants.dequantize(tensor.data, tensor.tensor_type)


def _encode(values: np.ndarray, ggml_type: int, row: int) -> np.ndarray:
    if ggml_type == recipe.F32:
        return values.astype(np.float32)
    if ggml_type == recipe.F16:
        return values.astype(np.float16)
    if ggml_type == recipe.BF16:
        from gguf import GGMLQuantizationType, quants

        return quants.quantize(values, GGMLQuantizationType.BF16)
    return quantize_rows(ggml_type, values.reshape(-1, row), row)


def _nbytes(shape: tuple[int, ...], ggml_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    return int(np.prod(shape)) // block * size


def plan(reader: Any, mix: recipe.Mix) -> list[tuple[Any, int]]:
    """Each tensor with the type it is written as."""
    names = {t.name for t in reader.tensors}
    arch = str(reader.fields["general.architecture"].contents())
    field = reader.fields.get(f"{arch}.block_count")
    n_layers = int(field.contents()) if field is not None else 1
    out = []
    for t in reader.tensors:
        row = int(t.shape[0])  # ggml order: the row length first
        if recipe.quantizable(t.name, len(t.shape)):
            kind = recipe.tensor_type(mix, t.name, row, n_layers, has_output="output.weight" in names)
        else:
            kind = int(t.tensor_type) if int(t.tensor_type) in FLOAT_TYPES else recipe.F32
        out.append((t, kind))
    return out


def convert(src: Path, dst: Path, mix: recipe.Mix, *, allow_requantize: bool = False, threads: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> Converted:
    """Write `src` as `dst` in `mix`; refuses an already quantized source unless `allow_requantize`."""
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

    began = time.monotonic()
    reader = _reader(src)
    tensors = plan(reader, mix)
    quantized_src = sorted({GGMLQuantizationType(int(t.tensor_type)).name for t, _ in tensors
                            if int(t.tensor_type) not in FLOAT_TYPES})
    if quantized_src and not allow_requantize:
        raise StoreError(f"{src} is already quantized ({', '.join(quantized_src)}); quantize from an F16, BF16 or "
                         "F32 GGUF, or pass --allow-requantize to accept the extra loss")
    arch = str(reader.fields["general.architecture"].contents())
    tmp = dst.with_name(dst.name + ".part")
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(tmp, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type",
                                                            "general.quantization_version"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(mix.file_type)
    writer.add_quantization_version(2)  # GGML_QNT_VERSION
    for t, kind in tensors:
        shape = tuple(int(d) for d in reversed(t.shape))  # numpy order
        writer.add_tensor_info(t.name, shape, np.dtype(np.float32), _nbytes(shape, kind),
                               raw_dtype=GGMLQuantizationType(kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    n = threads or max(1, len(os.sched_getaffinity(0)))
    try:
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            pending: list[concurrent.futures.Future] = []
            todo = iter(tensors)
            done = 0
            while True:
                while len(pending) < n + 1:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    t, kind = nxt
                    pending.append(pool.submit(_encode_tensor, t, kind))
                if not pending:
                    break
                writer.write_tensor_data(pending.pop(0).result())
                done += 1
                if progress is not None:
                    progress(done, len(tensors))
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    counts: dict[str, int] = {}
    for _, kind in tensors:
        counts[recipe.NAMES[kind]] = counts.get(recipe.NAMES[kind], 0) + 1
    return Converted(dst, mix.name, dst.stat().st_size, time.monotonic() - began, counts)


def bar(label: str) -> Callable[[int, int], None]:
    """Progress through `total` steps on stderr (warmstart.progress: a line in place on a terminal, a line every
    few seconds in a log)."""
    from warmstart.progress import Progress

    progress = Progress(label, tick=False)

    def show(done: int, total: int) -> None:
        progress.update("", done, total)
        if done == total:
            progress.close()
    return show


def _encode_tensor(tensor: Any, kind: Any) -> Any:
    return _encode(_floats(tensor), kind, int(tensor.shape[0]))
