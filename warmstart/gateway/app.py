"""The gateway's app factory: OpenAI routes, admin routes, health, metrics; errors in OpenAI's format."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from warmstart import __version__
from warmstart.catalog import Catalog
from warmstart.clock import Clock, SystemClock
from warmstart.config import Config
from warmstart.errors import RequestError, Unavailable, openai_error_body
from warmstart.gateway import admin, hint, ollama, openapi, web
from warmstart.gateway.access import AccessLog
from warmstart.gateway.auth import Auth
from warmstart.gateway.engine_http import EngineClient
from warmstart.gateway.fastpath import FastPath
from warmstart.gateway.generate import generate
from warmstart.gateway.limits import BodyLimit
from warmstart.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from warmstart.gateway.relay import Relay
from warmstart.gateway.services import Services
from warmstart.gateway.translate import (
    error_json,
    internal_error_json,
    invalid_request_json,
)
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from warmstart.warming.runner import WarmingRunner

log = logging.getLogger("warmstart.gateway")


class Gateway:
    """The ASGI app: API keys, then the generation routes' fast path, then the FastAPI app."""

    def __init__(self, app: FastAPI, config: Config) -> None:
        self.app = app
        self.services: Services = app.state.services
        self.fast = FastPath(app, self.services)
        self.auth = self._asgi = auth = Auth(self.fast, config.auth, config.auth_required, config.loopback_only)
        if self.services.catalog is not None:  # keys changed in the config apply at a reload
            self.services.catalog.listeners.append(lambda cfg, _changes: auth.update(cfg.auth, cfg.auth_required))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._asgi(scope, receive, send)


def create_app(config: Config, pool: Pool, metrics: Metrics, clock: Clock | None = None,
               load: Callable[[], Config] | None = None, warming: WarmingRunner | None = None) -> Gateway:
    """`load` reads the config again for a reload (default: the file `config` came from)."""
    return Gateway(create_fastapi_app(config, pool, metrics, clock, load, warming), config)


def create_fastapi_app(config: Config, pool: Pool, metrics: Metrics, clock: Clock | None = None,
                       load: Callable[[], Config] | None = None, warming: WarmingRunner | None = None) -> FastAPI:
    """`warming`: the runner when the caller made (and may have started) it, else one is made here when
    [warming] is enabled; the lifespan starts it (unless started) and stops it."""
    clock = clock or SystemClock()
    services = Services(config=config, pool=pool, metrics=metrics, clock=clock, started_wall=time.time())
    services.catalog = catalog = Catalog(config, pool, load)
    if config.server.access_log != "off":
        services.access = AccessLog(config.server.access_log)
    if warming is None and config.warming.enabled:
        from warmstart.warming.runner import new_runner

        warming = new_runner(config, pool, clock, metrics)
    if warming is not None:
        services.warming = warming
        catalog.listeners.append(warming.reconfigure)

    def in_force(cfg: Config, _changes: object) -> None:
        services.config = cfg

    catalog.listeners.insert(0, in_force)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # engines' HTTP servers (uvicorn, llama-server) close a connection idle for 5 s: the gateway lets go
        # first, or a request could go out on one just as the engine closes it and fail the replica
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        client = EngineClient(later=services.afterwards.later)
        services.relay = Relay(pool, metrics, client, session, clock.now, config.server.engine_timeout,
                               later=services.afterwards.later)
        patrol = asyncio.get_running_loop().create_task(services.relay.liveness.patrol(pool), name="liveness")
        catalog.refresh()  # the models added to the store, served beside the configured ones
        if services.warming is not None:
            await services.warming.start()
        try:
            yield
        finally:
            patrol.cancel()
            if services.warming is not None:
                await services.warming.stop()
            await pool.shutdown()
            await client.close()
            if services.access is not None:
                services.access.close()
            await session.close()

    # /docs from the Swagger UI warmstart ships (web/static/vendor), not a CDN: it works offline
    app = FastAPI(title="warmstart", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-compatible gateway that holds requests while a model starts.")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="warmstart API",
                                   swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg",
                                   # no badge from validator.swagger.io: nothing leaves the server
                                   swagger_ui_parameters={"validatorUrl": None})
    app.state.services = services
    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)
    _install_error_handlers(app)

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await generate(services, request, body, "/v1/chat/completions")

    @app.post("/v1/completions", tags=["openai"])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await generate(services, request, body, "/v1/completions")

    @app.post("/v1/embeddings", tags=["openai"])
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await generate(services, request, body, "/v1/embeddings")

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [_model_object(services, view, _operator(request))
                                           for view in pool.snapshot()]}

    @app.get("/v1/models/{model:path}", tags=["openai"])
    async def get_model(model: str, request: Request) -> dict[str, Any]:
        return _model_object(services, pool.view(model), _operator(request))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        if services.relay is None or not pool.accepting:
            return JSONResponse({"status": "not ready"}, status_code=503)
        states = {name: pool.state_of(name).value for name in pool.model_names()}
        return JSONResponse({"status": "ready", "models": states})

    @app.get("/metrics", tags=["telemetry"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        pool.account_all()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(admin.router(services))
    app.include_router(hint.router(services))
    app.include_router(web.router(services))
    app.include_router(ollama.router(services))
    openapi.install(app)
    return app


# what an API key (not an operator's admin key) is not shown: where the model's files are on the server
OPERATOR_ONLY = frozenset({"name", "path"})


def _operator(request: Request) -> bool:
    return bool(request.scope.get("state", {}).get("operator", False))


def _model_object(services: Services, view: dict[str, Any], operator: bool = True) -> dict[str, Any]:
    hidden = {"name"} if operator else OPERATOR_ONLY
    return {"id": view["name"], "object": "model", "created": int(services.started_wall),
            "owned_by": "warmstart", **{k: v for k, v in view.items() if k not in hidden}}


def _install_error_handlers(app: FastAPI) -> None:
    async def on_error(_request: Request, exc: RequestError | Unavailable) -> Response:
        return error_json(exc)

    app.add_exception_handler(RequestError, on_error)  # type: ignore[arg-type]
    app.add_exception_handler(Unavailable, on_error)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> Response:
        return invalid_request_json(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(openai_error_body(str(exc.detail), kind, code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return internal_error_json()
