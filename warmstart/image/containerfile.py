"""The Containerfile of a warmstart image and the warmstart.toml baked into it: pure text from an ImageSpec.

Layers, in order of how often they change: the base (Debian packages) -> warmstart, its engine and a
non-root user (one RUN, from wheels in the build context: no index, no pip, no compiler, no cache left
in the image) -> the config -> the model and its seal (its own layer, so a new model version rebuilds
only it) -> a check of the model's digests inside the image, so a context changed after the host
checked it fails the build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VENV = "/opt/warmstart"
MODELS_DIR = "/opt/models"
DATA_DIR = "/var/lib/warmstart"
CONFIG = "/etc/warmstart/warmstart.toml"
SEALS = f"{MODELS_DIR}/seals.json"
PORT = 8000
UID = 10001
# what the GPU variant installs from the index besides warmstart (the CPU image's engine is a dependency)
ENGINE_PIP = {"vllm": ("vllm",), "llamacpp": ()}
# the health check asks /readyz from inside the container: Python is all the image has to ask with
_READYZ = (f"import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:{PORT}/readyz', "
           "timeout=4).status != 200)")


@dataclass(frozen=True)
class ModelFile:
    name: str  # relative to the model's folder
    sha256: str
    size: int


@dataclass(frozen=True)
class ImageSpec:
    model: str
    engine: str  # llamacpp | vllm
    files: tuple[ModelFile, ...]
    base: str
    pip_wheel: str  # the pip wheel in wheels/ that installs the others (run from the wheel, never installed)
    wheels_sha256: str  # of the wheels' names and digests: a label, so a changed wheel rebuilds the install layer
    requirements: tuple[str, ...]  # what pip installs from wheels/: warmstart and the engine's packages
    options: dict[str, Any] = field(default_factory=dict)  # the engine options of the model's config
    chat: bool | None = None
    gpu: bool = False

    @property
    def model_dir(self) -> str:
        return f"{MODELS_DIR}/{self.model}"

    @property
    def model_path(self) -> str:
        """What the config's `path` names: the file, or the folder of a multi-file model."""
        return f"{self.model_dir}/{self.files[0].name}" if len(self.files) == 1 else self.model_dir


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ValueError(f"cannot write {value!r} as TOML")


def warmstart_toml(spec: ImageSpec) -> str:
    """The config baked into the image. Everything in it can be overridden at `run` time by WARMSTART_*
    variables (host, port, keys) or by mounting another file at CONFIG."""
    lines = [
        "# Baked into the image by `warmstart image build`; mount your own at " + CONFIG + " to change it.",
        "[server]",
        '# inside a container the published port reaches the server only on 0.0.0.0; API keys are then',
        '# required: pass WARMSTART_API_KEYS (or mount a config with auth.api_keys_file)',
        'host = "0.0.0.0"',
        f"port = {PORT}",
        f'data_dir = "{DATA_DIR}"',
        "",
        "[store]",
        "# the model's digests, checked at build; trusted at start while the file is the one sealed",
        f'seals = "{SEALS}"',
        "",
        "[[models]]",
        f'name = "{spec.model}"',
        f'engine = "{spec.engine}"',
        f'path = "{spec.model_path}"',
        "# one model per container: the container is what scales to zero, so the model stays loaded",
        'keep_alive = "-1"',
    ]
    if spec.options:
        lines.append(f"options = {toml_value(spec.options)}")
    if spec.chat is not None:
        lines.append(f"chat = {toml_value(spec.chat)}")
    lines += [
        "",
        "# warm the model as the container starts, not at its first request",
        "[[warming.schedule]]",
        f'model = "{spec.model}"',
        'when = ["00:00-24:00 daily"]',
    ]
    return "\n".join(lines) + "\n"


def seals_json(spec: ImageSpec) -> str:
    from warmstart.store.seal import seal_document

    return seal_document([(f"{spec.model_dir}/{f.name}", f.size, f.sha256) for f in spec.files])


