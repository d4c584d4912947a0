import json

import pytest
from pydantic import ValidationError

from warmstart.engines.base import Capabilities
from warmstart.errors import DeadlineExceeded, InvalidRequest, ModelNotFound
from warmstart.gateway.protocol import ChatCompletionRequest, CompletionRequest
from warmstart.gateway.translate import check_request, engine_body, error_response, keep_alive_of, validation_message

CHAT = Capabilities(chat=True, context_length=2048)
BASE = Capabilities(chat=False, context_length=2048)


def chat(**kw):
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def test_engine_body_drops_keep_alive_and_keeps_unknown_openai_fields():
    body = json.loads(engine_body(chat(keep_alive="5m", logprobs=True, max_completion_tokens=7)))
    assert "keep_alive" not in body and body["logprobs"] is True and body["max_tokens"] == 7
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_engine_body_unwraps_a_one_string_prompt_array():
    req = CompletionRequest.model_validate({"model": "m", "prompt": ["once upon"]})
    assert json.loads(engine_body(req))["prompt"] == "once upon"


def test_keep_alive_values():
    assert keep_alive_of(chat()) is None
    assert keep_alive_of(chat(keep_alive=0)) == 0 and keep_alive_of(chat(keep_alive="2m")) == 120
    with pytest.raises(InvalidRequest) as err:
        keep_alive_of(chat(keep_alive="a while"))
    assert err.value.param == "keep_alive"


def test_chat_on_a_model_without_template_is_refused():
    with pytest.raises(InvalidRequest) as err:
        check_request(chat(), BASE)
    assert err.value.code == "chat_not_supported" and "/v1/completions" in err.value.message


def test_max_tokens_beyond_the_context_is_refused():
    with pytest.raises(InvalidRequest) as err:
        check_request(chat(max_tokens=100_000), CHAT)
    assert err.value.param == "max_tokens"
    check_request(chat(max_tokens=100), CHAT)


@pytest.mark.parametrize("body,param", [
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"model": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
])
def test_validation_errors_name_the_parameter(body, param):
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate(body)
    message, got = validation_message(err.value.errors())
    assert got == param and param in message


def test_error_responses_are_openai_shaped():
    status, body, headers = error_response(ModelNotFound("no such model", param="model"))
    assert status == 404 and body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    status, body, headers = error_response(DeadlineExceeded("too slow", retry_after=2.2))
    assert status == 503 and headers["retry-after"] == "3" and body["error"]["type"] == "server_error"


@pytest.mark.parametrize("prompt,message", [("", "must not be empty"), ([""], "must not be empty"),
                                            ([5, -1], "must not be negative")])
def test_an_empty_prompt_or_negative_token_ids_are_refused_before_any_engine(prompt, message):
    with pytest.raises(InvalidRequest, match=message) as err:
        check_request(CompletionRequest.model_validate({"model": "m", "prompt": prompt}), BASE)
    assert err.value.param == "prompt"


def test_a_prompt_that_cannot_fit_the_context_is_refused_without_tokenizing():
    caps = Capabilities(chat=True, context_length=100, max_token_bytes=8)  # at most 800 bytes of text
    fits = CompletionRequest.model_validate({"model": "m", "prompt": "x" * 800})
    check_request(fits, caps)
    for req, param in ((CompletionRequest.model_validate({"model": "m", "prompt": "x" * 801}), "prompt"),
                       (CompletionRequest.model_validate({"model": "m", "prompt": ["é" * 401]}), "prompt"),
                       (chat(messages=[{"role": "user", "content": "x" * 500},
                                       {"role": "user", "content": [{"type": "text", "text": "y" * 301}]}]),
                        "messages"),
                       (CompletionRequest.model_validate({"model": "m", "prompt": [1] * 101}), "prompt")):
        with pytest.raises(InvalidRequest, match="context") as err:
            check_request(req, caps)
        assert err.value.code == "context_length_exceeded" and err.value.param == param
    # without the vocabulary's longest token, text is left to the engine; token ids are still counted
    check_request(CompletionRequest.model_validate({"model": "m", "prompt": "x" * 10_000}),
                  Capabilities(chat=True, context_length=100))


def test_many_empty_messages_are_refused_by_their_template_cost_before_any_engine():
    caps = Capabilities(chat=True, context_length=100, max_token_bytes=8)
    empty = {"role": "user", "content": ""}
    check_request(chat(messages=[empty] * 101), caps)  # the first shares its turn: 100 tokens at least
    with pytest.raises(InvalidRequest, match="102 messages") as err:
        check_request(chat(messages=[empty] * 102), caps)
    assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
    assert "100 tokens" in err.value.message
    # content parts cost a token each too
    parts = [{"type": "text", "text": ""}] * 150
    with pytest.raises(InvalidRequest) as err:
        check_request(chat(messages=[{"role": "user", "content": parts}]), caps)
    assert err.value.code == "context_length_exceeded"
    # the bound holds without the vocabulary's longest token too
    with pytest.raises(InvalidRequest):
        check_request(chat(messages=[empty] * 100_000), Capabilities(chat=True, context_length=2048))
    # text and messages add up: 50 messages of 400 bytes in all need 50 + 49 tokens, too many for 90
    few = Capabilities(chat=True, context_length=90, max_token_bytes=8)
    with pytest.raises(InvalidRequest, match="at least 99 tokens"):
        check_request(chat(messages=[{"role": "user", "content": "x" * 8}] * 50), few)
