"""Inside the llama.cpp engine process: generation on one thread, and the OpenAI-compatible HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jinja2 import TemplateError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from warmstart.engines.options import LLAMACPP as LLAMA_OPTIONS

# request fields passed to llama-cpp-python, by OpenAI name, with the JSON types each accepts
_NUMBER = (int, float)
_SAMPLING: dict[str, tuple[type, ...]] = {
    "max_tokens": (int,), "temperature": _NUMBER, "top_p": _NUMBER, "stop": (str, list), "seed": (int,),
    "presence_penalty": _NUMBER, "frequency_penalty": _NUMBER, "logit_bias": (dict,), "top_k": (int,),
    "min_p": _NUMBER, "repeat_penalty": _NUMBER,
}


def llama_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in LLAMA_OPTIONS}


class Cancelled(Exception):
    """Raised inside generation when the request's client has gone."""


class Generator:
    """One Llama, one generation at a time, each cancellable between tokens."""

    def __init__(self, llm: Any, name: str, options: dict[str, Any]) -> None:
        self.llm = llm
        self.name = name
        self.chat = bool(llm.metadata.get("tokenizer.chat_template") or options.get("chat_format"))
        self.n_ctx = llm.n_ctx()
        self.n_vocab = llm.n_vocab()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="generate")
        self._cancel = threading.Event()  # the running generation's; replaced under the lock per call
        self._count_lock = threading.Lock()
        self.active = 0
        self.requests = 0
        self.tokens = 0
        self.cancelled = 0
        self.stopping = threading.Event()
        # Every completion, chat or not, draws its tokens from Llama.generate: checking there between
        # tokens stops a generation whose client left. (Logits processors cannot: llama-cpp-python
        # calls them from a C callback that swallows exceptions.)
        original = llm.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            for token in original(*args, **kwargs):
                if self._cancel.is_set() or self.stopping.is_set():
                    raise Cancelled()
                self.tokens += 1
                yield token

        llm.generate = generate

    def warm_up(self) -> None:
        # one real generation allocates compute buffers and compiles the chat template
        if self.chat:
            self.llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        else:
            self.llm.create_completion("Hello", max_tokens=1)

    def stats(self) -> dict[str, Any]:
        return {"status": "ok", "active": self.active, "requests": self.requests,
                "generated_tokens": self.tokens, "cancelled": self.cancelled, "chat": self.chat,
                "n_ctx": self.n_ctx}

    def _call(self, kind: str, body: dict[str, Any], stream: bool, cancel: threading.Event) -> Any:
        self._cancel = cancel
        kwargs = {k: body[k] for k in _SAMPLING if body.get(k) is not None}
        if "logit_bias" in kwargs:
            kwargs["logit_bias"] = {int(k): float(v) for k, v in kwargs["logit_bias"].items()}
        if kind == "chat":
            return self.llm.create_chat_completion(messages=_text_messages(body["messages"]), stream=stream,
                                                   **kwargs)
        return self.llm.create_completion(prompt=body["prompt"], stream=stream, **kwargs)

    async def complete(self, kind: str, body: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            with self._lock:
                return self._call(kind, body, False, cancel)

        return await self._run(work, cancel)

    async def stream(self, kind: str, body: dict[str, Any], cancel: threading.Event) -> AsyncIterator[dict]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(item: tuple[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            with self._lock:
                try:
                    for chunk in self._call(kind, body, True, cancel):
                        put(("chunk", chunk))
                except Cancelled:
                    self.cancelled += 1
                except Exception as exc:  # handed to the async side, which answers with it
                    put(("error", exc))
                finally:
                    put(("end", None))

        future = asyncio.ensure_future(self._run(work, cancel))
        try:
            while True:
                tag, item = await queue.get()
                if tag == "chunk":
                    yield item
                elif tag == "error":
                    raise item
                else:
                    return
        finally:
            cancel.set()
            await asyncio.shield(future)

    async def _run(self, work: Any, cancel: threading.Event) -> Any:
        # `active` counts a request until its thread is done with it, not until its client stops waiting:
        # the gateway gives a slot back only when the engine is idle again (work cannot stop mid-template)
        def tracked() -> Any:
            try:
                return work()
            finally:
                self._finished()

        with self._count_lock:
            self.active += 1
        self.requests += 1
        job = self._executor.submit(tracked)
        try:
            return await asyncio.wrap_future(job)
        except Cancelled:
            self.cancelled += 1
            raise
        except asyncio.CancelledError:
            cancel.set()
            if job.cancelled():  # it never started, so it will never finish
                self._finished()
            raise

    def _finished(self) -> None:
        with self._count_lock:
            self.active -= 1


def _text_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI content arrays ([{"type": "text", "text": ...}]) as plain text, and no content (an
    assistant turn that only called a tool) as empty text: chat templates expect a string."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            message = {**message, "content": "".join(p["text"] for p in content)}
        elif content is None:
            message = {**message, "content": ""}
        out.append(message)
    return out


def check_body(gen: Generator, kind: str, body: dict[str, Any]) -> tuple[str, str] | None:
    """What this engine cannot take in a request, as (message, param), before any generation starts:
    a client's mistake is a 400, not an engine failure."""
    for name, types in _SAMPLING.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return f"'{name}' must be {' or '.join(_JSON_NAMES[t] for t in types)}", name
    stop = body.get("stop")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        return "'stop' must be a string or an array of strings", "stop"
    bias = body.get("logit_bias")
    if isinstance(bias, dict):
        for key, value in bias.items():
            if not (str(key).lstrip("-").isdigit() and 0 <= int(key) < gen.n_vocab) \
                    or not isinstance(value, _NUMBER) or isinstance(value, bool):
                return (f"'logit_bias' maps token ids (0 to {gen.n_vocab - 1}) to numbers; "
                        f"{json.dumps(key)}: {json.dumps(value)} is not one"), "logit_bias"
    if kind == "chat":
        for i, message in enumerate(body["messages"]):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"messages[{i}] must be an object with a 'role'", f"messages[{i}]"
            content = message.get("content")
            if isinstance(content, list):
                if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                           for p in content):
                    return "this model accepts text content only (parts of type 'text')", f"messages[{i}].content"
            elif content is not None and not isinstance(content, str):
                return f"messages[{i}].content must be a string or an array of text parts", f"messages[{i}].content"
        return None
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if prompt in ("", []):
        return "'prompt' must not be empty", "prompt"
    if isinstance(prompt, list) and not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < gen.n_vocab for t in prompt):
        return f"'prompt' as an array holds one string, or token ids from 0 to {gen.n_vocab - 1}", "prompt"
    return None


_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "an object"}


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": param, "code": code}}, status_code=status)


