"""Quantize and gate with real llama.cpp: the embedded SmolLM2 Q4_1, dequantized to F16 here (no
full-precision model ships in any package), is quantized to Q8_0 and Q4_K_M by `warmstart quantize`;
Q8_0 passes `warmstart eval`, a copy with one layer's weights zeroed fails it, and `serve` refuses
the failed model unless its config allows it, with the eval in the audit record of every start.

The baseline is itself a dequantized Q4_1: the figures say how much a quantization adds to what
Q4_1 already lost, not how far it is from SmolLM2's original weights. To keep CI short the eval here
scores one chunk (255 positions) and 20 prompts; `warmstart bench quantize` runs the full set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_audit_server import records
from tests.support import SMOLLM2, chat
from warmstart.quant.convert import convert
from warmstart.quant.damage import damage
from warmstart.quant.recipe import MIXES
from warmstart.store.manifest import ManifestStore
from warmstart.store.sources import resolve_model_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]
QUICK = ("--chunks", "1", "--limit", "20")


def warmstart(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmstart", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path]:
    """A data directory with smol-q8_0 (evaluated), smol-q4_k_m and smol-damaged (evaluated, failed); and the F16."""
    root = tmp_path_factory.mktemp("quant")
    data = root / "data"
    f16 = root / "smollm2-f16.gguf"
    convert(resolve_model_path(SMOLLM2, data), f16, MIXES["f16"], allow_requantize=True)
    for kind in ("q8_0", "q4_k_m"):
        out = warmstart("quantize", str(f16), "--type", kind, "--name", f"smol-{kind}", "--data-dir", str(data))
        assert out.returncode == 0, out.stderr
    broken = root / "smol-damaged.gguf"
    q8 = ManifestStore(data).get("smol-q8_0")
    assert damage(Path(q8.root), broken, layer=10, how="zero")
    assert warmstart("models", "add", str(broken), "--name", "smol-damaged", "--data-dir", str(data)).returncode == 0
    return data, f16


def test_quantize_records_source_type_and_tool_in_the_manifest(store):
    from gguf import GGUFReader

    data, f16 = store
    manifests = ManifestStore(data)
    q8, q4 = manifests.get("smol-q8_0"), manifests.get("smol-q4_k_m")
    assert q8.quantization["source_sha256"] == manifests.digests.digest(f16).sha256
    assert q8.quantization["type"] == "q8_0" and q8.quantization["tool_version"].startswith("xllamacpp ")
    assert q8.quantization["tensor_types"] == {"Q8_0": 211, "F32": 61}
    # SmolLM2's rows of 576 do not divide into Q4_K's 256: llama.cpp's fallbacks, as llama-quantize makes them
    assert q4.quantization["tensor_types"] == {"Q5_0": 166, "Q4_K": 16, "Q6_K": 14, "Q8_0": 15, "F32": 61}
    assert f16.stat().st_size > 1.8 * q8.size and q8.size > 1.3 * q4.size
    reader = GGUFReader(q4.root)
    assert int(reader.fields["general.file_type"].contents()) == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert reader.fields["tokenizer.chat_template"].contents() == GGUFReader(f16).fields[
        "tokenizer.chat_template"].contents()


def test_requantizing_a_quantized_model_is_refused_in_one_line(store, tmp_path):
    data, _ = store
    out = warmstart("quantize", str(resolve_model_path(SMOLLM2, data)), "--type", "q8_0", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert "already quantized (Q4_1, Q8_0)" in line and "--allow-requantize" in line


def test_a_snapshot_folder_holding_the_gguf_is_quantized_from_that_file(store, tmp_path):
    """A GGUF repository's Hugging Face snapshot (its file a link into the blob store) is the GGUF it holds, not
    a safetensors checkpoint to convert; one holding two models is refused in one line naming them."""
    data, f16 = store
    snap = tmp_path / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "smollm2-f16.gguf").symlink_to(f16)
    out = warmstart("quantize", str(snap), "--type", "q8_0", "--name", "snap-q8_0", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    made = ManifestStore(data).get("snap-q8_0")
    assert made.quantization["source_sha256"] == ManifestStore(data).digests.digest(f16).sha256
    (snap / "other-f16.gguf").symlink_to(f16)
    out = warmstart("quantize", str(snap), "--type", "q8_0", "--name", "snap-2", "--data-dir", str(data))
    assert out.returncode != 0
    [line] = out.stderr.strip().splitlines()
    assert "holds 2 GGUF models (other-f16.gguf, smollm2-f16.gguf)" in line


def test_q8_0_passes_the_gate_and_a_damaged_model_fails_it(store):
    data, f16 = store
    out = warmstart("eval", "smol-q8_0", "smol-damaged", "--against", str(f16), "--data-dir", str(data), "--json",
                    *QUICK)
    ok, bad = json.loads(out.stdout)
    assert ok["passed"] and ok["positions"] == 255 and ok["prompts"] == 20
    assert ok["kld"] < 0.031 and ok["top1"] > 0.919 and 0.97 < ok["ppl_ratio"] < 1.03
    assert not bad["passed"] and bad["reasons"][0].startswith("mean KLD")
    assert ok["agreement"] > bad["agreement"] and bad["ppl_ratio"] > 1.2
    assert out.returncode == 1
    *progress, verdict = out.stderr.strip().splitlines()  # progress lines (the eval takes seconds), then one verdict
    assert not any("error" in line or "FAILED" in line for line in progress), progress
    assert verdict.startswith("warmstart: error: smol-damaged FAILED the accuracy gate: mean KLD")
    assert "smol-q8_0" not in verdict and "allow_unverified = true" in verdict
    accuracy = ManifestStore(data).get("smol-damaged").accuracy
    assert not accuracy["passed"] and accuracy["kld"] > 10 * 0.031 and accuracy["top1"] < 0.85
    assert ManifestStore(data).get("smol-q8_0").accuracy["passed"]
    listing = warmstart("models", "list", "--data-dir", str(data)).stdout
    listed = {line.split()[0]: line for line in listing.splitlines()}
    assert "FAILED" in listed["smol-damaged"] and "unverified" in listed["smol-q4_k_m"]
    assert "passed (KLD 0.0" in listed["smol-q8_0"]


def test_serve_refuses_a_failed_or_unevaluated_model_unless_allowed(store, start_server):
    data, f16 = store
    options = {"n_ctx": 512}
    srv = start_server([
        {"name": "smol-q8_0", "engine": "llamacpp", "path": "store:smol-q8_0", "options": options},
        {"name": "smol-damaged", "engine": "llamacpp", "path": "store:smol-damaged", "options": options},
        {"name": "damaged-anyway", "engine": "llamacpp", "path": "store:smol-damaged", "options": options,
         "allow_unverified": True},
        {"name": "smol-q4_k_m", "engine": "llamacpp", "path": "store:smol-q4_k_m", "options": options},
        {"name": "smol-f16", "engine": "llamacpp", "path": str(f16), "options": options},
    ], data_dir=data)
    refused = {}
    for model in ("smol-damaged", "smol-q4_k_m"):
        status, _, body = srv.post("/v1/chat/completions", chat(model=model, max_tokens=4))
        assert status == 503, body
        refused[model] = body["error"]["message"]
    assert "failed its accuracy gate" in refused["smol-damaged"] and "allow_unverified" in refused["smol-damaged"]
    assert "never evaluated" in refused["smol-q4_k_m"]
    for model in ("smol-q8_0", "damaged-anyway"):
        status, _, body = srv.post("/v1/chat/completions", chat(model=model, max_tokens=4))
        assert status == 200, body
    # an eval through the running server: the answers come from its engines (the table, not JSON)
    out = warmstart("eval", "smol-q8_0", "--against", "smol-f16", "--url", srv.url, "--config", str(srv.config_path),
                    "--data-dir", str(data), "--no-record", "--chunks", "1", "--limit", "5")
    assert out.returncode == 0, out.stderr + srv.log()[-3000:]
    head, *rows = out.stdout.strip().splitlines()
    assert head == "smol-q8_0 against smol-f16: PASSED (255 positions)"
    assert any(r.startswith("answer agreement") and "(5 prompts)" in r for r in rows)
    _, payload = srv.get("/v1/models")
    assert {m["id"]: len(m["starts"]) for m in payload["data"]}["smol-f16"] >= 1  # served by the gateway
    srv.stop()
    starts = {}
    for r in records(data / "audit"):
        if r["event"] == "start":
            starts.setdefault(r["model"], []).append(r)
    [ok] = starts["smol-q8_0"]
    assert ok["outcome"] == "ok" and ok["accuracy"]["passed"] and ok["accuracy"]["kld"] < 0.031
    [anyway] = starts["damaged-anyway"]
    assert anyway["outcome"] == "ok" and anyway["accuracy"]["passed"] is False
    assert all(r["outcome"] != "ok" and r["accuracy"]["passed"] is False for r in starts["smol-damaged"])
    assert all(r["outcome"] != "ok" and r["accuracy"] is None for r in starts["smol-q4_k_m"])
