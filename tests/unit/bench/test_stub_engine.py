"""The stand-in engine of `bench serve`: one canned completion per POST (pipelined requests answered in order),
a health answer, and a delay set over HTTP that holds the completions, not the other answers."""

from __future__ import annotations

import asyncio
import json

from warmstart.bench._stub_engine import StubEngine


async def _exchange(port: int, raw: bytes, answers: int) -> list[tuple[int, dict]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    out = []
    for _ in range(answers):
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            length = int(value) if name.lower() == "content-length" else length
        out.append((status, json.loads(await reader.readexactly(length))))
    writer.close()
    return out


def post(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (path.encode(), len(body), body)


async def test_completions_health_and_a_delay_that_holds_only_the_completions():
    server = await asyncio.get_running_loop().create_server(StubEngine, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        request = post("/v1/completions", b'{"model": "m", "prompt": "Hello", "max_tokens": 1}')
        # two requests in one write, split inside the second's body: both answered, in order
        answers = await _exchange(port, request + request[:-5], 1)
        assert answers[0][0] == 200 and answers[0][1]["usage"]["completion_tokens"] == 1
        [(status, health)] = await _exchange(port, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n", 1)
        assert (status, health) == (200, {"status": "ok"})
        assert (await _exchange(port, post("/delay", b'{"seconds": 0.2}'), 1))[0][0] == 200
        assert StubEngine.delay == 0.2
        held = asyncio.ensure_future(_exchange(port, request, 1))
        await asyncio.sleep(0.05)
        assert not held.done()  # the completion waits for its delay
        assert (await _exchange(port, b"GET /health HTTP/1.1\r\n\r\n", 1))[0][0] == 200  # health does not
        assert (await held)[0][1]["choices"][0]["text"] == " there"
    finally:
        StubEngine.delay = 0.0
        server.close()
        await server.wait_closed()


async def test_a_stream_sends_its_events_paced_as_set_then_usage_and_its_end():
    from warmstart.gateway.engine_http import EngineClient

    server = await asyncio.get_running_loop().create_server(StubEngine, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = EngineClient()
    try:
        assert (await _exchange(int(url.rsplit(":", 1)[1]), post("/pace", b'{"seconds": 0.02}'), 1))[0][0] == 200
        began = asyncio.get_running_loop().time()
        r = await client.post(url + "/v1/chat/completions", b'{"model": "m", "stream": true, "max_tokens": 5}', {})
        assert (r.status, r.headers["content-type"]) == (200, "text/event-stream")
        pieces = []
        while data := await r.readany():
            pieces.append(data)
        took = asyncio.get_running_loop().time() - began
        events = b"".join(pieces).split(b"\n\n")
        assert events[-1] == b"" and events[-2] == b"data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-2]]
        assert [c["choices"][0]["delta"]["content"] for c in chunks[:-1]] == [" there"] * 5
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
        assert took >= 4 * 0.02  # paced: four waits between the five events (a lower bound, never early)
        r.release()
    finally:
        StubEngine.pace = 0.0
        await client.close()
        server.close()
        await server.wait_closed()
