"""The gateway's HTTP client for its engines, against real sockets on loopback: each server here answers
the way an engine's HTTP server can (Content-Length, chunked, to the end, a closed kept connection, a
cut answer, something that is not HTTP)."""

import asyncio

import pytest

from warmstart.gateway.engine_http import EngineClient
from warmstart.gateway.engine_wire import EngineConnectionError


class Server:
    """A loopback server that answers each request with `answer(n, request_head)`'s bytes, then keeps the
    connection or closes it (`close_after`: always, or when it holds for the request's number); records how
    many connections it accepted."""

    def __init__(self, answer, close_after=False, close_idle_after=None, pause=None):
        self.answer, self.close_after, self.close_idle_after = answer, close_after, close_idle_after
        self.pause = pause  # seconds between the answer's pieces (each then comes to the client in a read of its own)
        self.connections, self.requests, self.heads = 0, 0, []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.close_idle_after)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                self.heads.append(head)
                self.requests += 1
                for piece in self.answer(self.requests, body):
                    writer.write(piece)
                    await writer.drain()
                    if self.pause:
                        await asyncio.sleep(self.pause)
                if self.close_after is True or (callable(self.close_after) and self.close_after(self.requests)):
                    return
        finally:
            writer.close()


def fixed(data):
    return f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n{data}".encode()


WHOLE = pytest.mark.parametrize("whole", [False, True], ids=["head-first", "whole"])


@WHOLE
async def test_content_length_answers_reuse_one_connection(whole):
    async with Server(lambda n, body: [fixed(f'{{"n": {n}, "got": {len(body)}}}')]) as srv:
        client = EngineClient()
        for n in (1, 2, 3):
            r = await client.post(srv.url + "/v1/chat/completions", b"x" * 10, {"content-type": "application/json"},
                                  whole=whole)
            assert (r.status, r.headers["content-type"]) == (200, "application/json")
            assert await r.read() == f'{{"n": {n}, "got": 10}}'.encode()
            r.release()
        assert srv.connections == 1 and srv.requests == 3
        assert srv.heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        await client.close()


@WHOLE
async def test_a_chunked_stream_is_read_piece_by_piece_with_the_chunks_joined_back(whole):
    events = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]

    def answer(n, body):
        yield b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        for e in events:
            yield f"{len(e):x}\r\n".encode() + e + b"\r\n"
        yield b"0\r\n\r\n"

    async with Server(answer) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/s", b"{}", {"connection": "close"}, whole=whole)
        got = []
        while data := await r.readany():
            got.append(data)
        assert b"".join(got) == b"".join(events)
        r.release()
        # one more: read whole
        r = await client.post(srv.url + "/s", b"{}", {}, whole=whole)
        assert await r.read() == b"".join(events)
        r.release()
        await client.close()


def chunked(events, last=b"0\r\n\r\n"):
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events) + last)


