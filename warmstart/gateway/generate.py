"""One generation request (chat, completion, embedding) from its checked body to the engine's answer: the
model looked up, the request checked against what it can do, then relayed; counted whatever happens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from warmstart.errors import RequestError, Unavailable
from warmstart.gateway.protocol import EmbeddingRequest
from warmstart.gateway.services import Services
from warmstart.gateway.translate import (
    ModelRequest,
    check_embedding_request,
    check_request,
    engine_body,
    keep_alive_of,
)
from warmstart.pool.lease import Lease


async def generate(services: Services, request: Request, req: ModelRequest, path: str) -> Response:
    arrived = services.clock.now()
    pool = services.pool
    model = req.model
    pool.check_model(model)  # an unknown model is a 404 and not counted: a label per made-up name would be unbounded
    # how it would be served if no lease says otherwise: warm when a warm replica exists on arrival
    arrival_start = "warm" if pool.state_of(model).value == "warm" else "cold"
    counted = False

    def finish(lease: Lease | None, status: int, ttft: float | None) -> None:
        nonlocal counted
        counted = True
        start = lease.start if lease is not None else arrival_start
        services.counted(model, start, status).inc()
        if ttft is not None:
            services.ttft(model, start).observe(ttft)

    try:
        caps = await pool.capabilities(model)
        if isinstance(req, EmbeddingRequest):
            check_embedding_request(req, caps)
        else:
            check_request(req, caps)
        keep_alive = keep_alive_of(req)
        assert services.relay is not None
        stream = not isinstance(req, EmbeddingRequest) and req.stream
        return await services.relay.forward(request, model, path, engine_body(req), stream, keep_alive,
                                            arrived, finish)
    except (RequestError, Unavailable) as exc:
        if not counted:
            finish(None, exc.status, None)
        raise
    except Exception:
        if not counted:
            finish(None, 500, None)
        raise
