"""Forwarding a request to a leased replica: retry once if it died before answering, relay streams,
and stop the work when the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import aiohttp
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from warmstart.errors import Unavailable
from warmstart.gateway.afterwards import Later
from warmstart.gateway.disconnect import ClientGone, listen_for_disconnect, race
from warmstart.gateway.engine_http import EngineClient, EngineResponse, Posted
from warmstart.gateway.engine_wire import EngineConnectionError, OnWhole
from warmstart.gateway.liveness import Liveness, Watch
from warmstart.gateway.stream_usage import HiddenUsage, last_usage
from warmstart.gateway.translate import engine_error_body, sse_error
from warmstart.pool.lease import Lease
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics

log = logging.getLogger("warmstart.gateway")
_UPSTREAM_ERRORS = (EngineConnectionError, ConnectionError)
_JSON = {"content-type": "application/json"}
# A stream gets a connection of its own: llama-server closes a connection once a stream on it ends, though
# its headers offer keep-alive, and the pool would take it back (at the stream's end) and reuse it dead.
_JSON_STREAM = {**_JSON, "connection": "close"}


def served_headers(lease: Lease) -> dict[str, str]:
    headers = {
        "x-warmstart-start": lease.start,
        "x-warmstart-wait-ms": f"{lease.waited_s * 1000:.1f}",
        "x-warmstart-replica": lease.replica.id,
    }
    if lease.replica.node is not None:  # many machines: the node whose engine answered
        headers["x-warmstart-node"] = lease.replica.node
    return headers


class Finish(Protocol):
    def __call__(self, lease: Lease | None, status: int, ttft: float | None, answer: bytes,
                 ended: float | None = None) -> None:
        """The request counted and logged: its lease, status, seconds to the first token, the answer's last bytes
        (its usage, when it carries one) and when it ended (None: now)."""


class Relay:
    """Sends one generation request to the pool's replicas and answers the client."""

    def __init__(self, pool: Pool, metrics: Metrics, client: EngineClient, session: aiohttp.ClientSession,
                 clock_now: Callable[[], float], engine_timeout: float = 60.0, later: Later | None = None) -> None:
        """`later`: puts off what follows a whole answer sent from a callback (gateway/afterwards.py)."""
        self.pool = pool
        self.metrics = metrics
        self.client = client
        self.now = clock_now
        self.later = later
        self.liveness = Liveness(session, engine_timeout)

    def begin(self, model: str, path: str, body: bytes, keep_alive: float | None, send_now: SendNow) -> Begun | None:
        """A whole answer's request sent to a warm replica at once, from a callback (no await), when one has a free
        slot (None otherwise: nothing was done); `forward(..., begun=)` takes it from there."""
        # the pool's bookkeeping of the slot waits (Lease.settle): the request reaches its engine first, and the
        # gateway does nothing more until the answer is sent (see front.py)
        lease = self.pool.try_acquire(model, keep_alive, put_off=True)
        if lease is None:
            return None
        try:
            sent: list[tuple[float, bytes]] = []
            on_whole = self._sender(lease, send_now, sent)
            return Begun(lease, sent, on_whole, self.client.send_at_once(lease.base_url + path, body, _JSON, on_whole))
        except BaseException:
            lease.release()
            raise

    async def forward(self, request: Request, model: str, path: str, body: bytes, stream: bool,
                      keep_alive: float | None, arrived: float, finish: Finish,
                      hidden_usage: bool = False, defer: bool = False, send_now: SendNow | None = None,
                      begun: Begun | None = None) -> Response:
        """The engine's answer to the client's request. `hidden_usage`: the stream's usage event was asked for
        by warmstart alone and is taken out of it. `defer`: the caller sends the returned response at once
        (the fast path), so a whole answer's bookkeeping may wait until it is sent. `send_now`: sends a whole
        200 answer to the client from the moment its last byte comes in, before anything else is done (the
        fast path's own connection); then the returned answer is `SENT`, its bookkeeping done. `begun`: the
        first try was begun already (`begin`), with the same `send_now`."""
        lease: Lease | None = None
        watch: Watch | None = None
        outlasted = False  # the request outlasted the disconnect grace: its engine is watched from then on

        def late() -> None:
            nonlocal outlasted
            outlasted = True
            if watch is not None:
                watch.arm()

        handed_off = False
        sent: list[tuple[float, bytes]] = []  # when send_now sent the answer, and the answer
        disconnect = listen_for_disconnect(request, late, lambda: bool(sent))
        try:
            for attempt in (0, 1):
                posted: Posted | None = None
                on_whole: OnWhole | None
                if begun is not None:
                    lease, sent, on_whole, posted, begun = begun.lease, begun.sent, begun.on_whole, begun.posted, None
                    lease.settle()
                else:
                    lease = self.pool.try_acquire(model, keep_alive)
                    if lease is None:
                        lease = await race(self.pool.acquire(model, keep_alive=keep_alive), disconnect)
                    on_whole = None if send_now is None or stream else self._sender(lease, send_now, sent)
                watch = self.liveness.watch(lease, armed=outlasted)
                try:
                    upstream, data = await race(self._exchange(lease, path, body, stream, watch, on_whole, posted),
                                                disconnect)
                except _UPSTREAM_ERRORS as exc:
                    # nothing reached the client yet: the replica is replaced and the request tried once more
                    watch.close()
                    lease.fail(watch.reason or f"{type(exc).__name__}: {exc}")
                    lease.release()
                    if attempt == 0:
                        self.metrics.retries.labels(model).inc()
                        log.warning("request to %s failed before any bytes (%s); retrying once", model, exc)
                        continue
                    raise Unavailable(f"model '{model}' failed twice while answering; retry later",
                                      retry_after=1) from exc
                except ClientGone:
                    watch.close()
                    if sent:  # it left after its answer was sent: the answer counts, and its slot is free
                        _after(lease, finish, 200, sent[0][0] - arrived, sent[0][1], sent[0][0])()
                        return SENT
                    await self.liveness.drain(lease)
                    raise
                if stream and upstream.status == 200:
                    handed_off = True
                    return RelayStream(data, upstream, lease, disconnect, arrived, self.now, finish, self.liveness,
                                       watch, HiddenUsage() if hidden_usage else None)
                watch.close()
                status = upstream.status
                if sent:
                    _after(lease, finish, status, sent[0][0] - arrived, data, sent[0][0])()
                    return SENT
                # without streaming, the first token reaches the client with the whole answer
                ttft = self.now() - arrived if status == 200 else None
                answer = data if status == 200 else engine_error_body(status, data, path)
                after = _after(lease, finish, status, ttft, data)
                if not defer:  # the caller reads the answer (Ollama's API): settle now
                    after()
                    after = _nothing
                return Answer(answer, status, served_headers(lease), after)
            raise AssertionError("unreachable")
        except ClientGone:
            finish(lease, 499, None, b"")
            return Response(status_code=499)
        finally:
            if not handed_off:
                disconnect.cancel()
                if watch is not None:
                    watch.close()

    def _sender(self, lease: Lease, send_now: SendNow, sent: list[tuple[float, bytes]]) -> OnWhole:
        """What hands a whole 200 answer to `send_now` as it arrives; `sent` gets when it was sent, and what. Its
        slot is given back with the rest of its bookkeeping, put off (`later`) until the client has had time to read
        the answer: the next bytes read from any client bring it on first, so the next request finds the slot free
        (see gateway/afterwards.py). When requests for the model are held for a slot, at once: one of them takes
        it now."""
        def on_whole(status: int, headers: dict[str, str], data: bytes) -> bool:
            if status == 200 and send_now(Answer(data, 200, served_headers(lease), _nothing)):
                sent.append((self.now(), data))
                if self.later is not None and not self.pool.held(lease.replica.model):
                    self.later(lease.release)
                else:
                    lease.release()
                return True
            return False
        return on_whole

    async def _exchange(self, lease: Lease, path: str, body: bytes, stream: bool, watch: Watch,
                        on_whole: OnWhole | None = None, posted: Posted | None = None) -> tuple[EngineResponse, bytes]:
        """Send the request (unless it was, `posted`); return the whole answer, or for a stream its first bytes."""
        headers = _JSON_STREAM if stream else _JSON
        upstream = await self.client.post(lease.base_url + path, body, headers, whole=not stream, on_whole=on_whole,
                                          posted=posted)
        watch.progress()
        try:
            if stream and upstream.status == 200:
                first = await upstream.readany()
                if not first:
                    raise EngineConnectionError("engine closed the stream before any bytes")
                watch.progress()
                return upstream, first
            data = await upstream.read()
        except BaseException:
            upstream.close()
            raise
        upstream.release()
        return upstream, data


