"""`warmstart image build --model NAME -t TAG`: an OCI image of warmstart with one model baked in;
`warmstart drain`: wait until a server has nothing in flight (a container's preStop)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from warmstart.cli.base import CLIError, _client_flags, call, command, load
from warmstart.progress import Progress


def default_cache() -> Path:
    return Path(os.environ.get("WARMSTART_IMAGE_CACHE") or Path.home() / ".cache" / "warmstart" / "image")


def register(sub: argparse._SubParsersAction) -> None:
    image = sub.add_parser("image", help="build an OCI image with a model baked in (podman/buildah, no daemon)")
    isub = image.add_subparsers(dest="image_command", metavar="ACTION", parser_class=type(image))
    b = isub.add_parser("build", help="build an image of warmstart, its engine and one model of the config")
    b.add_argument("--config", help="path to warmstart.toml (default: ./warmstart.toml if present)")
    b.add_argument("--data-dir", help="the data directory whose store holds the model's manifest")
    b.add_argument("--model", help="the model to bake in (default: the config's first, smollm2-135m-instruct "
                                    "without a config)")
    b.add_argument("--engine", choices=("llamacpp", "vllm"), help="default: the model's engine")
    b.add_argument("--base", help="base image (default: Debian bookworm made with mmdebstrap, cached)")
    b.add_argument("-t", "--tag", help="image name (default: localhost/warmstart-MODEL:latest)")
    b.add_argument("--context", help="where the build context and its Containerfile are written "
                                     "(default: ./warmstart-image-MODEL)")
    b.add_argument("--cache", help="base tarball and wheels "
                                   "(default: $WARMSTART_IMAGE_CACHE or ~/.cache/warmstart/image)")
    b.add_argument("--gpu", action="store_true", help="the CUDA variant: write its context; build it only with --build")
    b.add_argument("--build", action="store_true", help="with --gpu: build it too (on a machine with a GPU)")
    b.add_argument("--no-build", action="store_true", help="write the context and Containerfile only")

    d = sub.add_parser("drain", help="wait until the server has no request in flight or held (a preStop hook)")
    _client_flags(d)
    d.add_argument("--settle", type=float, default=5.0,
                   help="seconds to wait first, while the load balancer stops sending here (default %(default)s)")
    d.add_argument("--timeout", type=float, default=50.0, help="give up after this many seconds (default %(default)s)")


def busy(models: list[dict[str, Any]]) -> int:
    """Requests a server is still working on: in flight on a replica, or held in a model's queue."""
    return sum(m.get("queue_depth", 0) + sum(r.get("in_flight", 0) for r in m.get("replicas", [])) for m in models)


@command("drain")
def _drain(args: argparse.Namespace) -> int:
    if not args.api_key and os.environ.get("WARMSTART_API_KEYS"):  # inside the server's container
        args.api_key = os.environ["WARMSTART_API_KEYS"].split(",")[0].strip()
    time.sleep(max(0.0, args.settle))
    end = time.monotonic() + args.timeout
    while True:
        status, payload = call(args, "GET", "/v1/models", timeout=10)
        if status != 200:
            raise CLIError(f"cannot read the server's models (HTTP {status}); pass --api-key")
        left = busy(payload["data"])
        if left == 0:
            print("drained: no request in flight or held")
            return 0
        if time.monotonic() >= end:
            raise CLIError(f"{left} request(s) still in flight or held after {args.timeout:g} s")
        time.sleep(0.5)


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


@command("image")
def _image(args: argparse.Namespace) -> int:
    from warmstart.image import base as bases
    from warmstart.image import build, tools

    if getattr(args, "image_command", None) != "build":
        raise CLIError("say what to do: warmstart image build --model NAME -t TAG", status=2)
    config = load(args, {"server.data_dir": args.data_dir})
    args.model = args.model or config.models[0].name
    context = Path(args.context or f"warmstart-image-{args.model.replace('/', '-')}").resolve()
    cache = Path(args.cache).expanduser() if args.cache else default_cache()
    tag = args.tag or f"localhost/warmstart-{args.model.replace('/', '-').lower()}:latest"
    write_only = args.no_build or (args.gpu and not args.build)
    t0 = time.monotonic()
    if args.base:
        base = args.base
    elif args.gpu:
        base = build.GPU_BASE
    elif write_only:
        base = bases.BaseRecipe().ref
    else:
        base = bases.ensure_base(bases.BaseRecipe(), cache)
    spec, _phases = build.prepare(config, args.model, context=context, cache=cache, base=base,
                                  engine=args.engine, gpu=args.gpu)
    print(f"wrote {context / 'Containerfile'} ({spec.model}, {spec.engine}, digests checked: "
          f"{', '.join(f.sha256[:12] for f in spec.files)})")
    if write_only:
        print(f"build it with: buildah build --format docker --layers -t {tag} {context}")
        return 0
    with Progress(f"image build {tag}") as progress:
        progress.update("buildah build (base, packages, model layers)")
        build.build(context, tag)
    print(f"built {tag}: {_size(tools.image_bytes(tag))}, {len(tools.layers(tag))} layers, "
          f"{time.monotonic() - t0:.0f} s; run it with\n"
          f"  podman run --rm -p 127.0.0.1:8000:8000 -e WARMSTART_API_KEYS=$(openssl rand -hex 24) {tag}")
    return 0
