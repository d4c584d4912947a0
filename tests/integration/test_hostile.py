"""What a hostile client or a wedged engine could do to a real server with the real llama.cpp engine, and
what stops it: the template cost of many empty messages, an engine that stops answering (SIGSTOP), a
hint charged less than it keeps loaded, a cross-site image ping, a spoofed X-Forwarded-For, and a
server opened beyond loopback without keys."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.faults import SMOL, metric_sum
from tests.integration.test_serving import sse_events
from tests.support import chat, config_text, free_port, pid_alive, smollm2

pytestmark = pytest.mark.integration

NO_EOS = {"2": -100}  # SmolLM2's end-of-text token: a long answer that does not stop early


def test_a_hundred_thousand_empty_messages_are_refused_before_any_engine_and_the_model_still_answers(
        start_server):
    srv = start_server([smollm2(keep_alive="10m")])
    assert srv.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    # 100,000 empty messages: about 3.3 MB, under the 4 MiB body limit; the template would cost minutes
    body = {"model": SMOL, "messages": [{"role": "user", "content": ""}] * 100_000, "max_tokens": 1}
    began = time.monotonic()
    status, _, answer = srv.post("/v1/chat/completions", body, timeout=60)
    assert status == 400, answer
    error = answer["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "100000 messages" in error["message"] and "2048 tokens" in error["message"]
    # the engine never saw it: the replica that answered before answers the next request at once
    model = srv.model(SMOL)
    assert model["state"] == "warm" and model["replicas"][0]["served"] == 1 and len(model["starts"]) == 1
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200 and headers["x-warmstart-start"] == "warm"
    print(f"\n[reliability] 100,000 empty chat messages (3.3 MB): 400 context_length_exceeded in "
          f"{time.monotonic() - began:.2f} s, no engine work, the next request served warm")


def test_a_sigstopped_engine_is_failed_killed_and_replaced_within_the_engine_timeout(start_server):
    srv = start_server([smollm2(keep_alive="10m")], server={"engine_timeout": "3s", "queue_deadline": "120s"})
    assert srv.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    pid = srv.model(SMOL)["replicas"][0]["pid"]
    req = urllib.request.Request(srv.url + "/v1/completions", method="POST",
                                 data=json.dumps({"model": SMOL, "prompt": "Count:", "max_tokens": 1500,
                                                  "stream": True, "logit_bias": NO_EOS}).encode(),
                                 headers={"content-type": "application/json"})
    queued: dict[str, tuple] = {}
    with urllib.request.urlopen(req, timeout=120) as resp:
        first = resp.readline()
        assert first.startswith(b"data: ")
        os.kill(pid, signal.SIGSTOP)  # wedged: alive, holding its port, answering nothing
        began = time.monotonic()
        # a second request waits behind the wedged one (one slot); it must be served, not left to its deadline
        waiter = threading.Thread(target=lambda: queued.setdefault("r", srv.post(
            "/v1/chat/completions", chat(max_tokens=4), timeout=120)))
        waiter.start()
        rest = resp.read()  # must end, not hang
        ended = time.monotonic() - began
    events = sse_events(first + rest)
    assert "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted" and "sent nothing for 3 s" in error["message"], error
    waiter.join(120)
    status, headers, body = queued["r"]
    assert status == 200, body  # served by a new replica
    assert headers["x-warmstart-replica"] != f"{SMOL}#1"
    srv.wait_for(lambda: not pid_alive(pid), timeout=10)  # killed, SIGSTOP or not
    model = srv.model(SMOL)
    assert model["state"] == "warm" and pid not in [r["pid"] for r in model["replicas"]]
    assert metric_sum(srv, "warmstart_replica_failures_total", model=SMOL, stage="running") == 1
    assert "did not answer its health check" in srv.log()
    print(f"\n[reliability] engine SIGSTOPped mid-stream (engine_timeout 3 s): stream ended with "
          f"stream_interrupted after {ended:.1f} s, engine killed, the queued request served by a new replica")


def test_a_slow_engine_that_answers_its_health_check_is_given_time(start_server):
    # a non-streamed answer sends no byte until it is done: silence alone does not fail a working engine
    srv = start_server([smollm2(keep_alive="10m")], server={"engine_timeout": "1s"})
    status, _, body = srv.post("/v1/completions", {"model": SMOL, "prompt": "Count:", "max_tokens": 600,
                                                   "logit_bias": NO_EOS}, timeout=180)
    assert status == 200, body
    assert body["usage"]["completion_tokens"] == 600
    assert metric_sum(srv, "warmstart_replica_failures_total", model=SMOL) == 0
    assert srv.model(SMOL)["replicas"][0]["served"] == 1


def test_a_hint_is_charged_at_least_what_it_keeps_loaded(start_server):
    # the hint's span is 1 s; the model's keep-alive is 6 s: the replica stays the keep-alive
    # the first start's cost is estimated (5 s here, more than a SmolLM2 start takes) before one is measured
    srv = start_server([smollm2(keep_alive="6s")],
                       sections={"warming": {"predictive": False, "cold_start_estimate": "5s"},
                                 "warming.hint": {"warm_for": "1s"}})
    status, _, body = srv.post("/v1/warm", {"model": SMOL})
    assert status == 202 and body["outcome"] == "started"
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "warm", timeout=60)
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "cold", timeout=60)
    charged = metric_sum(srv, "warmstart_hint_charged_replica_seconds_total", model=SMOL)
    loaded = metric_sum(srv, "warmstart_replica_loaded_seconds_total", model=SMOL)
    [start] = srv.model(SMOL)["starts"]
    kept = loaded - start["total_s"]  # loaded after the start: the keep-alive, and the stop
    assert start["trigger"] == "hint" and kept >= 6.0
    # charged the (estimated) start and the 6 s keep-alive it kept, not the start and the 1 s span
    assert charged == pytest.approx(5.0 + 6.0), (charged, loaded)


def test_a_cross_site_image_ping_without_origin_is_judged_by_its_referer(start_server):
    srv = start_server([smollm2()], sections={"warming.hint": {"cors_origins": ["https://app.example"]}})
    # what a browser sends for <img src=".../v1/warm?model=..."> on someone else's page
    status, _, body = srv.request("GET", f"/v1/warm?model={SMOL}",
                                  headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors",
                                           "referer": "https://evil.example/page"})
    assert status == 403 and b"https://evil.example" in body, body
    status, _, body = srv.request("GET", f"/v1/warm?model={SMOL}",  # no Referer either (no-referrer policy)
                                  headers={"sec-fetch-site": "cross-site"})
    assert status == 403, body
    assert srv.model(SMOL)["state"] == "cold" and srv.model(SMOL)["starts"] == []
    # the allowed page may ping the same way
    status, _, body = srv.request("GET", f"/v1/warm?model={SMOL}",
                                  headers={"sec-fetch-site": "cross-site", "referer": "https://app.example/chat"})
    assert status == 202, body


HINT_RATE = {"warming.hint": {"per_client_burst": 3, "per_client_per_minute": 0.5}}


def test_forwarded_headers_are_trusted_only_from_configured_proxies(start_server):
    srv = start_server([smollm2(keep_alive="10m")], sections=HINT_RATE)
    statuses = [srv.request("POST", "/v1/warm", {"model": SMOL}, headers={"x-forwarded-for": f"10.9.0.{i}"})[0]
                for i in range(40)]
    # one client (the socket's peer), whatever the header says: its burst of 3, then 429
    assert statuses[:3] == [202] * 3 and set(statuses[3:]) == {429}, statuses
    # behind a configured proxy, its header names the client
    proxied = start_server([smollm2(keep_alive="10m")], server={"trusted_proxies": ["127.0.0.1"]}, sections=HINT_RATE)
    statuses = [proxied.request("POST", "/v1/warm", {"model": SMOL}, headers={"x-forwarded-for": f"10.9.0.{i}"})[0]
                for i in range(10)]
    assert statuses == [202] * 10, statuses


@pytest.mark.parametrize("auth", ["required = false", ""])
def test_no_configuration_serves_beyond_loopback_without_keys(tmp_path, auth):
    config = tmp_path / "warmstart.toml"
    config.write_text(config_text([smollm2()], server={"host": "0.0.0.0", "port": free_port()})
                      + (f"[auth]\n{auth}\n" if auth else ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMSTART_")}
    out = subprocess.run([sys.executable, "-m", "warmstart", "serve", "--config", str(config),
                          "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "auth" in lines[0] and "0.0.0.0" in lines[0] and "api_keys" in lines[0], lines[0]


def test_a_replica_is_not_given_a_new_request_until_its_engine_has_stopped_working_for_a_client_that_left(
        start_server):
    srv = start_server([smollm2(keep_alive="10m")])
    assert srv.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    engine = srv.model(SMOL)["replicas"][0]["url"]

    def engine_active() -> int:  # llama-server's requests in its slots or waiting for one
        with urllib.request.urlopen(engine + "/metrics", timeout=10) as resp:
            values = dict(line.split() for line in resp.read().decode().splitlines()
                          if line.startswith("llamacpp:requests_"))
        return int(float(values["llamacpp:requests_processing"]) + float(values["llamacpp:requests_deferred"]))

    # a prompt near the context's size: the engine spends a while reading it, and cannot stop mid-way
    body = json.dumps({"model": SMOL, "prompt": "one two three four " * 250, "max_tokens": 50}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    srv.wait_for(engine_active, timeout=30, interval=0.01)
    sock.close()  # the client leaves while the engine reads the prompt
    samples = []
    deadline = time.monotonic() + 120  # however long this machine takes to read the prompt
    while time.monotonic() < deadline:
        # the gateway first: a slot it has given back was given back after the engine went idle
        leased = srv.model(SMOL)["replicas"][0]["in_flight"]
        samples.append((leased, engine_active()))
        if leased == 0:
            break
    assert samples[-1] == (0, 0), samples
    assert all(not (leased == 0 and active > 0) for leased, active in samples), samples
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200 and headers["x-warmstart-start"] == "warm"


def test_a_requests_keep_alive_zero_unloads_even_when_the_controller_picks_the_keep_alive(start_server):
    # issue 17, bug 2: under keep_alive "auto" the predictive policy's warm-until kept the model 5 minutes
    srv = start_server([smollm2(keep_alive="auto")])
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2, keep_alive=0))
    assert status == 200
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "cold", timeout=30)
    assert srv.model(SMOL)["replicas"] == []


def test_a_hint_after_an_unload_by_hand_starts_the_model_it_says_it_starts(start_server):
    # issue 17, bug 3: a plan applied before the unload (here a schedule's window) counted as still in force,
    # so the hint answered "started" and nothing started
    now = dt.datetime.now(dt.UTC)
    window = f"{now - dt.timedelta(minutes=2):%H:%M}-{now + dt.timedelta(minutes=30):%H:%M}"
    srv = start_server([smollm2()], sections={"warming": {"schedule": [{"model": SMOL, "when": window}]}})
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "warm", timeout=60)
    assert srv.post(f"/admin/models/{SMOL}/unload", {})[0] == 200
    assert srv.model(SMOL)["state"] == "cold"
    status, _, body = srv.post("/v1/warm", {"model": SMOL})
    assert status == 202 and body["outcome"] == "started"
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "warm", timeout=60)
    assert srv.model(SMOL)["last_start"]["trigger"] == "hint"


def test_an_engine_wedged_while_idle_is_found_by_its_liveness_probe_before_a_request_waits_on_it(start_server):
    srv = start_server([smollm2(keep_alive="10m")], server={"engine_timeout": "2s"})
    assert srv.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    pid = srv.model(SMOL)["replicas"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)  # wedged with no request in flight
    srv.wait_for(lambda: not pid_alive(pid), timeout=30)  # probed, failed, killed
    assert metric_sum(srv, "warmstart_replica_failures_total", model=SMOL, stage="running") == 1
    assert "idle, and twice did not answer its health check" in srv.log()
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=2), timeout=60)
    assert status == 200 and headers["x-warmstart-start"] == "cold"  # a new replica, not the wedged one
