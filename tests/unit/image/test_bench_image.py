"""`warmstart bench image --model`: the naive image serves the same model with the same engine options as
warmstart's image, and a model the naive image cannot download as one file is refused by name."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from warmstart.bench.image import bench_model, naive_config
from warmstart.config_loader import load_config, parse_config
from warmstart.errors import ImageError
from warmstart.image.containerfile import ImageSpec, ModelFile, warmstart_toml


def test_the_naive_config_serves_the_model_with_the_options_warmstarts_image_bakes(tmp_path: Path) -> None:
    weights = tmp_path / "big.gguf"
    weights.write_bytes(b"GGUF")
    config = parse_config({"server": {"data_dir": str(tmp_path / "data")},
                           "models": [{"name": "big", "engine": "llamacpp", "path": str(weights),
                                       "options": {"n_ctx": 4096, "n_batch": 256}}]}, base_dir=tmp_path)
    model, path = bench_model(config, "big")
    assert path == weights
    naive = tomllib.loads(naive_config(model))["models"][0]
    spec = ImageSpec(model="big", engine="llamacpp", files=(ModelFile("big.gguf", "0" * 64, 4),), base="b",
                     pip_wheel="pip.whl", wheels_sha256="0" * 64, requirements=("warmstart",),
                     options=dict(model.options))
    baked = tomllib.loads(warmstart_toml(spec))["models"][0]
    assert naive["name"] == baked["name"] == "big"
    assert naive["options"] == baked["options"] == {"n_ctx": 4096, "n_batch": 256}
    assert naive["path"] == "/models/model.gguf" and naive["keep_alive"] == baked["keep_alive"] == "-1"


def test_the_embedded_model_is_the_default_and_its_options_are_kept(tmp_path: Path) -> None:
    config = load_config(None, {}, {"server.data_dir": str(tmp_path)})
    model, path = bench_model(config, "smollm2-135m-instruct")
    assert path.is_file() and path.suffix == ".gguf"
    assert tomllib.loads(naive_config(model))["models"][0]["options"] == {"n_ctx": 2048}


def test_a_model_in_a_folder_or_unknown_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    config = parse_config({"server": {"data_dir": str(tmp_path / "data")},
                           "models": [{"name": "ckpt", "engine": "vllm", "path": str(folder)}]}, base_dir=tmp_path)
    with pytest.raises(ImageError, match=r"one GGUF file.*'ckpt'"):
        bench_model(config, "ckpt")
    with pytest.raises(ImageError, match="no model named 'nope'"):
        bench_model(config, "nope")
