"""The open-loop replay: each request leaves at its planned time whether or not earlier ones have
been answered (a closed loop would slow down with the server and hide its queueing), bounded by a
per-request timeout and a drain period after the last send."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import aiohttp

from warmstart.loadtest.plan import ENDPOINTS, Plan, Planned, prompt_text


@dataclass
class Outcome:
    """What happened to one request; `error` is None exactly when it was answered in full with 200."""

    index: int
    model: str
    scheduled: float  # planned send time, seconds after the replay began
    sent: float | None = None
    status: int | None = None
    start: str | None = None  # x-warmstart-start: warm or cold
    wait_ms: float | None = None  # x-warmstart-wait-ms: how long the server held it
    retry_after: str | None = None
    ttft: float | None = None  # send to the first generated text
    latency: float | None = None  # send to the end of the answer
    output_tokens: int = 0
    error: str | None = None  # kind, e.g. "503 queue_full", "timeout", "stream_interrupted"
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200

    def to_dict(self) -> dict:
        return asdict(self)


def request_body(p: Planned, endpoint: str, stream: bool) -> bytes:
    text = prompt_text(p.prompt_tokens, seed=p.index)
    body: dict = {"model": p.model, "max_tokens": p.max_tokens, "stream": stream}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    return json.dumps(body).encode()


async def replay(plan: Plan, *, url: str, api_key: str | None = None, endpoint: str = "completions",
                 stream: bool = True, timeout: float = 120.0, drain: float = 60.0,
                 now: Callable[[], float] = time.monotonic,
                 progress: Callable[[str, int, int], None] | None = None) -> tuple[list[Outcome], float]:
    """Send every planned request at its time; returns the outcomes in plan order and the wall seconds.
    `progress(step, done, total)` is told each time a request ends (answered, refused or failed)."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    path = url.rstrip("/") + ENDPOINTS[endpoint]
    outcomes = [Outcome(p.index, p.model, p.at) for p in plan.requests]
    # no connection limit: a capped pool would queue requests in the client and close the loop
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    session_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout))
    async with aiohttp.ClientSession(connector=connector, timeout=session_timeout, headers=headers,
                                     auto_decompress=False) as session:
        begin = now()
        tasks: list[asyncio.Task] = []
        count = 0

        def ended(_: asyncio.Task) -> None:
            nonlocal count
            count += 1
            if progress is not None:
                progress("requests ended", count, len(outcomes))

        for p, outcome in zip(plan.requests, outcomes, strict=True):
            delay = begin + p.at - now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(
                _send(session, path, request_body(p, endpoint, stream), stream, outcome, begin, now)))
            if progress is not None:
                tasks[-1].add_done_callback(ended)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if outcome.sent is not None and outcome.error is None and outcome.latency is None:
                outcome.error, outcome.detail = "unfinished", f"still running {drain:g} s after the last send (--drain)"
        wall = now() - begin
    return outcomes, wall


async def _send(session: aiohttp.ClientSession, path: str, body: bytes, stream: bool, out: Outcome,
                begin: float, now: Callable[[], float]) -> None:
    t0 = now()
    out.sent = t0 - begin
    try:
        async with session.post(path, data=body) as resp:
            out.status = resp.status
            out.start = resp.headers.get("x-warmstart-start")
            wait = resp.headers.get("x-warmstart-wait-ms")
            out.wait_ms = float(wait) if wait else None
            out.retry_after = resp.headers.get("retry-after")
            if resp.status != 200:
                data = await resp.read()
                out.latency = now() - t0
                out.error, out.detail = _http_error(resp.status, data)
                return
            if stream:
                await _read_stream(resp, out, t0, now)
            else:
                payload = json.loads(await resp.read())
                out.ttft = out.latency = now() - t0
                out.output_tokens = int((payload.get("usage") or {}).get("completion_tokens") or 0)
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        out.error, out.detail = "timeout", "no complete answer within --timeout"
    except aiohttp.ClientConnectorError as exc:
        out.error, out.detail = "connection_refused", str(exc)
    except (aiohttp.ClientError, OSError) as exc:
        out.error, out.detail = "connection_lost", f"{type(exc).__name__}: {exc}"
    except ValueError as exc:
        out.error, out.detail = "bad_response", str(exc)


async def _read_stream(resp: aiohttp.ClientResponse, out: Outcome, t0: float, now: Callable[[], float]) -> None:
    done = False
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        event = json.loads(data)
        if isinstance(event, dict) and "error" in event:
            error = event["error"] if isinstance(event["error"], dict) else {}
            out.error = str(error.get("code") or "stream_error")
            out.detail = str(error.get("message"))[:300]
            out.latency = now() - t0
            return
        if _has_text(event):
            out.output_tokens += 1
            if out.ttft is None:
                out.ttft = now() - t0
    out.latency = now() - t0
    if not done:
        out.error, out.detail = "stream_incomplete", "the stream ended without data: [DONE]"


def _has_text(event: object) -> bool:
    try:
        choice = event["choices"][0]  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return False
    return bool(choice.get("text") or (choice.get("delta") or {}).get("content"))


def _http_error(status: int, data: bytes) -> tuple[str, str]:
    try:
        error = json.loads(data)["error"]
        return f"{status} {error.get('code') or error.get('type') or 'error'}", str(error.get("message"))[:300]
    except (ValueError, KeyError, TypeError):
        return f"{status} non_openai_error", data[:200].decode(errors="replace")
