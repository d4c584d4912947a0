"""The gateway's HTTP protocol (gateway/front.py): a POST to a generation route is served from uvicorn's
request cycle without entering the ASGI app, with the same answer, and the connection behaves as uvicorn's:
keep-alive, pipelined requests answered in order, `Connection: close`, API keys. A real uvicorn server on
loopback, spoken to over a raw socket; answers with an engine behind them are tested with llama.cpp in
tests/integration/test_serving.py."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from tests.support import wait_until
from warmstart.clock import SystemClock
from warmstart.config_loader import load_config
from warmstart.engines.registry import create_engines
from warmstart.gateway.app import Gateway, create_app
from warmstart.gateway.front import front_protocol
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics

UNKNOWN = b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}'


class Running:
    def __init__(self, gateway: Gateway, port: int) -> None:
        self.gateway, self.port = gateway, port
        self.asgi_calls: list[str] = []

    def exchange(self, raw: bytes, answers: int = 1,
                 wait: float = 0.0) -> tuple[list[tuple[bytes, dict[bytes, bytes], bytes]], bool]:
        """Send `raw` on a new connection; read `answers` answers; whether the server then closed it (within
        `wait` seconds)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw)
            reader = sock.makefile("rb")
            got = []
            for _ in range(answers):
                status = reader.readline()
                headers: dict[bytes, bytes] = {}
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    assert name.lower() not in headers, f"{name!r} twice"
                    headers[name.lower()] = value.strip()
                got.append((status, headers, reader.read(int(headers[b"content-length"]))))
            sock.settimeout(wait or 0.001)
            try:
                closed = reader.read(1) == b""
            except TimeoutError:
                closed = False
            return got, closed


@pytest.fixture
def running(tmp_path) -> Iterator[Any]:
    def start(config_text: str = "", **flags: Any) -> Running:
        path = tmp_path / "warmstart.toml"
        path.write_text(config_text)
        config = load_config(path, env={}, flags={"server.data_dir": str(tmp_path), **flags})
        metrics = Metrics()
        gateway = create_app(config, Pool(config, create_engines(tmp_path), SystemClock(), metrics), metrics)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        run = Running(gateway, sock.getsockname()[1])
        asgi = gateway.__call__

        async def counted(scope: Any, receive: Any, send: Any) -> None:  # what reaches the ASGI app
            if scope["type"] == "http":
                run.asgi_calls.append(scope["path"])
            await asgi(scope, receive, send)

        server = uvicorn.Server(uvicorn.Config(counted, loop="asyncio", http=front_protocol(gateway),
                                               ws="none", log_level="warning", lifespan="on"))
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
        thread.start()
        servers.append((server, thread))
        while not server.started:
            threading.Event().wait(0.02)
        return run

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def post(body: bytes = UNKNOWN, path: bytes = b"/v1/chat/completions", *headers: bytes) -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + b"".join(h + b"\r\n" for h in headers) + b"content-length: %d\r\n\r\n" % len(body) + body)


