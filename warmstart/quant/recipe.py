"""Which ggml type each tensor gets: a port of llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp)
for the types `warmstart quantize` offers. Pure: tensor name, shape and position in, type out.

What it keeps of llama.cpp's rules: only 2-D `*.weight` tensors are quantized (norms and biases stay
F32); the output matrix (or the token embedding where the model ties them) gets Q6_K in the K-quant
mixes, or Q8_0 where its rows do not divide into 256; Q4_K_M/Q5_K_M give attn_v and ffn_down Q6_K in
the layers `use_more_bits` picks; a row length that does not divide into the type's block falls back
as llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ggml type numbers (ggml.h), and llama.cpp's file type numbers (llama.h) for general.file_type
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14
BF16 = 30
BLOCK = {F32: 1, F16: 1, BF16: 1, Q4_0: 32, Q4_1: 32, Q5_0: 32, Q5_1: 32, Q8_0: 32,
         Q2_K: 256, Q3_K: 256, Q4_K: 256, Q5_K: 256, Q6_K: 256}
NAMES = {F32: "F32", F16: "F16", BF16: "BF16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1",
         Q8_0: "Q8_0", Q2_K: "Q2_K", Q3_K: "Q3_K", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K"}


@dataclass(frozen=True)
class Mix:
    name: str  # as llama-quantize spells it, lower case
    base: int  # the type most tensors get
    file_type: int  # LLAMA_FTYPE_MOSTLY_*
    k_mix: str = ""  # "", "S" or "M": the K-quant mixes' extra rules


MIXES = {m.name: m for m in (
    Mix("f16", F16, 1), Mix("bf16", BF16, 32), Mix("q8_0", Q8_0, 7),
    Mix("q4_0", Q4_0, 2), Mix("q4_1", Q4_1, 3), Mix("q5_0", Q5_0, 8), Mix("q5_1", Q5_1, 9),
    Mix("q6_k", Q6_K, 18), Mix("q5_k_s", Q5_K, 16, "S"), Mix("q5_k_m", Q5_K, 17, "M"),
    Mix("q4_k_s", Q4_K, 14, "S"), Mix("q4_k_m", Q4_K, 15, "M"),
)}
_FALLBACK = {Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0, Q2_K: Q4_0, Q3_K: Q4_0}
_LAYER = re.compile(r"^blk\.(\d+)\.")


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def quantizable(name: str, n_dims: int) -> bool:
    """llama.cpp quantizes 2-D (or more) weight matrices only; position and type embeddings stay as they are."""
    return name.endswith("weight") and n_dims >= 2 and "norm" not in name and not name.startswith(
        ("position_embd", "token_types"))


def tensor_type(mix: Mix, name: str, row: int, n_layers: int, has_output: bool) -> int:
    """The ggml type of one quantizable tensor with rows of `row` elements."""
    new = mix.base
    layer = _LAYER.match(name)
    i_layer = int(layer.group(1)) if layer else 0
    if name == "output.weight" or (not has_output and name == "token_embd.weight"):
        if mix.base in (F16, BF16):
            return mix.base
        if row % BLOCK[mix.base] != 0 or ((mix.k_mix or mix.base == Q6_K) and row % 256 != 0):
            return Q8_0
        return Q6_K if mix.base != Q8_0 else Q8_0
    if mix.k_mix and "attn_v.weight" in name:
        if mix.k_mix == "M" and use_more_bits(i_layer, n_layers):
            new = Q6_K
        elif mix.name == "q4_k_s" and i_layer < 4:
            new = Q5_K
    elif mix.k_mix and "ffn_down" in name:
        if mix.k_mix == "M" and use_more_bits(i_layer, n_layers):
            new = Q6_K
        elif mix.name == "q4_k_s" and i_layer < n_layers // 8:
            new = Q5_K
    elif mix.k_mix and "attn_qkv.weight" in name and mix.name in ("q4_k_m", "q5_k_m"):
        new = Q5_K if mix.name == "q4_k_m" else Q6_K
    return fallback(new, row)


def fallback(new: int, row: int) -> int:
    if row % BLOCK[new] == 0:
        return new
    new = _FALLBACK.get(new, F16)
    return new if row % BLOCK[new] == 0 else F16
