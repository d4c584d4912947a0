"""A damaged model file is refused with a clear error and an audit record, and does not take down the
models that are fine."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.faults import SMOL, audit_verify, burst
from tests.integration.test_audit_server import records, smol_file
from tests.support import chat, smollm2

pytestmark = pytest.mark.integration


def damaged(name: str, path) -> dict:
    return {"name": name, "engine": "llamacpp", "path": str(path), "options": {"n_ctx": 512}}


async def traffic_beside(srv, damaged_models):
    """12 chats to the healthy model while the damaged models are asked: (healthy answers, damaged answers)."""
    good, bad = await asyncio.gather(
        burst(srv.url, [chat(max_tokens=16) for _ in range(12)], timeout=120),
        burst(srv.url, [{"model": m, "prompt": "Hello", "max_tokens": 4} for m in damaged_models], timeout=120))
    return good, bad


@pytest.mark.slow
def test_truncated_model_files_are_refused_clearly_audited_and_other_models_keep_serving(start_server, tmp_path):
    weights = smol_file().read_bytes()
    half, header = tmp_path / "half.gguf", tmp_path / "header.gguf"
    half.write_bytes(weights[: len(weights) // 2])  # the header is whole; the tensor data is cut
    header.write_bytes(weights[:1000])  # cut inside the header
    srv = start_server([smollm2(keep_alive=-1), damaged("half", half), damaged("header", header)])
    assert srv.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    [good] = srv.model(SMOL)["replicas"]

    good_answers, bad_answers = asyncio.run(traffic_beside(srv, ("half", "header", "half", "header")))
    assert [a.status for a in good_answers] == [200] * 12  # the healthy model went on serving throughout
    for answer in bad_answers:
        error = answer.json()["error"]
        assert answer.status == 503 and error["code"] == "model_start_failed", error
        assert "retry-after" not in answer.headers  # retrying will not help: the file must be replaced
    half_error = bad_answers[0].json()["error"]["message"]
    header_error = bad_answers[1].json()["error"]["message"]
    assert f"model file {half} is truncated: its tensor data ends at byte" in half_error
    assert "copy or download it again" in half_error
    assert f"{header} is truncated or corrupt: its GGUF header cannot be read" in header_error
    assert srv.model(SMOL)["replicas"][0]["pid"] == good["pid"]  # the same engine, never restarted
    assert srv.model("half")["state"] in ("failed", "cold") and srv.model("header")["replicas"] == []

    log = records(srv.data_dir / "audit")
    failed = [r for r in log if r["model"] == "half"]
    refused = [r for r in log if r["model"] == "header"]
    assert failed and all(r["outcome"] == "failed" and "is truncated" in r["error"] for r in failed)
    # refused while its files were checked, before an engine process was spawned for it
    assert [p["phase"] for p in failed[0]["phases"]] == ["verify"]
    # refused at inspection: one record for the reason, not one per request
    assert len(refused) == 1 and refused[0]["outcome"] == "refused" and refused[0]["trigger"] == "inspect"
    assert "GGUF header cannot be read" in refused[0]["error"]
    assert audit_verify(srv.data_dir).returncode == 0
    print(f"\n[reliability] truncated model files: {json.dumps(half_error)[:160]}...; "
          f"{len(failed)} failed-start and 1 refusal audit record(s); the healthy model served 12/12 meanwhile")


@pytest.mark.slow
def test_a_model_file_modified_after_its_manifest_is_refused_audited_and_other_models_keep_serving(
        start_server, tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(smol_file().read_bytes())
    srv = start_server([smollm2(keep_alive=-1), damaged("copy", copy)])
    # trust on first use: the first start records the file's digest in the model's manifest
    assert srv.post("/v1/completions", {"model": "copy", "prompt": "Hello", "max_tokens": 2})[0] == 200
    assert srv.post("/admin/models/copy/unload", {})[0] == 200
    srv.wait_for(lambda: srv.model("copy")["replicas"] == [])
    assert srv.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    [good] = srv.model(SMOL)["replicas"]

    with copy.open("r+b") as f:  # one byte of the last tensor's data changed; the size stays the same
        f.seek(-4096, 2)
        byte = f.read(1)
        f.seek(-4096, 2)
        f.write(bytes([byte[0] ^ 0xFF]))

    good_answers, bad_answers = asyncio.run(traffic_beside(srv, ("copy", "copy", "copy")))
    assert [a.status for a in good_answers] == [200] * 12  # the healthy model went on serving throughout
    for answer in bad_answers:
        error = answer.json()["error"]
        assert answer.status == 503 and error["code"] == "model_start_failed", error
        assert f"model 'copy': {copy} has sha256" in error["message"]
        assert "its manifest says" in error["message"] and "the file was modified" in error["message"]
    assert srv.model(SMOL)["replicas"][0]["pid"] == good["pid"]  # the same engine, never restarted
    assert srv.model("copy")["replicas"] == [] or srv.model("copy")["state"] in ("failed", "cold")

    log = [r for r in records(srv.data_dir / "audit") if r["model"] == "copy"]
    assert [r["event"] for r in log][:2] == ["start", "unload"] and log[0]["outcome"] == "ok"
    refused = [r for r in log[2:] if r["event"] == "start"]
    assert refused and all(r["outcome"] == "failed" and "the file was modified" in r["error"] for r in refused)
    assert refused[0]["phases"] == []  # refused before an engine process was spawned for it
    assert audit_verify(srv.data_dir).returncode == 0
    print(f"\n[reliability] modified model file: {bad_answers[0].json()['error']['message'][:150]}...; "
          f"{len(refused)} refused-start audit record(s); the healthy model served 12/12 meanwhile")