def test_a_generation_post_is_answered_without_entering_the_asgi_app(running):
    run = running()
    [(status, headers, body)], closed = run.exchange(post(), wait=0.5)
    assert status.startswith(b"HTTP/1.1 404") and json.loads(body)["error"]["code"] == "model_not_found"
    assert headers[b"content-type"] == b"application/json" and b"date" in headers and not closed
    [(status, _, body)], _ = run.exchange(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200") and json.loads(body) == {"status": "ok"}
    assert run.asgi_calls == ["/healthz"]  # the POST never reached it; everything else does


def test_pipelined_requests_are_answered_in_order_and_connection_close_is_kept(running):
    run = running()
    raw = post() + post(b'{"model": "nope", "prompt": "hi"}', b"/v1/completions") + \
        post(b'"not a request"', b"/v1/chat/completions", b"connection: close")
    answers, closed = run.exchange(raw, answers=3, wait=5)
    assert [s.split()[1] for s, _, _ in answers] == [b"404", b"404", b"400"]
    assert answers[2][1][b"connection"] == b"close" and closed
    assert run.asgi_calls == []


def test_a_body_is_read_whether_it_came_with_its_head_or_after_it_and_the_limit_holds_either_way(running):
    run = running(**{"server.max_body_bytes": 1024})
    raw = post()
    head, body = raw[:-len(UNKNOWN)], UNKNOWN
    with socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock:
        sock.sendall(head)
        threading.Event().wait(0.2)  # the request's task starts with no body in yet: it waits for it
        sock.sendall(body)
        reply = _answer(sock)
    assert reply.startswith(b"HTTP/1.1 404") and b"model_not_found" in reply
    big = b'{"model": "nope", "prompt": "' + b"x" * 2000 + b'"}'
    for where in ("with its head", "after it"):
        with socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock:
            raw = post(big, b"/v1/completions")
            if where == "with its head":
                sock.sendall(raw)
            else:
                sock.sendall(raw[:-len(big)])
                threading.Event().wait(0.2)
                sock.sendall(big)
            reply = _answer(sock)
        assert reply.startswith(b"HTTP/1.1 413") and b"payload_too_large" in reply, where
    assert run.asgi_calls == []


def _answer(sock: socket.socket) -> bytes:
    """One whole answer (head and Content-Length body) read from `sock`."""
    reply = b""
    while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < int(
            reply.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0] or 0):
        data = sock.recv(65536)
        if not data:
            break
        reply += data
    return reply


def test_api_keys_guard_the_generation_routes_too(running):
    run = running(**{"auth.api_keys": ["sk-test-0123456789abcdef"]})
    [(status, headers, body)], _ = run.exchange(post())
    assert status.startswith(b"HTTP/1.1 401") and json.loads(body)["error"]["code"] == "missing_api_key"
    assert headers[b"www-authenticate"].startswith(b"Bearer")
    key = b"authorization: Bearer sk-test-0123456789abcdef"
    [(status, _, body)], _ = run.exchange(post(UNKNOWN, b"/v1/chat/completions", key))
    assert status.startswith(b"HTTP/1.1 404")
    assert run.asgi_calls == []


def test_an_engine_answer_is_sent_on_from_its_connection_before_the_requests_bookkeeping(running, monkeypatch):
    """A whole answer goes to the client from the callback that read the engine's last byte: no task is resumed
    first, and the lease is given back (the request counted) only after. Pipelined requests still come back in
    order. The engine: bench serve's stand-in (a real process, one canned completion, after a delay)."""
    from warmstart.bench.serve import STUB, STUB_MODEL
    from warmstart.gateway import front
    from warmstart.pool.leasing import Leasing

    events: list[str] = []
    put, release = front._put, Leasing.release

    def recorded_put(cycle: Any, answer: Any) -> None:
        events.append("sent from the engine's callback" if asyncio.current_task() is None else "sent from a task")
        put(cycle, answer)

    def recorded_release(leasing: Leasing, entry: Any, lease: Any) -> None:
        events.append("lease released")
        release(leasing, entry, lease)

    monkeypatch.setattr(front, "_put", recorded_put)
    monkeypatch.setattr(Leasing, "release", recorded_release)
    run = running(STUB)
    body = json.dumps({"model": STUB_MODEL, "prompt": "Hello", "max_tokens": 1}).encode()
    [(status, _, first)], _ = run.exchange(post(body, b"/v1/completions"))  # starts the stand-in
    assert status.startswith(b"HTTP/1.1 200"), first
    _until(lambda: "lease released" in events)  # its release waits for a read or a millisecond
    events.clear()
    answers, _ = run.exchange(post(body, b"/v1/completions") * 3, answers=3)
    assert [s.split()[1] for s, _, _ in answers] == [b"200"] * 3
    assert all(json.loads(b)["choices"][0]["text"] == " there" for _, _, b in answers)
    assert all(h[b"x-warmstart-start"] == b"warm" for _, h, _ in answers)
    _until(lambda: len(events) == 6)  # the last one's release waits for a read or a millisecond
    # each answer sent before its lease is given back (the releases put off: see the next test)
    assert sorted(events) == sorted(["sent from the engine's callback", "lease released"] * 3), events
    assert all(events[:i].count("lease released") <= events[:i].count("sent from the engine's callback")
               for i in range(len(events) + 1)), events
    assert run.asgi_calls == []