def _after(lease: Lease, finish: Finish, status: int, ttft: float | None, data: bytes,
           ended: float | None = None) -> Callable[[], None]:
    def after() -> None:
        lease.release()
        finish(lease, status, ttft, data, ended)
    return after


def _nothing() -> None:
    pass


class Answer(Response):
    """A whole JSON answer, then `after()` (the lease given back, the request counted, when the caller
    deferred them): work the client need not wait for runs once the answer is sent, in the same task,
    before the loop serves anything else. `sent`: already sent (by `send_now`), its bookkeeping done."""

    sent = False

    def __init__(self, body: bytes, status: int, headers: dict[str, str], after: Callable[[], None]) -> None:
        self.status_code, self.body, self.after = status, body, after
        self.background = None
        self.raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *((k.encode(), v.encode()) for k, v in headers.items())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            self.after()


class Begun:
    """A whole answer's first try, begun from a callback (`Relay.begin`): its lease, where `on_whole` notes the
    answer it sent, and the request written on a kept connection (None: none was kept, `post` opens one)."""

    __slots__ = ("lease", "on_whole", "posted", "sent")

    def __init__(self, lease: Lease, sent: list[tuple[float, bytes]], on_whole: OnWhole,
                 posted: Posted | None) -> None:
        self.lease, self.sent, self.on_whole, self.posted = lease, sent, on_whole, posted


