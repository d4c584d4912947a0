"""Manifests: digests computed once, cheap checks before a start, mismatches refused, verify re-hashes."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from warmstart.errors import IntegrityError, StoreError
from warmstart.store.manifest import ManifestStore
from warmstart.store.sources import resolve_model_path


@pytest.fixture
def model(tmp_path):
    f = tmp_path / "models" / "tiny.gguf"
    f.parent.mkdir()
    f.write_bytes(b"GGUF" + os.urandom(4096))
    return f


def test_add_records_name_engine_format_size_and_sha256(tmp_path, model):
    store = ManifestStore(tmp_path / "data")
    m = store.add(model)
    assert (m.name, m.engine, m.format, m.size, m.pinned) == ("tiny", "llamacpp", "gguf", 4100, True)
    assert m.files[0].sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert m.source == f"add {model}"
    assert [x.name for x in ManifestStore(tmp_path / "data").list()] == ["tiny"]  # persisted
    with pytest.raises(StoreError, match="already in the store"):
        store.add(model)
    assert resolve_model_path("store:tiny", tmp_path / "data") == model
    with pytest.raises(StoreError, match="no model named 'other' in the store"):
        resolve_model_path("store:other", tmp_path / "data")


def test_the_start_check_hashes_once_then_only_stats(tmp_path, model):
    store = ManifestStore(tmp_path / "data")
    first = store.check("tiny-model", model, engine="llamacpp", source="path")
    assert not first.pinned and store.digests.hashed == 1  # trust on first use
    for _ in range(3):
        store.check("tiny-model", model, engine="llamacpp", source="path")
    assert store.digests.hashed == 1
    restarted = ManifestStore(tmp_path / "data")  # the digest cache survives a restart
    restarted.check("tiny-model", model, engine="llamacpp", source="path")
    assert restarted.digests.hashed == 0


def test_a_touched_file_with_the_same_bytes_passes_after_one_rehash(tmp_path, model):
    store = ManifestStore(tmp_path / "data")
    store.check("m", model, engine="llamacpp", source="path")
    os.utime(model, ns=(10**18, 10**18))
    store.check("m", model, engine="llamacpp", source="path")
    assert store.digests.hashed == 2
    store.check("m", model, engine="llamacpp", source="path")
    assert store.digests.hashed == 2  # the manifest took the new mtime


def test_modified_truncated_or_missing_files_are_refused(tmp_path, model):
    store = ManifestStore(tmp_path / "data")
    store.check("m", model, engine="llamacpp", source="path")
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model 'm': .*tiny.gguf has sha256 .* its manifest says .*modified"):
        store.check("m", model, engine="llamacpp", source="path")
    model.write_bytes(bytes(data[:50]))
    with pytest.raises(IntegrityError, match="is 50 bytes, its manifest says 4100"):
        store.check("m", model, engine="llamacpp", source="path")
    model.unlink()
    with pytest.raises(StoreError, match=r"not found|missing"):
        store.check("m", model, engine="llamacpp", source="path")


def test_pinned_models_refuse_other_files_unpinned_follow_their_config(tmp_path, model):
    other = model.with_name("other.gguf")
    other.write_bytes(b"GGUF other")
    store = ManifestStore(tmp_path / "data")
    store.add(model, name="pinned")
    with pytest.raises(IntegrityError, match="pinned in the store"):
        store.check("pinned", other, engine="llamacpp", source="path")
    store.check("loose", model, engine="llamacpp", source="path")
    moved = store.check("loose", other, engine="llamacpp", source="path")
    assert moved.files[0].path == str(other)


def flip_a_byte_and_put_the_mtime_back(model, offset: int = 7) -> bytes:
    st = model.stat()
    data = bytearray(model.read_bytes())
    data[offset] ^= 1
    with open(model, "r+b") as f:  # same size, same inode, mtime put back: only ctime tells
        f.write(bytes(data))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    return bytes(data)


def test_a_byte_flip_with_the_mtime_put_back_is_refused_by_the_start_check(tmp_path, model):
    store = ManifestStore(tmp_path / "data")
    store.check("m", model, engine="llamacpp", source="path")
    flip_a_byte_and_put_the_mtime_back(model)
    with pytest.raises(IntegrityError, match=r"model 'm': .*tiny.gguf has sha256 .* its manifest says .*modified"):
        store.check("m", model, engine="llamacpp", source="path")
    assert store.digests.hashed == 2
    with pytest.raises(IntegrityError, match="modified"):  # and at every start after, restarted too
        ManifestStore(tmp_path / "data").check("m", model, engine="llamacpp", source="path")


def test_a_manifest_without_ctime_is_rehashed_once_then_trusted_by_stat(tmp_path, model):
    store = ManifestStore(tmp_path / "data")
    store.check("m", model, engine="llamacpp", source="path")
    [manifest] = store.folder.glob("*.json")
    written = json.loads(manifest.read_text())
    for entry in written["files"]:  # as a manifest written before ctime was recorded
        del entry["ctime_ns"], entry["device"]
    manifest.write_text(json.dumps(written))
    flip_a_byte_and_put_the_mtime_back(model)
    with pytest.raises(IntegrityError, match="modified"):  # no ctime to trust: hashed, and the flip found
        ManifestStore(tmp_path / "data").check("m", model, engine="llamacpp", source="path")
    flip_a_byte_and_put_the_mtime_back(model)  # flipped back
    fresh = ManifestStore(tmp_path / "data")
    assert fresh.check("m", model, engine="llamacpp", source="path").files[0].ctime_ns == model.stat().st_ctime_ns
    fresh.check("m", model, engine="llamacpp", source="path")
    assert fresh.digests.hashed == 1


def test_verify_rehashes_and_what_it_finds_refuses_every_start(tmp_path, model):
    store = ManifestStore(tmp_path / "data")
    store.add(model, name="m")
    assert [c.status for c in store.verify("m")] == ["ok"]
    data = flip_a_byte_and_put_the_mtime_back(model)
    [check] = store.verify("m")
    assert check.status == "changed" and check.actual == hashlib.sha256(data).hexdigest()
    with pytest.raises(IntegrityError, match="modified"):  # what verify found refuses every start
        store.check("m", model, engine="llamacpp", source="path")
    flip_a_byte_and_put_the_mtime_back(model)  # restored: starts pass again
    store.check("m", model, engine="llamacpp", source="path")
    assert store.get("m").failed_verify == ()
    model.unlink()
    assert [c.status for c in store.verify("m")] == ["missing"]


def test_a_folder_model_lists_every_file(tmp_path):
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    m = ManifestStore(tmp_path / "data").add(folder)
    assert (m.name, m.format, m.engine, len(m.files)) == ("hf-model", "safetensors", "vllm", 2)
    with pytest.raises(StoreError, match="not valid"):
        ManifestStore(tmp_path / "data").add(folder, name="../escape")


def _hf_snapshot(tmp_path):
    """A Hugging Face download: the snapshot's files are links into the blob store (names that are digests),
    and `--local-dir`-style metadata under a hidden `.cache` folder, rewritten by every later download."""
    blobs = tmp_path / "hub" / "blobs"
    snap = tmp_path / "hub" / "snapshots" / "rev1"
    blobs.mkdir(parents=True)
    (snap / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (blobs / "a1b2").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (blobs / "c3d4").write_bytes(b"\0" * 64)
    (snap / "config.json").symlink_to(blobs / "a1b2")
    (snap / "model.safetensors").symlink_to(blobs / "c3d4")
    meta = snap / ".cache" / "huggingface" / "download" / "model.safetensors.metadata"
    meta.write_text('{"etag": "1"}')
    return snap, meta


def test_a_hugging_face_snapshot_is_safetensors_for_vllm_and_its_download_cache_is_not_the_model(tmp_path):
    from warmstart.cluster.weights import folder_files as cluster_files
    from warmstart.telemetry.audit import weights_digest

    snap, meta = _hf_snapshot(tmp_path)
    store = ManifestStore(tmp_path / "data")
    m = store.add(snap, name="hf")
    # named by the links, not by the blobs they point to (which once made it "unknown", for engine "command")
    assert (m.format, m.engine) == ("safetensors", "vllm")
    assert sorted(os.path.basename(f.path) for f in m.files) == ["a1b2", "c3d4"]
    # the cluster sends exactly the files the manifest checks
    assert [rel for rel, _ in cluster_files(snap)] == ["config.json", "model.safetensors"]
    digest = weights_digest(store.digests, snap).sha256
    meta.write_text('{"etag": "2", "checked": "again"}')  # a later `hf download` rewrote its metadata
    assert store.check("hf", snap, engine="vllm", source="x").files == m.files  # still the pinned model
    assert weights_digest(store.digests, snap).sha256 == digest  # the audit record's digest did not move


def test_a_manifest_that_counted_a_hidden_folder_s_files_drops_them_once_and_still_checks_the_rest(tmp_path):
    snap, meta = _hf_snapshot(tmp_path)
    store = ManifestStore(tmp_path / "data")
    store.add(snap, name="hf")
    # as written before hidden folders were left out: the metadata file was one of the model's files
    path = tmp_path / "data" / "store" / "manifests" / "hf.json"
    doc = json.loads(path.read_text())
    doc["files"].append({**doc["files"][0], "path": str(meta.resolve()), "sha256": "0" * 64})
    path.write_text(json.dumps(doc))
    assert len(store.get("hf").files) == 3
    checked = store.check("hf", snap, engine="vllm", source="x")
    assert len(checked.files) == 2 and len(store.get("hf").files) == 2  # written back without it
    (tmp_path / "hub" / "blobs" / "c3d4").write_bytes(b"\1" * 64)  # the weights themselves are still checked
    with pytest.raises(IntegrityError, match="was modified"):
        store.check("hf", snap, engine="vllm", source="x")
