"""Ollama's API (`/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/ps`, `/api/show`,
`/api/version`) beside OpenAI's: each generation request becomes the OpenAI request warmstart serves, so
leasing, cold-start holding, metrics, audit and keys apply unchanged; its answer goes back in Ollama's shape."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from warmstart import __version__
from warmstart.errors import ModelNotFound, RequestError, Unavailable
from warmstart.gateway.generate import generate
from warmstart.gateway.ollama_wire import (
    Durations,
    OllamaError,
    StreamTranslator,
    answer,
    chat_request,
    error_message,
    expires_at,
    generate_request,
    keep_alive_seconds,
    now_rfc3339,
    ollama_param,
)
from warmstart.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from warmstart.gateway.relay import RelayStream
from warmstart.gateway.translate import ModelRequest, error_response, validation_message
from warmstart.store.files import folder_files

if TYPE_CHECKING:
    from warmstart.gateway.services import Services

# the Ollama API version whose endpoints and fields this module follows; clients compare against it
OLLAMA_API_VERSION = "0.12.0"
NDJSON = "application/x-ndjson"


def router(services: Services) -> APIRouter:
    # Ollama documents this API; the OpenAPI schema (and the fuzz test walking it) covers OpenAI's and warmstart's own
    api = APIRouter(prefix="/api", tags=["ollama"], include_in_schema=False)

    @api.post("/chat")
    async def chat(request: Request) -> Response:
        return await _answered(lambda: _generation(services, request, "chat"))

    @api.post("/generate")
    async def generate_(request: Request) -> Response:
        return await _answered(lambda: _generation(services, request, "generate"))

    @api.post("/embed")
    async def embed(request: Request) -> Response:
        return await _answered(lambda: _embed(services, request))

    @api.get("/tags")
    async def tags() -> Response:
        return JSONResponse({"models": [_model_entry(view) for view in services.pool.snapshot()]})

    @api.get("/ps")
    async def ps() -> Response:
        now = time.time()
        return JSONResponse({"models": [_loaded_entry(view, now) for view in services.pool.snapshot()
                                        if any(r["state"] == "warm" for r in view["replicas"])]})

    @api.post("/show")
    async def show(request: Request) -> Response:
        return await _answered(lambda: _show(services, request))

    @api.get("/version")
    async def version() -> Response:
        return JSONResponse({"version": OLLAMA_API_VERSION, "warmstart": __version__})

    return api


async def _answered(handler: Callable[[], Awaitable[Response]]) -> Response:
    """Run a route; any refusal becomes Ollama's `{"error": "..."}` with its status."""
    try:
        return await handler()
    except OllamaError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    except ModelNotFound as exc:
        name = getattr(exc, "ollama_model", None)
        return JSONResponse({"error": f"model '{name}' not found" if name else exc.message}, status_code=404)
    except (RequestError, Unavailable) as exc:
        status, _, headers = error_response(exc)  # Retry-After where OpenAI's routes send one
        return JSONResponse({"error": exc.message}, status_code=status, headers=headers)


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise OllamaError(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise OllamaError("the body must be a JSON object")
    return body


def _model_of(services: Services, body: dict[str, Any]) -> str:
    model = body.get("model") or body.get("name")  # /api/show's older clients send `name`
    if not isinstance(model, str) or not model:
        raise OllamaError("model is required")
    try:
        services.pool.check_model(model)
    except ModelNotFound as exc:
        exc.ollama_model = model  # type: ignore[attr-defined]
        raise
    return model


def _validated(kind: type[ModelRequest], body: dict[str, Any]) -> ModelRequest:
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        named = ollama_param(param)
        raise OllamaError(message.replace(f"'{param}'", f"'{named}'") if param and named else message) from None


async def _generation(services: Services, request: Request, kind: str) -> Response:
    arrived = time.monotonic()
    body = await _body(request)
    model = _model_of(services, body)
    keep_alive = keep_alive_seconds(body.get("keep_alive"))
    stream = body.get("stream", True) is not False
    if not (body.get("messages") if kind == "chat" else body.get("prompt")):
        return await _load(services, model, kind, keep_alive, stream)
    caps = await services.pool.capabilities(model)
    engine = services.pool.view(model)["engine"]
    if kind == "chat":
        path, openai = "/v1/chat/completions", chat_request(body, engine, caps)
    else:
        path, openai = generate_request(body, engine, caps)
    if keep_alive is not None:
        openai["keep_alive"] = body["keep_alive"]
    req = _validated(ChatCompletionRequest if path == "/v1/chat/completions" else CompletionRequest, openai)
    response = await generate(services, request, req, path)

    def durations() -> Durations:
        wait_ms = float(response.headers.get("x-warmstart-wait-ms", "0"))
        return Durations(total=time.monotonic() - arrived, load=wait_ms / 1000)

    if isinstance(response, RelayStream):
        return NdjsonStream(response, StreamTranslator(kind, model), durations)
    if response.status_code != 200:
        return JSONResponse({"error": error_message(bytes(response.body), response.status_code)},
                            status_code=response.status_code)
    return _one(answer(kind, model, json.loads(bytes(response.body)), durations()), stream, response.headers)


async def _load(services: Services, model: str, kind: str, keep_alive: float | None, stream: bool) -> Response:
    """Ollama's preload (no messages or prompt): start the model and answer once loaded; with keep_alive 0,
    unload it."""
    pool = services.pool
    if keep_alive == 0:
        await pool.unload(model)
        reason = "unload"
    else:
        await pool.capabilities(model)  # a model that cannot start is refused before a replica is made for it
        pool.ensure_warm(model, "manual", keep_alive=keep_alive)
        state = await pool.wait_warm(model, services.config.server.start_timeout)
        if state.value != "warm":
            why = pool.view(model).get("last_failure") or f"it is {state.value}"
            raise OllamaError(f"model '{model}' failed to load: {why}", status=500)
        reason = "load"
    piece = answer(kind, model, {"choices": [{"finish_reason": reason}]}, Durations(0.0, 0.0))
    return _one({**piece, "done_reason": reason}, stream, {})


def _one(obj: dict[str, Any], stream: bool, headers: Any) -> Response:
    served = {k: v for k, v in headers.items() if k.startswith("x-warmstart-")}
    if stream:
        return Response(json.dumps(obj) + "\n", media_type=NDJSON, headers=served)
    return JSONResponse(obj, headers=served)


class NdjsonStream(Response):
    """A relayed OpenAI stream re-encoded on the way out as Ollama's newline-delimited JSON; the relay
    underneath still owns the lease, the engine connection and the client's disconnect."""

    def __init__(self, inner: RelayStream, translator: StreamTranslator,
                 durations: Callable[[], Durations]) -> None:
        super().__init__(status_code=200, media_type=NDJSON)
        self.inner, self.translator, self.durations = inner, translator, durations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def translated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message["headers"] if k != b"content-type"]
                await send({**message, "headers": [*headers, (b"content-type", NDJSON.encode())]})
                return
            objects = self.translator.feed(message.get("body", b""))
            more = message.get("more_body", False)
            if not more and (last := self.translator.last(self.durations())) is not None:
                objects.append(last)
            payload = b"".join(json.dumps(o).encode() + b"\n" for o in objects)
            if payload or not more:
                await send({"type": "http.response.body", "body": payload, "more_body": more})

        await self.inner(scope, receive, translated)


