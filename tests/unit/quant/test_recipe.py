"""The type each tensor gets, as llama-quantize picks it, and llama.cpp's kernels from the wheel."""

import numpy as np
import pytest

from warmstart.quant import recipe
from warmstart.quant.ggml import quantize_rows
from warmstart.quant.recipe import MIXES, Q4_K, Q5_0, Q6_K, Q8_0, tensor_type


def test_q8_0_is_q8_0_everywhere_including_the_tied_embedding():
    mix = MIXES["q8_0"]
    assert tensor_type(mix, "token_embd.weight", 576, 30, has_output=False) == Q8_0
    assert tensor_type(mix, "blk.3.attn_q.weight", 576, 30, has_output=False) == Q8_0


def test_q4_k_m_follows_llama_quant():
    mix, n = MIXES["q4_k_m"], 32
    # rows of 4096 divide into 256: Q4_K, with Q6_K for attn_v and ffn_down in use_more_bits layers
    assert tensor_type(mix, "blk.10.attn_q.weight", 4096, n, True) == Q4_K
    assert tensor_type(mix, "blk.0.attn_v.weight", 4096, n, True) == Q6_K  # first eighth
    assert tensor_type(mix, "blk.31.ffn_down.weight", 14336, n, True) == Q6_K  # last eighth
    assert [i for i in range(n) if recipe.use_more_bits(i, n)] == [
        0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert tensor_type(mix, "blk.7.ffn_down.weight", 14336, n, True) == Q4_K
    assert tensor_type(mix, "output.weight", 4096, n, True) == Q6_K
    # rows of 576 (SmolLM2) do not divide into 256: llama.cpp's fallbacks
    assert tensor_type(mix, "blk.7.attn_q.weight", 576, 30, False) == Q5_0
    assert tensor_type(mix, "blk.0.attn_v.weight", 576, 30, False) == Q8_0
    assert tensor_type(mix, "token_embd.weight", 576, 30, False) == Q8_0


def test_norms_and_vectors_are_not_quantized():
    assert not recipe.quantizable("blk.0.attn_norm.weight", 1)
    assert not recipe.quantizable("blk.0.attn_q.bias", 1)
    assert recipe.quantizable("blk.0.attn_q.weight", 2)


def test_q8_0_from_the_wheel_is_byte_identical_to_ggufs_reference_quantizer():
    from gguf import GGMLQuantizationType, quants

    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    ours = quantize_rows(Q8_0, x, 256)
    assert np.array_equal(ours, quants.quantize(x, GGMLQuantizationType.Q8_0).reshape(-1))


@pytest.mark.parametrize("kind,tolerance", [(Q4_K, 0.3), (Q6_K, 0.08), (Q5_0, 0.2)])
def test_k_quants_round_trip_through_ggufs_dequantizer(kind, tolerance):
    from gguf import GGMLQuantizationType, quants

    x = np.random.default_rng(2).standard_normal((4, 512)).astype(np.float32)
    back = quants.dequantize(quantize_rows(kind, x, 512).reshape(4, -1), GGMLQuantizationType(kind))
    err = np.abs(back - x)
    assert err.max() < tolerance and err.mean() < tolerance / 4
