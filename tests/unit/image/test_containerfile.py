"""The Containerfile and config `warmstart image build` writes: layers in the order that keeps a model
change to the model's layer, the server's user, the health check, and a config warmstart accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from warmstart.cli import main
from warmstart.config_loader import parse_config
from warmstart.image.containerfile import SEALS, ImageSpec, ModelFile, containerfile, warmstart_toml


def spec(**kw: object) -> ImageSpec:
    base = dict(model="smollm2-135m-instruct", engine="llamacpp", base="localhost/base:1", pip_wheel="pip-24.whl",
                wheels_sha256="ab" * 32, requirements=("warmstart",), options={"n_ctx": 2048},
                files=(ModelFile("SmolLM2-135M-Instruct.Q4_1.gguf", "cd" * 32, 98362432),))
    return ImageSpec(**{**base, **kw})  # type: ignore[arg-type]


def steps(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]


def test_the_model_comes_after_everything_that_does_not_change_with_it() -> None:
    text = containerfile(spec())
    order = steps(text)
    assert order[:4] == ["FROM", "LABEL", "RUN", "COPY"]  # base, wheels' digest, install, config
    assert text.index("COPY models/") > text.index("pip install") and text.index("USER 10001") > text.rindex("RUN ")
    assert "--no-index" in text and "--no-cache-dir" in text and "/readyz" in text
    assert f"org.warmstart.wheels-sha256={'ab' * 32}" in text  # a changed wheel is a changed install layer


def test_the_gpu_variant_installs_its_engine_and_leaves_no_pip_or_apt_lists() -> None:
    text = containerfile(spec(gpu=True, engine="vllm", pip_wheel="", requirements=()))
    assert "vllm" in text and "pip uninstall -y pip" in text and "rm -rf /var/lib/apt/lists/*" in text
    assert text.index("COPY models/") > text.index("apt-get install")


def test_the_baked_config_is_valid_and_serves_the_baked_model() -> None:
    raw = tomllib.loads(warmstart_toml(spec(chat=True)))
    raw["auth"] = {"api_keys": ["k" * 20]}
    config = parse_config(raw, Path("/"))
    (model,) = config.models
    assert model.path == "/opt/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (str(config.store.seals), model.keep_alive, model.chat, dict(model.options)) == (SEALS, float("inf"), True,
                                                                                           {"n_ctx": 2048})
    assert config.warming.schedules[0].model == model.name  # warmed as the container starts


def test_a_folder_model_is_served_from_its_folder() -> None:
    two = spec(files=(ModelFile("model.safetensors", "0" * 64, 1), ModelFile("config.json", "1" * 64, 1)))
    assert two.model_path == "/opt/models/smollm2-135m-instruct"


def test_without_keys_the_baked_config_is_refused_with_the_fix() -> None:
    from warmstart.errors import ConfigError

    with pytest.raises(ConfigError, match="WARMSTART_API_KEYS"):
        parse_config(tomllib.loads(warmstart_toml(spec())), Path("/"))


def test_an_unknown_model_is_one_line_naming_the_choices(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["image", "build", "--model", "nope", "--no-build", "--context", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "smollm2-135m-instruct" in err and "nope" in err


def test_drain_counts_requests_in_flight_and_held() -> None:
    from warmstart.cli.image import busy

    models = [{"queue_depth": 2, "replicas": [{"in_flight": 1}, {"in_flight": 0}]}, {"queue_depth": 0, "replicas": []}]
    assert busy(models) == 3
    assert busy([{"queue_depth": 0, "replicas": [{"in_flight": 0}]}]) == 0
