"""Pure translations between the wire and warmstart: request checks, engine bodies, error bodies."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_core import PydanticSerializationError
from starlette.responses import JSONResponse

from warmstart.durations import parse_duration
from warmstart.engines.base import Capabilities
from warmstart.errors import InvalidRequest, RateLimited, RequestError, Unavailable, openai_error_body
from warmstart.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

GenerationRequest = ChatCompletionRequest | CompletionRequest
ModelRequest = GenerationRequest | EmbeddingRequest


def keep_alive_of(req: ModelRequest) -> float | None:
    return parse_keep_alive(req.keep_alive)


def parse_keep_alive(value: object) -> float | None:
    """A request's `keep_alive` (seconds or "5m"; None: the model's own), or a 400 naming it."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid 'keep_alive': {exc}", param="keep_alive") from None


def check_request(req: GenerationRequest, caps: Capabilities) -> None:
    """Refuse what the model cannot do before a replica is started for it."""
    if isinstance(req, ChatCompletionRequest) and not caps.chat:
        raise InvalidRequest(
            f"The model '{req.model}' has no chat template, so it cannot serve chat completions; "
            "send a prompt to /v1/completions instead.", param="messages", code="chat_not_supported")
    if isinstance(req, CompletionRequest):
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) and len(prompt) != 1:
            raise InvalidRequest("Only one prompt per request is supported; send an array of one string.",
                                 param="prompt")
        if isinstance(prompt, list) and not prompt:
            raise InvalidRequest("'prompt' must not be an empty array.", param="prompt")
        if prompt == "" or prompt == [""]:
            raise InvalidRequest("'prompt' must not be empty.", param="prompt")
        if isinstance(prompt, list) and isinstance(prompt[0], int) and min(prompt) < 0:
            raise InvalidRequest("Token ids in 'prompt' must not be negative.", param="prompt")
    limit = caps.context_length
    _check_prompt_size(req, caps)
    # (a completion request has no `max_completion_tokens`: a getattr that misses costs pydantic an exception)
    asked = (("max_tokens", req.max_tokens), ("max_completion_tokens", req.max_completion_tokens)) \
        if isinstance(req, ChatCompletionRequest) else (("max_tokens", req.max_tokens),)
    for name, value in asked:
        if value is not None and limit is not None and value > limit:
            raise InvalidRequest(
                f"'{name}' is {value}, more than this model's context length of {limit} tokens.",
                param=name, code="context_length_exceeded")
    if isinstance(req.stop, list) and len(req.stop) > 4:
        raise InvalidRequest("'stop' takes at most 4 sequences.", param="stop")
    _check_supported(req, caps)


def check_embedding_request(req: EmbeddingRequest, caps: Capabilities) -> None:
    """Refuse an embeddings request a model cannot serve before a replica is started for it."""
    if not caps.embeddings:
        raise InvalidRequest(f"The model '{req.model}' is not configured as an embedding model "
                             "(llama.cpp: options.embedding = true).", param="model", code="embeddings_not_supported")
    if req.input in ("", []) or (isinstance(req.input, list) and any(i in ("", []) for i in req.input)):
        raise InvalidRequest("'input' must not be empty.", param="input")
    if req.dimensions is not None:
        raise InvalidRequest("'dimensions' is not supported by this model's engine.", param="dimensions",
                             code="unsupported_parameter")


def _check_supported(req: GenerationRequest, caps: Capabilities) -> None:
    """Refuse a field the engine would silently ignore, and more choices than it makes, naming the field."""
    extra = req.model_extra or {}
    engine = f" ({caps.engine})" if caps.engine else ""
    for name in caps.unsupported_fields if extra else ():  # a field not sent asks for nothing
        value = extra.get(name)
        if not _inert(name, value, extra):
            raise InvalidRequest(f"'{name}' is not supported by this model's engine{engine}.", param=name,
                                 code="unsupported_parameter")
    if isinstance(req, ChatCompletionRequest) and caps.content_types is not None:
        for i, message in enumerate(req.messages):
            calls = (message.model_extra or {}).get("tool_calls") or (message.model_extra or {}).get("function_call")
            if message.content is None and not (message.role == "assistant" and calls):
                # as OpenAI has it; llama-server would answer a 500 for the null it cannot parse
                raise InvalidRequest(f"messages[{i}].content is required (only an assistant message that calls "
                                     "a tool may go without).", param=f"messages[{i}].content")
            if isinstance(message.content, list) and any(
                    not isinstance(p, dict) or p.get("type") not in caps.content_types for p in message.content):
                raise InvalidRequest(f"This model reads content parts of type {', '.join(caps.content_types)} only.",
                                     param=f"messages[{i}].content")
    if req.n is not None and req.n > caps.max_choices:
        raise InvalidRequest(f"'n' is {req.n}; this model's engine{engine} makes at most {caps.max_choices} "
                             f"choice{'s' if caps.max_choices > 1 else ''} per request.", param="n",
                             code="unsupported_parameter")
    greedy = caps.max_greedy_choices
    if req.n is not None and greedy is not None and req.n > greedy and req.temperature == 0:
        raise InvalidRequest(f"'n' is {req.n} with temperature 0; this model's engine{engine} makes {greedy} "
                             "choice with greedy sampling: sample (temperature above 0) for more.", param="n",
                             code="unsupported_parameter")


