"""One generation request (chat, completion, embedding) from its checked body to the engine's answer: the
model looked up, the request checked against what it can do, then relayed; counted whatever happens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from warmstart.errors import RequestError, Unavailable
from warmstart.gateway.access import Access, tokens
from warmstart.gateway.protocol import EmbeddingRequest
from warmstart.gateway.relay import SendNow
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


async def generate(services: Services, request: Request, req: ModelRequest, path: str, defer: bool = False,
                   send_now: SendNow | None = None) -> Response:
    """The answer to one generation request; `defer`, `send_now`: see Relay.forward."""
    arrived = services.clock.now()
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

    def finish(lease: Lease | None, status: int, ttft: float | None, answer: bytes) -> None:
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
            log_access(services, request, path, req, lease, start, status, ttft, used, arrived)

    try:
        caps = await pool.capabilities(model)
        if isinstance(req, EmbeddingRequest):
            check_embedding_request(req, caps)
        else:
            check_request(req, caps)
        keep_alive = keep_alive_of(req)
        assert services.relay is not None
        stream = not isinstance(req, EmbeddingRequest) and req.stream
        hidden = hidden_usage(req, caps)  # so that every stream's tokens are counted
        body = engine_body(req, add_usage=hidden, leave_out=inert_fields(req, caps))
        return await services.relay.forward(request, model, path, body, stream, keep_alive, arrived, finish,
                                            hidden_usage=hidden, defer=defer, send_now=send_now)
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
               arrived: float) -> None:
    """The request's line in the access log; `req` None: its body was not a valid request; `used`: its prompt
    and generated tokens."""
    assert services.access is not None
    prompt, completion = used
    client = request.client
    services.access.write(Access(
        method="POST", path=request.scope.get("path", path), model=req.model[:200] if req is not None else "-",
        status=status, start=start,
        wait_ms=round(lease.waited_s * 1000 if lease is not None else 0.0, 1),
        duration_ms=round((services.clock.now() - arrived) * 1000, 1),
        ttft_ms=None if ttft is None else round(ttft * 1000, 1),
        stream=req is not None and not isinstance(req, EmbeddingRequest) and bool(req.stream),
        replica=lease.replica.id if lease is not None else None,
        client=f"{client.host}:{client.port}" if client is not None else None,
        prompt_tokens=prompt, completion_tokens=completion))
