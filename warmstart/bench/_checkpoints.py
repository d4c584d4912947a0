"""Checkpoints the load benchmark makes: Llama-7B-shaped tensors of random (never zero) data, as
safetensors (BF16) and as a llama.cpp-loadable GGUF (Q4_0, tokenizer borrowed from SmolLM2).

Written tensor by tensor, so making a 3+ GB file needs a few hundred MB of memory, not 3 GB.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HIDDEN, FFN, HEADS = 4096, 11008, 32  # Llama-7B


def llama_shapes(layers: int, vocab: int, hidden: int = HIDDEN,
                 ffn: int = FFN) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Hugging Face names and shapes of a Llama checkpoint with `layers` decoder layers."""
    yield "model.embed_tokens.weight", (vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (hidden,)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield p + f"self_attn.{proj}.weight", (hidden, hidden)
        yield p + "post_attention_layernorm.weight", (hidden,)
        yield p + "mlp.gate_proj.weight", (ffn, hidden)
        yield p + "mlp.up_proj.weight", (ffn, hidden)
        yield p + "mlp.down_proj.weight", (hidden, ffn)
    yield "model.norm.weight", (hidden,)
    yield "lm_head.weight", (vocab, hidden)


def random_bf16(rng: np.random.Generator, count: int) -> np.ndarray:
    """bf16 bit patterns of small weights: random sign and mantissa, exponent 2^-11..2^-8; never 0, inf or NaN."""
    bits = np.frombuffer(rng.bytes(count * 2), dtype=np.uint16).copy()
    np.bitwise_and(bits, 0x81FF, out=bits)
    np.bitwise_or(bits, 0x3A00, out=bits)
    return bits


def random_f16(rng: np.random.Generator, count: int) -> np.ndarray:
    """float16 weights with exponent 2^-7..2^-6 and random sign and mantissa; never 0, inf or NaN."""
    bits = np.frombuffer(rng.bytes(count * 2), dtype=np.uint16).copy()
    np.bitwise_and(bits, 0x87FF, out=bits)
    np.bitwise_or(bits, 0x2000, out=bits)
    return bits.view(np.float16)


def write_safetensors(path: Path, *, layers: int = 7, vocab: int = 32000, hidden: int = HIDDEN, ffn: int = FFN,
                      seed: int = 1) -> int:
    """A BF16 safetensors file with Llama-7B shapes (7 layers: 3.36 GB); returns its size."""
    rng = np.random.default_rng(seed)
    shapes = list(llama_shapes(layers, vocab, hidden, ffn))
    header: dict[str, object] = {"__metadata__": {"format": "pt", "made_by": "warmstart bench"}}
    offset = 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 4096)  # data starts page-aligned, as large checkpoints usually do
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, shape in shapes:
            random_bf16(rng, int(np.prod(shape))).tofile(f)
    tmp.replace(path)
    return path.stat().st_size


def _q4_0_blocks(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Q4_0 data for a rows x cols matrix: per 32 weights an f16 scale and 16 bytes of 4-bit values."""
    blocks = rows * cols // 32
    out = np.empty((blocks, 18), dtype=np.uint8)
    out[:, :2] = random_f16(rng, blocks).view(np.uint8).reshape(blocks, 2)
    out[:, 2:] = np.frombuffer(rng.bytes(blocks * 16), dtype=np.uint8).reshape(blocks, 16)
    return out.reshape(rows, cols // 32 * 18)


def write_gguf(path: Path, tokenizer_from: Path, *, layers: int = 32, hidden: int = HIDDEN, ffn: int = FFN,
               heads: int = HEADS, seed: int = 2) -> int:
    """A llama.cpp-loadable GGUF with Llama-7B dimensions in Q4_0 (32 layers: about 3.9 GB) and
    random weights; its tokenizer (and vocabulary size) comes from `tokenizer_from`. No chat
    template, so llama.cpp warms it up with a plain completion."""
    import gguf

    reader = gguf.GGUFReader(str(tokenizer_from))
    fields = reader.fields
    tokens = [str(t) for t in fields["tokenizer.ggml.tokens"].contents()]
    vocab = len(tokens)
    q4 = gguf.GGMLQuantizationType.Q4_0
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(path.suffix + ".part")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name("warmstart-bench-llama-7b-shaped")
    w.add_context_length(4096)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_tokenizer_model(str(fields["tokenizer.ggml.model"].contents()))
    w.add_tokenizer_pre(str(fields["tokenizer.ggml.pre"].contents()))
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in fields["tokenizer.ggml.token_type"].contents()])
    w.add_token_merges([str(m) for m in fields["tokenizer.ggml.merges"].contents()])
    w.add_bos_token_id(int(fields["tokenizer.ggml.bos_token_id"].contents()))
    w.add_eos_token_id(int(fields["tokenizer.ggml.eos_token_id"].contents()))
    w.add_add_bos_token(False)

    plan: list[tuple[str, tuple[int, ...], bool]] = [("token_embd.weight", (vocab, hidden), True)]
    for i in range(layers):
        b = f"blk.{i}."
        plan += [(b + "attn_norm.weight", (hidden,), False)]
        plan += [(b + f"attn_{x}.weight", (hidden, hidden), True) for x in ("q", "k", "v", "output")]
        plan += [(b + "ffn_norm.weight", (hidden,), False), (b + "ffn_gate.weight", (ffn, hidden), True),
                 (b + "ffn_up.weight", (ffn, hidden), True), (b + "ffn_down.weight", (hidden, ffn), True)]
    plan += [("output_norm.weight", (hidden,), False), ("output.weight", (vocab, hidden), True)]
    for name, shape, quantized in plan:
        if quantized:
            rows, cols = shape
            w.add_tensor_info(name, (rows, cols // 32 * 18), np.dtype(np.uint8), rows * cols // 32 * 18, raw_dtype=q4)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _name, shape, quantized in plan:
        if quantized:
            w.write_tensor_data(_q4_0_blocks(rng, *shape))
        else:  # RMS norm weights near 1
            w.write_tensor_data((1.0 + random_f16(rng, int(np.prod(shape))).astype(np.float32)).reshape(shape))
    w.close()
    tmp.replace(path)
    return path.stat().st_size
