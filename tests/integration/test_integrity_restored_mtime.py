"""A model file changed in place with its mtime put back (os.utime) is refused before an engine starts,
and every start's audit record carries a digest measured for that start, saying what it rests on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.faults import audit_verify
from tests.integration.test_audit_server import records, smol_file

pytestmark = pytest.mark.integration


def model(name: str, path: Path) -> dict:
    return {"name": name, "engine": "llamacpp", "path": str(path), "options": {"n_ctx": 512}}


def flip_a_byte_and_put_the_mtime_back(path: Path) -> None:
    """One byte of the last tensor's data changed in place: size, inode and (put back) mtime as before."""
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(-4096, 2)
        byte = f.read(1)
        f.seek(-4096, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (st.st_size, st.st_ino, st.st_mtime_ns)


def serve_once(srv, name: str) -> int:
    status = srv.post("/v1/completions", {"model": name, "prompt": "Hello", "max_tokens": 2})[0]
    if status == 200:
        assert srv.post(f"/admin/models/{name}/unload", {})[0] == 200
        srv.wait_for(lambda: srv.model(name)["replicas"] == [])
    return status


def test_a_byte_flip_with_the_mtime_put_back_is_refused_before_the_engine_starts(start_server, tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(smol_file().read_bytes())
    original = hashlib.sha256(copy.read_bytes()).hexdigest()
    srv = start_server([model("copy", copy)])
    assert serve_once(srv, "copy") == 200  # trust on first use: the manifest takes the file's digest and stat

    flip_a_byte_and_put_the_mtime_back(copy)
    status, _, body = srv.post("/v1/completions", {"model": "copy", "prompt": "Hello", "max_tokens": 2})
    assert status == 503 and body["error"]["code"] == "model_start_failed", body
    assert f"model 'copy': {copy} has sha256" in body["error"]["message"]
    assert "the file was modified" in body["error"]["message"]
    assert srv.model("copy")["replicas"] == [] or srv.model("copy")["state"] in ("failed", "cold")

    log = [r for r in records(srv.data_dir / "audit") if r["model"] == "copy"]
    started, refused = log[0], [r for r in log[2:] if r["event"] == "start"]
    assert (started["outcome"], started["sha256"]) == ("ok", original)
    assert started["sha256_basis"] in ("stat", "hashed")
    assert refused and all(r["outcome"] == "failed" and "the file was modified" in r["error"] for r in refused)
    assert refused[0]["phases"] == []  # refused before an engine process was spawned for it
    assert [r for r in log if r["outcome"] == "ok" and r["event"] == "start"] == [started]
    assert audit_verify(srv.data_dir).returncode == 0
    print(f"\n[reliability] byte flip, mtime put back: {body['error']['message'][:120]}...; "
          f"{len(refused)} refused-start audit record(s)")


def test_without_the_start_check_the_audit_record_carries_the_digest_of_the_bytes_served(start_server, tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(smol_file().read_bytes())
    srv = start_server([model("copy", copy)], sections={"store": {"verify_on_start": False}})
    assert serve_once(srv, "copy") == 200
    flip_a_byte_and_put_the_mtime_back(copy)
    assert serve_once(srv, "copy") == 200  # nothing refuses it: the start check is off
    first, second = [r for r in records(srv.data_dir / "audit") if r["model"] == "copy" and r["event"] == "start"]
    assert second["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest() != first["sha256"]
    assert (second["sha256_basis"], second["sha256_cached"]) == ("hashed", False)  # read for this start
    assert second["sha256_hashed_at"] > first["sha256_hashed_at"]
    print(f"\n[reliability] start check off, byte flip with the mtime put back: the start's audit record "
          f"carries the new sha256 {second['sha256'][:12]} ({json.dumps(second['sha256_basis'])}), "
          f"not the cached {first['sha256'][:12]}")