def test_the_bookkeeping_after_a_sent_answer_waits_until_the_gateway_reads_anything_or_a_millisecond(running):
    """Once a whole answer is sent from the engine's callback, the rest (its slot given back, the request's task,
    the request counted) is put off (gateway/afterwards.py) so that the client is not kept waiting behind it: until
    the gateway next reads anything from any client, or AFTER_S at most. Here the delay is
    made long, so only the reads can bring the work on: every request, and a scrape, still sees every answer sent
    before it counted, and each request finds the replica's one slot free. The engine: bench serve's stand-in."""
    from warmstart.bench.serve import STUB, STUB_MODEL
    from warmstart.gateway.afterwards import AFTER_S

    run = running(STUB.replace("max_concurrency = 4", "max_concurrency = 1"))
    afterwards = run.gateway.services.afterwards
    assert afterwards.delay == AFTER_S
    body = json.dumps({"model": STUB_MODEL, "prompt": "Hello", "max_tokens": 1}).encode()
    [(status, _, first)], _ = run.exchange(post(body, b"/v1/completions"))  # starts the stand-in
    assert status.startswith(b"HTTP/1.1 200"), first
    registry = run.gateway.services.metrics.registry

    def counted() -> float:
        return registry.get_sample_value("warmstart_requests_total",
                                         {"model": STUB_MODEL, "start": "warm", "code": "200"}) or 0.0

    afterwards.delay = 3600.0
    with socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock:
        for n in range(1, 6):
            sock.sendall(post(body, b"/v1/completions"))
            reply = _answer(sock)
            assert reply.startswith(b"HTTP/1.1 200") and b"x-warmstart-start: warm" in reply, reply
            assert b"x-warmstart-wait-ms: 0.0" in reply  # the slot was free: not held for the last one's work
            _until(lambda: afterwards.pending)  # (the server's thread puts it off just after the write)
            assert counted() == n - 1  # this one's count waits for the next read
        sock.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        scrape = _answer(sock)
    line = f'warmstart_requests_total{{code="200",model="{STUB_MODEL}",start="warm"}} 5.0'.encode()
    assert line in scrape and counted() == 5 and not afterwards.pending
    afterwards.delay = AFTER_S
    [(status, _, _)], _ = run.exchange(post(body, b"/v1/completions"))
    assert status.startswith(b"HTTP/1.1 200")
    _until(lambda: counted() == 6)  # with nothing read after it, its work is done within the millisecond
    assert not afterwards.pending


_until = functools.partial(wait_until, timeout=5.0, interval=0.005)  # polls often: the steps here take milliseconds


