"""Ollama's wire format to and from OpenAI's, without a socket."""

from __future__ import annotations

import json
import math

import pytest

from warmstart.engines.base import Capabilities
from warmstart.gateway.ollama_wire import (
    FOREVER_AT,
    Durations,
    OllamaError,
    StreamTranslator,
    answer,
    chat_request,
    expires_at,
    generate_request,
    keep_alive_seconds,
    map_options,
    ollama_param,
    response_format,
)

CHAT = Capabilities(chat=True, context_length=2048)
BASE = Capabilities(chat=False, context_length=2048)


def test_options_map_to_the_fields_each_engine_reads():
    options = {"temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["\n"], "num_predict": 16, "top_k": 40,
               "repeat_penalty": 1.1, "num_keep": 4}
    assert map_options(options, "llamacpp", CHAT) == {
        "temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["\n"], "max_tokens": 16, "top_k": 40,
        "repeat_penalty": 1.1, "n_keep": 4}
    assert map_options({"repeat_penalty": 1.1, "top_k": 5}, "vllm", CHAT) == {"repetition_penalty": 1.1, "top_k": 5}


@pytest.mark.parametrize(("options", "engine", "says"), [
    ({"top_k": 40}, "command", "top_k is not supported by this model's engine (command)"),
    ({"mirostat": 2}, "vllm", "mirostat"),
    ({"tfs_z": 0.5}, "llamacpp", "tfs_z"),
    ({"num_gpu": 1}, "llamacpp", "num_gpu is set when the model starts"),
    ({"num_ctx": 4096}, "llamacpp", "context is 2048 tokens"),
    ({"num_predict": 0}, "llamacpp", "num_predict"),
    ({"num_predict": "ten"}, "llamacpp", "num_predict"),
])
def test_an_option_the_engine_cannot_honour_is_refused_by_name(options, engine, says):
    with pytest.raises(OllamaError) as err:
        map_options(options, engine, CHAT)
    assert says in err.value.message and err.value.status == 400


def test_unlimited_and_random_are_the_engines_defaults():
    assert map_options({"num_predict": -1, "seed": -1, "num_ctx": 2048, "top_k": None}, "llamacpp", CHAT) == {}


def test_format_becomes_response_format():
    assert response_format("json") == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert response_format(schema) == {"type": "json_schema",
                                       "json_schema": {"name": "format", "schema": schema, "strict": True}}
    assert response_format(None) is None and response_format("") is None
    with pytest.raises(OllamaError):
        response_format("yaml")


def test_keep_alive_in_ollamas_forms():
    assert keep_alive_seconds("5m") == 300 and keep_alive_seconds("1h30m") == 5400
    assert keep_alive_seconds(30) == 30 and keep_alive_seconds(0) == 0 and keep_alive_seconds("0") == 0
    assert math.isinf(keep_alive_seconds(-1)) and math.isinf(keep_alive_seconds("-1m"))
    assert keep_alive_seconds(None) is None
    with pytest.raises(OllamaError, match="keep_alive"):
        keep_alive_seconds("soon")


def test_chat_defaults_to_a_stream_with_usage_and_refuses_what_it_cannot_map():
    body = chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "format": "json"},
                        "llamacpp", CHAT)
    assert body == {"model": "m", "stream": True, "stream_options": {"include_usage": True},
                    "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hi"}]}
    assert "stream" not in chat_request({"model": "m", "messages": [], "stream": False}, "llamacpp", CHAT)
    for extra in ({"tools": [{"type": "function"}]}, {"think": True}):
        with pytest.raises(OllamaError):
            chat_request({"model": "m", "messages": [], **extra}, "llamacpp", CHAT)
    with pytest.raises(OllamaError, match="images"):
        chat_request({"model": "m", "messages": [{"role": "user", "content": "", "images": ["x"]}]}, "llamacpp", CHAT)