def _engine_error(exc: Exception, kind: str) -> JSONResponse:
    text = str(exc)
    if isinstance(exc, TemplateError):  # the model's own chat template refused the conversation
        return _error(400, f"this model's chat template cannot render these messages: {text}",
                      code="invalid_request", param="messages")
    if "context window" in text:
        return _error(400, f"This model's maximum context length was exceeded: {text}",
                      code="context_length_exceeded", param="messages" if kind == "chat" else "prompt")
    return JSONResponse({"error": {"message": f"generation failed: {text}", "type": "server_error",
                                   "param": None, "code": "engine_error"}}, status_code=500)


async def _wait_disconnect(request: Request, cancel: threading.Event) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


def create_app(gen: Generator) -> Starlette:
    async def handle(request: Request, kind: str) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        if kind == "chat":
            if not gen.chat:
                return _error(400, f"model '{gen.name}' has no chat template; use /v1/completions",
                              code="chat_not_supported", param="messages")
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                return _error(400, "'messages' must be a non-empty array", param="messages")
        elif not isinstance(body.get("prompt"), (str, list)):
            return _error(400, "'prompt' must be a string or an array", param="prompt")
        problem = check_body(gen, kind, body)
        if problem is not None:
            return _error(400, problem[0], code="invalid_request", param=problem[1])
        cancel = threading.Event()
        if body.get("stream"):
            return await _streaming(gen, kind, body, cancel)
        watcher = asyncio.create_task(_wait_disconnect(request, cancel))
        try:
            result = await gen.complete(kind, body, cancel)
        except Cancelled:
            return Response(status_code=499)
        except Exception as exc:
            return _engine_error(exc, kind)
        finally:
            watcher.cancel()
        result["model"] = gen.name
        return JSONResponse(result)

    async def chat(request: Request) -> Response:
        return await handle(request, "chat")

    async def completions(request: Request) -> Response:
        return await handle(request, "completion")

    async def health(_: Request) -> Response:
        return JSONResponse(gen.stats())

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": gen.name, "object": "model", "owned_by": "warmstart"}]})

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ], lifespan=_lifespan(gen))


def _lifespan(gen: Generator) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        gen.stopping.set()  # a generation in progress stops at its next token

    return lifespan


async def _streaming(gen: Generator, kind: str, body: dict[str, Any], cancel: threading.Event) -> Response:
    chunks = gen.stream(kind, body, cancel)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except Cancelled:
        return Response(status_code=499)
    except Exception as exc:
        await chunks.aclose()
        return _engine_error(exc, kind)

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                first["model"] = gen.name
                yield b"data: " + json.dumps(first).encode() + b"\n\n"
            async for chunk in chunks:
                chunk["model"] = gen.name
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        except Cancelled:
            return
        except Exception as exc:
            err = {"error": {"message": f"generation failed: {exc}", "type": "server_error", "code": "engine_error"}}
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        finally:
            cancel.set()
            await chunks.aclose()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})