def test_a_warm_request_goes_to_its_engine_from_its_connection_before_any_task_runs(running, monkeypatch):
    """A generation request whose whole body is in, for a model with a warm replica free, is sent to the engine
    from the callback that read its last byte (its task is made after: see the next test), whether its body came
    with its head or after it; the same answer and counts as from its task. A
    request that cannot be (its model cold, a body that waits for `100 Continue`, a request its model refuses) is
    served by its task as before. The engine: bench serve's stand-in (a real process)."""
    from warmstart.bench.serve import STUB, STUB_MODEL
    from warmstart.gateway.engine_http import EngineClient

    sent: list[tuple[bool, bool]] = []  # (from no task, on a kept connection)
    send_at_once = EngineClient.send_at_once

    def recorded(self: EngineClient, *args: Any) -> Any:
        posted = send_at_once(self, *args)
        sent.append((asyncio.current_task() is None, posted is not None))
        return posted

    monkeypatch.setattr(EngineClient, "send_at_once", recorded)
    run = running(STUB)

    def settled() -> None:  # the work put off after the last answer done (a request right after it brings it on,
        # and is then served by its task: test_the_bookkeeping_after_a_sent_answer_waits_...)
        _until(lambda: not run.gateway.services.afterwards.pending)

    body = json.dumps({"model": STUB_MODEL, "prompt": "Hello", "max_tokens": 1}).encode()
    [(status, headers, _)], _ = run.exchange(post(body, b"/v1/completions"))
    assert status.startswith(b"HTTP/1.1 200") and headers[b"x-warmstart-start"] == b"cold" and sent == []
    settled()
    [(status, headers, answer)], _ = run.exchange(post(body, b"/v1/completions"))
    assert status.startswith(b"HTTP/1.1 200") and headers[b"x-warmstart-start"] == b"warm"
    assert json.loads(answer)["choices"][0]["text"] == " there" and sent == [(True, True)]
    settled()
    raw = post(body, b"/v1/completions")
    with socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock:
        sock.sendall(raw[:-len(body)])
        threading.Event().wait(0.2)
        sock.sendall(raw[-len(body):])
        assert _answer(sock).startswith(b"HTTP/1.1 200")
    assert sent == [(True, True)] * 2
    settled()
    with socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock:  # a client that waits to be asked
        sock.sendall(raw[:-len(body)].replace(b"host: x\r\n", b"host: x\r\nexpect: 100-continue\r\n"))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert _answer(sock).startswith(b"HTTP/1.1 200")
    assert len(sent) == 2
    refused = json.dumps({"model": STUB_MODEL, "prompt": ""}).encode()
    [(status, _, answer)], _ = run.exchange(post(refused, b"/v1/completions"))
    assert status.startswith(b"HTTP/1.1 400") and b"must not be empty" in answer and len(sent) == 2
    settled()
    metrics = run.gateway.services.metrics.registry
    assert metrics.get_sample_value("warmstart_requests_total", {
        "model": STUB_MODEL, "start": "warm", "code": "200"}) == 3
    assert run.asgi_calls == []


def test_a_warm_requests_task_starts_once_its_engine_has_answered(running, monkeypatch):
    """A request sent to its engine from its connection's callback has no task while the engine computes: its task
    (the relay's retry, liveness watch and disconnect listener, the counting) is made once the answer is sent on
    and its put-off work is due, so that the gateway takes no CPU from an engine computing on every core. One
    that outlasts LISTEN_AFTER_S gets its task then, and is served and counted the same. The engine: bench
    serve's stand-in (a real process), told to answer after a delay."""
    from warmstart.bench.serve import STUB, STUB_MODEL
    from warmstart.gateway import front
    from warmstart.gateway.disconnect import LISTEN_AFTER_S

    events: list[str] = []
    serve, put = front.serve, front._put

    def recorded_serve(*args: Any) -> Any:
        events.append("task made")
        return serve(*args)

    def recorded_put(cycle: Any, answer: Any) -> None:
        events.append("answer sent")
        put(cycle, answer)

    run = running(STUB)
    body = json.dumps({"model": STUB_MODEL, "prompt": "Hello", "max_tokens": 1}).encode()
    [(status, _, _)], _ = run.exchange(post(body, b"/v1/completions"))  # starts the stand-in
    assert status.startswith(b"HTTP/1.1 200")
    _until(lambda: not run.gateway.services.afterwards.pending)
    monkeypatch.setattr(front, "serve", recorded_serve)
    monkeypatch.setattr(front, "_put", recorded_put)
    registry = run.gateway.services.metrics.registry

    def counted() -> float:
        return registry.get_sample_value("warmstart_requests_total",
                                         {"model": STUB_MODEL, "start": "warm", "code": "200"}) or 0.0

    [(status, headers, _)], _ = run.exchange(post(body, b"/v1/completions"))
    assert status.startswith(b"HTTP/1.1 200") and headers[b"x-warmstart-start"] == b"warm"
    _until(lambda: counted() == 1)
    assert events == ["answer sent", "task made"]

    _stand_in_waits(run, 4 * LISTEN_AFTER_S)
    events.clear()
    [(status, headers, _)], _ = run.exchange(post(body, b"/v1/completions"))
    assert status.startswith(b"HTTP/1.1 200") and headers[b"x-warmstart-start"] == b"warm"
    _until(lambda: counted() == 2)
    assert events == ["task made", "answer sent"]


