"""Build a Llama model folder offline: a BPE tokenizer trained here and random weights, in the
Hugging Face layout vLLM loads (config.json, model.safetensors, tokenizer.json, tokenizer_config.json).

Nothing is downloaded. Runs in vLLM's Python (it needs torch, safetensors and tokenizers):
    .venv-vllm/bin/python -m warmstart.bench._tiny_llama OUT_DIR [--size tiny|1b]
`build_in(python, out, size)` does that from warmstart's own Python.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# tiny: a few MB, for tests. 1b: the shape of Llama 3.2 1B (hidden 2048, 16 layers, GQA 32/8) with a
# 32k vocabulary: 1.1 billion parameters, 2.2 GB in bfloat16.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": None},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000},
}
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_WORDS = ("the a model answers questions about cold starts warm replicas engines weights cache kernels "
          "graphs tokens prompts users requests seconds memory processes python torch imports load "
          "capital of norway is oslo france paris sweden stockholm what where when how why fast slow "
          "hello world this that with from into over under one two three four five six seven eight").split()


def _corpus(lines: int = 4000) -> list[str]:
    # deterministic text with enough variety for a BPE vocabulary of a few hundred merges
    out, n = [], len(_WORDS)
    for i in range(lines):
        out.append(" ".join(_WORDS[(i * 7 + j * j * 3 + j) % n] for j in range(8 + i % 9)) + ".")
    return out


def train_tokenizer(out: Path, vocab_size: int = 1024) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "</s>", "model_max_length": 2048, "add_bos_token": True,
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
    }, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}))
    return tok.get_vocab_size()


def build(out: Path, size: str = "tiny", seed: int = 0, shards: int = 1) -> Path:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    shape = SIZES[size]
    n_vocab = train_tokenizer(out)
    vocab = shape["vocab_size"] or n_vocab
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    heads, kv_heads = shape["num_attention_heads"], shape["num_key_value_heads"]
    head_dim = h // heads
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "initializer_range": 0.02,
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    gen = torch.Generator().manual_seed(seed)

    def rand(*dims: int) -> torch.Tensor:
        return (torch.randn(*dims, generator=gen) * 0.02).to(torch.bfloat16)

    tensors = {"model.embed_tokens.weight": rand(vocab, h), "lm_head.weight": rand(vocab, h),
               "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": rand(heads * head_dim, h),
            p + "self_attn.k_proj.weight": rand(kv_heads * head_dim, h),
            p + "self_attn.v_proj.weight": rand(kv_heads * head_dim, h),
            p + "self_attn.o_proj.weight": rand(h, heads * head_dim),
            p + "mlp.gate_proj.weight": rand(inter, h),
            p + "mlp.up_proj.weight": rand(inter, h),
            p + "mlp.down_proj.weight": rand(h, inter),
            p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        }
    save_shards(out, tensors, shards)
    params = sum(t.numel() for t in tensors.values())
    (out / "warmstart-model.json").write_text(json.dumps({"size": size, "parameters": params, "shards": shards}))
    return out


def save_shards(out: Path, tensors: dict[str, Any], shards: int) -> None:
    """model.safetensors, or (shards > 1) model-0000I-of-0000N.safetensors and the index naming each tensor's
    shard, as a large checkpoint on the Hub is laid out."""
    from safetensors.torch import save_file

    if shards <= 1:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, str(out / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def package_root() -> Path:
    """The folder that holds the `warmstart` package: put on PYTHONPATH for vLLM's Python."""
    return Path(__file__).resolve().parent.parent.parent


def build_in(python: str, out: Path, size: str = "tiny", timeout: float = 900, shards: int = 1) -> Path:
    """Build with another interpreter (vLLM's); reuses a finished folder of the same size and shards."""
    marker = out / "warmstart-model.json"
    if marker.is_file() and json.loads(marker.read_text()).get("size") == size and \
            json.loads(marker.read_text()).get("shards", 1) == shards:
        return out
    env = {**os.environ, "PYTHONPATH": str(package_root())}
    subprocess.run([python, "-m", "warmstart.bench._tiny_llama", str(out), "--size", size, "--shards", str(shards)],
                   check=True, env=env, timeout=timeout, stdout=subprocess.DEVNULL)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--shards", type=int, default=1, help="safetensors files the weights are split into")
    args = parser.parse_args(argv)
    build(args.out, args.size, shards=args.shards)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
