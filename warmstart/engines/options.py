"""The options each engine kind accepts in a model's `options` table, with their types."""

from __future__ import annotations

OptionTypes = dict[str, type | tuple[type, ...]]

# llama_cpp.Llama keyword arguments
LLAMACPP: OptionTypes = {
    "n_ctx": int, "n_threads": int, "n_threads_batch": int, "n_batch": int, "n_ubatch": int,
    "n_gpu_layers": int, "seed": int, "use_mmap": bool, "use_mlock": bool, "flash_attn": bool,
    "chat_format": str,
}
# read by warmstart's llama.cpp worker itself; repack=false keeps weights in the file mapping instead of
# copying them into llama.cpp's CPU_REPACK buffer (a start from the RAM tier is then a mapping, not a copy)
LLAMACPP_OWN: OptionTypes = {"warmup": bool, "repack": bool}

BY_KIND: dict[str, OptionTypes] = {
    "llamacpp": {**LLAMACPP, **LLAMACPP_OWN},
}
