"""HTTP/1.1 from the gateway to its engines, and nothing more: a POST with a body, a response read whole or
piece by piece (Content-Length, chunked, or to the end), keep-alive connections per engine.

The relay's hop to an engine is on the path of every request. A general client (aiohttp) spends about
0.65 ms of CPU on a request to llama-server on this hardware; this one about 0.2 ms, for the small part of
HTTP that engines on loopback speak. Health checks and everything off the request path keep aiohttp.

A whole answer (`post(..., whole=True)`, not a stream) is gathered by the connection itself as its bytes
arrive, and handed to `on_whole` from the callback that received its last bytes, before the task that
asked is resumed: the gateway can send it on to its client first and do its bookkeeping after.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from warmstart.gateway.afterwards import Later
from warmstart.gateway.engine_wire import (
    MAX_HEAD_BYTES,
    EngineConnectionError,
    EngineProtocol,
    NoAnswer,
    OnWhole,
    Whole,
    parse_head,
)

CONNECT_TIMEOUT = 10.0
# engines' HTTP servers (uvicorn, llama-server) close a connection idle for 5 s: the gateway lets go of one
# first, or a request could go out on it just as the engine closes it
IDLE_TIMEOUT = 4.0
READ_SIZE = 64 * 1024
MAX_TARGETS = 256


class EngineResponse:
    """One engine answer: `status` and `headers` (lower-case names) once the head is in; the body by
    `read()` (all of it) or `readany()` (what has come, b"" at its end). `release()` after the whole body
    gives the connection back for the next request; `close()` drops it (an engine sees a client leave)."""

    def __init__(self, client: EngineClient, key: tuple[str, int], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, status: int, headers: dict[str, str], reusable: bool,
                 body: bytes | None = None) -> None:
        self._client, self._key, self._reader, self._writer = client, key, reader, writer
        self.status, self.headers = status, headers
        self._reusable = reusable
        self._body = body  # the whole body, when the connection gathered it
        self._chunked = body is None and headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length")
        self._left: int | None = 0  # bytes left of the body, or of the current chunk (none: a gathered body)
        if body is None and not self._chunked:
            if length is None:
                self._left = None  # to the end of the connection
                self._reusable = False
            elif not length.isdigit():
                raise EngineConnectionError(f"engine sent Content-Length {length!r}")
            else:
                self._left = int(length)
        self._done = self._left == 0 and not self._chunked
        self._raw = b""  # bytes of a chunked body read but not yet taken apart (a size line cut by a read)
        self._open = True

    async def readany(self) -> bytes:
        if self._body is not None:
            body, self._body = self._body, b""
            return body
        if self._done:
            return b""
        try:
            if self._chunked:
                return await self._read_chunked()
            if self._left is None:
                data = await self._reader.read(READ_SIZE)
                self._done = not data
                return data
            data = await self._reader.read(min(self._left, READ_SIZE))
            if not data:
                raise EngineConnectionError("engine closed the connection in the middle of its answer")
            self._left -= len(data)
            self._done = self._left == 0
            return data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise EngineConnectionError(f"engine's answer broke off: {exc}") from None

    async def read(self) -> bytes:
        if self._body is not None:
            return await self.readany()
        if self._left is not None and not self._chunked and not self._done:
            try:
                data = await self._reader.readexactly(self._left)
            except asyncio.IncompleteReadError:
                raise EngineConnectionError("engine closed the connection in the middle of its answer") from None
            self._left, self._done = 0, True
            return data
        parts = []
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)

    async def _read_chunked(self) -> bytes:
        """The data of every chunk that has come, joined: what one read brings (a stream's events as the engine
        wrote them since the last read), not one chunk at a time; b"" once the last chunk and its trailers are in.
        A relay that falls behind thus catches up a read's worth of events at a time, not event by event."""
        while True:
            raw = await self._reader.read(READ_SIZE)
            if not raw:
                raise EngineConnectionError("engine closed the connection in the middle of a chunked answer")
            data = self._dechunk(self._raw + raw if self._raw else raw)
            if data or self._done:
                return data

    def _dechunk(self, raw: bytes) -> bytes:
        """The chunk data in `raw`; what is left of an unfinished size line, chunk end or trailer kept for the next
        read. `_left`: bytes of the current chunk still to come; -2: its closing CRLF; -1: trailers, to an empty
        line."""
        out = []
        at, end = 0, len(raw)
        left = self._left
        assert left is not None
        while at < end:
            if left > 0:
                take = min(left, end - at)
                out.append(raw[at:at + take])
                at += take
                left -= take
                if left == 0:
                    left = -2
            elif left == -2:
                if end - at < 2:
                    break
                if raw[at:at + 2] != b"\r\n":
                    raise EngineConnectionError("engine sent a chunk longer than it said")
                at += 2
                left = 0
            else:
                line_end = raw.find(b"\r\n", at)
                if line_end < 0:
                    if end - at > MAX_HEAD_BYTES:
                        raise EngineConnectionError("engine sent a chunk size line without its end")
                    break
                line, at = raw[at:line_end], line_end + 2
                if left == -1:  # trailers (none from engines), to an empty line: the answer's end
                    if not line:
                        self._done = True
                        if at < end:  # nothing may follow an answer asked for alone: the connection is not reused
                            self._reusable = False
                        break
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size < 0:
                        raise ValueError(size)
                except ValueError:
                    raise EngineConnectionError(f"engine sent a bad chunk size {line[:20]!r}") from None
                left = size if size > 0 else -1
        self._left = left
        self._raw = raw[at:] if at < end and not self._done else b""
        return out[0] if len(out) == 1 else b"".join(out)

    def release(self) -> None:
        """Done with the answer: its connection serves the next request if the body was read to its end."""
        if not self._open:
            return
        self._open = False
        if self._done and self._reusable:
            self._client._put_back(self._key, self._reader, self._writer)
        else:
            self._writer.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()


