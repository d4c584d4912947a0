import json

import pytest
from pydantic import ValidationError

from warmstart.engines.base import Capabilities
from warmstart.errors import DeadlineExceeded, InvalidRequest, ModelNotFound
from warmstart.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from warmstart.gateway.translate import (
    check_embedding_request,
    check_request,
    engine_body,
    engine_error_body,
    error_response,
    keep_alive_of,
    validation_message,
)

CHAT = Capabilities(chat=True, context_length=2048)
BASE = Capabilities(chat=False, context_length=2048)


def chat(**kw):
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def test_engine_body_drops_keep_alive_and_keeps_unknown_openai_fields():
    body = json.loads(engine_body(chat(keep_alive="5m", logprobs=True, max_completion_tokens=7)))
    assert "keep_alive" not in body and body["logprobs"] is True and body["max_tokens"] == 7
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_a_message_named_null_reaches_the_engine_without_a_name():
    # llama-server fails to parse `"name": null` (an HTTP 500, found by the API fuzz); a name is passed on
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "system", "content": "be brief", "name": None}, {"role": "user", "content": "hi", "name": "ann"}]})
    assert json.loads(engine_body(req))["messages"] == [{"role": "system", "content": "be brief"},
                                                        {"role": "user", "content": "hi", "name": "ann"}]


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


LLAMA = Capabilities(chat=True, context_length=2048, unsupported_fields=("best_of", "echo", "modalities"),
                     max_choices=16, content_types=("text",))


@pytest.mark.parametrize("field,value", [("best_of", 3), ("echo", True), ("modalities", ["text", "audio"])])
def test_a_field_the_engine_would_ignore_is_refused_by_name(field, value):
    with pytest.raises(InvalidRequest) as err:
        check_request(chat(**{field: value}), LLAMA)
    assert err.value.param == field and err.value.code == "unsupported_parameter" and field in err.value.message
    check_request(chat(**{field: value}), CHAT)  # an engine that declares nothing gets it as sent


@pytest.mark.parametrize("field,value", [("best_of", 1), ("echo", False), ("modalities", ["text"]), ("best_of", None)])
def test_the_default_value_of_an_unsupported_field_is_harmless(field, value):
    check_request(chat(**{field: value}), LLAMA)


def test_n_is_bounded_by_the_engine():
    check_request(chat(n=4), LLAMA)
    with pytest.raises(InvalidRequest) as err:
        check_request(chat(n=17), LLAMA)
    assert err.value.param == "n" and "at most 16" in err.value.message
    with pytest.raises(InvalidRequest):
        check_request(chat(n=2), CHAT)


def test_content_parts_the_engine_cannot_read_are_refused():
    image = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "what is this"}, {"type": "image_url"}]}]})
    with pytest.raises(InvalidRequest) as err:
        check_request(image, LLAMA)
    assert err.value.param == "messages[1].content"
    check_request(image, CHAT)


def test_llama_servers_context_overflow_becomes_openais_error():
    raw = json.dumps({"error": {"code": 400, "message": "request (10030 tokens) exceeds the available context size "
                                "(2048 tokens), try increasing it", "type": "exceed_context_size_error",
                                "n_prompt_tokens": 10030, "n_ctx": 2048}}).encode()
    error = json.loads(engine_error_body(400, raw, "/v1/chat/completions"))["error"]
    assert error == {"message": error["message"], "type": "invalid_request_error", "param": "messages",
                     "code": "context_length_exceeded"}
    assert json.loads(engine_error_body(400, raw, "/v1/completions"))["error"]["param"] == "prompt"


