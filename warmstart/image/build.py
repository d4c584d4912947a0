"""`warmstart image build`: gather a build context (Containerfile, config, wheels, the model with its
seal) for one model of the config, check the model's digests against the store, and build it with buildah.

The context is a plain folder that `docker build` builds the same way; nothing in it is fetched at
build time except by pip on the host, into a wheel folder kept in the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import warmstart
from warmstart.config import Config, ModelConfig
from warmstart.errors import ImageError
from warmstart.image import tools
from warmstart.image.containerfile import ImageSpec, ModelFile, containerfile, seals_json, warmstart_toml
from warmstart.image.wheels import stripped

# the engine's Python packages beyond warmstart's own dependencies (llama.cpp's xllamacpp is one of those)
ENGINE_PACKAGES = {"llamacpp": (), "vllm": ("vllm",)}
GPU_BASE = "docker.io/nvidia/cuda:12.8.1-runtime-ubuntu24.04"
BASE_PYTHON = (3, 11)  # Debian 12's python3, in the default base


@dataclass(frozen=True)
class BuildResult:
    tag: str
    context: Path
    bytes: int
    layers: int
    seconds: float
    phases: dict[str, float]


def model_config(config: Config, name: str) -> ModelConfig:
    for m in config.models:
        if m.name == name:
            return m
    names = ", ".join(m.name for m in config.models)
    raise ImageError(f"no model named {name!r} in the config; choose one of: {names}")


def checked_files(config: Config, model: ModelConfig) -> tuple[Path, list[tuple[Path, ModelFile]]]:
    """The model's files with their sha256, checked against the store's manifest (hashed on first use,
    re-hashed when a file changed, refused when it differs from a pinned manifest)."""
    from warmstart.store.manifest import ManifestStore, model_entries
    from warmstart.store.sources import resolve_model_path

    root = resolve_model_path(model.path, config.server.data_dir)
    manifest = ManifestStore(config.server.data_dir).check(model.name, root, engine=model.engine,
                                                           source=model.path)
    # each file by the name the model gives it, not its target's: a pulled model's file and a Hugging Face
    # snapshot's are links into a blob store, named by digests
    names = {str(path): name for name, path in model_entries(root)}
    files = [(Path(f.path), ModelFile(names[f.path], f.sha256, f.size)) for f in manifest.files]
    return root, files


def _pip(args: list[str], timeout: float = 1800) -> None:
    argv = [sys.executable, "-m", "pip", *args]
    # a fixed time in the wheel's zip entries: the same source makes the same wheel, so the image's install
    # layer is rebuilt only when warmstart changed
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "SOURCE_DATE_EPOCH": "315532800"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise ImageError(f"pip {args[0]} failed: {tail}")


def source_tree() -> Path | None:
    """The source folder of this warmstart when it runs from one (an editable install), else None."""
    root = Path(warmstart.__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def own_wheel(store: Path) -> Path:
    """warmstart's own wheel: built from the source tree it runs from, else the released one of its version."""
    own = store / "warmstart"
    shutil.rmtree(own, ignore_errors=True)
    tree = source_tree()
    if tree is not None:
        _pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(own), str(tree)])
    else:
        _pip(["download", "--quiet", "--no-deps", "--dest", str(own), f"warmstart=={warmstart.__version__}"])
    return next(own.glob("warmstart-*.whl"))


def gather_wheels(wheels: Path, cache: Path, extra: tuple[str, ...], *, own_only: bool = False,
                  strip: bool = True) -> tuple[str, tuple[str, ...]]:
    """warmstart's wheel, its dependencies' and pip's own, into `wheels` (hard links into the cache), with
    their libraries' debug information stripped (`strip`). Only the wheels this install resolves go in: the
    cache may hold others (older versions, other engines), and each one would change the wheels' digest, so
    rebuild the install layer for nothing. Returns pip's wheel file name and what to install."""
    store = cache / "wheels"
    store.mkdir(parents=True, exist_ok=True)
    wheel = own_wheel(store)
    wheels.mkdir(parents=True)
    if own_only:
        shutil.copy2(wheel, wheels / wheel.name)
        return "", ()
    # pip saves into `wheels` exactly the wheels it resolved (from the cache when there, else the index)
    _pip(["wheel", "--quiet", "--find-links", str(store), "--wheel-dir", str(wheels), str(wheel), *extra, "pip"])
    if not (wheels / wheel.name).exists():
        shutil.copy2(wheel, wheels / wheel.name)
    for f in sorted(wheels.glob("*.whl")):
        if f.name == wheel.name:
            continue
        cached = store / f.name
        if not cached.exists():  # downloaded now: kept for the next build
            _link(f, cached)
        if strip and (smaller := stripped(cached, cache / "stripped")) != cached:
            f.unlink()
            _link(smaller, f)
    pip = sorted(wheels.glob("pip-*.whl"))[-1].name
    return pip, (wheel.name.split("-")[0], *extra)


