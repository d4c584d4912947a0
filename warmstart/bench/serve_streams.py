"""Streams for `bench serve`: concurrent chat streams against a server, counted by their usage events (tokens/s),
and the relay measure: a stand-in engine's paced streams through the gateway and through a process that only copies
bytes, each process's CPU per relayed event, then the most events a second each relays."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

from warmstart.bench._harness import Client, ServerProcess
from warmstart.engines.procfs import cpu_seconds  # the gateway's own threads, not its children (the engine is one)
from warmstart.progress import step

MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    "What is the capital of Norway?", "What is the capital of France?", "Name a primary colour.",
    "What is two plus two?", "Say hello.", "What is the largest planet?", "Name a fruit.",
    "What colour is the sky?",
]
NO_EOS = {"0": -100, "2": -100}  # SmolLM2's end tokens banned: every stream runs to max_tokens
# the relay measure: each stream one event every RELAY_PACE_S (8 streams: 1,600 events a second, an engine's pace:
# every event comes in a read of its own), RELAY_EVENTS each, RELAY_ROUNDS rounds through the gateway and the proxy;
# then CEILING_EVENTS each as fast as the stand-in writes them
RELAY_PACE_S, RELAY_EVENTS, RELAY_ROUNDS, CEILING_EVENTS = 0.005, 400, 3, 4000


def relay_measure(server: ServerProcess, stub_url: str, model: str, streams: int) -> dict[str, Any]:
    """`streams` streams from the stand-in through the gateway and through the byte-copying proxy, rounds
    alternating: each process's CPU per relayed event at an engine's pace, and then the events a second each
    relays (and the stand-in gives directly) when the stand-in writes them as fast as it can."""
    setter, splice_proc = Client(stub_url), start_splice(stub_url)
    try:
        splice_url = f"http://127.0.0.1:{splice_proc.stdout.readline().strip()}"  # type: ignore[union-attr]
        arms = {"gateway": (server.url, server.pid), "splice": (splice_url, splice_proc.pid)}
        setter.post("/pace", {"seconds": RELAY_PACE_S})
        cpu = dict.fromkeys(arms, 0.0)
        events = dict.fromkeys(arms, 0)
        # the gateway's CPU while the streams go through the proxy instead (its timers), and those arms' seconds
        idle_cpu, idle_seconds, relay_seconds = 0.0, 0.0, 0.0
        for i in range(RELAY_ROUNDS):
            step(f"stream relay, {streams} streams at the engine's pace, rounds", i, RELAY_ROUNDS)
            for arm, (base, pid) in arms.items() if i % 2 == 0 else reversed(arms.items()):
                before, gateway_before, began = cpu_seconds(pid), cpu_seconds(server.pid), time.perf_counter()
                events[arm] += run_streams(base, model, streams, RELAY_EVENTS)[0]
                cpu[arm] += cpu_seconds(pid) - before
                if arm == "splice":
                    idle_cpu += cpu_seconds(server.pid) - gateway_before
                    idle_seconds += time.perf_counter() - began
                else:
                    relay_seconds += time.perf_counter() - began
        cpu["gateway"] -= idle_cpu / idle_seconds * relay_seconds
        setter.post("/pace", {"seconds": 0})
        step(f"stream relay, {streams} streams as fast as the stand-in writes")
        ceiling = {}
        for arm, base in (("direct", stub_url), ("gateway", server.url), ("splice", splice_url)):
            ceiling[arm] = throughput(base, model, streams, CEILING_EVENTS)
    finally:
        setter.close()
        splice_proc.kill()
        splice_proc.wait()
    return {
        "relay_events_per_s_paced": round(streams / RELAY_PACE_S),
        "relay_events": events["gateway"],
        "relay_gateway_cpu_us_per_event": round(cpu["gateway"] / events["gateway"] * 1e6, 1),
        "relay_splice_cpu_us_per_event": round(cpu["splice"] / events["splice"] * 1e6, 1),
        "relay_ceiling_events_per_s_gateway": round(ceiling["gateway"]),
        "relay_ceiling_events_per_s_splice": round(ceiling["splice"]),
        "relay_ceiling_events_per_s_direct": round(ceiling["direct"]),
    }


def start_splice(engine_url: str) -> subprocess.Popen[str]:
    host, port = engine_url.split("//")[1].split(":")
    return subprocess.Popen([sys.executable, "-m", "warmstart.bench._splice", host, port], stdout=subprocess.PIPE,
                            text=True)


def throughput(base: str, model: str, streams: int, max_tokens: int) -> float:
    """Generated tokens per second over `streams` concurrent streams of `max_tokens` each."""
    tokens, seconds = run_streams(base, model, streams, max_tokens)
    return tokens / seconds


def run_streams(base: str, model: str, streams: int, max_tokens: int) -> tuple[int, float]:
    """`streams` concurrent streams of `max_tokens` each: the tokens they generated, and the seconds they took."""
    tokens = [0] * streams
    errors: list[str] = []

    def one(i: int) -> None:
        client = Client(base)
        try:
            _, _, data, _ = client.post("/v1/chat/completions", {
                **chat(i, max_tokens), "model": model, "temperature": 0.8, "seed": i, "logit_bias": NO_EOS,
                "stream": True, "stream_options": {"include_usage": True}})
            for line in data.split(b"\n"):
                if line.startswith(b"data: {") and b'"usage"' in line:
                    usage = json.loads(line[6:]).get("usage")
                    if usage:
                        tokens[i] = usage["completion_tokens"]
            if not tokens[i]:
                errors.append(data[:200].decode(errors="replace"))
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    t = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t
    if errors:
        raise RuntimeError(f"a stream gave no usage: {errors[0]}")
    return sum(tokens), seconds


def chat(i: int, max_tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
