"""deploy/kubernetes/warmstart.yaml: valid against the Kubernetes schemas (offline, strict), and consistent
with the image it runs: the config it mounts is one warmstart accepts and names the image's model and
seal, the probes ask the image's port and paths, preStop runs a command warmstart has."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.support import ROOT
from warmstart.cli import build_parser
from warmstart.config_loader import parse_config
from warmstart.image.containerfile import PORT, SEALS, ImageSpec, ModelFile

MANIFEST = ROOT / "deploy" / "kubernetes" / "warmstart.yaml"
DOCS = list(yaml.safe_load_all(MANIFEST.read_text()))
KINDS = {d["kind"]: d for d in DOCS}


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("doc", DOCS, ids=[d["kind"] for d in DOCS])
def test_each_resource_is_valid_for_kubernetes(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_refuses_a_misspelt_field() -> None:
    bad = copy.deepcopy(KINDS["Deployment"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(bad, "1.30.0", strict=True)


def container() -> dict:
    return KINDS["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def test_probes_and_ports_are_the_images() -> None:
    c = container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["ports"][0]["containerPort"] == PORT
    assert KINDS["Service"]["spec"]["selector"] == KINDS["Deployment"]["spec"]["selector"]["matchLabels"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert KINDS["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_pre_stop_drains_with_a_command_warmstart_has() -> None:
    argv = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert argv[:2] == ["warmstart", "drain"]
    args = build_parser().parse_args(argv[1:])
    grace = KINDS["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert args.settle + args.timeout + 5 < grace  # the drain, then the server's own 5 s, within the grace period


def test_the_mounted_config_is_valid_and_names_the_images_model_and_seal() -> None:
    text = KINDS["ConfigMap"]["data"]["warmstart.toml"]
    raw = tomllib.loads(text)
    raw["auth"] = {"api_keys": ["k" * 24]}  # from the Secret, as WARMSTART_API_KEYS
    config = parse_config(raw, Path("/"))
    spec = ImageSpec(model="smollm2-135m-instruct", engine="llamacpp", base="", pip_wheel="", wheels_sha256="",
                     requirements=(), files=(ModelFile("SmolLM2-135M-Instruct.Q4_1.gguf", "0" * 64, 1),))
    (model,) = config.models
    assert (model.name, model.path, str(config.store.seals)) == (spec.model, spec.model_path, SEALS)
    assert config.warming.schedules and config.warming.hint.enabled  # pre-warm and hints, as config
