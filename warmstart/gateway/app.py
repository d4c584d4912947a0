"""The gateway's app factory: OpenAI routes, admin routes, health, metrics; errors in OpenAI's format."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from warmstart import __version__
from warmstart.clock import Clock, SystemClock
from warmstart.config import Config
from warmstart.errors import RequestError, Unavailable, openai_error_body
from warmstart.gateway import admin, hint
from warmstart.gateway.limits import BodyLimit
from warmstart.gateway.protocol import ChatCompletionRequest, CompletionRequest
from warmstart.gateway.relay import Relay
from warmstart.gateway.translate import (
    GenerationRequest,
    check_request,
    engine_body,
    error_response,
    keep_alive_of,
    validation_message,
)
from warmstart.pool.pool import Lease, Pool
from warmstart.telemetry.metrics import Metrics

log = logging.getLogger("warmstart.gateway")


@dataclass
class Services:
    config: Config
    pool: Pool
    metrics: Metrics
    clock: Clock
    relay: Relay | None = None
    started_wall: float = 0.0
    warming: Any = None  # the WarmingRunner, when [warming] is enabled


def create_app(config: Config, pool: Pool, metrics: Metrics, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    services = Services(config=config, pool=pool, metrics=metrics, clock=clock, started_wall=time.time())
    if config.warming.enabled:
        from warmstart.warming.runner import new_runner

        services.warming = new_runner(config, pool, clock, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        services.relay = Relay(pool, session, clock.now)
        if services.warming is not None:
            await services.warming.start()
        try:
            yield
        finally:
            if services.warming is not None:
                await services.warming.stop()
            await pool.shutdown()
            await session.close()

    app = FastAPI(title="warmstart", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible gateway that holds requests while a model starts.")
    app.state.services = services
    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)
    _install_error_handlers(app)

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await _generate(services, request, body, "/v1/chat/completions")

    @app.post("/v1/completions", tags=["openai"])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _generate(services, request, body, "/v1/completions")

    @app.get("/v1/models", tags=["openai"])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_object(services, view) for view in pool.snapshot()]}

    @app.get("/v1/models/{model:path}", tags=["openai"])
    async def get_model(model: str) -> dict[str, Any]:
        pool.entry(model)
        view = next(v for v in pool.snapshot() if v["name"] == model)
        return _model_object(services, view)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        if services.relay is None or pool._closing:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "models": {v["name"]: v["state"] for v in pool.snapshot()}})

    @app.get("/metrics", tags=["telemetry"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        pool.account_all()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(admin.router(services))
    app.include_router(hint.router(services))
    return app


async def _generate(services: Services, request: Request, req: GenerationRequest, path: str) -> Response:
    arrived = services.clock.now()
    pool = services.pool
    caps = await pool.capabilities(req.model)
    check_request(req, caps)
    keep_alive = keep_alive_of(req)
    assert services.relay is not None
    model = req.model
    metrics = services.metrics

    def finish(lease: Lease | None, status: int, ttft: float | None) -> None:
        start = lease.start if lease is not None else "cold"
        metrics.requests.labels(model, start, str(status)).inc()
        if ttft is not None and status == 200:
            metrics.ttft_seconds.labels(model, start).observe(ttft)

    try:
        return await services.relay.forward(request, model, path, engine_body(req), req.stream, keep_alive,
                                            arrived, finish)
    except Unavailable as exc:
        warm = pool.state_of(model).value == "warm"
        metrics.requests.labels(model, "warm" if warm else "cold", str(exc.status)).inc()
        raise


def _model_object(services: Services, view: dict[str, Any]) -> dict[str, Any]:
    return {"id": view["name"], "object": "model", "created": int(services.started_wall),
            "owned_by": "warmstart", **{k: v for k, v in view.items() if k != "name"}}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def on_request_error(_request: Request, exc: RequestError) -> Response:
        status, body, headers = error_response(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(Unavailable)
    async def on_unavailable(_request: Request, exc: Unavailable) -> Response:
        status, body, headers = error_response(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> Response:
        message, param = validation_message(exc.errors())
        return JSONResponse(openai_error_body(message, "invalid_request_error", "invalid_request", param),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(openai_error_body(str(exc.detail), kind, code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return JSONResponse(openai_error_body("internal error in warmstart; see its log", "server_error",
                                              "internal_error"), status_code=500)
