"""A relayed stream whose client leaves: before the stream's last event it is a 499 (the engine's connection is
closed, so it stops generating); right after it, as OpenAI's SDK leaves once it has read `data: [DONE]`
without waiting for the end of the chunked body, the client got the whole answer: a 200 with its tokens
counted. The engine is a loopback server writing the stream's bytes, read by the gateway's real HTTP client."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from warmstart.gateway.engine_http import EngineClient
from warmstart.gateway.relay import RelayStream
from warmstart.gateway.stream_usage import HiddenUsage
from warmstart.pool.lease import Lease

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"Oslo"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":37,"completion_tokens":1}}\n\n'
DONE = b"data: [DONE]\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _engine(events: list[bytes], end_after: asyncio.Event,
                  served: list[asyncio.Task[None]]) -> tuple[asyncio.Server, str]:
    """An engine that streams `events` as chunks, then ends the chunked body only once `end_after` is set."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        served.append(task)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in events:
            writer.write(_chunk(event))
            await writer.drain()
            await asyncio.sleep(0.01)
        await end_after.wait()
        writer.write(b"0\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


class Owner:
    def __init__(self) -> None:
        self.released: list[Lease] = []

    def release(self, lease: Lease) -> None:
        self.released.append(lease)

    def broken(self, replica: Any, reason: str) -> None:
        raise AssertionError(f"the replica is not broken: {reason}")


class Watch:
    reason = None

    def progress(self) -> None:
        pass

    def close(self) -> None:
        pass


class Liveness:
    def __init__(self) -> None:
        self.drained: list[Lease] = []

    async def drain(self, lease: Lease) -> None:
        self.drained.append(lease)


async def _relay(events: list[bytes], leave_on: bytes) -> dict[str, Any]:
    """Relay the engine's stream (its usage event hidden) to a client that leaves once it was sent `leave_on`."""
    end = asyncio.Event()
    served: list[asyncio.Task[None]] = []
    server, url = await _engine(events, end, served)
    client = EngineClient()
    loop = asyncio.get_running_loop()
    disconnect: asyncio.Future[None] = loop.create_future()
    owner, liveness = Owner(), Liveness()
    replica = SimpleNamespace(id="m#1", node=None)
    lease = Lease(owner, replica, cold=False, waited_s=0.0, keep_alive=None)  # type: ignore[arg-type]
    finished: list[tuple[int, bytes]] = []
    try:
        upstream = await client.post(url + "/v1/chat/completions", b"{}", {"content-type": "application/json"})
        first = await upstream.readany()
        stream = RelayStream(first, upstream, lease, disconnect, loop.time(), loop.time,
                             lambda _lease, status, _ttft, usage: finished.append((status, usage)),
                             liveness, Watch(), HiddenUsage())  # type: ignore[arg-type]
        sent: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            body = message.get("body", b"")
            sent.append(body)
            if leave_on in b"".join(sent) and not disconnect.done():
                disconnect.set_result(None)  # the client closes its connection

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        await asyncio.wait_for(stream({"type": "http"}, receive, send), 5)
        return {"finished": finished, "sent": b"".join(sent), "released": owner.released,
                "drained": liveness.drained}
    finally:
        end.set()
        await client.close()
        await asyncio.gather(*served, return_exceptions=True)
        server.close()
        await server.wait_closed()


async def test_a_client_that_leaves_after_the_last_event_got_its_answer_and_its_tokens_count() -> None:
    got = await _relay([CHUNK, USAGE, DONE], leave_on=DONE)
    [(status, usage)] = got["finished"]
    assert status == 200
    assert json.loads(usage[5:])["usage"] == {"prompt_tokens": 37, "completion_tokens": 1}
    assert got["sent"] == CHUNK + DONE  # the usage event it did not ask for was taken out
    assert got["released"] and not got["drained"]


async def test_a_client_that_leaves_in_the_middle_is_a_499_and_the_engine_is_drained() -> None:
    got = await _relay([CHUNK, CHUNK, USAGE, DONE], leave_on=CHUNK)
    [(status, _usage)] = got["finished"]
    assert status == 499
    assert DONE not in got["sent"]
    assert got["drained"]


async def test_an_answer_that_writes_the_done_marker_as_text_is_not_the_last_event() -> None:
    said = b'data: {"choices":[{"index":0,"delta":{"content":"data: [DONE]"}}]}\n\n'
    got = await _relay([said, CHUNK, USAGE, DONE], leave_on=said)
    [(status, _usage)] = got["finished"]
    assert status == 499