def test_engine_errors_get_string_codes_and_unknown_bodies_pass_unchanged():
    raw = json.dumps({"error": {"code": 500, "message": "boom", "type": "server_error"}}).encode()
    assert json.loads(engine_error_body(500, raw, "/v1/completions"))["error"] == {
        "message": "boom", "type": "server_error", "param": None, "code": "engine_error"}
    raw = json.dumps({"error": {"code": 400, "message": "Prompt contains invalid tokens",
                                "type": "invalid_request_error"}}).encode()
    assert json.loads(engine_error_body(400, raw, "/v1/completions"))["error"]["code"] == "invalid_request"
    assert engine_error_body(502, b"<html>bad gateway</html>", "/v1/completions") == b"<html>bad gateway</html>"


def embed(**kw):
    return EmbeddingRequest.model_validate({"model": "m", "input": ["a", "b"], **kw})


def test_embeddings_only_on_a_model_configured_for_them():
    check_embedding_request(embed(), Capabilities(chat=True, embeddings=True))
    with pytest.raises(InvalidRequest) as err:
        check_embedding_request(embed(), CHAT)
    assert err.value.code == "embeddings_not_supported" and err.value.param == "model"


@pytest.mark.parametrize("kw,param", [({"input": ""}, "input"), ({"input": []}, "input"),
                                      ({"input": ["a", ""]}, "input"), ({"dimensions": 8}, "dimensions")])
def test_an_embeddings_request_the_engine_cannot_answer_is_named(kw, param):
    with pytest.raises(InvalidRequest) as err:
        check_embedding_request(embed(**kw), Capabilities(chat=False, embeddings=True))
    assert err.value.param == param


def test_an_embeddings_body_keeps_its_fields_but_keep_alive():
    body = json.loads(engine_body(embed(encoding_format="float", keep_alive="5m")))
    assert body == {"model": "m", "input": ["a", "b"], "encoding_format": "float"}


def test_a_message_without_content_is_refused_unless_an_assistant_calls_a_tool():
    def req(*messages):
        return ChatCompletionRequest.model_validate({"model": "m", "messages": list(messages)})

    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    check_request(req({"role": "user", "content": "hi"}, call, {"role": "tool", "content": "x"}), LLAMA)
    for i, message in ((0, {"role": "tool", "content": None}), (1, {"role": "assistant"})):
        with pytest.raises(InvalidRequest) as err:
            check_request(req({"role": "user", "content": "hi"}, message) if i else req(message), LLAMA)
        assert err.value.param == f"messages[{i}].content"
    check_request(req({"role": "tool", "content": None}), CHAT)  # an engine that declares nothing gets it as sent


VLLM = Capabilities(chat=True, context_length=512, unsupported_fields=("best_of", "suffix"), max_choices=128,
                    max_greedy_choices=1, engine="vLLM")


def test_a_refusal_names_the_engine_and_more_greedy_choices_than_it_makes_are_refused():
    with pytest.raises(InvalidRequest, match=r"'best_of' is not supported by this model's engine \(vLLM\)"):
        check_request(chat(best_of=2), VLLM)
    with pytest.raises(InvalidRequest, match=r"engine \(vLLM\) makes 1 choice with greedy sampling") as err:
        check_request(chat(n=2, temperature=0), VLLM)
    assert err.value.param == "n"
    check_request(chat(n=2, temperature=0.7), VLLM)  # sampled: as many as asked
    check_request(chat(n=2), VLLM)  # the model's own default temperature: left to the engine
    check_request(chat(n=2, temperature=0), LLAMA)  # llama.cpp makes greedy choices alike


def test_inert_values_of_unsupported_fields_are_left_out_of_the_engine_body():
    from warmstart.gateway.translate import inert_fields

    req = chat(tool_choice="none", store=False, best_of=1, logprobs=True)
    leave_out = inert_fields(req, Capabilities(chat=True, unsupported_fields=("tool_choice", "store", "best_of")))
    assert leave_out == {"tool_choice", "store", "best_of"}
    body = json.loads(engine_body(req, leave_out=leave_out))
    assert "tool_choice" not in body and "store" not in body and "best_of" not in body and body["logprobs"] is True