def _stand_in_waits(run: Any, seconds: float) -> None:
    """Tell bench serve's stand-in engine (started already) to answer after `seconds`."""
    from warmstart.bench.serve import STUB_MODEL
    [(_, _, models)], _ = run.exchange(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
    url = next(m for m in json.loads(models)["data"] if m["id"] == STUB_MODEL)["replicas"][0]["url"]
    with socket.create_connection(tuple(url.split("//")[1].split(":")), timeout=10) as engine:  # type: ignore[arg-type]
        engine.sendall(post(json.dumps({"seconds": seconds}).encode(), b"/delay"))
        assert _answer(engine).startswith(b"HTTP/1.1 200")


def test_a_slot_that_a_held_request_waits_for_is_given_back_with_the_answer(running):
    """An answer sent from the engine's callback puts its slot's release off with the rest of its bookkeeping,
    unless a request for the model is held for a slot: then the slot goes back at once, without waiting for the
    gateway's next read (here none comes, and the put-off work waits an hour). The stand-in: one slot, 0.3 s."""
    from warmstart.bench.serve import STUB, STUB_MODEL

    run = running(STUB.replace("max_concurrency = 4", "max_concurrency = 1"))
    body = json.dumps({"model": STUB_MODEL, "prompt": "Hello", "max_tokens": 1}).encode()
    assert run.exchange(post(body, b"/v1/completions"))[0][0][0].startswith(b"HTTP/1.1 200")  # starts the stand-in
    _stand_in_waits(run, 0.3)
    _until(lambda: not run.gateway.services.afterwards.pending)
    run.gateway.services.afterwards.delay = 3600.0
    with socket.create_connection(("127.0.0.1", run.port), timeout=10) as first, \
            socket.create_connection(("127.0.0.1", run.port), timeout=10) as second:
        first.sendall(post(body, b"/v1/completions"))
        threading.Event().wait(0.1)
        second.sendall(post(body, b"/v1/completions"))  # held: the one slot is busy
        _until(lambda: run.gateway.services.pool.held(STUB_MODEL) == 1)
        reply = _answer(first)
        assert reply.startswith(b"HTTP/1.1 200") and b"x-warmstart-wait-ms: 0.0" in reply
        reply = _answer(second)  # (a socket timeout of 10 s: without the slot back it would wait the hour)
        assert reply.startswith(b"HTTP/1.1 200") and b"x-warmstart-wait-ms: 0.0" not in reply, reply


@pytest.mark.parametrize(("proxies", "front"), [([], True), (["10.0.0.1"], False)])
def test_the_server_serves_through_the_front_unless_forwarded_headers_are_read_first(tmp_path, proxies, front):
    from warmstart.serve import _server, build_core

    config = load_config(None, env={}, flags={"server.data_dir": str(tmp_path),
                                              "server.trusted_proxies": proxies})
    server, _gateway = _server(config, build_core(config), None)
    http = server.config.http
    # behind trusted proxies uvicorn's own protocol, which reads X-Forwarded-For through its middleware first
    assert (http != "httptools" and http.__name__ == "FrontProtocol") is front
