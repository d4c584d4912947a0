"""Which files `warmstart pull hf:ORG/REPO[:SELECTOR]` downloads: one GGUF, every shard of a split model, or a
safetensors checkpoint's files for vLLM."""

from __future__ import annotations

import pytest

from warmstart.errors import StoreError
from warmstart.store.pull import checkpoint_files, choose_files, is_checkpoint, parse_ref

SPLIT = ["big-Q8_0-00001-of-00003.gguf", "big-Q8_0-00002-of-00003.gguf", "big-Q8_0-00003-of-00003.gguf"]
FILES = ["README.md", "big-Q4_K_M.gguf", *SPLIT[::-1]]


def test_a_quant_is_its_file_or_every_shard_of_its_split_model_in_order():
    assert choose_files(FILES, parse_ref("hf:acme/big-GGUF:q4_k_m")) == ["big-Q4_K_M.gguf"]
    assert choose_files(FILES, parse_ref("hf:acme/big-GGUF:Q8_0")) == SPLIT
    # a shard named by its path brings the others: the first part alone is no model
    assert choose_files(FILES, parse_ref(f"hf:acme/big-GGUF/{SPLIT[1]}")) == SPLIT
    # a repository of one split model needs no selector
    assert choose_files(["x.md", *SPLIT], parse_ref("hf:acme/big-GGUF")) == SPLIT
    assert choose_files(["sub/m-00001-of-00002.gguf", "sub/m-00002-of-00002.gguf"],
                        parse_ref("hf:acme/m:m-")) == ["sub/m-00001-of-00002.gguf", "sub/m-00002-of-00002.gguf"]


def test_several_models_or_a_missing_part_are_refused_naming_the_files():
    with pytest.raises(StoreError, match="has 4 GGUF files; name one"):
        choose_files(FILES, parse_ref("hf:acme/big-GGUF"))
    with pytest.raises(StoreError, match="'big' matches 4: "):
        choose_files(FILES, parse_ref("hf:acme/big-GGUF:big"))
    with pytest.raises(StoreError, match=r"big-Q8_0-00002-of-00003\.gguf: parts of the split model big-Q8_0 missing"):
        choose_files([SPLIT[0], SPLIT[2]], parse_ref("hf:acme/big-GGUF:Q8_0"))


CHECKPOINT = ["README.md", ".gitattributes", "config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "model.safetensors.index.json",
              "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
              "consolidated.safetensors", "original/params.json", "onnx/model.onnx"]
INDEX = {"metadata": {"total_size": 10}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                        "b": "model-00002-of-00002.safetensors",
                                                        "c": "model-00002-of-00002.safetensors"}}


def test_a_repository_without_gguf_holding_config_and_safetensors_is_a_checkpoint_for_vllm():
    assert is_checkpoint(CHECKPOINT)
    assert not is_checkpoint(FILES)  # GGUF files: a GGUF repository, even with a config.json
    assert not is_checkpoint(["config.json", "model.safetensors", "m.Q4_K_M.gguf"])
    assert not is_checkpoint(["config.json", "pytorch_model.bin"])  # no safetensors: nothing vLLM loads fast
    assert not is_checkpoint(["model.safetensors"])  # no config.json
    assert not is_checkpoint(["config.json", "sub/model.safetensors"])  # weights only in a subfolder


def test_a_checkpoint_is_its_config_tokenizer_and_the_weights_its_index_names():
    meta = ["config.json", "generation_config.json", "special_tokens_map.json", "tokenizer.json",
            "tokenizer_config.json"]
    # the consolidated copy, the original format and the ONNX export are other weights: never downloaded
    assert checkpoint_files(CHECKPOINT, "acme/m", INDEX) == [
        *meta, "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    # without an index, every safetensors file at the top level
    plain = ["config.json", "tokenizer.json", "model.safetensors", "README.md"]
    assert checkpoint_files(plain, "acme/m", None) == ["config.json", "tokenizer.json", "model.safetensors"]


def test_an_index_that_names_no_weights_or_missing_ones_is_refused():
    with pytest.raises(StoreError, match="has no weight_map"):
        checkpoint_files(CHECKPOINT, "acme/m", {"metadata": {}})
    with pytest.raises(StoreError, match="has no weight_map"):
        checkpoint_files(CHECKPOINT, "acme/m", ["not", "an", "object"])
    for odd in ("../../outside.safetensors", "sub/model.safetensors", ".hidden.safetensors", "model.bin"):
        with pytest.raises(StoreError, match="not a safetensors file beside it"):
            checkpoint_files([*CHECKPOINT, odd], "acme/m", {"weight_map": {"a": odd}})
    gone = [f for f in CHECKPOINT if f != "model-00002-of-00002.safetensors"]
    with pytest.raises(StoreError, match=r"model-00002-of-00002\.safetensors named by model\.safetensors\.index\.json "
                                         r"but not in the repository"):
        checkpoint_files(gone, "acme/m", INDEX)


def test_the_default_name_is_the_repository_and_the_quant_and_a_shard_names_its_model():
    assert parse_ref("hf:acme/SmolLM2-135M-GGUF:Q4_K_M").default_name == "smollm2-135m-q4_k_m"
    assert parse_ref("hf:acme/big-GGUF/big-Q4_K_M.gguf").default_name == "big-big-q4_k_m"
    assert parse_ref(f"hf:acme/big-GGUF/{SPLIT[1]}").default_name == \
        parse_ref("hf:acme/big-GGUF/big-Q8_0.gguf").default_name == "big-big-q8_0"
    assert parse_ref("hf:acme/Tiny-Llama").default_name == "tiny-llama"
