"""The model routes (chat, completions, embeddings) served straight from ASGI, ahead of the framework's
per-request layers.

FastAPI still declares the same routes (so the OpenAPI schema documents them, and they behave the
same when reached through it); this front door only skips its middleware, dependency solving and
response wrapping, which cost more CPU per request than the rest of the gateway together.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from warmstart.errors import PayloadTooLarge, RequestError, Unavailable
from warmstart.gateway.generate import Early, begin, generate, log_access
from warmstart.gateway.limits import declared_length, too_large_message
from warmstart.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from warmstart.gateway.relay import SendNow
from warmstart.gateway.translate import ModelRequest, error_json, internal_error_json, invalid_request_json

if TYPE_CHECKING:
    from warmstart.gateway.services import Services

log = logging.getLogger("warmstart.gateway")
ROUTES: dict[str, type[ModelRequest]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
}


class FastPath:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.max_bytes = services.config.server.max_body_bytes
        self.generate = generate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        response = await self.respond(scope, receive, model)
        await response(scope, receive, send)

    def begin(self, scope: Scope, body: bytes, model: type[ModelRequest], send_now: SendNow) -> Early | None:
        """A POST to one of ROUTES with its whole `body` begun at once, from its connection's callback (see
        front.py), when it is a valid request that a warm replica can take now (generate.begin); None when not, and
        nothing was done: `respond` serves it."""
        arrived = self.services.clock.now()
        if len(body) > self.max_bytes:
            return None
        try:
            req = model.__pydantic_validator__.validate_json(body)
        except ValidationError:
            return None
        return begin(self.services, req, scope["path"], arrived, send_now)

    async def respond(self, scope: Scope, receive: Receive, model: type[ModelRequest],
                      send_now: SendNow | None = None, body: bytes | None = None,
                      early: Early | None = None) -> Response:
        """The answer to a POST to one of ROUTES (`model`: its body's type), to be sent by the caller (unless
        `send_now` sent it: see Relay.forward). `body`: the whole body, when the caller has it already; `early`:
        the request, begun already (`begin`)."""
        request = Request(scope, receive)
        arrived = self.services.clock.now()
        response: Response
        try:
            if early is not None:
                return await self.generate(self.services, request, early.req, scope["path"], True, send_now, early)
            if body is None:
                body = await self._body(scope, receive)
            elif len(body) > self.max_bytes:
                raise PayloadTooLarge(too_large_message(self.max_bytes))
            try:
                req = model.__pydantic_validator__.validate_json(body)
            except ValidationError as exc:
                response = invalid_request_json(exc.errors())
                if self.services.access is not None:
                    log_access(self.services, request, scope["path"], None, None, "-", 400, None,
                               (None, None), arrived)
            else:
                response = await self.generate(self.services, request, req, scope["path"], True, send_now)
        except (RequestError, Unavailable) as exc:
            response = error_json(exc)
        except Exception:
            log.exception("unexpected error")
            response = internal_error_json()
        return response

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        declared = declared_length(scope)
        if declared is not None and (declared < 0 or declared > self.max_bytes):
            raise PayloadTooLarge(too_large_message(self.max_bytes))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Unavailable("client disconnected before sending the body", retry_after=None)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLarge(too_large_message(self.max_bytes))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