def _inert(name: str, value: Any, extra: dict[str, Any]) -> bool:
    """Whether a field's value asks for nothing beyond what is done anyway (so refusing it would be pedantic)."""
    if value is None or value is False or value in ("", [], {}):
        return True
    return ((name == "best_of" and value == 1) or (name == "modalities" and value == ["text"])
            or (name == "service_tier" and value in ("auto", "default"))
            or (name in ("tool_choice", "parallel_tool_calls") and not extra.get("tools")
                and value in ("none", "auto", True)))


def _check_prompt_size(req: GenerationRequest, caps: Capabilities) -> None:
    """Refuse a prompt that certainly exceeds the context, without tokenizing it: token ids are
    counted; text needs at least one token per `max_token_bytes` bytes, and every chat message (or part
    of one) at least one more for the template's turn markers. (An engine would spend seconds tokenizing
    megabytes, or applying its chat template to 100,000 empty messages, only to refuse them, holding a
    replica, or starting one, meanwhile.)"""
    limit = caps.context_length
    if limit is None:
        return
    if isinstance(req, CompletionRequest) and isinstance(req.prompt, list) and req.prompt \
            and isinstance(req.prompt[0], int):
        if len(req.prompt) > limit:
            raise InvalidRequest(f"The prompt is {len(req.prompt)} tokens, more than this model's context length "
                                 f"of {limit} tokens.", param="prompt", code="context_length_exceeded")
        return
    items = 0  # messages and content parts: each costs the template at least one token
    texts: list[str | int]
    if isinstance(req, CompletionRequest):
        texts, param = ([req.prompt] if isinstance(req.prompt, str) else list(req.prompt)), "prompt"
    else:
        texts, param = [], "messages"
        for message in req.messages:
            items += 1
            if isinstance(message.content, str):
                texts.append(message.content)
            elif isinstance(message.content, list):
                items += max(0, len(message.content) - 1)
                texts += [p["text"] for p in message.content if isinstance(p.get("text"), str)]
        # the first message may share its turn with the next (templates that fold the system prompt in)
        items = max(0, items - 1)
        if items > limit:
            raise InvalidRequest(
                f"The request has {items + 1} messages and content parts; this model's context of {limit} tokens "
                f"cannot hold more than {limit + 1} (each costs at least one token of its chat template).",
                param=param, code="context_length_exceeded")
    if caps.max_token_bytes is None:
        return
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts if isinstance(t, str))
    least = -(-size // caps.max_token_bytes) + items
    if least > limit:
        where = f" in {len(req.messages)} messages" if isinstance(req, ChatCompletionRequest) else ""
        raise InvalidRequest(
            f"The prompt is {size} bytes{where}: at least {least} tokens, more than this model's context of "
            f"{limit} tokens (no token of it stands for more than {caps.max_token_bytes} bytes"
            f"{', and each message costs at least one token of its chat template' if where else ''}).",
            param=param, code="context_length_exceeded")


def hidden_usage(req: ModelRequest, caps: Capabilities) -> bool:
    """Whether a stream's usage is asked of the engine for warmstart's token count alone (the client did not ask
    for it, so its usage event is taken out of the stream the client gets)."""
    if isinstance(req, EmbeddingRequest) or not req.stream or not caps.stream_usage:
        return False
    return not (req.stream_options or {}).get("include_usage")


def inert_fields(req: ModelRequest, caps: Capabilities) -> set[str]:
    """The fields the engine does not support that the request sends with values asking for nothing: left out
    of what the engine gets (vLLM refuses `tool_choice: "none"` without tools, which OpenAI accepts)."""
    extra = req.model_extra or {}
    return {name for name in extra if name in caps.unsupported_fields and _inert(name, extra[name], extra)}


_OWN_FIELDS = {"keep_alive"}


def engine_body(req: ModelRequest, add_usage: bool = False, leave_out: set[str] | None = None) -> bytes:
    """The body an engine receives: the client's request minus warmstart's own fields and `leave_out` (with
    `add_usage`, a stream asks for its usage)."""
    prompt = req.prompt if isinstance(req, CompletionRequest) else None
    if not (leave_out or add_usage or isinstance(prompt, list) or "max_completion_tokens" in req.model_fields_set):
        # nothing to change but warmstart's own field: serialized by pydantic in one step, unless a string holds
        # a lone surrogate (possible in a body read by json.loads, as Ollama's routes do): json.dumps escapes it
        # (the model's serializer itself: model_dump_json's own steps cost about as much again)
        own = _OWN_FIELDS if "keep_alive" in req.model_fields_set else None
        with contextlib.suppress(PydanticSerializationError):
            return req.__pydantic_serializer__.to_json(req, exclude_unset=True, exclude=own)
    body = req.model_dump(exclude_unset=True, exclude=_OWN_FIELDS)
    for name in leave_out or ():
        body.pop(name, None)
    if add_usage:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    if isinstance(req, CompletionRequest) and isinstance(req.prompt, list) and req.prompt \
            and isinstance(req.prompt[0], str):
        body["prompt"] = req.prompt[0]
    if body.get("max_completion_tokens") is not None and body.get("max_tokens") is None:
        body["max_tokens"] = body["max_completion_tokens"]
    body["model"] = req.model
    return json.dumps(body, separators=(",", ":")).encode()


def engine_error_body(status: int, data: bytes, path: str) -> bytes:
    """An engine's error answer in OpenAI's shape (string `code`, `param`); llama-server's context
    overflow becomes OpenAI's `context_length_exceeded`. A body that is no JSON error passes unchanged."""
    try:
        error = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return data
    if not isinstance(error, dict):
        return data
    client = 400 <= status < 500
    given_code, given_type, given_param = error.get("code"), error.get("type"), error.get("param")
    param: str | None
    if given_type == "exceed_context_size_error":
        code, kind, param = "context_length_exceeded", "invalid_request_error", \
            "messages" if path.endswith("chat/completions") else "prompt"
    else:
        code = given_code if isinstance(given_code, str) else ("invalid_request" if client else "engine_error")
        kind = given_type if isinstance(given_type, str) and given_type in _OPENAI_TYPES else \
            ("invalid_request_error" if client else "server_error")
        param = given_param if isinstance(given_param, str) else None
    message = str(error.get("message") or f"the engine answered HTTP {status}")
    return json.dumps(openai_error_body(message, kind, code, param)).encode()


_OPENAI_TYPES = frozenset({"invalid_request_error", "server_error", "not_found_error", "authentication_error",
                           "permission_error", "rate_limit_error"})


def error_response(exc: RequestError | Unavailable) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, (Unavailable, RateLimited)) and retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    param = getattr(exc, "param", None)
    return exc.status, openai_error_body(exc.message, exc.type, exc.code, param), headers