# an answer `send_now` sent already
SENT = Answer(b"", 200, {}, _nothing)
SENT.sent = True
# sends a whole answer to the client now; False when it cannot (the connection is paused or gone)
SendNow = Callable[["Answer"], bool]


class RelayStream(Response):
    """An SSE stream relayed byte for byte; a cut upstream ends it with an error event, a client
    that leaves closes the upstream connection, which stops the engine's generation."""

    def __init__(self, first: bytes, upstream: EngineResponse, lease: Lease,
                 disconnect: asyncio.Future[None], arrived: float, now: Callable[[], float],
                 finish: Finish, liveness: Liveness, watch: Watch, hidden: HiddenUsage | None = None) -> None:
        super().__init__(status_code=200, media_type="text/event-stream",
                         headers={"cache-control": "no-cache", **served_headers(lease)})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.first, self.upstream, self.lease = first, upstream, lease
        self.disconnect, self.arrived, self.now, self.finish = disconnect, arrived, now, finish
        self.liveness, self.watch = liveness, watch
        self.ttft = now() - arrived
        self.usage = b""  # the last event that carried `usage` (stream_options.include_usage)
        self.hidden = hidden
        # the client was sent the stream's last event (`data: [DONE]`): one that leaves now, as OpenAI's SDK
        # does without reading the end of the chunked body, got the whole answer (200, its tokens counted)
        self.delivered = False
        self._end = b"\n"  # the last bytes sent (a stream begins at the start of a line)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = 200
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            pump = asyncio.ensure_future(self._pump(send))
            done, _ = await asyncio.wait({pump, self.disconnect}, return_when=asyncio.FIRST_COMPLETED)
            if pump not in done:
                status = 200 if self.delivered else 499
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            else:
                try:
                    pump.result()
                except OSError:  # the client went away while we were sending
                    status = 200 if self.delivered else 499
        finally:
            self.watch.close()
            if status == 499:
                self.upstream.close()  # the engine sees the disconnect and stops generating
            else:
                self.upstream.release()
            self.disconnect.cancel()
            if self.hidden is not None and self.hidden.usage:
                self.usage = self.hidden.usage
            self.finish(self.lease, status, self.ttft, self.usage)
            if status == 499:
                await self.liveness.drain(self.lease)
            else:
                self.lease.release()

    def _sent(self, data: bytes) -> None:
        """Note whether the stream sent so far ends in its last event, a line `data: [DONE]` (a JSON string holds
        no raw line break, so no answer's text can start such a line)."""
        end = data[-32:] if len(data) >= 32 else self._end + data
        self._end = end[-32:]
        self.delivered = b"\ndata: [DONE]" in end

    async def _pump(self, send: Send) -> None:
        hidden = self.hidden
        first = self.first if hidden is None else hidden.feed(self.first)
        if b'"usage"' in first:
            self.usage = last_usage(first)
        await send({"type": "http.response.body", "body": first, "more_body": True})
        self._sent(first)
        tail = first[-2:]
        upstream, progress = self.upstream, self.watch.progress
        try:
            while data := await upstream.readany():
                progress()
                if hidden is not None:
                    data = hidden.feed(data)
                    if not data:
                        continue
                if b'"usage"' in data:
                    self.usage = last_usage(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                self._sent(data)
                tail = (tail + data[-2:])[-2:]
            if hidden is not None and (rest := hidden.rest()):
                await send({"type": "http.response.body", "body": rest, "more_body": True})
        except _UPSTREAM_ERRORS as exc:
            if hidden is not None and (rest := hidden.rest()):
                await send({"type": "http.response.body", "body": rest, "more_body": True})
                tail = rest[-2:]
            why = self.watch.reason or f"{type(exc).__name__}: {exc}"
            self.lease.fail(f"stream cut: {why}")
            prefix = b"" if tail == b"\n\n" else b"\n\n"
            await send({"type": "http.response.body", "more_body": True,
                        "body": prefix + sse_error(f"the engine stopped in the middle of the answer "
                                                   f"({self.watch.reason or exc}); the answer is incomplete")})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
