"""Pure translations between Ollama's API and the OpenAI requests warmstart serves: request bodies and
options in, answers (whole or streamed) out, errors in Ollama's `{"error": "..."}` shape."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from warmstart.durations import parse_duration
from warmstart.engines.base import Capabilities

# Ollama's options every OpenAI-compatible engine honours, and their OpenAI names
_COMMON = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
# sampling options only some engines take, by engine, under the name that engine reads from the request body
_ENGINE_OPTIONS: dict[str, dict[str, str]] = {
    "llamacpp": {"top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p", "repeat_penalty": "repeat_penalty",
                 "repeat_last_n": "repeat_last_n", "mirostat": "mirostat", "mirostat_tau": "mirostat_tau",
                 "mirostat_eta": "mirostat_eta", "num_keep": "n_keep"},
    "vllm": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"},
}
# set when an engine starts, not per request: warmstart sets them per model (`[[models]] options`)
LOAD_TIME = frozenset({"num_batch", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "num_thread", "low_vram",
                       "f16_kv", "vocab_only", "numa", "logits_all", "embedding_only"})
# ollama's client sends these to mean "no limit": the engine's own default (up to the context) applies
_UNLIMITED = (-1, -2)
FOREVER_AT = "2318-01-01T00:00:00Z"  # Ollama's expires_at for a model kept loaded forever (year 2318, as Ollama)


class OllamaError(Exception):
    """A request Ollama's API answers with `{"error": message}` and `status`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def now_rfc3339(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def keep_alive_seconds(value: object) -> float | None:
    """Ollama's `keep_alive`: seconds, or a duration string ("5m", "1h30m"); 0 unloads; negative: forever."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise OllamaError(f"invalid keep_alive: {exc}") from None


def map_options(options: object, engine: str, caps: Capabilities) -> dict[str, Any]:
    """Ollama's `options` as OpenAI request fields for `engine`; an option it cannot honour is refused."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise OllamaError("options must be an object")
    extra = _ENGINE_OPTIONS.get(engine, {})
    out: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name == "num_predict":
            if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value not in _UNLIMITED):
                raise OllamaError(f"invalid option num_predict: {value!r}; use a positive number of tokens, "
                                  "or -1 for no limit")
            if value > 0:
                out["max_tokens"] = value
        elif name == "num_ctx":
            limit = caps.context_length
            if isinstance(value, bool) or not isinstance(value, int) or limit is None or value > limit:
                raise OllamaError(f"option num_ctx = {value!r} cannot be honoured: this model's context is "
                                  f"{limit} tokens, set when it starts (warmstart: [[models]] options.n_ctx)")
        elif name in _COMMON:
            out[_COMMON[name]] = value
        elif name in extra:
            out[extra[name]] = value
        elif name in LOAD_TIME:
            raise OllamaError(f"option {name} is set when the model starts, not per request; "
                              "warmstart takes it in the model's [[models]] options")
        else:
            raise OllamaError(f"option {name} is not supported by this model's engine ({engine})")
    if "seed" in out and out["seed"] == -1:
        del out["seed"]  # Ollama's "random", the engine's default
    return out


def ollama_param(param: str | None) -> str | None:
    """The Ollama name of an OpenAI request field that came from `options` (to name it in an error)."""
    if param is None:
        return None
    names = {"max_tokens": "num_predict", **{v: k for engine in _ENGINE_OPTIONS.values() for k, v in engine.items()},
             **{v: k for k, v in _COMMON.items()}}
    return f"options.{names[param]}" if param in names else param


def response_format(fmt: object) -> dict[str, Any] | None:
    """Ollama's `format` ("json" or a JSON schema) as OpenAI's `response_format`."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt, "strict": True}}
    raise OllamaError(f"invalid format {json.dumps(fmt)[:80]}: use \"json\" or a JSON schema object")


def _refuse_unsupported(body: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    for name in fields:
        value = body.get(name)
        if value not in (None, False, "", [], {}):
            raise OllamaError(f"'{name}' is not supported by warmstart's Ollama API")


def _common_fields(body: Mapping[str, Any], engine: str, caps: Capabilities) -> dict[str, Any]:
    out: dict[str, Any] = {"model": body["model"], **map_options(body.get("options"), engine, caps)}
    fmt = response_format(body.get("format"))
    if fmt is not None:
        out["response_format"] = fmt
    if body.get("stream", True) is not False:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _message(i: int, message: object) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise OllamaError(f"messages[{i}] must be an object with role and content")
    if message.get("images"):
        raise OllamaError(f"messages[{i}].images: images are not supported by warmstart's Ollama API")
    if message.get("tool_calls"):
        raise OllamaError(f"messages[{i}].tool_calls: tools are not supported by warmstart's Ollama API")
    role, content = message.get("role"), message.get("content", "")
    if not isinstance(role, str) or not isinstance(content, str):
        raise OllamaError(f"messages[{i}] needs a string role and a string content")
    return {"role": role, "content": content}


def chat_request(body: Mapping[str, Any], engine: str, caps: Capabilities) -> dict[str, Any]:
    """POST /api/chat as an OpenAI chat completion request."""
    _refuse_unsupported(body, ("tools", "think"))
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise OllamaError("messages must be a list")
    return {**_common_fields(body, engine, caps), "messages": [_message(i, m) for i, m in enumerate(messages)]}


def generate_request(body: Mapping[str, Any], engine: str, caps: Capabilities) -> tuple[str, dict[str, Any]]:
    """POST /api/generate as an OpenAI request: a chat turn (the model's template applied, as Ollama does)
    unless `raw` is set or the model has no chat template, then a plain completion. Returns (path, body)."""
    _refuse_unsupported(body, ("images", "template", "context", "suffix", "think"))
    prompt, system = body.get("prompt", ""), body.get("system")
    if not isinstance(prompt, str) or (system is not None and not isinstance(system, str)):
        raise OllamaError("prompt and system must be strings")
    out = _common_fields(body, engine, caps)
    if body.get("raw") or not caps.chat:
        return "/v1/completions", {**out, "prompt": (system + "\n\n" if system else "") + prompt}
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return "/v1/chat/completions", {**out, "messages": messages}


@dataclass
class Durations:
    """What Ollama reports of an answer's time, in seconds (None: not known)."""
    total: float
    load: float
    prompt_eval: float | None = None
    eval: float | None = None


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1e9)


