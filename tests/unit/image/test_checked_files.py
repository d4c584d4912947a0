"""The model files an image is built with keep the names the model gives them: a pulled model's file and a
Hugging Face snapshot's are links into a blob store, named by digests (this was a ValueError: the blob is not
under the snapshot folder)."""

from __future__ import annotations

from pathlib import Path

from warmstart.config_loader import load_config
from warmstart.image.build import checked_files, model_config


def _config(tmp_path: Path, path: Path) -> Path:
    toml = tmp_path / "warmstart.toml"
    toml.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n[[models]]\nname = "m"\nengine = "llamacpp"\n'
                    f'path = "{path}"\n')
    return toml


def test_a_linked_file_and_a_snapshot_folder_keep_their_names_and_their_blobs_bytes(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "9f8e").write_bytes(b"GGUF" + b"\1" * 60)
    (blobs / "a1b2").write_text("{}")
    pulled = tmp_path / "pulled" / "smol-Q4_1.gguf"
    pulled.parent.mkdir()
    pulled.symlink_to(blobs / "9f8e")
    config = load_config(_config(tmp_path, pulled))
    _root, files = checked_files(config, model_config(config, "m"))
    assert [(source, entry.name, entry.size) for source, entry in files] == [(blobs / "9f8e", "smol-Q4_1.gguf", 64)]

    snap = tmp_path / "snap"
    (snap / ".cache").mkdir(parents=True)
    (snap / ".cache" / "meta").write_text("x")  # a download's cache: not the model's
    (snap / "model.gguf").symlink_to(blobs / "9f8e")
    (snap / "config.json").symlink_to(blobs / "a1b2")
    (tmp_path / "data" / "store" / "manifests" / "m.json").unlink()  # another model under the name
    config = load_config(_config(tmp_path, snap))
    _root, files = checked_files(config, model_config(config, "m"))
    assert sorted((entry.name, source.name) for source, entry in files) == [("config.json", "a1b2"),
                                                                           ("model.gguf", "9f8e")]
