"""`warmstart quantize MODEL --type T` and `warmstart eval MODEL --against BASE`."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from warmstart.cli.base import CLIError, command, data_dir_flags, load
from warmstart.cli_format import columns
from warmstart.errors import WarmstartError
from warmstart.quant.gate import PUBLISHED, Gate
from warmstart.quant.recipe import MIXES


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quantize", help="quantize a GGUF model with llama.cpp's quantizer into the store")
    data_dir_flags(q)
    q.add_argument("model", help="an F16/BF16/F32 GGUF file, a model in the store or in the config, or a "
                                 "safetensors checkpoint folder (needs --converter)")
    q.add_argument("--type", required=True, choices=sorted(MIXES), help="the type mix, as llama-quantize names it")
    q.add_argument("--name", help="the new model's name in the store (default: MODEL-TYPE)")
    q.add_argument("--output", help="where to write the file (default: DATA_DIR/models/NAME.gguf)")
    q.add_argument("--replace", action="store_true", help="replace a model of the same name in the store")
    q.add_argument("--allow-requantize", action="store_true", help="accept an already quantized source")
    q.add_argument("--converter", help="llama.cpp's convert_hf_to_gguf.py, for a safetensors checkpoint")
    q.add_argument("--threads", type=int, help="quantize this many tensors at once (default: the CPUs)")
    q.add_argument("--json", action="store_true", help="print the new manifest as JSON")

    e = sub.add_parser("eval", help="measure a model against its base (KLD, top token, answers) and gate it")
    data_dir_flags(e)
    e.add_argument("model", nargs="+", help="the model(s) to judge: store names, config names or GGUF files "
                                            "(several share one pass over the base)")
    e.add_argument("--against", required=True, help="the base model it was made from")
    e.add_argument("--prompts", help="JSON lines of OpenAI request bodies, each with an optional \"reference\" "
                                     "(default: the 100 prompts shipped with warmstart)")
    e.add_argument("--limit", type=int, help="use only the first N prompts")
    e.add_argument("--text", help="a UTF-8 text for the KL divergence (default: the corpus shipped with warmstart)")
    e.add_argument("--chunks", type=int, help="score at most N chunks of 512 tokens of the text")
    e.add_argument("--threads", type=int, help="llama.cpp threads for the corpus (default: the CPUs)")
    e.add_argument("--max-kld", type=float, default=Gate.max_kld,
                   help=f"largest mean KL divergence that passes (default {Gate.max_kld}: llama.cpp's Llama-3-8B "
                        f"Q4_K_M; its Q8_0: {PUBLISHED['q8_0']['kld']})")
    e.add_argument("--min-top1", type=float, default=Gate.min_top1,
                   help=f"smallest share of same top tokens that passes (default {Gate.min_top1}; Q8_0: "
                        f"{PUBLISHED['q8_0']['top1']})")
    e.add_argument("--max-score-drop", type=float, default=Gate.max_score_drop,
                   help=f"largest task-score drop, as a share, that passes (default {Gate.max_score_drop})")
    e.add_argument("--significance", type=float, default=Gate.significance,
                   help="a score drop fails only when chance would make it less often than this (McNemar's exact "
                        f"test; default {Gate.significance})")
    e.add_argument("--url", help="answer the prompts through this running warmstart (…/v1 or not) with the models "
                                 "as it serves them, instead of engines started here")
    e.add_argument("--api-key", help="API key for --url (default: $WARMSTART_API_KEY)")
    e.add_argument("--no-record", action="store_true", help="do not write the result to the model's manifest")
    e.add_argument("--json", action="store_true", help="print the result as JSON")


def _setup(args: argparse.Namespace):
    from warmstart.store.manifest import ManifestStore

    try:
        config = load(args)
    except WarmstartError:
        if not args.data_dir:
            raise
        config = None  # a data directory given: the config is needed only to find models by their served name
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else config.server.data_dir  # type: ignore[union-attr]
    return config, data_dir, ManifestStore(data_dir)


def _progress(label: str):
    from warmstart.quant.convert import bar

    return bar(label)


@command("quantize")
def _quantize(args: argparse.Namespace) -> int:
    from warmstart.engines.gguf import gguf_in
    from warmstart.quant.convert import convert
    from warmstart.quant.evaluate import Subject, locate

    config, data_dir, store = _setup(args)
    mix = MIXES[args.type]
    src_path = Path(args.model).expanduser()
    converted_from = None
    if src_path.is_dir() and (held := gguf_in(src_path)) is not None:  # a GGUF repository's snapshot
        source = Subject(args.model, held, None, held.stem)
    elif src_path.is_dir() or src_path.suffix == ".safetensors":
        src_path, converted_from = _from_safetensors(src_path, args.converter), str(src_path)
        source = Subject(args.model, src_path, None, src_path.stem)
    else:
        source = locate(args.model, store, config)
    base = source.store_name or source.path.stem
    name = args.name or f"{base}-{mix.name}"
    if store.get(name) is not None and not args.replace:
        raise CLIError(f"model '{name}' is already in the store; pass --replace, or --name for another name")
    out = Path(args.output).expanduser() if args.output else data_dir / "models" / f"{name}.gguf"
    result = convert(source.path, out, mix, allow_requantize=args.allow_requantize, threads=args.threads,
                     progress=_progress(f"quantize {mix.name}"))
    try:
        tool_version = "xllamacpp " + importlib.metadata.version("xllamacpp")
    except importlib.metadata.PackageNotFoundError:
        tool_version = "xllamacpp (unknown)"
    quantization = {
        "source": args.model, "source_path": str(source.path),
        "source_sha256": store.digests.digest(source.path).sha256,
        "converted_from": converted_from, "type": mix.name, "file_type": mix.file_type, "tensor_types": result.types,
        "tool": "llama.cpp ggml_quantize_chunk (from the xllamacpp wheel), tensor types by llama_tensor_get_type "
                "(ported in warmstart.quant.recipe)",
        "tool_version": tool_version, "seconds": round(result.seconds, 2), "bytes": result.bytes,
    }
    manifest = store.add(out, name=name, engine="llamacpp", source=f"quantize {args.model} --type {mix.name}",
                         replace_existing=args.replace, quantization=quantization)
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2))
        return 0
    src_size = source.path.stat().st_size
    print(f"quantized {args.model} to {mix.name}: {out} ({result.bytes / 2**20:.1f} MiB, {result.bytes / src_size:.0%} "
          f"of the source, {result.seconds:.1f} s); tensors: "
          + ", ".join(f"{n} {k}" for k, n in sorted(result.types.items())))
    print(f"in the store as '{name}'; serve refuses it until it passes `warmstart eval {name} --against "
          f"{args.model}` (or its config says allow_unverified = true)")
    return 0


def _from_safetensors(folder: Path, converter: str | None) -> Path:
    """An F16 GGUF made by llama.cpp's own converter, which no package installed here ships."""
    script = converter or shutil.which("convert_hf_to_gguf.py")
    if script is None:
        raise CLIError(f"{folder} is a safetensors checkpoint: converting it needs llama.cpp's "
                       "convert_hf_to_gguf.py, which no installed package ships; pass --converter "
                       "PATH/convert_hf_to_gguf.py (from a llama.cpp checkout, with its requirements) or convert it "
                       "to an F16 GGUF first")
    out = Path(tempfile.mkdtemp(prefix="warmstart-convert-")) / (folder.name + "-f16.gguf")
    proc = subprocess.run([sys.executable, script, str(folder), "--outtype", "f16", "--outfile", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise CLIError(f"llama.cpp's converter failed on {folder} (exit {proc.returncode}): {tail}")
    return out


@command("eval")
def _eval(args: argparse.Namespace) -> int:
    from warmstart.cli.base import server_url
    from warmstart.quant import answers
    from warmstart.quant.evaluate import evaluate, locate

    config, _, store = _setup(args)
    for flag in ("max_kld", "min_top1", "max_score_drop", "significance"):
        value = getattr(args, flag)
        if not value >= 0 or (flag in ("min_top1", "significance") and value > 1):
            raise CLIError(f"--{flag.replace('_', '-')} {value}: must be a share between 0 and 1"
                           if flag in ("min_top1", "significance")
                           else f"--{flag.replace('_', '-')} {value}: must be 0 or more")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit {args.limit}: must be 1 or more")
    prompt_file = Path(args.prompts).expanduser() if args.prompts else answers.default_prompts()
    prompts = answers.read_prompts(prompt_file, args.limit)
    text = Path(args.text).expanduser() if args.text else None
    if text is not None and not text.is_file():
        raise CLIError(f"text file not found: {text}")
    models, base = [locate(m, store, config) for m in args.model], locate(args.against, store, config)
    url, headers = None, None
    if args.url:
        url = server_url(args).rstrip("/")
        url = url if url.endswith("/v1") else url + "/v1"
        key = args.api_key or os.environ.get("WARMSTART_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else None
    gate = Gate(args.max_kld, args.min_top1, args.max_score_drop, args.significance)
    results = asyncio.run(evaluate(base, models, store=store, gate=gate, prompts=prompts,
                                    prompt_file=args.prompts or "warmstart prompts", text=text, chunks=args.chunks,
                                    threads=args.threads, url=url, headers=headers, record=not args.no_record,
                                    progress=_progress))
    if args.json:  # one model: its result; several: a list
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    else:
        print("\n\n".join(table(r) for r in results))
    failed = [(r, m) for r, m in zip(results, models, strict=True) if not r["passed"]]
    if failed:
        raise CLIError("; ".join(f"{r['model']} FAILED the accuracy gate: {', '.join(r['reasons'])}" for r, _ in failed)
                       + ("; serve refuses it unless its config says allow_unverified = true"
                          if any(m.store_name for _, m in failed) else ""))
    return 0


def table(r: dict[str, Any]) -> str:
    g = r["gate"]
    pct = "{:.1%}".format

    def score(v: float | None) -> str:
        return "-" if v is None else pct(v)

    rows = [("FIGURE", "VALUE", "GATE"),
            ("mean KLD", f"{r['kld']:.5f}", f"<= {g['max_kld']:g}"),
            ("KLD p99", f"{r['kld_p99']:.4f}", ""),
            ("same top token", pct(r["top1"]), f">= {pct(g['min_top1'])}"),
            ("perplexity ratio", f"{r['ppl_ratio']:.4f}", f"({r['ppl']:.3f} / {r['ppl_base']:.3f})"),
            ("answer agreement", pct(r["agreement"]), f"({r['prompts']} prompts)"),
            ("task score", f"{score(r['score'])} (base {score(r['base_score'])})",
             f"drop <= {pct(g['max_score_drop'])} unless p >= {g['significance']:g} "
             f"(lost {r['score_lost']}, gained {r['score_gained']}, p = {r['score_drop_p']:.3f})")]
    head = f"{r['model']} against {r['against']}: {'PASSED' if r['passed'] else 'FAILED'} ({r['positions']} positions)"
    return head + "\n" + "\n".join(columns(rows))