def error_json(exc: RequestError | Unavailable, headers: dict[str, str] | None = None) -> JSONResponse:
    """The HTTP answer to a warmstart error: its status, OpenAI's error body, Retry-After where it applies."""
    status, body, extra = error_response(exc)
    return JSONResponse(body, status_code=status, headers={**(headers or {}), **extra})


def invalid_request_json(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    """The 400 for a body that does not validate (pydantic's errors), naming the first bad field."""
    message, param = validation_message(errors)
    return JSONResponse(openai_error_body(message, "invalid_request_error", "invalid_request", param), status_code=400)


def internal_error_json() -> JSONResponse:
    return JSONResponse(openai_error_body("internal error in warmstart; see its log", "server_error", "internal_error"),
                        status_code=500)


def validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """One sentence for the first pydantic error, naming the field as OpenAI does."""
    if not errors:
        return "Invalid request.", None
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    kind = err.get("type", "")
    if kind in ("json_invalid", "json_type"):
        return "The request body is not valid JSON: " + str(err.get("ctx", {}).get("error", err.get("msg"))), None
    if not loc:
        return f"Invalid request body: {err.get('msg')}", None
    param = _param_path(loc)
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: '{param}'.", param
    got = err.get("input")
    shown = json.dumps(got)[:80] if _jsonable(got) else type(got).__name__
    return f"Invalid value for '{param}': {err.get('msg')} (got {shown}).", param


def _param_path(loc: list[str]) -> str:
    out = ""
    for part in loc:
        if part.isdigit():
            out += f"[{part}]"
        elif part in ("str", "int", "float", "bool", "list[str]", "list[int]", "list[dict[str,any]]",
                      "list[dict[str, any]]", "dict[str,any]", "list[ChatMessage]", "literal"):
            continue  # union branches pydantic names in its locations
        elif "[" in part or part.startswith(("function-", "lax-", "strict-")):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def sse_error(message: str, code: str = "stream_interrupted") -> bytes:
    payload = openai_error_body(message, "server_error", code)
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
