"""Which files `warmstart pull hf:ORG/REPO[:SELECTOR]` downloads: one GGUF, or every shard of a split model."""

from __future__ import annotations

import pytest

from warmstart.errors import StoreError
from warmstart.store.pull import choose_files, parse_ref

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
