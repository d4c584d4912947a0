"""Every field of the `openai` package's request types, sent to a real engine through warmstart (issue 17
item 1): each one either does what OpenAI documents (checked on the answer), is informational (accepted,
as OpenAI accepts it, with nothing to do), or gets a 400 naming it. A field a new `openai` release adds fails
the first test until it is placed in one of these lists.

Engine: llama.cpp (llama-server from the xllamacpp wheel) with SmolLM2-135M-Instruct, whose chat template
takes no tools. vLLM's answers to the same walk are not run here (its CPU start takes minutes)."""

from __future__ import annotations

import json
import typing

import pytest
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_params

from tests.support import chat, smollm2

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"
QUESTION = "What is the capital of Norway? Answer in one sentence."


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


def fields(typed_dict) -> set[str]:
    return set(typing.get_type_hints(typed_dict))


def test_every_field_of_the_openai_request_types_is_placed():
    assert fields(chat_params.CompletionCreateParamsBase) == set(CHAT_HONOURED) | set(CHAT_INFORMATIONAL) | set(
        CHAT_REFUSED)
    assert fields(completion_create_params.CompletionCreateParamsBase) == (
        COMPLETION_HONOURED | COMPLETION_INFORMATIONAL | set(COMPLETION_REFUSED))
    assert fields(embedding_create_params.EmbeddingCreateParams) == EMBEDDING_FIELDS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.support import Server, config_text, free_port

    tmp = tmp_path_factory.mktemp("fields")
    config = tmp / "warmstart.toml"
    config.write_text(config_text([smollm2(keep_alive=-1)]))
    srv = Server(config_path=config, data_dir=tmp / "data", port=free_port(), env={}).start()
    yield srv
    srv.stop()


def ask(srv, **extra):
    status, _, body = srv.post("/v1/chat/completions", chat(QUESTION, **{"max_tokens": 12, **extra}))
    return status, body


def test_chat_fields_are_honoured_informational_or_refused_by_name(server):
    status, base_body = ask(server)
    assert status == 200
    base = text(base_body)
    words = base.split()
    checks = dict(CHAT_HONOURED)
    checks["stop"] = (words[2], lambda b, base: words[2] not in text(b) and len(text(b)) < len(base))
    for name, check in checks.items():
        if check is None or check == (None, None) or name == "seed":
            continue
        value, holds = check
        sent = {"logprobs": True, name: value} if name == "top_logprobs" else {name: value}  # OpenAI needs both
        status, body = ask(server, **sent)
        assert status == 200, (name, body)
        if holds is not None:
            assert holds(body, base), (name, body)

    sampled = [text(ask(server, seed=1234, temperature=1.0)[1]) for _ in range(2)]
    assert sampled[0] == sampled[1]

    # logit_bias: the baseline's first token, found from its logprobs, banned
    status, body = ask(server, logprobs=True, max_tokens=1)
    token = body["choices"][0]["logprobs"]["content"][0]
    assert text(base_body).startswith(token["token"]) and "id" in token, token  # llama-server adds the token id
    status, body = ask(server, logit_bias={str(token["id"]): -100})
    assert status == 200 and not text(body).startswith(token["token"]), body

    status, _, raw = server.request("POST", "/v1/chat/completions", {
        **chat(QUESTION, max_tokens=4), "stream": True, "stream_options": {"include_usage": True}})
    events = [json.loads(line[5:]) for line in raw.decode().splitlines()
              if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    assert status == 200 and any(e.get("usage") for e in events)

    for name, value in CHAT_INFORMATIONAL.items():
        status, body = ask(server, **{name: value})
        assert status == 200 and text(body) == base, (name, body)

    for name, value in CHAT_REFUSED.items():
        sent = {"tools": CHAT_REFUSED["tools"], name: True} if name == "parallel_tool_calls" else {name: value}
        status, body = ask(server, **sent)
        assert status == 400, (name, body)
        error = body["error"]
        assert error["param"] in (name, "tools") and error["code"] == "unsupported_parameter", (name, error)
        assert f"'{error['param']}'" in error["message"]
    # inert values ask for nothing and are accepted
    for sent in ({"store": False}, {"service_tier": "auto"}, {"tool_choice": "none"}, {"modalities": ["text"]}):
        assert ask(server, **sent)[0] == 200, sent


def test_completion_fields_are_honoured_or_refused_by_name(server):
    def complete(**extra):
        status, _, body = server.post("/v1/completions", {"model": MODEL, "prompt": "The capital of Norway is",
                                                            "max_tokens": 4, "temperature": 0, **extra})
        return status, body

    status, body = complete(logprobs=2)
    assert status == 200 and body["choices"][0]["logprobs"], body
    status, body = complete(n=2)
    assert status == 200 and len(body["choices"]) == 2
    assert complete(user="user-1")[0] == 200
    for name, value in COMPLETION_REFUSED.items():
        status, body = complete(**{name: value})
        assert status == 400 and body["error"]["param"] == name, (name, body)
    assert complete(best_of=1)[0] == 200  # asks for nothing more than one
