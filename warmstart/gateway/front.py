"""The gateway's HTTP/1.1 server protocol: uvicorn's own (httptools), except that a POST to a generation route
is handed to the fast path straight from the request's cycle, not through the ASGI app, and a whole answer is
written in one piece.

Every other request, and everything about the connection (parsing, keep-alive, pipelining, flow control,
timeouts, shutdown), stays uvicorn's. What is skipped on a warm request: the ASGI call chain, the response's
two `send` messages and their checks (the gateway made the headers itself), and one of its two socket writes.
Measured on two CPUs (old and new gateways interleaved, README): 0.976 -> 0.940 ms added per request, 1.30 ->
1.275 ms of CPU: a few percent, not more; no single layer of the gateway costs more than that.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from warmstart.gateway.fastpath import ROUTES
from warmstart.gateway.relay import Answer

if TYPE_CHECKING:
    from warmstart.gateway.app import Gateway

log = logging.getLogger("warmstart.gateway")


def front_protocol(gateway: Gateway) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, serving `gateway`'s generation routes from the cycle."""

    class FrontProtocol(HttpToolsProtocol):
        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            scope = cycle.scope
            model = ROUTES.get(scope["path"]) if scope["method"] == "POST" else None
            # `app` is another when uvicorn refuses the request (its concurrency limit)
            if model is None or app is not self.app:
                super()._start_asgi_task(cycle, app)
                return
            task = self.loop.create_task(serve(gateway, cycle, model))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    return FrontProtocol


async def serve(gateway: Gateway, cycle: RequestResponseCycle, model: Any) -> None:
    """One generation request, as the gateway's ASGI app would serve it (API keys, then the fast path)."""
    scope: Any = cycle.scope
    receive: Any = cycle.receive  # uvicorn's typed ASGI events, starlette's plain mappings
    send: Any = cycle.send
    try:
        denial = gateway.auth.admit(scope)
        if denial is not None:
            await gateway.auth.refuse(scope, send, denial)
            return
        # the whole body is in when the request's last byte came with its head (and reading was not paused for it)
        body = None
        if not cycle.more_body and not cycle.flow.read_paused:
            body, cycle.body = bytes(cycle.body), bytearray()
        response = await gateway.fast.respond(scope, receive, model, lambda answer: _send_now(cycle, answer), body)
        if type(response) is Answer:
            if not response.sent:
                await _write(cycle, response)
        else:
            await response(scope, receive, send)
    except BaseException as exc:  # as uvicorn's run_asgi: logged, and a 500 if nothing was sent yet
        log.error("Exception in the gateway's fast path", exc_info=exc)
        if not cycle.response_started:
            await cycle.send_500_response()
        else:
            cycle.transport.close()
    finally:
        cycle.on_response = _nothing


async def _write(cycle: RequestResponseCycle, answer: Answer) -> None:
    """A whole answer in one write, as uvicorn's `send` would write it in two; then the answer's deferred
    bookkeeping."""
    try:
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if not cycle.disconnected:
            _put(cycle, answer)
    finally:
        answer.after()


def _send_now(cycle: RequestResponseCycle, answer: Answer) -> bool:
    """Send a whole answer at once, from wherever it is ready (the engine connection's callback), unless the
    connection cannot take it now (paused, gone, or an answer begun)."""
    if cycle.flow.write_paused or cycle.disconnected or cycle.response_started:
        return False
    _put(cycle, answer)
    return True


def _put(cycle: RequestResponseCycle, answer: Answer) -> None:
    """Write a whole answer in one piece (its headers are the gateway's own: JSON content type and length, and
    x-warmstart-* values made of model names, which admit no line breaks) and end the request's cycle."""
    parts: list[Any] = [STATUS_LINE[answer.status_code]]
    for name, value in (*cycle.default_headers, *answer.raw_headers):
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", answer.body)
    cycle.response_started, cycle.waiting_for_100_continue = True, False
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


def _nothing() -> None:
    pass