def _usable(since: float, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, now: float) -> bool:
    """Whether a kept connection may carry the next request: idle less than IDLE_TIMEOUT and still open."""
    return now - since < IDLE_TIMEOUT and not reader.at_eof() and not writer.is_closing()


# a whole answer as its connection gathers it (see Whole), or None for one the reader reads
Gathered = asyncio.Future[tuple[int, dict[str, str], bytes, bool] | None]


class Posted:
    """A request written by `EngineClient.send_at_once`, its answer being gathered by `protocol`, `writer`'s
    connection's."""

    __slots__ = ("gathered", "protocol", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gathered: Gathered,
                 protocol: EngineProtocol) -> None:
        self.reader, self.writer, self.gathered, self.protocol = reader, writer, gathered, protocol


def _request(start: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """A POST's bytes: `start` (its request line and host header), then its length, `headers` and `body`."""
    head = [start, f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _expect(writer: asyncio.StreamWriter, on_whole: OnWhole | None,
            later: Later | None) -> tuple[Gathered, EngineProtocol]:
    """Have the writer's connection gather the next answer whole; the future it will be in, and the connection's
    protocol gathering it (kept: the transport forgets its protocol once the connection is closed, which the
    engine may do right after the answer, llama.cpp's server after 100 requests on one connection)."""
    gathered: Gathered = asyncio.get_running_loop().create_future()
    protocol: EngineProtocol = writer.transport.get_protocol()  # type: ignore[assignment]
    protocol.whole = Whole(gathered, on_whole, later)
    return gathered, protocol


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEAD_BYTES, loop=loop)
    protocol = EngineProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class EngineClient:
    def __init__(self, later: Later | None = None) -> None:
        """`later`: puts off what follows an answer `on_whole` handed on to its client (see Whole)."""
        self._later = later
        self._idle: dict[tuple[str, int], list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._closed = False
        self._sweep_at: asyncio.TimerHandle | None = None
        self._targets: dict[str, tuple[tuple[str, int], str]] = {}

    def send_at_once(self, url: str, body: bytes, headers: Mapping[str, str], on_whole: OnWhole) -> Posted | None:
        """Write a POST whose whole answer is wanted, now, from a callback (no await), on a connection kept from an
        earlier request; None when no kept connection is usable (then `post` opens one). `post(..., posted=)`
        awaits its answer, and sends it again on a new connection if the kept one turns out closed."""
        key, start = self._targets.get(url) or self._target(url)
        kept = self._kept(key)
        if kept is None:
            return None
        reader, writer = kept
        gathered, protocol = _expect(writer, on_whole, self._later)
        writer.write(_request(start, body, headers))
        return Posted(reader, writer, gathered, protocol)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], whole: bool = False,
                   on_whole: OnWhole | None = None, posted: Posted | None = None) -> EngineResponse:
        """POST `body` to `url` (http://HOST:PORT/PATH); returns once the answer's head is in (`whole`: once all of
        an answer of Content-Length is, handed to `on_whole` first; `posted`: the request was written already, by
        `send_at_once`). A connection kept from an earlier request that turns out closed is replaced and the
        request sent once more: the engine closed it before reading the request, so nothing was done twice."""
        key, start = self._targets.get(url) or self._target(url)
        request = b""
        while True:
            sent: Posted | None = posted
            if posted is not None:
                reader, writer, reused, posted = posted.reader, posted.writer, True, None
            else:
                reader, writer, reused = await self._connection(key)
            try:
                if sent is None:
                    request = request or _request(start, body, headers)
                    if not whole:
                        writer.write(request)
                        return await self._head(key, reader, writer)
                    gathered, protocol = _expect(writer, on_whole, self._later)
                    writer.write(request)
                else:
                    gathered, protocol = sent.gathered, sent.protocol
                try:
                    found = await gathered
                finally:
                    protocol.whole = None
                if found is None:
                    return await self._head(key, reader, writer)
                status, answer_headers, answer, reusable = found
                return EngineResponse(self, key, reader, writer, status, answer_headers, reusable, answer)
            except (NoAnswer, EngineConnectionError, OSError) as exc:
                writer.close()
                if reused and not isinstance(exc, EngineConnectionError):
                    continue
                if isinstance(exc, EngineConnectionError):
                    raise
                raise EngineConnectionError(f"engine at {key[0]}:{key[1]}: {exc}") from None
            except BaseException:
                writer.close()
                raise

    def _target(self, url: str) -> tuple[tuple[str, int], str]:
        """Where a URL's requests go and their request line and host header, worked out once per URL."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise EngineConnectionError(f"engine URL {url!r} is not http://HOST:PORT")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        found = ((parts.hostname, parts.port or 80), f"POST {target} HTTP/1.1\r\nhost: {parts.netloc}")
        if len(self._targets) >= MAX_TARGETS:  # engines come and go on new ports: forget the oldest
            del self._targets[next(iter(self._targets))]
        self._targets[url] = found
        return found

    async def _head(self, key: tuple[str, int], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> EngineResponse:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise NoAnswer("closed the connection without answering") from None
            raise EngineConnectionError("engine closed the connection in the middle of its headers") from None
        except asyncio.LimitOverrunError:
            raise EngineConnectionError(f"engine's headers exceed {MAX_HEAD_BYTES} bytes") from None
        status, headers, reusable = parse_head(raw[:-4])
        return EngineResponse(self, key, reader, writer, status, headers, reusable)

    def _kept(self, key: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection kept from an earlier request that may carry the next one; the unusable are closed."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            since, reader, writer = idle.pop()
            if _usable(since, reader, writer, now):
                return reader, writer
            writer.close()
        return None

    async def _connection(self, key: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        kept = self._kept(key)
        if kept is not None:
            return kept[0], kept[1], True
        if self._closed:
            raise EngineConnectionError("the gateway is shutting down")
        try:
            reader, writer = await asyncio.wait_for(_open(key[0], key[1]), CONNECT_TIMEOUT)
        except TimeoutError:
            raise EngineConnectionError(f"no connection to {key[0]}:{key[1]} within {CONNECT_TIMEOUT:g} s") from None
        except OSError as exc:
            raise EngineConnectionError(f"no connection to {key[0]}:{key[1]}: {exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer, False

    def _put_back(self, key: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        if self._closed or not _usable(now, reader, writer, now):
            writer.close()
            return
        self._idle.setdefault(key, []).append((time.monotonic(), reader, writer))
        if self._sweep_at is None:
            self._sweep_at = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle too long or closed by their engine: an engine that was stopped leaves
        its connections here, and nothing would ask for them again."""
        self._sweep_at = None
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if _usable(*c, now)]
            for conn in idle:
                if conn not in keep:
                    conn[2].close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle and not self._closed:
            self._sweep_at = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweep_at is not None:
            self._sweep_at.cancel()
        for idle in self._idle.values():
            for _, _, writer in idle:
                writer.close()
        self._idle.clear()
