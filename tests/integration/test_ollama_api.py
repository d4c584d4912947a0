"""Ollama's API beside OpenAI's, driven by the official `ollama` Python client against a real `warmstart serve`
with the real llama.cpp engine and SmolLM2 (chat, generate, streams, options, format, keep_alive, tags, ps)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import httpx
import ollama
import pytest

from tests.support import smollm2

pytestmark = pytest.mark.integration
SMOL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of Norway?"}]
GREEDY = {"temperature": 0, "seed": 1}


@pytest.fixture
def connect():
    clients: list[ollama.Client] = []

    def make(srv) -> ollama.Client:
        clients.append(ollama.Client(host=srv.url, timeout=120))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def _requests_counted(srv, model: str) -> float:
    _, _, raw = srv.request("GET", "/metrics")
    found = re.findall(rf'^warmstart_requests_total{{[^}}]*model="{model}"[^}}]*}} (\S+)$', raw.decode(), re.M)
    return sum(float(v) for v in found)


def test_ollama_client_chats_generates_and_lists_models_through_warmstart(start_server, connect):
    srv = start_server([smollm2(keep_alive="5m")])
    client = connect(srv)

    assert [m.model for m in client.list().models] == [SMOL]
    assert client.ps().models == []
    assert client.show(SMOL).details.format == "gguf"
    assert client._client.get("/api/version").json()["version"]

    answer = client.chat(SMOL, messages=QUESTION, options={**GREEDY, "num_predict": 40})
    assert "Oslo" in answer.message.content and answer.message.role == "assistant"
    assert answer.done and answer.done_reason in ("stop", "length")
    assert answer.prompt_eval_count > 0 and 0 < answer.eval_count <= 40
    assert answer.total_duration >= answer.load_duration > 0  # this request waited for the cold start

    loaded = client.ps().models
    assert [m.model for m in loaded] == [SMOL] and loaded[0].size > 0
    left = (loaded[0].expires_at - datetime.now(UTC)).total_seconds()
    assert 200 < left <= 300  # the model's 5 m keep-alive

    parts = list(client.chat(SMOL, messages=QUESTION, options={**GREEDY, "num_predict": 40}, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].done_reason
    assert "Oslo" in "".join(p.message.content for p in parts)
    assert parts[-1].eval_count >= len(parts) - 1

    gen = client.generate(SMOL, "What is the capital of Norway?", options={**GREEDY, "num_predict": 40})
    assert "Oslo" in gen.response and gen.done
    pieces = list(client.generate(SMOL, "Count: one, two,", options={**GREEDY, "num_predict": 3}, stream=True))
    assert pieces[-1].done and pieces[-1].done_reason == "length" and pieces[-1].eval_count == 3

    # the same requests counted as OpenAI's are: 4 answered generations
    assert _requests_counted(srv, SMOL) == 4
    # and logged under the path the client asked for, with the tokens of the OpenAI answer underneath
    logged = srv.wait_for(lambda: [line for line in srv.log().splitlines() if "POST /api/" in line]
                          if srv.log().count("POST /api/") >= 4 else None, timeout=10)
    assert [line.split()[2] for line in logged] == ["/api/chat"] * 2 + ["/api/generate"] * 2
    assert all("status=200" in line and "tokens=" in line for line in logged)


def test_ollama_options_format_and_errors(start_server, connect):
    srv = start_server([smollm2(keep_alive="5m")])
    client = connect(srv)

    with pytest.raises(ollama.ResponseError) as err:
        client.chat("no-such-model", messages=QUESTION)
    assert err.value.status_code == 404 and err.value.error == "model 'no-such-model' not found"
    for option, says in (({"num_gpu": 1}, "num_gpu"), ({"tfs_z": 0.5}, "tfs_z"), ({"num_ctx": 1_000_000}, "num_ctx"),
                         ({"num_predict": 0}, "num_predict"),
                         ({"temperature": 7}, "'options.temperature'")):
        with pytest.raises(ollama.ResponseError) as err:
            client.chat(SMOL, messages=QUESTION, options=option)
        assert err.value.status_code == 400 and says in err.value.error
    assert client.ps().models == []  # a refused request starts nothing

    # options the engine takes change the answer: a stop string ends it before the text it names
    count = "One, two, three, four, five,"
    free = client.generate(SMOL, count, raw=True, options={**GREEDY, "num_predict": 12})
    assert "six" in free.response
    stopped = client.generate(SMOL, count, raw=True,
                              options={**GREEDY, "num_predict": 12, "stop": ["six"], "top_k": 1, "repeat_penalty": 1.0})
    assert "six" not in stopped.response and stopped.done_reason == "stop"

    # a client that leaves a stream stops the generation: the relay underneath sees it (499) and frees the slot
    body = {"model": SMOL, "prompt": count, "raw": True, "options": {**GREEDY, "num_predict": 1500}}
    with httpx.stream("POST", srv.url + "/api/generate", json=body, timeout=60) as response:
        first = json.loads(next(response.iter_lines()))
    assert first["done"] is False and first["response"]
    srv.wait_for(lambda: srv.model(SMOL)["replicas"][0]["in_flight"] == 0, timeout=10)
    srv.wait_for(lambda: "POST /api/generate smollm2-135m-instruct status=499" in srv.log(), timeout=10)

    # "json" holds the engine to JSON (SmolLM2 fills an object with keys until num_predict: only its start is checked)
    prose = client.chat(SMOL, messages=QUESTION, options={**GREEDY, "num_predict": 20})
    as_json = client.chat(SMOL, messages=QUESTION, format="json", options={**GREEDY, "num_predict": 20})
    assert not prose.message.content.lstrip().startswith("{") and as_json.message.content.lstrip().startswith("{")
    schema = {"type": "object", "properties": {"capital": {"type": "string", "maxLength": 20}},
              "required": ["capital"], "additionalProperties": False}
    structured = client.chat(SMOL, messages=QUESTION, format=schema, options={**GREEDY, "num_predict": 60})
    assert set(json.loads(structured.message.content)) == {"capital"}


def test_ollama_keep_alive_preloads_unloads_and_keeps(start_server, connect):
    srv = start_server([smollm2(keep_alive="5m")])
    client = connect(srv)

    loaded = client.chat(SMOL, messages=[], keep_alive=-1)  # Ollama's preload: no messages
    assert loaded.done and loaded.done_reason == "load"
    [model] = client.ps().models
    assert model.expires_at.year > 2300  # negative: loaded until told otherwise

    unloaded = client.generate(SMOL, keep_alive=0)  # no prompt and keep_alive 0: unload now
    assert unloaded.done_reason == "unload" and client.ps().models == []

    client.generate(SMOL, "Hi", options={"num_predict": 2}, keep_alive="30s")
    [model] = client.ps().models
    assert 0 < (model.expires_at - datetime.now(UTC)).total_seconds() <= 30

    client.generate(SMOL, "Hi", options={"num_predict": 2}, keep_alive=0)  # answered, then unloaded
    deadline = time.monotonic() + 10
    while client.ps().models and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.ps().models == []


def test_ollama_embed_on_an_embedding_model_behind_an_api_key(start_server, connect):
    embedder = smollm2(name="smol-embed", options={"n_ctx": 512, "embedding": True, "pooling": "mean"})
    srv = start_server([embedder], sections={"auth": {"api_keys": ["ollama-test-key-0123456789"]}})
    with pytest.raises(ollama.ResponseError) as err:
        connect(srv).embed("smol-embed", input="hello")
    assert err.value.status_code == 401 and "API key" in err.value.error  # Ollama's shape: the message itself
    client = ollama.Client(host=srv.url, timeout=120, headers={"authorization": "Bearer ollama-test-key-0123456789"})
    try:
        result = client.embed("smol-embed", input=["hello world", "goodbye"])
    finally:
        client.close()
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == len(result.embeddings[1]) > 10
    assert result.embeddings[0] != result.embeddings[1] and result.prompt_eval_count > 0
