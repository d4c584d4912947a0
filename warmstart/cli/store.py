"""`warmstart models list | add PATH | verify [NAME] | rm NAME`: the model store, read from the data directory."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmstart.cli.base import CLIError, command, data_dir_flags, load
from warmstart.cli_format import columns
from warmstart.progress import Progress

if TYPE_CHECKING:
    from warmstart.store.manifest import ManifestStore


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="the model store: manifests with sha256 digests (list, add, verify, rm)")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(models))

    ls = msub.add_parser("list", help="models in the store")
    data_dir_flags(ls)
    ls.add_argument("--json", action="store_true", help="print the manifests as JSON")
    add = msub.add_parser("add", help="hash a model file (or folder) and record its manifest")
    data_dir_flags(add)
    add.add_argument("path")
    add.add_argument("--name", help="the model's name (default: the file name without its suffix)")
    add.add_argument("--engine", choices=("llamacpp", "vllm", "command"), help="default: from the format")
    add.add_argument("--replace", action="store_true", help="replace a manifest of the same name")
    verify = msub.add_parser("verify", help="re-hash models' files against their manifests (all when no NAME)")
    data_dir_flags(verify)
    verify.add_argument("name", nargs="?")
    rm = msub.add_parser("rm", help="remove a model's manifest (its files stay where they are)")
    data_dir_flags(rm)
    rm.add_argument("name")

    pull = sub.add_parser("pull", help="download a GGUF from the Hugging Face Hub into the store "
                                       "(hf:ORG/REPO, hf:ORG/REPO:Q4_K_M or hf:ORG/REPO/FILE.gguf), or a "
                                       "repository's safetensors checkpoint for vLLM (hf:ORG/REPO)")
    data_dir_flags(pull)
    pull.add_argument("ref", metavar="hf:ORG/REPO[:QUANT]")
    pull.add_argument("--name", help="the model's name in the store (default: the repository's and the quant's)")
    pull.add_argument("--revision", help="a branch, tag or commit (default: main)")
    pull.add_argument("--replace", action="store_true", help="replace a model of the same name in the store")


@command("pull")
def _pull(args: argparse.Namespace) -> int:
    from warmstart.errors import StoreError
    from warmstart.store.pull import pull

    t = time.monotonic()
    try:
        manifest = pull(args.ref, _store(args), name=args.name, revision=args.revision, replace=args.replace)
    except StoreError as exc:
        raise CLIError(str(exc)) from None
    print(f"pulled {manifest.name}: {manifest.format}, {len(manifest.files)} file(s), {_size(manifest.size)}, "
          f"sha256 {manifest.files[0].sha256[:16]}... from "
          f"{manifest.source} ({time.monotonic() - t:.1f} s)")
    print(_served_as(manifest.name, manifest.engine, _store(args)))
    return 0


def _served_as(name: str, engine: str, store: ManifestStore) -> str:
    """What a server on this data directory does with a model just added: serves it (a running one at once)."""
    if engine == "command":
        return (f"to serve it, give it a [[models]] entry with name = \"{name}\", path = \"store:{name}\", "
                "engine = \"command\" and its command")
    return (f"served as model '{name}' by warmstart on data directory {store.root.parent} (a running server at "
            f"once, no restart); settings of its own: a [[models]] entry with path = \"store:{name}\"")


def _store(args: argparse.Namespace) -> ManifestStore:
    from warmstart.store.manifest import ManifestStore

    data_dir = Path(args.data_dir).expanduser() if args.data_dir else load(args).server.data_dir
    return ManifestStore(data_dir)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _accuracy(m: Any) -> str:
    """The gate's verdict on the model's last eval: passed, FAILED, unverified (quantized, never evaluated), or -."""
    if m.accuracy is not None:
        return f"passed (KLD {m.accuracy['kld']:.4f})" if m.accuracy.get("passed") else "FAILED"
    return "unverified" if m.quantization is not None else "-"


@command("models")
def _models(args: argparse.Namespace) -> int:
    action = args.models_command
    if action is None:
        raise CLIError("say what to do: warmstart models list | add PATH | verify [NAME] | rm NAME", status=2)
    store = _store(args)
    if action == "list":
        manifests = store.list()
        if args.json:
            print(json.dumps([m.to_dict() for m in manifests], indent=2))
            return 0
        if not manifests:
            print("no models in the store; add one with `warmstart models add PATH` (served models are added "
                  "on their first start)")
            return 0
        rows = [("NAME", "ENGINE", "FORMAT", "SIZE", "FILES", "SHA256", "PINNED", "ACCURACY", "SOURCE")]
        for m in manifests:
            rows.append((m.name, m.engine, m.format, _size(m.size), str(len(m.files)), m.files[0].sha256[:12],
                         "yes" if m.pinned else "no", _accuracy(m), m.source))
        print("\n".join(columns(rows)))
        return 0
    if action == "add":
        path = Path(args.path).expanduser()
        if not path.exists():
            raise CLIError(f"no such file or folder: {path}")
        from warmstart.engines.gguf import gguf_in

        if (args.engine or "llamacpp") == "llamacpp" and path.is_dir():
            gguf_in(path)  # a folder of several GGUF models cannot be served as one: refused now, naming them
        t = time.monotonic()
        with Progress("models add"):
            manifest = store.add(path, name=args.name, engine=args.engine, replace_existing=args.replace)
        print(f"added {manifest.name}: {manifest.format}, {len(manifest.files)} file(s), {_size(manifest.size)}, "
              f"sha256 {manifest.files[0].sha256[:16]}... ({time.monotonic() - t:.1f} s)")
        print(_served_as(manifest.name, manifest.engine, store))
        return 0
    if action == "verify":
        names = [args.name] if args.name else [m.name for m in store.list()]
        if not names:
            print("no models in the store")
            return 0
        bad = 0
        for name in names:
            t = time.monotonic()
            with Progress(f"models verify {name}"):
                checks = store.verify(name)
            wrong = [c for c in checks if c.status != "ok"]
            if not wrong:
                print(f"{name}: ok ({len(checks)} file(s) re-hashed in {time.monotonic() - t:.1f} s)")
                continue
            bad += 1
            for c in wrong:
                detail = ("missing" if c.status == "missing"
                          else f"sha256 {c.actual[:16]}..., expected {c.expected[:16]}...")  # type: ignore[index]
                print(f"{name}: {c.path}: {detail}")
        if bad:
            raise CLIError(f"{bad} model(s) do not match their manifests; starts of them are refused until the files "
                           "are restored or re-added with `warmstart models add PATH --name NAME --replace`")
        return 0
    if action == "rm":
        if not store.remove(args.name):
            raise CLIError(f"no model named '{args.name}' in the store; see `warmstart models list`")
        print(f"removed {args.name} from the store (its files were left on disk)")
        return 0
    raise CLIError(f"unknown action {action}", status=2)

