"""llama.cpp's own C code from the prebuilt xllamacpp wheel, through ctypes: nothing is compiled.

The wheel's extension module exports llama.cpp's C API and ggml's quantization kernels
(`ggml_quantize_chunk`, the function llama-quantize calls per tensor) but not `llama_model_quantize`
itself, so the per-tensor type choice is ported in `recipe.py` and the kernels do the arithmetic.
The llama API part (load a model, decode, read logits) is what llama-perplexity does; its structs
are passed as opaque buffers filled by llama.cpp's own `*_default_params`, so no field layout is
assumed but `llama_batch`'s, which has been stable since 2023.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from pathlib import Path

from warmstart.errors import WarmstartError


class GGMLError(WarmstartError):
    """The wheel's library is missing or refused a call."""


def library_path() -> Path:
    spec = importlib.util.find_spec("xllamacpp")
    if spec is None or not spec.submodule_search_locations:
        raise GGMLError("the xllamacpp wheel is not installed; run ./install.sh")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("xllamacpp*.so"))
    if not found:
        raise GGMLError(f"no xllamacpp library in {folder}; reinstall xllamacpp")
    return found[0]


_c = ctypes
_LOG_CALLBACK = _c.CFUNCTYPE(None, _c.c_int, _c.c_char_p, _c.c_void_p)


@_LOG_CALLBACK
def _quiet(level: int, text: bytes, user: int) -> None:  # llama.cpp logs every tensor otherwise
    return None


@functools.cache
def lib() -> ctypes.CDLL:
    so = ctypes.CDLL(str(library_path()))
    so.ggml_quantize_chunk.restype = _c.c_size_t
    so.ggml_quantize_chunk.argtypes = [_c.c_int, _c.c_void_p, _c.c_void_p, _c.c_int64, _c.c_int64, _c.c_int64,
                                       _c.c_void_p]
    so.ggml_quantize_init.argtypes = [_c.c_int]
    so.ggml_quantize_requires_imatrix.argtypes = [_c.c_int]
    so.ggml_quantize_requires_imatrix.restype = _c.c_bool
    return so


def quantize_rows(ggml_type: int, rows, n_per_row: int):  # numpy in, numpy out (numpy imported lazily)
    """Quantize a float32 matrix (rows x n_per_row, C order) to `ggml_type`; returns the blocks as uint8."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    nrows = rows.size // n_per_row
    block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    if n_per_row % block:
        raise GGMLError(f"rows of {n_per_row} do not divide into blocks of {block} for type {ggml_type}")
    so = lib()
    if so.ggml_quantize_requires_imatrix(ggml_type):
        raise GGMLError(f"type {GGMLQuantizationType(ggml_type).name} needs an importance matrix; not supported")
    so.ggml_quantize_init(ggml_type)
    out = np.empty(nrows * (n_per_row // block) * block_bytes, dtype=np.uint8)
    written = so.ggml_quantize_chunk(ggml_type, rows.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, None)
    if written != out.nbytes:
        raise GGMLError(f"ggml_quantize_chunk wrote {written} bytes, expected {out.nbytes}")
    return out


# ---- the llama API: load, decode, logits ----------------------------------------------------------

class _Params(ctypes.Structure):
    """A llama_*_params struct, opaque: larger than any version's, filled by llama.cpp itself."""
    _fields_ = [("raw", ctypes.c_uint8 * 1024)]


class Batch(ctypes.Structure):
    _fields_ = [("n_tokens", _c.c_int32), ("token", _c.POINTER(_c.c_int32)), ("embd", _c.POINTER(_c.c_float)),
                ("pos", _c.POINTER(_c.c_int32)), ("n_seq_id", _c.POINTER(_c.c_int32)),
                ("seq_id", _c.POINTER(_c.POINTER(_c.c_int32))), ("logits", _c.POINTER(_c.c_int8))]


@functools.cache
def llama() -> ctypes.CDLL:
    so = lib()
    p, i32 = _c.c_void_p, _c.c_int32
    sig = {
        "llama_backend_init": (None, []),
        "llama_log_set": (None, [_LOG_CALLBACK, p]),
        "llama_model_default_params": (_Params, []),
        "llama_context_default_params": (_Params, []),
        "llama_model_load_from_file": (p, [_c.c_char_p, _Params]),
        "llama_init_from_model": (p, [p, _Params]),
        "llama_model_get_vocab": (p, [p]),
        "llama_vocab_n_tokens": (i32, [p]),
        "llama_vocab_bos": (i32, [p]),
        "llama_vocab_get_add_bos": (_c.c_bool, [p]),
        "llama_tokenize": (i32, [p, _c.c_char_p, i32, _c.POINTER(i32), i32, _c.c_bool, _c.c_bool]),
        "llama_batch_init": (Batch, [i32, i32, i32]),
        "llama_batch_free": (None, [Batch]),
        "llama_decode": (i32, [p, Batch]),
        "llama_get_logits": (_c.POINTER(_c.c_float), [p]),
        "llama_get_memory": (p, [p]),
        "llama_memory_clear": (None, [p, _c.c_bool]),
        "llama_set_n_threads": (None, [p, i32, i32]),
        "llama_n_ctx": (_c.c_uint32, [p]),
        "llama_free": (None, [p]),
        "llama_model_free": (None, [p]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(so, name)
        fn.restype, fn.argtypes = restype, argtypes
    so.llama_log_set(_quiet, None)
    so.llama_backend_init()
    return so