def _install_cpu(spec: ImageSpec) -> list[str]:
    install = " ".join(spec.requirements)
    return [
        "# warmstart and its engine, installed from the wheels beside this file by pip run from its own wheel:",
        "# no package index, no pip, no compiler and no cache are left in the image",
        "RUN --mount=type=bind,source=wheels,target=/wheels \\",
        f"    python3 -m venv --without-pip {VENV} \\",
        f" && {VENV}/bin/python /wheels/{spec.pip_wheel}/pip install --no-index --find-links /wheels \\",
        f"      --no-cache-dir --disable-pip-version-check --no-warn-script-location {install} \\",
        f" && echo 'warmstart:x:{UID}:{UID}:warmstart:{DATA_DIR}:/usr/sbin/nologin' >> /etc/passwd \\",
        f" && echo 'warmstart:x:{UID}:' >> /etc/group \\",
        f" && mkdir -p {DATA_DIR} /etc/warmstart && chown {UID}:{UID} {DATA_DIR} \\",
        " && rm -rf /root/.cache /tmp/* /var/cache/* /var/log/*",
    ]


def _install_gpu(spec: ImageSpec) -> list[str]:
    """The CUDA variant: the base brings CUDA's runtime; Python and vLLM (its CUDA wheels) come from the
    index at build, warmstart from its wheel beside this file. Written and documented; built only on a
    machine with a GPU (docs/image.md)."""
    packages = " ".join(ENGINE_PIP.get(spec.engine, ()))
    return [
        "# Python from the base's distribution, then warmstart's wheel and the engine's CUDA build from the index;",
        "# pip, apt's lists and every cache are removed in the same layer",
        "RUN --mount=type=bind,source=wheels,target=/wheels \\",
        " apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \\",
        f" && python3 -m venv {VENV} \\",
        f" && {VENV}/bin/pip install --no-cache-dir /wheels/warmstart-*.whl {packages} \\",
        f" && {VENV}/bin/pip uninstall -y pip \\",
        f" && echo 'warmstart:x:{UID}:{UID}:warmstart:{DATA_DIR}:/usr/sbin/nologin' >> /etc/passwd \\",
        f" && echo 'warmstart:x:{UID}:' >> /etc/group \\",
        f" && mkdir -p {DATA_DIR} /etc/warmstart && chown {UID}:{UID} {DATA_DIR} \\",
        " && apt-get purge -y --auto-remove python3-venv && apt-get clean \\",
        " && rm -rf /var/lib/apt/lists/* /root/.cache /tmp/* /var/log/*",
    ]


def containerfile(spec: ImageSpec) -> str:
    return "\n".join([
        "# Written by `warmstart image build`; build it with",
        "#   buildah build --format docker --layers -f Containerfile -t TAG .",
        "#   docker build -t TAG .            (BuildKit, for RUN --mount)",
        "# from this folder, after making the base image it names (docs/image.md says how).",
        f"FROM {spec.base}",
        "",
        "# builders cache a RUN by its text, not by what it mounts: the wheels' digest makes a new wheel a new layer",
        f"LABEL org.warmstart.wheels-sha256={spec.wheels_sha256}",
        *(_install_gpu(spec) if spec.gpu else _install_cpu(spec)),
        "",
        f"COPY warmstart.toml {CONFIG}",
        "",
        "# the model in its own layer (owned by root, read-only to the server's user) with its seal; the RUN",
        "# re-hashes it inside the image against the digests checked on the host and stamps the seal",
        f"COPY models/ {MODELS_DIR}/",
        f"RUN {VENV}/bin/python -m warmstart.store.seal {SEALS}",
        "",
        f"ENV PATH={VENV}/bin:/usr/sbin:/usr/bin:/sbin:/bin WARMSTART_CONFIG={CONFIG} PYTHONDONTWRITEBYTECODE=1",
        f"USER {UID}:{UID}",
        f"WORKDIR {DATA_DIR}",
        f"EXPOSE {PORT}",
        "HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \\",
        f"  CMD [\"{VENV}/bin/python\", \"-c\", {json.dumps(_READYZ)}]",
        "STOPSIGNAL SIGTERM",
        f"ENTRYPOINT [\"{VENV}/bin/warmstart\"]",
        'CMD ["serve"]',
        "",
    ])
