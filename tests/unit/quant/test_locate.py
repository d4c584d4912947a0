"""Which file `warmstart eval` and `quantize` read for a model named by the store or the config: a folder holding a
GGUF model (a Hugging Face snapshot) is that GGUF, as llama.cpp's tools need a file."""

from __future__ import annotations

from warmstart.quant.evaluate import locate
from warmstart.store.manifest import ManifestStore


def test_a_store_model_whose_folder_holds_a_gguf_is_located_as_that_file(tmp_path):
    blob = tmp_path / "blobs" / "9f8e"
    blob.parent.mkdir()
    blob.write_bytes(b"GGUF" + b"\1" * 60)
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "m.Q4_K_M.gguf").symlink_to(blob)
    (snap / "README.md").write_text("#")
    store = ManifestStore(tmp_path / "data")
    store.add(snap, name="snap")
    subject = locate("store:snap", store, None)
    assert (subject.path, subject.store_name) == (snap / "m.Q4_K_M.gguf", "snap")
    # a folder holding no GGUF (a safetensors checkpoint) is left as it is
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "model.safetensors").write_bytes(b"\0" * 8)
    store.add(tmp_path / "st", name="st")
    assert locate("st", store, None).path == tmp_path / "st"