def test_generate_applies_the_chat_template_unless_raw_or_there_is_none():
    body = {"model": "m", "prompt": "Why?", "system": "Be brief.", "stream": False}
    path, chat = generate_request(body, "llamacpp", CHAT)
    assert path == "/v1/chat/completions" and chat["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]
    for raw, caps in ((True, CHAT), (False, BASE)):
        path, plain = generate_request({**body, "raw": raw}, "llamacpp", caps)
        assert path == "/v1/completions" and plain["prompt"] == "Be brief.\n\nWhy?"
    with pytest.raises(OllamaError, match="context"):
        generate_request({**body, "context": [1, 2, 3]}, "llamacpp", CHAT)


def test_a_whole_answer_in_ollamas_shape():
    openai = {"choices": [{"message": {"role": "assistant", "content": "Oslo."}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 12, "completion_tokens": 3},
              "timings": {"prompt_ms": 50.0, "predicted_ms": 30.0}}
    out = answer("chat", "m", openai, Durations(total=2.0, load=1.5))
    assert out["message"] == {"role": "assistant", "content": "Oslo."} and out["done"] is True
    assert (out["done_reason"], out["prompt_eval_count"], out["eval_count"]) == ("stop", 12, 3)
    assert (out["total_duration"], out["load_duration"]) == (2_000_000_000, 1_500_000_000)
    assert (out["prompt_eval_duration"], out["eval_duration"]) == (50_000_000, 30_000_000)
    text = answer("generate", "m", {"choices": [{"text": "abc", "finish_reason": "length"}]}, Durations(1, 0))
    assert text["response"] == "abc" and text["done_reason"] == "length" and "eval_count" not in text


def _sse(*chunks: object) -> bytes:
    return b"".join(b"data: " + (c if isinstance(c, bytes) else json.dumps(c).encode()) + b"\n\n" for c in chunks)


def test_a_stream_split_anywhere_becomes_one_line_per_piece_then_done():
    raw = _sse({"choices": [{"delta": {"content": "Os"}}]}, {"choices": [{"delta": {"content": "lo"}}]},
               {"choices": [{"delta": {}, "finish_reason": "stop"}]},
               {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}, b"[DONE]")
    translator = StreamTranslator("chat", "m")
    lines = [line for i in range(0, len(raw), 7) for line in translator.feed(raw[i:i + 7])]
    assert [line["message"]["content"] for line in lines] == ["Os", "lo"] and not any(line["done"] for line in lines)
    last = translator.last(Durations(1.0, 0.0))
    assert last is not None and last["done"] and last["done_reason"] == "stop"
    assert (last["prompt_eval_count"], last["eval_count"], last["message"]["content"]) == (9, 2, "")


def test_a_cut_stream_ends_with_an_error_line_and_no_done():
    translator = StreamTranslator("generate", "m")
    lines = translator.feed(_sse({"choices": [{"text": "a"}]},
                                 {"error": {"message": "the engine stopped", "type": "server_error"}}))
    assert lines[0]["response"] == "a" and lines[1] == {"error": "the engine stopped"}
    assert translator.last(Durations(1.0, 0.0)) is None


def test_expires_at():
    assert expires_at(None, None, 0.0) == FOREVER_AT and expires_at(None, math.inf, 0.0) == FOREVER_AT
    assert expires_at(60.0, 300.0, 0.0) == "1970-01-01T00:01:00.000000Z"
    assert expires_at(None, 300.0, 0.0) == "1970-01-01T00:05:00.000000Z"


def test_errors_name_the_option_the_client_sent():
    assert ollama_param("max_tokens") == "options.num_predict" and ollama_param("temperature") == "options.temperature"
    assert ollama_param("n_keep") == "options.num_keep" and ollama_param("messages") == "messages"


def test_a_folder_model_is_listed_with_the_size_of_its_files_not_of_the_folder(tmp_path):
    """`/api/tags` for a vLLM checkpoint or a Hugging Face snapshot (links into a blob store): what its files hold
    (hidden ones, a download's cache, left out), where a stat of the folder gave a directory's 4096 bytes."""
    from warmstart.gateway.ollama import _model_entry

    blob = tmp_path / "blob"
    blob.write_bytes(b"\0" * 5000)
    folder = tmp_path / "snap"
    (folder / ".cache").mkdir(parents=True)
    (folder / ".cache" / "meta").write_bytes(b"\0" * 100)
    (folder / "config.json").write_bytes(b"{}")
    (folder / "model.safetensors").symlink_to(blob)
    entry = _model_entry({"name": "m", "path": str(folder), "engine": "vllm"})
    assert entry["size"] == 5002 and entry["details"]["format"] == "vllm"
    assert _model_entry({"name": "m", "path": str(blob), "engine": "llamacpp"})["size"] == 5000
    assert _model_entry({"name": "m", "path": str(tmp_path / "gone"), "engine": "llamacpp"})["size"] == 0