async def test_a_chunked_answer_cut_anywhere_by_the_network_is_put_back_together_and_its_connection_kept():
    events = [b"data: " + b"x" * 20 + b"\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
    answer = chunked(events, last=b"0;ext=1\r\nx-trailer: 1\r\n\r\n")
    head = answer.index(b"\r\n\r\n") + 4
    # the head whole, then the body a byte at a time: size lines, chunk ends and trailers cut at every byte
    async with Server(lambda n, body: [answer[:head], *(answer[i:i + 1] for i in range(head, len(answer)))],
                      pause=0.002) as srv:
        client = EngineClient()
        for _ in range(2):
            r = await client.post(srv.url + "/s", b"{}", {})
            got = []
            while data := await r.readany():
                got.append(data)
            assert b"".join(got) == b"".join(events) and len(got) > len(events)
            r.release()
        assert srv.connections == 1 and srv.requests == 2
        await client.close()


async def test_the_chunks_come_together_in_one_piece_when_a_read_brings_them_together():
    """A relay that fell behind catches up with every event that has come in one piece, not one event at a time."""
    events = [b"data: %d\n\n" % i for i in range(50)]
    async with Server(lambda n, body: [chunked(events)]) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/s", b"{}", {})
        assert await r.readany() == b"".join(events)
        assert await r.readany() == b""
        r.release()
        await client.close()


@pytest.mark.parametrize("answer, why", [
    (chunked([b"data: one\n\n"], last=b"-5\r\nhello\r\n0\r\n\r\n"), "bad chunk size"),
    (chunked([b"data: one\n\n"], last=b"zz\r\n"), "bad chunk size"),
    (chunked([b"data: one\n\n"], last=b"3\r\nhello\r\n0\r\n\r\n"), "longer than it said"),
    (chunked([b"data: one\n\n"], last=b"5\r\nhel"), "middle of a chunked answer"),
])
async def test_a_broken_chunked_answer_is_a_connection_error(answer, why):
    async with Server(lambda n, body: [answer], close_after=True) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/", b"", {})
        with pytest.raises(EngineConnectionError, match=why):
            while await r.readany():
                pass
        r.close()
        await client.close()


async def test_bytes_after_a_chunked_answers_end_keep_its_connection_from_being_reused():
    async with Server(lambda n, body: [chunked([b"data: %d\n\n" % n]) + b"HTTP/1.1 200 OK\r\n"]) as srv:
        client = EngineClient()
        for n in (1, 2):
            r = await client.post(srv.url + "/s", b"{}", {})
            assert await r.read() == b"data: %d\n\n" % n
            r.release()
        assert srv.connections == 2
        await client.close()


@WHOLE
async def test_an_answer_without_length_is_read_to_the_end_and_its_connection_not_kept(whole):
    async with Server(lambda n, body: [b"HTTP/1.1 200 OK\r\n\r\n", b"partly ", b"done"], close_after=True) as srv:
        client = EngineClient()
        for _ in range(2):
            r = await client.post(srv.url + "/", b"", {}, whole=whole)
            assert await r.read() == b"partly done"
            r.release()
        assert srv.connections == 2
        await client.close()


@WHOLE
async def test_a_kept_connection_the_engine_closed_while_idle_is_replaced_and_the_request_sent_once(whole):
    async with Server(lambda n, body: [fixed(str(n))], close_idle_after=0.05) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/", b"a", {}, whole=whole)
        assert await r.read() == b"1"
        r.release()
        await asyncio.sleep(0.3)  # the server closed it; the client may not have noticed yet
        r = await client.post(srv.url + "/", b"b", {}, whole=whole)
        assert await r.read() == b"2"
        r.release()
        assert srv.requests == 2 and srv.connections == 2
        await client.close()


async def test_a_request_sent_at_once_goes_on_a_kept_connection_and_one_the_engine_closed_is_sent_again():
    """`send_at_once` writes from a callback, with no await, on a connection kept from an earlier request (None
    when there is none: nothing is sent); `post(posted=)` then awaits its answer, handed to `on_whole` first. A
    kept connection the engine closes without answering takes the request to a new one."""
    def answer(n, body):
        return [] if n == 3 else [fixed(f"{n}:{body.decode()}")]

    async with Server(answer, close_after=lambda n: n == 3) as srv:
        client = EngineClient()
        seen = []
        assert client.send_at_once(srv.url + "/", b"a", {}, seen.append) is None  # nothing kept yet
        r = await client.post(srv.url + "/", b"a", {}, whole=True)
        assert await r.read() == b"1:a"
        r.release()

        def on_whole(status, headers, body):
            seen.append((status, body))

        for n, body, before in ((2, b"b", 1), (4, b"c", 2)):  # the third request is closed without an answer
            posted = client.send_at_once(srv.url + "/", body, {}, on_whole)
            assert posted is not None and srv.requests == before
            r = await client.post(srv.url + "/", body, {}, whole=True, on_whole=on_whole, posted=posted)
            assert await r.read() == b"%d:%s" % (n, body) and seen[-1] == (200, b"%d:%s" % (n, body))
            r.release()
        assert srv.requests == 4 and srv.connections == 2 and len(seen) == 2
        await client.close()


async def test_an_answer_sent_at_once_whose_engine_then_closed_the_connection_is_still_the_answer():
    """An engine may close its connection right after a whole answer (llama.cpp's server does after its keep-alive
    count of requests on one connection): by the time `post(posted=)` looks at the answer the connection is gone
    (its transport has no protocol any more). The answer is still the answer, and the connection is not kept."""
    async with Server(lambda n, body: [fixed(f"{n}:{body.decode()}")], close_after=lambda n: n == 2) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/", b"a", {}, whole=True)
        assert await r.read() == b"1:a"
        r.release()
        seen = []
        posted = client.send_at_once(srv.url + "/", b"b", {}, lambda status, headers, body: seen.append(body))
        assert posted is not None
        for _ in range(200):  # the answer is in and the engine has closed the connection
            if seen and posted.writer.transport.get_protocol() is None:
                break
            await asyncio.sleep(0.005)
        assert seen == [b"2:b"] and posted.writer.transport.get_protocol() is None
        r = await client.post(srv.url + "/", b"b", {}, whole=True, posted=posted)
        assert r.status == 200 and await r.read() == b"2:b"
        r.release()
        r = await client.post(srv.url + "/", b"c", {}, whole=True)  # on a new connection
        assert await r.read() == b"3:c" and srv.connections == 2
        r.release()
        await client.close()


async def test_an_answer_cut_in_the_middle_is_a_connection_error():
    async with Server(lambda n, body: [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"],
                      close_after=True) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/", b"", {})
        with pytest.raises(EngineConnectionError, match="middle"):
            await r.read()
        r.close()

    async with Server(lambda n, body: [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"],
                      close_after=True) as srv:
        r = await client.post(srv.url + "/", b"", {})
        with pytest.raises(EngineConnectionError):
            while await r.readany():
                pass
        r.close()
        await client.close()


@WHOLE
async def test_no_answer_or_not_http_or_no_server_is_a_connection_error_naming_it(whole):
    client = EngineClient()
    async with Server(lambda n, body: [], close_after=True) as srv:
        with pytest.raises(EngineConnectionError, match="without answering"):
            await client.post(srv.url + "/", b"", {}, whole=whole)
    async with Server(lambda n, body: [b"SSH-2.0-OpenSSH\r\n\r\n"], close_after=True) as srv:
        with pytest.raises(EngineConnectionError, match=r"not HTTP/1\.1"):
            await client.post(srv.url + "/", b"", {}, whole=whole)
        url = srv.url
    with pytest.raises(EngineConnectionError, match="Connect"):
        await client.post(url + "/", b"", {})  # nothing listens there any more
    with pytest.raises(EngineConnectionError, match="not http"):
        await client.post("https://127.0.0.1:1/", b"", {})
    await client.close()


async def test_a_whole_answer_is_handed_on_from_the_connection_before_the_caller_resumes():
    """`on_whole` gets the status, headers and body from the callback that received the last bytes (no task
    runs it), before `post` returns; the answer arrives in pieces, and an answer cut short is an error."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n"
    async with Server(lambda n, body: [head, b"\r\n{\"a\":", b" 12345}"]) as srv:
        client = EngineClient()
        seen = []

        def on_whole(status, headers, body):
            seen.append((status, headers["content-type"], body, asyncio.current_task()))

        r = await client.post(srv.url + "/", b"", {}, whole=True, on_whole=on_whole)
        assert seen == [(200, "application/json", b'{"a": 12345}', None)]
        assert await r.read() == b'{"a": 12345}'
        r.release()
        r = await client.post(srv.url + "/", b"", {}, whole=True)  # the kept connection serves the next
        assert await r.read() == b'{"a": 12345}' and srv.connections == 1
        r.release()
        await client.close()
    async with Server(lambda n, body: [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"],
                      close_after=True) as srv:
        client = EngineClient()
        with pytest.raises(EngineConnectionError, match="middle of its answer"):
            await client.post(srv.url + "/", b"", {}, whole=True, on_whole=on_whole)
        assert len(seen) == 1  # nothing handed on
        await client.close()


async def test_an_answer_closed_early_by_the_gateway_drops_its_connection():
    async with Server(lambda n, body: [fixed("x" * 1000)]) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/", b"", {})
        assert r.status == 200
        r.release()  # body not read: the connection cannot serve another request
        r = await client.post(srv.url + "/", b"", {})
        assert await r.read() == b"x" * 1000
        r.release()
        assert srv.connections == 2
        await client.close()


async def test_idle_connections_are_closed_once_idle_too_long_even_if_never_asked_for_again(monkeypatch):
    import warmstart.gateway.engine_http as engine_http

    monkeypatch.setattr(engine_http, "IDLE_TIMEOUT", 0.1)
    async with Server(lambda n, body: [fixed("ok")]) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/", b"", {})
        await r.read()
        r.release()
        assert client._idle  # kept for the next request
        await asyncio.sleep(0.4)  # no request comes: the engine may be gone for good
        assert not client._idle
        await client.close()


async def test_a_kept_connection_the_engine_closes_is_closed_at_once_not_left_open():
    async with Server(lambda n, body: [fixed("ok")], close_idle_after=0.05) as srv:
        client = EngineClient()
        r = await client.post(srv.url + "/", b"", {})
        await r.read()
        r.release()
        [(_, _, writer)] = client._idle[next(iter(client._idle))]
        await asyncio.sleep(0.3)  # the engine closed it (an unloaded engine's process is gone)
        assert writer.is_closing()  # its socket is let go now, not at the next sweep
        await client.close()