def _finish_reason(reason: object) -> str:
    return "length" if reason == "length" else "stop"


def done_fields(finish: object, usage: Mapping[str, Any] | None, timings: Mapping[str, Any] | None,
                durations: Durations, generated: int | None = None) -> dict[str, Any]:
    """The fields of Ollama's last object: why it stopped, token counts and durations (what is known)."""
    usage, timings = usage or {}, timings or {}
    prompt_ms, predicted_ms = timings.get("prompt_ms"), timings.get("predicted_ms")
    out: dict[str, Any] = {
        "done": True, "done_reason": _finish_reason(finish),
        "total_duration": _ns(durations.total), "load_duration": _ns(durations.load),
        "prompt_eval_count": usage.get("prompt_tokens", timings.get("prompt_n")),
        "prompt_eval_duration": _ns(prompt_ms / 1000 if isinstance(prompt_ms, (int, float)) else durations.prompt_eval),
        "eval_count": usage.get("completion_tokens", timings.get("predicted_n", generated)),
        "eval_duration": _ns(predicted_ms / 1000 if isinstance(predicted_ms, (int, float)) else durations.eval),
    }
    return {k: v for k, v in out.items() if v is not None}


def answer(kind: str, model: str, openai: Mapping[str, Any], durations: Durations) -> dict[str, Any]:
    """A whole OpenAI answer (chat or completion) as Ollama's one object for /api/chat (`kind` "chat") or
    /api/generate ("generate")."""
    choice = (openai.get("choices") or [{}])[0]
    text = choice.get("message", {}).get("content") if "message" in choice else choice.get("text")
    done = done_fields(choice.get("finish_reason"), openai.get("usage"), openai.get("timings"), durations)
    return {**_piece(kind, model, text or ""), **done}


def _piece(kind: str, model: str, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if kind == "chat":
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    return body


def error_message(data: bytes, status: int) -> str:
    """The message of an OpenAI error body (the engine's or warmstart's)."""
    try:
        error = json.loads(data)["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return f"the engine answered HTTP {status}"


class StreamTranslator:
    """OpenAI's SSE stream in, Ollama's newline-delimited JSON out, one object per text delta, the last with
    `done: true` (or an `{"error"}` line where the stream was cut)."""

    def __init__(self, kind: str, model: str) -> None:
        self.kind, self.model = kind, model
        self.buffer = b""
        self.finish: object = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.pieces = 0
        self.ended = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buffer += data
        out: list[dict[str, Any]] = []
        while b"\n\n" in self.buffer:
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data: ") and line[6:].strip() != b"[DONE]":
                    out += self._event(json.loads(line[6:]))
        return out

    def _event(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if "error" in chunk:
            self.ended = True
            error = chunk["error"]
            return [{"error": error.get("message") if isinstance(error, dict) else str(error)}]
        self.usage = chunk.get("usage") or self.usage
        self.timings = chunk.get("timings") or self.timings
        out = []
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") if self.kind == "chat" else choice.get("text")
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
            if text:
                self.pieces += 1
                out.append({**_piece(self.kind, self.model, text), "done": False})
        return out

    def last(self, durations: Durations) -> dict[str, Any] | None:
        """The final `done` object, unless the stream ended with an error."""
        if self.ended:
            return None
        return {**_piece(self.kind, self.model, ""),
                **done_fields(self.finish, self.usage, self.timings, durations, self.pieces)}


def expires_at(expires_in_s: float | None, keep_alive_s: float | None, now: float) -> str:
    """When a loaded model unloads, as Ollama's `/api/ps` shows it."""
    seconds = expires_in_s if expires_in_s is not None else keep_alive_s
    if seconds is None or math.isinf(seconds):
        return FOREVER_AT
    return now_rfc3339(now + seconds)
