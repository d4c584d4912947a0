"""The gateway's HTTP/1.1 server protocol: uvicorn's own (httptools), except that a POST to a generation route
is handed to the fast path straight from the request's cycle, not through the ASGI app, and a whole answer is
written in one piece.

Every other request, and everything about the connection (parsing, keep-alive, pipelining, flow control,
timeouts, shutdown), stays uvicorn's. What is skipped on a warm request: the ASGI call chain, the response's
two `send` messages and their checks (the gateway made the headers itself), and one of its two socket writes.

A warm request goes further: once its last byte is in, the callback that read it checks it and sends it to a
warm replica with a free slot (`_begin`), before any task runs; the gateway then does nothing more for it until
the engine answers (the pool's bookkeeping of the slot is put off, and the request's task is made only once the
answer is in, or once the request has lasted LISTEN_AFTER_S): on a machine whose engine computes on every CPU,
any step taken meanwhile is time taken from the engine. Anything else (a cold model, a stream, a refusal, a body
still coming in pieces past uvicorn's buffer) is served by the task from the start, as before.

Once a whole answer is sent from the engine connection's callback, what remains of its request waits a moment
(gateway/afterwards.py) so that the client is not kept waiting behind it; the next bytes read from any client
bring it on first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from warmstart.gateway.disconnect import LISTEN_AFTER_S
from warmstart.gateway.fastpath import ROUTES
from warmstart.gateway.generate import Early
from warmstart.gateway.limits import declared_length
from warmstart.gateway.relay import Answer

if TYPE_CHECKING:
    from warmstart.gateway.app import Gateway

log = logging.getLogger("warmstart.gateway")


def front_protocol(gateway: Gateway) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, serving `gateway`'s generation routes from the cycle."""

    afterwards = gateway.services.afterwards

    class FrontProtocol(HttpToolsProtocol):
        # a generation request whose body is still coming, to be begun once it is in
        waiting: tuple[RequestResponseCycle, Any] | None = None

        # work put off after earlier answers was brought on by these bytes (see `on_message_complete`)
        flushed = False

        def data_received(self, data: bytes) -> None:
            # what was put off after the answers sent before these bytes is done before anything they ask
            self.flushed = afterwards.pending
            if self.flushed:
                afterwards.run()
            super().data_received(data)

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            if afterwards.pending:
                # a pipelined request, started once the one before it was answered (no read brings the put-off
                # work on): that work first, so that it finds the slot the answer gave back free
                afterwards.run()
            scope = cycle.scope
            model = ROUTES.get(scope["path"]) if scope["method"] == "POST" else None
            # `app` is another when uvicorn refuses the request (its concurrency limit)
            if model is None or app is not self.app:
                super()._start_asgi_task(cycle, app)
            elif cycle is self.cycle and cycle.more_body and not cycle.waiting_for_100_continue and _small(scope):
                # its body comes unasked (no `Expect: 100-continue`, answered once the app reads) and fits in what
                # uvicorn takes before it pauses reading
                self.waiting = (cycle, model)
            else:
                self._serve(cycle, model, None)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            waiting, self.waiting = self.waiting, None
            if waiting is not None:  # (another cycle's message cannot end first; if it did, the task reads the body)
                # not begun from here after work was brought on: the tasks that do it run first, and give back
                # their engine connections for this request to reuse
                begin = waiting[0] is self.cycle and not self.flushed
                early = _begin(gateway, *waiting) if begin else None
                if early is not None and early.begun.posted is not None:
                    self._serve_answered(*waiting, early)
                else:
                    self._serve(*waiting, early)

        def _serve_answered(self, cycle: RequestResponseCycle, model: Any, early: Early) -> None:
            """The task of a request sent to its engine from this callback, started once the engine has answered
            (and, when the answer was sent on at once, once its put-off work is due), or once the request has lasted
            LISTEN_AFTER_S: until then the gateway does nothing for it (on a machine whose engine computes on
            every CPU, any step it took meanwhile would be time taken from the engine)."""
            assert early.begun.posted is not None
            gathered = early.begun.posted.gathered
            started = False

            def start(_: object = None) -> None:
                nonlocal started
                if not started:
                    started = True
                    timer.cancel()
                    gathered.remove_done_callback(start)
                    self._serve(cycle, model, early)

            timer = self.loop.call_later(LISTEN_AFTER_S, start)
            gathered.add_done_callback(start)

        def _serve(self, cycle: RequestResponseCycle, model: Any, early: Early | None) -> None:
            task = self.loop.create_task(serve(gateway, cycle, model, early))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    return FrontProtocol


def _small(scope: Any) -> bool:
    """Whether a request's body has a length that uvicorn gathers without pausing the connection's reading."""
    declared = declared_length(scope)
    return declared is not None and 0 <= declared <= HIGH_WATER_LIMIT


def _begin(gateway: Gateway, cycle: RequestResponseCycle, model: Any) -> Early | None:
    """A whole generation request begun from the callback that read its last byte, before any task: admitted,
    valid, and sent to a warm replica with a free slot at once (the task then waits for the answer and does the
    bookkeeping, while the engine computes); None when it cannot be, and nothing was done."""
    scope: Any = cycle.scope  # uvicorn's typed scope, starlette's plain mapping
    if gateway.auth.admit(scope) is not None:
        return None
    try:
        early = gateway.fast.begin(scope, bytes(cycle.body), model, lambda answer: _send_now(cycle, answer))
    except Exception:
        log.exception("beginning a request from its connection failed; it is served as usual")
        return None
    if early is not None:
        cycle.body = bytearray()
    return early


async def serve(gateway: Gateway, cycle: RequestResponseCycle, model: Any, early: Early | None = None) -> None:
    """One generation request, as the gateway's ASGI app would serve it (API keys, then the fast path); `early`:
    begun already (`_begin`)."""
    scope: Any = cycle.scope
    receive: Any = cycle.receive  # uvicorn's typed ASGI events, starlette's plain mappings
    send: Any = cycle.send
    try:
        denial = None if early is not None else gateway.auth.admit(scope)
        if denial is not None:
            await gateway.auth.refuse(scope, send, denial)
            return
        # the whole body is in when the request's last byte came with its head (and reading was not paused for it)
        body = None
        if early is None and not cycle.more_body and not cycle.flow.read_paused:
            body, cycle.body = bytes(cycle.body), bytearray()
        response = await gateway.fast.respond(scope, receive, model, lambda answer: _send_now(cycle, answer), body,
                                              early)
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
