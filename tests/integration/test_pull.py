"""`warmstart pull hf:ORG/REPO[:QUANT]` against a loopback server that answers like the Hub (tests/fakehub.py):
the file comes through huggingface_hub (its cache, resumed after a cut, HF_TOKEN), lands in the store with
its digest and source, and is served as store:NAME. Nothing is downloaded from the internet."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tests.fakehub import FakeHub
from tests.integration.test_audit_server import smol_file
from tests.support import chat

REPO = "acme/SmolLM2-135M-Instruct-GGUF"


@pytest.fixture
def files(tmp_path):
    other = tmp_path / "SmolLM2-135M-Instruct-Q8_0.gguf"
    other.write_bytes(b"GGUF" + bytes(100))  # another quant in the listing; never downloaded
    readme = tmp_path / "README.md"
    readme.write_text("# SmolLM2\n")
    return {"SmolLM2-135M-Instruct-Q4_1.gguf": smol_file(), "SmolLM2-135M-Instruct-Q8_0.gguf": other,
            "README.md": readme}


def warmstart(tmp_path, hub, *args, token=None):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_TOKEN", None)
    env.pop("HF_HUB_OFFLINE", None)
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "warmstart", *args, "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=300, env=env)


def test_pull_a_quant_into_the_store_resumed_after_a_cut_and_serve_it(tmp_path, files, start_server):
    # the first download drops after 12 MiB (huggingface_hub writes 10 MiB pieces: one is kept, and resumed from)
    hub = FakeHub({REPO: files}, cut_after=12 << 20)
    try:
        pulled = warmstart(tmp_path, hub, "pull", f"hf:{REPO}:q4_1")
        assert pulled.returncode == 0, pulled.stderr
        name = pulled.stdout.split()[1].rstrip(":")
        assert name == "smollm2-135m-instruct-q4_1", pulled.stdout
        # resumed where it was cut, not started again
        ranges = [r for method, path, r in hub.requests if method == "GET" and "/resolve/" in path and r]
        assert ranges and ranges[0].startswith("bytes=") and int(ranges[0][6:-1]) > 0, hub.requests
        assert not any("Q8_0" in path for _, path, _ in hub.requests if "/resolve/" in path)
    finally:
        hub.close()
    listed = json.loads(warmstart(tmp_path, hub, "models", "list", "--json").stdout)
    [manifest] = [m for m in listed if m["name"] == name]
    assert manifest["files"][0]["sha256"] == hashlib.sha256(smol_file().read_bytes()).hexdigest()
    assert manifest["source"] == f"hf:{REPO}@{hub.commit}/SmolLM2-135M-Instruct-Q4_1.gguf"
    assert manifest["engine"] == "llamacpp"

    # served from the store, its engine told from the manifest, with the Hub unreachable now
    srv = start_server([{"name": name, "path": f"store:{name}"}], data_dir=tmp_path / "data")
    status, _, body = srv.post("/v1/chat/completions", chat(model=name, max_tokens=16))
    assert status == 200 and "Oslo" in body["choices"][0]["message"]["content"], body


def test_pull_says_in_one_line_what_is_wrong(tmp_path, files):
    hub = FakeHub({REPO: files})
    try:
        for ref, says in ((f"hf:{REPO}", "has 2 GGUF files; name one"), (f"hf:{REPO}:Q5_K", "matches none"),
                          ("hf:acme/nothing-here", "no repository acme/nothing-here"),
                          ("acme/model", "is not a Hub reference")):
            result = warmstart(tmp_path, hub, "pull", ref)
            assert result.returncode == 1 and says in result.stderr, (ref, result.stderr)
            assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    finally:
        hub.close()


def test_a_gated_repository_needs_hf_token(tmp_path, files):
    hub = FakeHub({REPO: files}, token="hf_secret_0123456789")
    try:
        refused = warmstart(tmp_path, hub, "pull", f"hf:{REPO}:Q4_1")
        assert refused.returncode == 1 and "HF_TOKEN" in refused.stderr, refused.stderr
        pulled = warmstart(tmp_path, hub, "pull", f"hf:{REPO}:Q4_1", token="hf_secret_0123456789")
        assert pulled.returncode == 0, pulled.stderr
    finally:
        hub.close()


def split_gguf(src, folder, parts: int) -> list:
    """`src` written as `parts` shards (NAME-0000i-of-0000N.gguf, as llama.cpp's gguf-split writes them), with
    the gguf package's writer: tensors copied as they are."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    per_part = -(-len(reader.tensors) // parts)
    writer = GGUFWriter(folder / "SmolLM2-135M-Instruct-Q4_1.gguf", arch, split_max_tensors=per_part)
    for field in reader.fields.values():
        if not field.name.startswith(("GGUF.", "split.")) and field.name != "general.architecture":
            kind = field.types[0]
            writer.add_key_value(field.name, field.contents(), kind,
                                 sub_type=field.types[-1] if kind == GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=GGMLQuantizationType(int(tensor.tensor_type)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(folder.glob("*-of-*.gguf"))


def test_a_split_model_is_pulled_whole_and_served_from_its_first_part(tmp_path, files, start_server):
    """A quant the repository holds in three shards: all three are downloaded, kept as one model (a folder of
    its parts in the store), and llama.cpp serves it from the first."""
    shards_dir = tmp_path / "shards"
    shards_dir.mkdir()
    shards = split_gguf(smol_file(), shards_dir, 3)
    assert [p.name for p in shards] == [f"SmolLM2-135M-Instruct-Q4_1-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    repo = {p.name: p for p in shards} | {"SmolLM2-135M-Instruct-Q8_0.gguf": files["SmolLM2-135M-Instruct-Q8_0.gguf"]}
    hub = FakeHub({REPO: repo})
    try:
        pulled = warmstart(tmp_path, hub, "pull", f"hf:{REPO}:Q4_1", "--name", "smol-split")
        assert pulled.returncode == 0, pulled.stderr
        assert not any("Q8_0" in path for _, path, _ in hub.requests if "/resolve/" in path)
    finally:
        hub.close()
    [manifest] = json.loads(warmstart(tmp_path, hub, "models", "list", "--json").stdout)
    assert (manifest["name"], manifest["engine"], manifest["format"]) == ("smol-split", "llamacpp", "gguf")
    assert sorted(f["sha256"] for f in manifest["files"]) == sorted(
        hashlib.sha256(p.read_bytes()).hexdigest() for p in shards)
    assert manifest["source"] == f"hf:{REPO}@{hub.commit}/{shards[0].name} (+2 parts)"

    srv = start_server([{"name": "smol-split", "path": "store:smol-split", "options": {"n_ctx": 512}}],
                       data_dir=tmp_path / "data")
    status, _, body = srv.post("/v1/chat/completions", chat(model="smol-split", max_tokens=16))
    assert status == 200 and "Oslo" in body["choices"][0]["message"]["content"], body


def test_a_safetensors_checkpoint_is_pulled_without_other_weights_and_served_by_vllm(tmp_path, start_server):
    """A repository without GGUF files: its config, tokenizer and the weights its index names come down (not the
    consolidated copy, ONNX export or README beside them), kept as one model for vLLM, and vLLM serves it."""
    from tests.integration.test_vllm_engine import OPTIONS
    from warmstart.bench._tiny_llama import build_in
    from warmstart.engines.vllm import default_python

    python = default_python()
    assert ".venv-vllm" in python, f"vLLM's interpreter not found ({python}); run ./install.sh --test"
    model = build_in(python, tmp_path / "tiny", shards=2)
    other = tmp_path / "other.bin"
    other.write_bytes(bytes(1000))
    checkpoint = {p.name: p for p in model.iterdir() if p.name != "warmstart-model.json"}
    assert {"model.safetensors.index.json", "model-00002-of-00002.safetensors", "tokenizer.json"} <= set(checkpoint)
    hub = FakeHub({"acme/Tiny-Llama": checkpoint | {"consolidated.safetensors": other, "onnx/model.onnx": other,
                                                    "README.md": other}})
    try:
        refused = warmstart(tmp_path, hub, "pull", "hf:acme/Tiny-Llama:Q4_K_M")
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert "is a safetensors checkpoint (for vLLM), pulled whole, without a selector" in refused.stderr
        pulled = warmstart(tmp_path, hub, "pull", "hf:acme/Tiny-Llama")
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout.startswith(f"pulled tiny-llama: safetensors, {len(checkpoint)} file(s)"), pulled.stdout
        fetched = {path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path, _ in hub.requests
                   if method == "GET" and "/resolve/" in path}
        assert fetched == set(checkpoint)
    finally:
        hub.close()
    [manifest] = json.loads(warmstart(tmp_path, hub, "models", "list", "--json").stdout)
    assert (manifest["name"], manifest["engine"], manifest["format"]) == ("tiny-llama", "vllm", "safetensors")
    assert manifest["source"] == f"hf:acme/Tiny-Llama@{hub.commit} ({len(checkpoint)} files)"

    # no engine named: the store's manifest says vLLM
    srv = start_server([{"name": "tiny-llama", "path": "store:tiny-llama", "options": {**OPTIONS, "runtimes": 0}}],
                       data_dir=tmp_path / "data")
    status, _, body = srv.post("/v1/completions", {"model": "tiny-llama", "prompt": "hello", "max_tokens": 4},
                               timeout=600)
    assert status == 200 and body["usage"]["completion_tokens"] == 4, body
    assert srv.model("tiny-llama")["last_start"]["outcome"] == "ok"
