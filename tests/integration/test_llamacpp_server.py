"""The llama.cpp engine as llama.cpp's own server (xllamacpp): slots serve requests side by side on one
replica, the OpenAI fields it supports pass through, the ones it would ignore are refused by name."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request

import pytest

from tests.faults import metric_sum
from tests.support import chat, smollm2

pytestmark = pytest.mark.integration
SMOL = "smollm2-135m-instruct"
NO_EOS = {"0": -100, "2": -100}  # SmolLM2's end tokens banned: generation runs to max_tokens
LLAMACPP_PHASES = ["verify", "spawn", "import", "load", "kv_init", "warmup", "ready", "audit"]


def engine_slots(srv) -> list[dict]:
    engine = srv.model(SMOL)["replicas"][0]["url"]
    with urllib.request.urlopen(engine + "/slots", timeout=10) as resp:
        return json.loads(resp.read())


def open_stream(srv, **extra) -> socket.socket:
    body = json.dumps(chat(stream=True, logit_bias=NO_EOS, **extra)).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def test_one_replica_serves_max_concurrency_requests_at_once_in_its_slots(start_server):
    srv = start_server([smollm2(max_concurrency=4, max_replicas=1)])
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200
    assert [s["n_ctx"] for s in engine_slots(srv)] == [2048] * 4  # each slot holds the model's whole context
    socks = [open_stream(srv, max_tokens=1500) for _ in range(4)]
    try:
        for sock in socks:  # every stream has begun: headers and its first token
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        busy = srv.wait_for(lambda: sum(s["is_processing"] for s in engine_slots(srv)) == 4, timeout=30)
        assert busy
        model = srv.model(SMOL)
        [replica] = model["replicas"]
        assert replica["in_flight"] == 4 and model["queue_depth"] == 0
    finally:
        for sock in socks:
            sock.close()
    srv.wait_for(lambda: srv.model(SMOL)["replicas"][0]["in_flight"] == 0, timeout=30)


def test_openai_fields_llama_server_supports_pass_through(start_server):
    srv = start_server([smollm2()])
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=4, logprobs=True, top_logprobs=2))
    assert status == 200, body
    [choice] = body["choices"]
    tokens = choice["logprobs"]["content"]
    assert len(tokens) == 4 and all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in tokens)
    assert body["model"] == SMOL

    status, _, body = srv.post("/v1/chat/completions", chat(
        "Give a JSON object with the key city.", max_tokens=40, response_format={"type": "json_object"}))
    assert status == 200, body
    assert body["choices"][0]["message"]["content"].lstrip().startswith("{")

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=60, response_format={
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}))
    assert status == 200, body
    if body["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(body["choices"][0]["message"]["content"])["city"], str)

    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=3, n=2, temperature=1.0, seed=7))
    assert status == 200 and [c["index"] for c in body["choices"]] == [0, 1]

    status, _, raw = srv.request("POST", "/v1/chat/completions", chat(
        max_tokens=3, stream=True, stream_options={"include_usage": True}, stop=["\n\n"]))
    assert status == 200
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("field,value", [("best_of", 2), ("echo", True), ("suffix", "end")])
def test_a_field_llama_server_would_ignore_is_a_400_naming_it_without_starting_anything(start_server, field, value):
    srv = start_server([smollm2()])
    status, _, body = srv.post("/v1/completions", {"model": SMOL, "prompt": "Once upon", field: value})
    assert status == 400, body
    assert body["error"]["param"] == field and body["error"]["code"] == "unsupported_parameter"
    assert field in body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    assert srv.model(SMOL)["state"] == "cold"


def test_a_prompt_beyond_a_slots_context_is_openais_context_length_exceeded(start_server):
    srv = start_server([smollm2(options={"n_ctx": 256})])
    status, _, body = srv.post("/v1/chat/completions", chat("word " * 600, max_tokens=4))
    assert status == 400, body
    assert body["error"] == {"message": body["error"]["message"], "type": "invalid_request_error",
                             "param": "messages", "code": "context_length_exceeded"}


def test_a_start_reports_every_phase_from_the_servers_log(start_server):
    srv = start_server([smollm2()])
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200 and headers["x-warmstart-start"] == "cold"
    phases = srv.model(SMOL)["last_start"]["phases"]
    assert list(phases) == LLAMACPP_PHASES
    assert all(phases[p] > 0 for p in ("spawn", "import", "load", "kv_init", "warmup"))
    # each phase runs from the end of the one before: together they are the start (a bound on the code
    # between them, not a timing: they left out 4 % of it when the worker's own imports were in none)
    assert sum(phases.values()) == pytest.approx(srv.model(SMOL)["last_start"]["total_s"], rel=0.02)
    engine = srv.model(SMOL)["replicas"][0]["url"]
    with urllib.request.urlopen(engine + "/health", timeout=5) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}


def test_a_model_configured_for_embeddings_answers_v1_embeddings_and_others_refuse(start_server):
    embedder = smollm2(name="smol-embed", options={"n_ctx": 512, "embedding": True, "pooling": "mean"})
    srv = start_server([smollm2(), embedder])
    status, _, body = srv.post("/v1/embeddings", {"model": SMOL, "input": "hello"})
    assert status == 400 and body["error"]["code"] == "embeddings_not_supported" and body["error"]["param"] == "model"
    assert srv.model(SMOL)["state"] == "cold"

    status, headers, body = srv.post("/v1/embeddings", {"model": "smol-embed", "input": ["hello world", "goodbye"]})
    assert status == 200, body
    assert headers["x-warmstart-start"] == "cold" and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 576 and body["data"][0]["embedding"] != body["data"][1]["embedding"]
    assert srv.model("smol-embed")["capabilities"]["embeddings"] is True
    status, _, body = srv.post("/v1/chat/completions", chat(model="smol-embed", max_tokens=2))
    assert status == 200, body  # an embedding model still generates


def test_warm_requests_past_llama_servers_keep_alive_count_are_all_answered_on_one_client_connection(start_server):
    """llama.cpp's server closes a connection after 100 requests on it (its HTTP library's keep-alive count). The
    gateway's warm requests are sent on one kept engine connection straight from the client connection's callback,
    and the request's task, started after the answer went out, found that connection closed: it failed, the client
    connection was closed under the client and a 500 was counted for an answered request (every 100th request)."""
    srv = start_server([smollm2(max_concurrency=1, max_replicas=1)])
    body = json.dumps({"model": SMOL, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        statuses, sockets = [], set()
        for _ in range(130):
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            sockets.add(id(conn.sock))
            time.sleep(0.005)  # nothing put off is pending when the next one comes: it is begun from the callback
    finally:
        conn.close()
    assert statuses == [200] * 130 and len(sockets) == 1
    assert metric_sum(srv, "warmstart_requests_total", model=SMOL, code="200") == 130
    assert metric_sum(srv, "warmstart_requests_total", model=SMOL, code="500") == 0
    assert "Traceback" not in srv.log()
