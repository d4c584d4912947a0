"""Request body size limit, enforced on the bytes as they arrive (declared or chunked)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warmstart.errors import openai_error_body


def declared_length(scope: Scope) -> int | None:
    """The body's length its request declares (Content-Length; the largest if sent more than once, -1 if one is
    not a number), None when it declares none."""
    lengths = [int(value) if value.isdigit() else -1 for name, value in scope.get("headers", ())
               if name == b"content-length"]
    if not lengths:
        return None
    return -1 if -1 in lengths else max(lengths)


def too_large_message(limit: int) -> str:
    return f"Request body is larger than the limit of {limit} bytes (server.max_body_bytes)."


async def send_json_error(send: Send, status: int, body: dict[str, Any],
                          headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """An OpenAI-style error straight on an ASGI `send`, for the layers in front of the framework."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class BodyTooLarge(HTTPException):
    """An HTTPException, so that frameworks reading the body pass it on rather than call it a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and (declared > self.max_bytes or declared < 0):
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send_json_error(send, 413, openai_error_body(too_large_message(self.max_bytes), "invalid_request_error",
                                                           "payload_too_large"))