async def _embed(services: Services, request: Request) -> Response:
    arrived = time.monotonic()
    body = await _body(request)
    model = _model_of(services, body)
    if body.get("options"):
        raise OllamaError("options are not supported for embeddings by warmstart's Ollama API")
    openai: dict[str, Any] = {"model": model, "input": body.get("input", "")}
    for name in ("keep_alive", "dimensions"):
        if body.get(name) is not None:
            openai[name] = body[name]
    keep_alive_seconds(body.get("keep_alive"))
    response = await generate(services, request, _validated(EmbeddingRequest, openai), "/v1/embeddings")
    if response.status_code != 200:
        return JSONResponse({"error": error_message(bytes(response.body), response.status_code)},
                            status_code=response.status_code)
    data = json.loads(bytes(response.body))
    wait_ms = float(response.headers.get("x-warmstart-wait-ms", "0"))
    return JSONResponse({
        "model": model, "embeddings": [d["embedding"] for d in data.get("data", [])],
        "total_duration": int((time.monotonic() - arrived) * 1e9), "load_duration": int(wait_ms * 1e6),
        "prompt_eval_count": (data.get("usage") or {}).get("prompt_tokens"),
    })


async def _show(services: Services, request: Request) -> Response:
    body = await _body(request)
    model = _model_of(services, body)
    caps = await services.pool.capabilities(model)
    view = services.pool.view(model)
    capabilities = ["embedding"] if caps.embeddings else ["completion"]
    info = {"warmstart.engine": view["engine"], "warmstart.context_length": caps.context_length,
            "warmstart.chat_template": caps.chat}
    return JSONResponse({"modelfile": "", "parameters": "", "template": "", "details": _details(view),
                         "model_info": info, "capabilities": capabilities,
                         "modified_at": _file(view)[1]})


def _file(view: dict[str, Any]) -> tuple[int, str]:
    """The model's size and modification time, when its file or folder is on this machine (a folder: its files',
    by the store's rule, the newest time)."""
    try:
        path = Path(str(view.get("path")))
        if path.is_dir():
            stats = [f.stat() for _, f in folder_files(path)]
            return sum(st.st_size for st in stats), now_rfc3339(max((st.st_mtime for st in stats), default=0))
        st = os.stat(path)
    except (OSError, ValueError):
        return 0, now_rfc3339(0)
    return st.st_size, now_rfc3339(st.st_mtime)


def _details(view: dict[str, Any]) -> dict[str, Any]:
    path = str(view.get("path") or "")
    return {"format": "gguf" if path.endswith(".gguf") or view["engine"] == "llamacpp" else view["engine"],
            "family": "", "families": None, "parameter_size": "", "quantization_level": "",
            "parent_model": ""}


def _model_entry(view: dict[str, Any]) -> dict[str, Any]:
    size, modified = _file(view)
    return {"name": view["name"], "model": view["name"], "modified_at": modified, "size": size,
            "digest": "", "details": _details(view)}


def _loaded_entry(view: dict[str, Any], now: float) -> dict[str, Any]:
    warm = [r for r in view["replicas"] if r["state"] == "warm"]
    expiries = [expires_at(r["expires_in_s"], r["keep_alive_s"], now) for r in warm]
    size, _ = _file(view)
    return {"name": view["name"], "model": view["name"], "size": size, "digest": "", "details": _details(view),
            "expires_at": max(expiries), "size_vram": 0}