def _link(source: Path, target: Path) -> None:
    """A hard link where both are on one file system, else a copy."""
    if source.stat().st_dev == target.parent.stat().st_dev:
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def wheels_digest(wheels: Path) -> str:
    from warmstart.store.digest import sha256_file

    listing = "".join(f"{sha256_file(f)}  {f.name}\n" for f in sorted(wheels.glob("*.whl")))
    return hashlib.sha256(listing.encode()).hexdigest()


def write_context(context: Path, spec: ImageSpec, files: list[tuple[Path, ModelFile]]) -> None:
    models = context / "models" / spec.model
    models.mkdir(parents=True)
    for source, entry in files:
        target = models / entry.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        # read-only to everyone; a whole-second mtime survives every layer format unchanged (the seal compares it)
        target.chmod(0o444)
        seconds = int(source.stat().st_mtime)
        os.utime(target, (seconds, seconds))
    (context / "models" / "seals.json").write_text(seals_json(spec))
    (context / "warmstart.toml").write_text(warmstart_toml(spec))
    (context / "Containerfile").write_text(containerfile(spec))


def prepare(config: Config, name: str, *, context: Path, cache: Path, base: str, engine: str | None = None,
            gpu: bool = False) -> tuple[ImageSpec, dict[str, float]]:
    """Writes the build context for model `name` into `context` (which must not exist)."""
    phases: dict[str, float] = {}
    model = model_config(config, name)
    engine = engine or model.engine
    if gpu and engine != "vllm":
        raise ImageError(f"the GPU variant runs vLLM; model {name!r} is served by {engine}: pass a model whose "
                         "engine is vllm (a safetensors folder), or build the CPU image without --gpu")
    if engine not in ENGINE_PACKAGES:
        raise ImageError(f"engine {engine!r} cannot be baked into an image; choose one of: "
                         f"{', '.join(ENGINE_PACKAGES)}")
    if context.exists():
        raise ImageError(f"{context} exists; pass another --context or remove it")
    if not gpu and base.startswith("localhost/warmstart-base:") and sys.version_info[:2] != BASE_PYTHON:
        raise ImageError(f"the default base has Python {BASE_PYTHON[0]}.{BASE_PYTHON[1]}, and the wheels are gathered "
                         f"by this Python ({sys.version_info[0]}.{sys.version_info[1]}): run warmstart with Python "
                         f"{BASE_PYTHON[0]}.{BASE_PYTHON[1]}, or pass --base with an image of this Python")
    t = time.monotonic()
    _root, files = checked_files(config, model)
    phases["check_digests"] = time.monotonic() - t
    t = time.monotonic()
    context.mkdir(parents=True)
    extra = ENGINE_PACKAGES[engine]
    # the GPU image installs its engine from the index at build: its wheels are for the base's Python
    pip, requirements = gather_wheels(context / "wheels", cache, extra, own_only=gpu)
    phases["wheels"] = time.monotonic() - t
    spec = ImageSpec(model=name, engine=engine, files=tuple(f for _, f in files), base=base, pip_wheel=pip,
                     wheels_sha256=wheels_digest(context / "wheels"), requirements=requirements,
                     options=dict(model.options), chat=model.chat, gpu=gpu)
    t = time.monotonic()
    write_context(context, spec, files)
    phases["context"] = time.monotonic() - t
    return spec, phases


def build(context: Path, tag: str, *, timeout: float = 1800) -> None:
    """buildah, with the network off for every RUN and layers cached, so a new model rebuilds only its layers."""
    tools.run("buildah", ["build", "--quiet", "--format=docker", "--layers", "--network=none",
                          "--pull=never", "-f", str(context / "Containerfile"), "-t", tag, str(context)],
              timeout=timeout)
