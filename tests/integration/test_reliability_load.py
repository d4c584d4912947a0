"""Under load: a burst at a cold model is answered or refused at once, none lost; the load test tool
replays a real trace against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from tests.faults import AZURE_CONV, SMOL, burst, is_openai_error, metric_sum
from tests.support import ROOT, chat, smollm2

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_500_concurrent_requests_at_a_cold_model_are_answered_or_refused_at_once_and_none_is_lost(start_server):
    queue = 150
    srv = start_server([smollm2()], server={"queue_size": queue})
    bodies = [chat(f"Say {i}.", max_tokens=2, stream=bool(i % 2)) for i in range(500)]
    answers = asyncio.run(burst(srv.url, bodies, timeout=240))

    assert len(answers) == 500
    assert [a.index for a in answers if a.error] == []  # no timeout, no dropped connection: none hangs
    ok = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert {a.status for a in refused} <= {429, 503}
    assert len(ok) >= queue and len(ok) + len(refused) == 500
    for a in refused:
        body = a.json()
        assert is_openai_error(body) and body["error"]["code"] == "queue_full", body
        assert int(a.headers["retry-after"]) >= 1
    for a in ok:
        if bodies[a.index]["stream"]:
            assert a.body.rstrip().endswith(b"data: [DONE]")
        else:
            assert a.json()["choices"][0]["message"]["content"] is not None
    accepted = sorted(a.seconds for a in ok)
    # refused at once, as the server counts it (client-side times depend on the machine): every request
    # counted once, and a refusal was never held in the queue (only leased requests have a wait)
    assert metric_sum(srv, "warmstart_requests_total", model=SMOL) == 500
    assert metric_sum(srv, "warmstart_requests_total", model=SMOL, code="200") == len(ok)
    assert metric_sum(srv, "warmstart_requests_total", model=SMOL, code="503") == len(refused)
    assert metric_sum(srv, "warmstart_request_wait_seconds_count", model=SMOL) == len(ok)
    model = srv.model(SMOL)
    assert len(model["starts"]) == 1 and model["queue_depth"] == 0
    assert model["replicas"][0]["served"] == len(ok) and model["replicas"][0]["in_flight"] == 0
    print(f"\n[reliability] 500 concurrent at a cold model, queue_size {queue}: {len(ok)} answered, "
          f"{len(refused)} refused with 503 queue_full + Retry-After, 0 lost; "
          f"slowest refusal {max((a.seconds for a in refused), default=0):.2f} s, "
          f"accepted p50 {accepted[len(accepted) // 2]:.2f} s, max {accepted[-1]:.2f} s")


def loadtest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmstart", "loadtest", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**os.environ, **(env or {})}, check=False)


def test_loadtest_replays_a_real_trace_and_reports_warm_and_cold(start_server, tmp_path):
    srv = start_server([smollm2(options={"n_ctx": 512})])
    out = tmp_path / "report.json"
    # the first 8 s of the conversation trace, at a quarter of its speed: about 8 requests over 32 s
    done = loadtest("--trace", str(AZURE_CONV), "--format", "azure", "--url", srv.url, "--speedup", "0.25",
                    "--duration", "32", "--max-output-tokens", "8", "--json", str(out),
                    env={"WARMSTART_PROGRESS": "always"})
    assert done.returncode == 0, done.stderr
    assert "loadtest: requests ended 1/" in done.stderr  # it says how far it is, on stderr
    report = json.loads(out.read_text())
    req = report["requests"]
    assert req["planned"] == req["sent"] == len(report["outcomes"]) >= 5
    assert req["errors"] == 0 and req["ok"] == req["planned"], report["errors"]
    assert req["cold"] >= 1 and req["warm"] + req["cold"] == req["ok"]
    assert report["outcomes"][0]["start"] == "cold"
    assert report["cold"]["ttft_s"]["n"] == req["cold"] and report["warm"]["ttft_s"]["n"] == req["warm"]
    assert 0 < report["ttft_s"]["p50"] <= report["latency_s"]["p50"]
    assert report["throughput"]["output_tokens"] > 0
    # the trace's prompts (hundreds to thousands of tokens) were cut to the 512-token context, and it says so
    plan = report["plan"]
    assert plan["context_length"] == 512 and plan["prompt_capped"] >= 1
    assert any("512" in note for note in plan["notes"])
    assert "ttft warm" in done.stdout and "prompts were cut" in done.stdout
    assert metric_sum(srv, "warmstart_requests_total", model=SMOL) == req["sent"]


def test_loadtest_refuses_a_non_loopback_url_and_asks_for_a_key(start_server):
    done = loadtest("--trace", str(AZURE_CONV), "--url", "http://192.0.2.1:8000")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("warmstart: error: --url 'http://192.0.2.1:8000': the load test sends traffic "
                                  "only to loopback")
    key = "loadtest-key-0123456789abcdef"
    srv = start_server([smollm2()], sections={"auth": {"api_keys": [key]}})
    done = loadtest("--trace", str(AZURE_CONV), "--url", srv.url, "--duration", "1")
    assert done.returncode == 1 and "pass --api-key or set WARMSTART_API_KEY" in done.stderr
    done = loadtest("--trace", str(AZURE_CONV), "--url", srv.url, "--duration", "2", "--max-output-tokens", "2",
                    "--max-prompt-tokens", "16", env={"WARMSTART_API_KEY": key})
    assert done.returncode == 0, done.stderr
    assert "0 errors" in done.stdout
    done = loadtest("--trace", str(AZURE_CONV), "--url", srv.url, "--format", "jsonl", "--api-key", key)
    assert done.returncode == 2 and "not valid JSON" in done.stderr and "Traceback" not in done.stderr
