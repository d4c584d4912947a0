"""One generation request (chat, completion, embedding) from its checked body to the engine's answer: the
model looked up, the request checked against what it can do, then relayed; counted whatever happens."""

from __future__ import annotations

from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response

from warmstart.engines.base import Capabilities
from warmstart.errors import RequestError, Unavailable
from warmstart.gateway.access import Access, tokens
from warmstart.gateway.protocol import EmbeddingRequest
from warmstart.gateway.relay import Begun, SendNow
from warmstart.gateway.services import Services
from warmstart.gateway.translate import (
    ModelRequest,
    check_embedding_request,
    check_request,
    engine_body,
    hidden_usage,
    inert_fields,
    keep_alive_of,
)
from warmstart.pool.lease import Lease


class Planned(NamedTuple):
    """How a checked request goes to its engine."""
    body: bytes  # the engine's body
    stream: bool
    keep_alive: float | None  # the client's own, if it asked
    hidden_usage: bool  # the stream's usage event asked for by warmstart alone (see Relay.forward)


def plan(req: ModelRequest, caps: Capabilities) -> Planned:
    """The request checked against what its model can do (RequestError naming what it cannot), and its engine's
    body."""
    if isinstance(req, EmbeddingRequest):
        check_embedding_request(req, caps)
    else:
        check_request(req, caps)
    hidden = hidden_usage(req, caps)  # so that every stream's tokens are counted
    return Planned(engine_body(req, add_usage=hidden, leave_out=inert_fields(req, caps)),
                   not isinstance(req, EmbeddingRequest) and req.stream, keep_alive_of(req), hidden)


class Early(NamedTuple):
    """A request begun from the connection's callback, before its task started (see front.py): valid, planned,
    and its first try sent to a warm replica."""
    req: ModelRequest
    arrived: float
    planned: Planned
    begun: Begun


def begin(services: Services, req: ModelRequest, path: str, arrived: float, send_now: SendNow) -> Early | None:
    """`req` begun at once (no await) when its model is known, its request fits what the model can do, its answer
    is wanted whole, and a warm replica has a free slot; None when not (nothing was done: `generate` serves it)."""
    if not isinstance(req, EmbeddingRequest) and req.stream:
        return None  # its answer comes in pieces, relayed by its task
    try:
        caps = services.pool.known_capabilities(req.model)
        if caps is None or services.relay is None:
            return None
        planned = plan(req, caps)
    except RequestError:
        return None
    begun = services.relay.begin(req.model, path, planned.body, planned.keep_alive, send_now)
    return None if begun is None else Early(req, arrived, planned, begun)


async def generate(services: Services, request: Request, req: ModelRequest, path: str, defer: bool = False,
                   send_now: SendNow | None = None, early: Early | None = None) -> Response:
    """The answer to one generation request; `defer`, `send_now`: see Relay.forward; `early`: it was begun
    already (`begin`)."""
    arrived = services.clock.now() if early is None else early.arrived
    pool = services.pool
    model = req.model
    try:  # an unknown model is a 404 and not counted: a label per made-up name would be unbounded
        # how it would be served if no lease says otherwise: warm when a warm replica exists on arrival
        arrival_start = "warm" if pool.is_warm(model) else "cold"
    except RequestError as exc:
        if services.access is not None:
            log_access(services, request, path, req, None, "-", exc.status, None, (None, None), arrived)
        raise
    counted = False

    def finish(lease: Lease | None, status: int, ttft: float | None, answer: bytes, ended: float | None = None) -> None:
        nonlocal counted
        counted = True
        start = lease.start if lease is not None else arrival_start
        node = lease.replica.node if lease is not None else None
        services.counted(model, start, status, node).inc()
        if ttft is not None:
            services.ttft(model, start, node).observe(ttft)
        used = tokens(answer) if status == 200 else (None, None)
        if used[0] or used[1]:
            prompt_tokens, generation_tokens = services.tokens(model)
            prompt_tokens.inc(used[0] or 0)
            generation_tokens.inc(used[1] or 0)
        if services.access is not None:
            log_access(services, request, path, req, lease, start, status, ttft, used, arrived, ended)

    try:
        planned = early.planned if early is not None else plan(req, await pool.capabilities(model))
        assert services.relay is not None
        return await services.relay.forward(request, model, path, planned.body, planned.stream, planned.keep_alive,
                                            arrived, finish, hidden_usage=planned.hidden_usage, defer=defer,
                                            send_now=send_now, begun=None if early is None else early.begun)
    except (RequestError, Unavailable) as exc:
        if not counted:
            finish(None, exc.status, None, b"")
        raise
    except Exception:
        if not counted:
            finish(None, 500, None, b"")
        raise


def log_access(services: Services, request: Request, path: str, req: ModelRequest | None, lease: Lease | None,
               start: str, status: int, ttft: float | None, used: tuple[int | None, int | None],
               arrived: float, ended: float | None = None) -> None:
    """The request's line in the access log; `req` None: its body was not a valid request; `used`: its prompt
    and generated tokens; `ended`: when it was answered (None: now)."""
    assert services.access is not None
    prompt, completion = used
    client = request.client
    services.access.write(Access(
        method="POST", path=request.scope.get("path", path), model=req.model[:200] if req is not None else "-",
        status=status, start=start,
        wait_ms=round(lease.waited_s * 1000 if lease is not None else 0.0, 1),
        duration_ms=round(((services.clock.now() if ended is None else ended) - arrived) * 1000, 1),
        ttft_ms=None if ttft is None else round(ttft * 1000, 1),
        stream=req is not None and not isinstance(req, EmbeddingRequest) and bool(req.stream),
        replica=lease.replica.id if lease is not None else None,
        client=f"{client.host}:{client.port}" if client is not None else None,
        prompt_tokens=prompt, completion_tokens=completion))
