"""A stand-in engine for `bench serve`: an OpenAI-compatible server that computes nothing. Every POST gets the same
one-token completion, after a delay set by `POST /delay {"seconds": S}` (0 at first); `GET /health` answers 200.
A POST with `"stream": true` gets `max_tokens` chunk events as a server-sent event stream (chunked, as
llama-server sends one), one every `POST /pace {"seconds": S}` (0 at first: all at once), then the usage event
and `data: [DONE]`.

It separates what the gateway costs from what the engine does to it: answering at once, it measures the gateway's
own code path; answering after as long as the real engine takes, it measures that path when the gateway waits as
long as with the engine, with no model computing on the CPUs meanwhile.

    python -m warmstart.bench._stub_engine HOST PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

BODY = json.dumps({"id": "cmpl-stub", "object": "text_completion", "created": 0, "model": "stub",
                   "choices": [{"text": " there", "index": 0, "logprobs": None, "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}).encode()


CHUNK = json.dumps({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub",
                    "choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": None}]}).encode()
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def event(data: bytes) -> bytes:
    """One server-sent event as one chunk of a chunked body."""
    return b"%x\r\ndata: %s\n\n\r\n" % (len(data) + 8, data)


def usage(tokens: int) -> bytes:
    return json.dumps({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub",
                       "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": tokens,
                                                "total_tokens": tokens + 2}}).encode()


def answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


class StubEngine(asyncio.Protocol):
    delay = 0.0  # seconds before each completion's answer, for every connection
    pace = 0.0  # seconds between a stream's events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while (end := self.pending.find(b"\r\n\r\n")) >= 0:
            head = self.pending[:end].decode("latin-1").split("\r\n")
            length = next((int(v) for k, _, v in (line.partition(":") for line in head[1:])
                           if k.strip().lower() == "content-length"), 0)
            if len(self.pending) < end + 4 + length:
                return
            body, self.pending = self.pending[end + 4:end + 4 + length], self.pending[end + 4 + length:]
            method, path = head[0].split(" ")[:2]
            if method == "POST" and path in ("/delay", "/pace"):
                setattr(StubEngine, path[1:], float(json.loads(body)["seconds"]))
                self.transport.write(answer(b"{}"))
            elif method == "POST" and (asked := json.loads(body or b"{}")).get("stream"):
                asyncio.get_running_loop().create_task(self.stream(int(asked.get("max_tokens") or 16)))
            elif method == "GET":
                self.transport.write(answer(b'{"status":"ok"}'))
            elif StubEngine.delay > 0:
                asyncio.get_running_loop().call_later(StubEngine.delay, self.transport.write, answer(BODY))
            else:
                self.transport.write(answer(BODY))


    async def stream(self, tokens: int) -> None:
        """`tokens` chunk events, `pace` apart, then the usage event and the end; the connection is closed after it
        (as llama-server closes one after a stream)."""
        self.transport.write(STREAM_HEAD + event(CHUNK))
        for _ in range(tokens - 1):
            if StubEngine.pace > 0:
                await asyncio.sleep(StubEngine.pace)
            if self.transport.is_closing():
                return
            self.transport.write(event(CHUNK))
        self.transport.write(event(usage(tokens)) + event(b"[DONE]") + b"0\r\n\r\n")
        self.transport.close()


async def serve(host: str, port: int) -> None:
    await asyncio.get_running_loop().create_server(StubEngine, host, port)
    print(f"stub engine listening on {host}:{port}", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
