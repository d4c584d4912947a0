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
