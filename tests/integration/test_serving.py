"""The serving core with the real llama.cpp engine and the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.support import GEMMA, chat, pid_alive, smollm2

pytestmark = pytest.mark.integration
SMOL = "smollm2-135m-instruct"
NO_EOS = {"2": -100}  # SmolLM2's end-of-sequence token banned: generation runs to max_tokens


def sse_events(raw: bytes) -> list[str]:
    return [line[len("data: "):] for line in raw.decode().split("\n") if line.startswith("data: ")]


def test_twenty_concurrent_requests_to_a_cold_model_are_all_answered_by_one_start(start_server):
    srv = start_server([smollm2()])
    with ThreadPoolExecutor(20) as ex:
        results = list(ex.map(lambda i: srv.post("/v1/chat/completions", chat(max_tokens=8)), range(20)))
    assert [status for status, _, _ in results] == [200] * 20
    assert all(h["x-warmstart-start"] == "cold" for _, h, _ in results)
    model = srv.model(SMOL)
    assert len(model["starts"]) == 1 and len(model["replicas"]) == 1
    assert model["replicas"][0]["served"] == 20


def test_keep_alive_expiry_stops_the_engine_process(start_server):
    srv = start_server([smollm2(keep_alive="2s")])
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 200
    pid = srv.model(SMOL)["replicas"][0]["pid"]
    assert pid_alive(pid)
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "cold", timeout=15)
    srv.wait_for(lambda: not pid_alive(pid), timeout=5)


def test_request_keep_alive_zero_unloads_after_the_request_and_negative_keeps_it(start_server):
    srv = start_server([smollm2(keep_alive="1s")])
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=4, keep_alive=0))
    assert status == 200
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "cold", timeout=5)
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=4, keep_alive=-1))
    time.sleep(2.5)  # well past the model's 1 s default
    model = srv.model(SMOL)
    assert model["state"] == "warm" and model["replicas"][0]["expires_in_s"] is None


def test_streaming_chat_and_completions_end_with_done(start_server):
    srv = start_server([smollm2()])
    status, headers, raw = srv.request("POST", "/v1/chat/completions", chat(stream=True, max_tokens=12))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert "Oslo" in text
    status, headers, raw = srv.request("POST", "/v1/completions",
                                       {"model": SMOL, "prompt": "One, two, three,", "max_tokens": 8, "stream": True})
    assert status == 200 and headers["x-warmstart-start"] == "warm"
    assert sse_events(raw)[-1] == "[DONE]"


def test_the_official_openai_client_works_unchanged(start_server):
    srv = start_server([smollm2(), {"name": "gemma-3-270m", "engine": "llamacpp", "path": GEMMA}])
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    ids = [m.id for m in client.models.list().data]
    assert ids == [SMOL, "gemma-3-270m"]
    reply = client.chat.completions.create(model=SMOL, temperature=0, max_tokens=16,
                                           messages=[{"role": "user", "content": "What is the capital of Norway?"}])
    assert "Oslo" in reply.choices[0].message.content
    stream = client.chat.completions.create(model=SMOL, max_tokens=8, stream=True,
                                            messages=[{"role": "user", "content": "Say hello"}])
    assert sum(1 for _ in stream) > 1
    completion = client.completions.create(model="gemma-3-270m", prompt="The capital of France is", max_tokens=6)
    assert completion.choices[0].text
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="chat template"):
        client.chat.completions.create(model="gemma-3-270m", messages=[{"role": "user", "content": "hi"}])


def test_curl_works_unchanged(start_server):
    srv = start_server([smollm2()])
    out = subprocess.run(
        ["curl", "-sS", "-N", "-i", srv.url + "/v1/chat/completions", "-H", "Content-Type: application/json",
         "-d", json.dumps(chat(stream=True, max_tokens=6))], capture_output=True, timeout=120, check=True).stdout
    assert b"x-warmstart-start: cold" in out and out.rstrip().endswith(b"data: [DONE]")


def test_whole_answers_on_one_connection_keep_alive_pipelined_then_closed(start_server):
    """Warm answers, written by the gateway's own HTTP protocol (gateway/front.py) in one piece: two requests
    sent in one write on one connection are answered in order, each whole, and the second's
    `Connection: close` closes it after its answer."""
    srv = start_server([smollm2()])
    assert srv.post("/v1/chat/completions", chat(max_tokens=4))[0] == 200  # warm now
    bodies = [json.dumps(chat(max_tokens=8, temperature=0)).encode(), json.dumps(
        {"model": SMOL, "prompt": "The capital of Norway is", "max_tokens": 4, "temperature": 0}).encode()]
    head = b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n"
    sent = ((b"/v1/chat/completions", b"", bodies[0]), (b"/v1/completions", b"connection: close\r\n", bodies[1]))
    raw = b"".join(head % (path, close, len(body)) + body for path, close, body in sent)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall(raw)
        reader = sock.makefile("rb")
        answers = []
        for _ in bodies:
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                assert name.lower() not in headers, f"{name} twice"
                headers[name.lower()] = value.strip()
            answers.append((status, headers, json.loads(reader.read(int(headers["content-length"])))))
        assert reader.read() == b""  # closed after the second answer, nothing more sent
    assert [a[0].split()[1] for a in answers] == [b"200", b"200"]
    assert [a[1]["x-warmstart-start"] for a in answers] == ["warm", "warm"]
    assert answers[1][1]["connection"] == "close" and "connection" not in answers[0][1]
    assert "Oslo" in answers[0][2]["choices"][0]["message"]["content"]
    assert answers[1][2]["object"] == "text_completion" and answers[1][2]["choices"][0]["text"]


@pytest.mark.parametrize("body,status,code,param", [
    (b'{"model": "smollm2-135m-instruct", "messages": [', 400, "invalid_request", None),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "invalid_request", "model"),
    (b'{"model": "smollm2-135m-instruct", "messages": "hi"}', 400, "invalid_request", "messages"),
    (b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "8"}',
     400, "invalid_request", "max_tokens"),
    (b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}',
     400, "invalid_request", "max_tokens"),
    (b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999999}',
     400, "context_length_exceeded", "max_tokens"),
    (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}', 404, "model_not_found", "model"),
    (b'{"model": "gemma-3-270m", "messages": [{"role": "user", "content": "hi"}]}', 400, "chat_not_supported",
     "messages"),
    (b'[1, 2, 3]', 400, "invalid_request", None),
])
def test_bad_input_gets_an_openai_error_without_starting_anything(start_server, body, status, code, param):
    srv = _bad_input_server(start_server)
    got, _headers, raw = srv.request("POST", "/v1/chat/completions", raw=body)
    assert got == status, raw
    error = json.loads(raw)["error"]
    assert error["code"] == code and error["param"] == param and error["message"]
    assert error["type"] == "invalid_request_error"
    assert all(m["state"] == "cold" for m in srv.get("/v1/models")[1]["data"])


_shared = {}


def _bad_input_server(start_server):
    # one server for the whole parametrized test: these requests never start a model
    srv = _shared.get("srv")
    if srv is None or srv.proc.poll() is not None:
        srv = start_server([smollm2(), {"name": "gemma-3-270m", "engine": "llamacpp", "path": GEMMA}],
                           server={"max_body_bytes": 65536})
        _shared["srv"] = srv
    return srv


def test_prompt_longer_than_the_context_is_a_400(start_server):
    srv = start_server([smollm2(options={"n_ctx": 256})])
    status, _, body = srv.post("/v1/completions", {"model": SMOL, "prompt": "word " * 600, "max_tokens": 4})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "prompt"
    status, _, body = srv.post("/v1/chat/completions", chat("word " * 600, stream=True))
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 200  # the replica is fine afterwards


def test_body_limit_unknown_route_and_wrong_method_are_json_errors(start_server):
    srv = start_server([smollm2()], server={"max_body_bytes": 4096})
    status, _, body = srv.post("/v1/chat/completions", chat("x" * 10_000))
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, _, body = srv.post("/v1/nothing-here", {})
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _, raw = srv.request("GET", "/v1/chat/completions")
    assert status == 405 and json.loads(raw)["error"]["code"] == "method_not_allowed"


def test_full_queue_and_deadline_answer_503_with_retry_after(start_server):
    srv = start_server([smollm2()], server={"queue_deadline": "1ms"})
    status, headers, body = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 503 and int(headers["retry-after"]) >= 1
    assert body["error"]["code"] == "deadline_exceeded"
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "warm", timeout=30)  # the start itself went on

    srv = start_server([smollm2()], server={"queue_size": 0})
    status, headers, body = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 503 and body["error"]["code"] == "queue_full" and int(headers["retry-after"]) >= 1


def test_max_replicas_starts_another_replica_when_requests_queue(start_server):
    srv = start_server([smollm2(max_replicas=2)])
    # enough work per request (~2 s each) that the first replica cannot drain the queue alone
    # before the second one is up, however slow this machine is today
    body = {"model": SMOL, "prompt": "Count:", "max_tokens": 128, "logit_bias": NO_EOS}
    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(lambda i: srv.post("/v1/completions", body), range(6)))
    assert all(status == 200 for status, _, _ in results)
    model = srv.model(SMOL)
    assert len(model["replicas"]) == 2 and len({h["x-warmstart-replica"] for _, h, _ in results}) == 2
    assert len({r["pid"] for r in model["replicas"]}) == 2


def test_kill_9_of_the_engine_mid_request_is_retried_once_on_a_new_replica(start_server):
    srv = start_server([smollm2()])
    srv.post("/v1/chat/completions", chat(max_tokens=2))
    pid = srv.model(SMOL)["replicas"][0]["pid"]
    result = {}

    def long_request():
        result["r"] = srv.post("/v1/completions", {"model": SMOL, "prompt": "Count:", "max_tokens": 400,
                                                   "logit_bias": NO_EOS})

    t = threading.Thread(target=long_request)
    t.start()
    srv.wait_for(lambda: srv.model(SMOL)["replicas"][0]["in_flight"] == 1, timeout=10, interval=0.01)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    t.join(120)
    status, _headers, body = result["r"]
    assert status == 200, body  # nothing had reached the client: retried on a new replica
    assert body["choices"][0]["text"]
    model = srv.model(SMOL)
    assert model["replicas"][0]["pid"] != pid and model["state"] == "warm"
    assert len(model["starts"]) == 2
    assert not pid_alive(pid)


def test_a_stream_cut_by_kill_9_ends_with_an_error_event_and_the_next_request_recovers(start_server):
    srv = start_server([smollm2()])
    srv.post("/v1/chat/completions", chat(max_tokens=2))
    pid = srv.model(SMOL)["replicas"][0]["pid"]
    req = urllib.request.Request(srv.url + "/v1/completions", method="POST",
                                 data=json.dumps({"model": SMOL, "prompt": "Count:", "max_tokens": 1500,
                                                  "stream": True, "logit_bias": NO_EOS}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        first = resp.readline()
        assert first.startswith(b"data: ")
        os.kill(pid, signal.SIGKILL)
        rest = resp.read()  # must end, not hang
    events = sse_events(first + rest)
    assert "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted" and "incomplete" in error["message"]
    assert srv.model(SMOL)["state"] == "failed"
    status, headers, _body = srv.post("/v1/chat/completions", chat(max_tokens=8))
    assert status == 200 and headers["x-warmstart-start"] == "cold"
    assert srv.model(SMOL)["state"] == "warm"


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_stops_its_generation(start_server, stream):
    srv = start_server([smollm2()])
    srv.post("/v1/chat/completions", chat(max_tokens=2))
    engine = srv.model(SMOL)["replicas"][0]["url"]

    def engine_stats():  # llama-server's own metrics: decode steps run, requests in its slots
        with urllib.request.urlopen(engine + "/metrics", timeout=5) as resp:
            lines = resp.read().decode().splitlines()
        return {k.removeprefix("llamacpp:"): float(v) for k, v in (
            line.split() for line in lines if line.startswith("llamacpp:"))}

    before = engine_stats()["n_decode_total"]
    body = json.dumps({"model": SMOL, "prompt": "Count:", "max_tokens": 1800, "stream": stream,
                       "logit_bias": NO_EOS}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    if stream:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    srv.wait_for(lambda: engine_stats()["n_decode_total"] - before > 10, timeout=30, interval=0.2)
    sock.close()
    # llama-server notices a closed connection of a request that is not streamed once a second passes
    # without any result in its queue; its /metrics answers are results too, so it is asked rarely
    srv.wait_for(lambda: engine_stats()["requests_processing"] == 0, timeout=20, interval=1.5)
    generated = engine_stats()["n_decode_total"] - before
    assert generated < 1000  # stopped far short of max_tokens
    time.sleep(0.5)
    assert engine_stats()["n_decode_total"] - before == generated  # and nothing more is generated
    srv.wait_for(lambda: srv.model(SMOL)["replicas"][0]["in_flight"] == 0, timeout=5)


def test_cli_ps_warm_and_unload_talk_to_the_running_server(start_server):
    srv = start_server([smollm2()])
    env = {**os.environ, "WARMSTART_URL": srv.url}
    def run(*args):
        argv = [".venv/bin/warmstart", *args] if os.path.exists(".venv/bin/warmstart") else ["warmstart", *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)

    out = run("ps")
    assert out.returncode == 0 and SMOL in out.stdout and "cold" in out.stdout
    out = run("warm", SMOL, "--keep-alive", "-1")
    assert out.returncode == 0 and "warm in" in out.stdout and "load" in out.stdout
    model = srv.model(SMOL)
    assert model["last_start"]["trigger"] == "manual" and model["replicas"][0]["expires_in_s"] is None
    out = run("ps")
    assert "warm" in out.stdout and "never" in out.stdout and "spawn" in out.stdout
    pid = model["replicas"][0]["pid"]
    out = run("unload", SMOL)
    assert out.returncode == 0 and "cold" in out.stdout
    assert not pid_alive(pid)
    out = run("warm", "nope")
    assert out.returncode == 1 and out.stderr.startswith("warmstart: error:") and "nope" in out.stderr
    assert "Traceback" not in out.stderr


def test_auth_required_on_a_server_with_keys_and_the_cli_sends_them(start_server):
    api, admin = "api-key-0123456789abcdef", "admin-key-0123456789abcdef"
    srv = start_server([smollm2()], sections={"auth": {"api_keys": [api], "admin_keys": [admin]}})
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    status, _headers, body = srv.post("/v1/chat/completions", chat(max_tokens=2),
                                     headers={"authorization": f"Bearer {api}"})
    assert status == 200
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=api, max_retries=0)
    assert client.models.list().data[0].id == SMOL
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong-key-0123456789", max_retries=0).models.list()
    env = {**os.environ, "WARMSTART_URL": srv.url, "WARMSTART_API_KEY": api}
    cmd = [".venv/bin/warmstart"] if os.path.exists(".venv/bin/warmstart") else ["warmstart"]
    out = subprocess.run([*cmd, "unload", SMOL], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "admin" in out.stderr
    out = subprocess.run([*cmd, "unload", SMOL], capture_output=True, text=True, timeout=60,
                         env={**env, "WARMSTART_ADMIN_KEY": admin})
    assert out.returncode == 0, out.stderr
    assert api not in srv.log() and admin not in srv.log()
