"""An engine's answer as its connection reads it: the head parsed, and a whole answer of Content-Length
gathered by the connection's protocol itself and handed on from the callback that read its last byte (see
engine_http's note)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from warmstart.gateway.afterwards import Later

log = logging.getLogger("warmstart.gateway")
MAX_HEAD_BYTES = 64 * 1024


class EngineConnectionError(ConnectionError):
    """The engine's connection broke or it answered something that is not HTTP/1.1."""


class NoAnswer(Exception):
    """The connection closed before any byte of an answer: on a kept connection, the engine let it go idle."""


# a whole answer's status, headers and body, as it arrives; True when it handed the answer on to its client, so that
# the rest (the future's result, and what its awaiter does next) may wait (`Whole.later`)
OnWhole = Callable[[int, dict[str, str], bytes], bool]


def parse_head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    """A response head's status, headers (lower-case names) and whether its connection may be kept."""
    lines = raw.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") or not status_line[1].isdigit():
        raise EngineConnectionError(f"engine answered {lines[0][:80]!r}, not HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    reusable = status_line[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return int(status_line[1]), headers, reusable


class Whole:
    """One request's answer gathered by its connection: `future` gets (status, headers, body, reusable) once the
    last byte of a Content-Length body is in, or None when the answer is of another kind (chunked, to the end),
    whose bytes then go to the stream reader as usual. `later`: puts off the future's result when `on_whole`
    handed the answer on to its client (None: never put off)."""

    def __init__(self, future: asyncio.Future[tuple[int, dict[str, str], bytes, bool] | None],
                 on_whole: OnWhole | None, later: Later | None = None) -> None:
        self.future, self.on_whole, self.later = future, on_whole, later
        self.buffer = bytearray()  # grown in place: a large answer comes in many pieces
        self.head: tuple[int, dict[str, str], bool] | None = None
        self.plain = True  # False: not an answer of Content-Length (handed back to the reader)
        self.body_at = 0
        self.length = 0

    def feed(self, data: bytes) -> bool:
        """Take bytes; True once the answer is settled (whole, or handed back to the reader)."""
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    raise EngineConnectionError(f"engine's headers exceed {MAX_HEAD_BYTES} bytes")
                return False
            self.head = status, headers, _ = parse_head(bytes(self.buffer[:end]))
            length = headers.get("content-length")
            if length is None or not length.isdigit() or "transfer-encoding" in headers or status < 200:
                self.plain = False  # the reader takes it from here
                return True
            self.body_at, self.length = end + 4, int(length)
        return len(self.buffer) >= self.body_at + self.length


def _settle(future: asyncio.Future[tuple[int, dict[str, str], bytes, bool] | None],
            found: tuple[int, dict[str, str], bytes, bool]) -> None:
    if not future.done():  # (its awaiter may have been cancelled meanwhile)
        future.set_result(found)


class EngineProtocol(asyncio.StreamReaderProtocol):
    """The stream reader's protocol, which can also gather one whole answer itself (`whole`)."""

    whole: Whole | None = None  # the answer being gathered, when one is asked for whole

    def data_received(self, data: bytes) -> None:
        whole = self.whole
        if whole is None:
            super().data_received(data)
            return
        try:
            if not whole.feed(data):
                return
        except EngineConnectionError as exc:
            self.whole = None
            if not whole.future.done():
                whole.future.set_exception(exc)
            return
        self.whole = None
        head, buffer = whole.head, whole.buffer
        assert head is not None
        if not whole.plain:  # another kind of answer: the reader reads it all
            super().data_received(bytes(buffer))
            if not whole.future.done():
                whole.future.set_result(None)
            return
        end = whole.body_at + whole.length
        # bytes past the answer (none from an engine: one request at a time) leave the connection unfit to keep
        found = (head[0], head[1], bytes(buffer[whole.body_at:end]), head[2] and len(buffer) == end)
        handed = False
        if whole.on_whole is not None and not whole.future.done():
            try:
                handed = whole.on_whole(found[0], found[1], found[2])
            except Exception:  # the caller still gets the answer, as without the hook
                log.exception("handing on an engine's answer failed")
        if handed and whole.later is not None:
            whole.later(_settle, whole.future, found)
        elif not whole.future.done():
            whole.future.set_result(found)

    def eof_received(self) -> bool:
        self._lost()
        super().eof_received()
        return False  # the engine closed its side (or exited): close ours now, not when the sweep finds it

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        super().connection_lost(exc)

    def _lost(self) -> None:
        whole, self.whole = self.whole, None
        if whole is None or whole.future.done():
            return
        if not whole.buffer:
            whole.future.set_exception(NoAnswer("closed the connection without answering"))
        elif whole.head is None:
            whole.future.set_exception(EngineConnectionError("engine closed the connection in the middle of its "
                                                             "headers"))
        else:
            whole.future.set_exception(EngineConnectionError("engine closed the connection in the middle of its "
                                                             "answer"))
