"""Admin routes: warm, unload and hold a model in RAM (what `warmstart warm`, `unload` and `hold` call); reload
the config and add a model to the store (`warmstart reload`, or an operator's script)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body
from starlette.responses import JSONResponse

from warmstart.errors import ConfigError, Conflict, InvalidRequest, StoreError
from warmstart.gateway.translate import parse_keep_alive

if TYPE_CHECKING:
    from warmstart.gateway.services import Services


def router(services: Services) -> APIRouter:
    api = APIRouter(prefix="/admin", tags=["admin"])
    pool = services.pool

    @api.post("/models/{model:path}/warm")
    async def warm(model: str, body: dict[str, Any] | None = Body(default=None)) -> JSONResponse:
        """Start a replica of the model unless one is loaded; with wait=true, answer once it is warm."""
        body = body or {}
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        wait = body.get("wait", True)
        if not isinstance(wait, bool):
            raise InvalidRequest("'wait' must be true or false", param="wait")
        pool.check_model(model)
        await pool.capabilities(model)
        pool.ensure_warm(model, "manual", keep_alive=keep_alive)
        if wait:
            await pool.wait_warm(model, services.config.server.start_timeout)
        state = pool.state_of(model).value
        status = 200 if state == "warm" or not wait else 503
        return JSONResponse(pool.view(model), status_code=status if state != "failed" else 503)

    @api.post("/models/{model:path}/unload")
    async def unload(model: str) -> JSONResponse:
        """Stop the model's replicas: idle ones now, busy ones when their requests end."""
        stopped = await pool.unload(model)
        return JSONResponse({"stopped": stopped, **pool.view(model)})

    @api.post("/models/{model:path}/ram")
    async def hold(model: str, body: dict[str, Any] | None = Body(default=None)) -> JSONResponse:
        """Hold the model's weights in the RAM tier now, loaded or not, for `keep_alive` (default: its
        ram_keep_alive, or 1h when it has none; -1 until unloaded; 0 lets them go back to disk). Answers
        once they are held, or 409 with the limit that refused the hold."""
        pool.check_model(model)  # 404 for an unknown model before the body is looked at
        keep_alive = parse_keep_alive((body or {}).get("keep_alive"))
        try:
            await pool.hold_in_ram(model, keep_alive)
        except StoreError as exc:
            raise Conflict(str(exc), code="ram_tier_refused") from None
        return JSONResponse(pool.view(model))

    @api.post("/reload")
    async def reload() -> JSONResponse:
        """Read the config file again and apply it (as SIGHUP does): models added, removed (drained) or changed;
        a config that does not load is refused with 400 and the one in force keeps serving."""
        assert services.catalog is not None
        try:
            report = await services.catalog.reload()
        except ConfigError as exc:
            raise InvalidRequest(f"the config was not reloaded, the one in force keeps serving: {exc}",
                                 code="invalid_config") from None
        return JSONResponse({**report.to_dict(), "summary": report.summary()})

    @api.post("/models")
    async def add_model(body: dict[str, Any] | None = Body(default=None)) -> JSONResponse:
        """Add a model file (or folder) on the server's disk to the store, as `warmstart models add` does;
        it is served at once under its name. Body: path (absolute), and optionally name, engine, replace."""
        return await _add_to_store(services, body or {})

    @api.get("/nodes")
    async def nodes() -> JSONResponse:
        """The cluster's nodes (`[cluster]` on), with memory and models per tier; none on a single box."""
        view = pool.nodes_view()
        return JSONResponse({"cluster": view is not None, "nodes": view or []})

    return api


async def _add_to_store(services: Services, body: dict[str, Any]) -> JSONResponse:
    import asyncio
    from pathlib import Path

    from warmstart.engines.registry import ENGINES
    from warmstart.store.manifest import ManifestStore

    path, name, engine, replace = body.get("path"), body.get("name"), body.get("engine"), body.get("replace", False)
    if not isinstance(path, str) or not Path(path).is_absolute():
        raise InvalidRequest("'path' must be the absolute path of a model file or folder on the server", param="path")
    if not Path(path).exists():
        raise InvalidRequest(f"no such file or folder on the server: {path}", param="path")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest("'name' must be a string", param="name")
    if engine is not None and engine not in ENGINES:
        raise InvalidRequest(f"'engine' must be one of {', '.join(ENGINES)}", param="engine")
    if not isinstance(replace, bool):
        raise InvalidRequest("'replace' must be true or false", param="replace")
    config = services.config
    if not config.store.serve_added:
        raise Conflict("this server serves only its configured models (store.serve_added = false)",
                       code="store_models_off")
    model = name or (Path(path).stem if Path(path).is_file() else Path(path).name)
    if model in {m.name for m in config.models}:
        raise Conflict(f"a configured model is named '{model}'; pass another name", code="model_exists")
    store = ManifestStore(config.server.data_dir)
    try:
        if not replace and store.get(model) is not None:
            raise Conflict(f"model '{model}' is already in the store; pass \"replace\": true to replace it",
                           code="model_exists")
        manifest = await asyncio.to_thread(store.add, Path(path), name=name, engine=engine, replace_existing=replace)
    except StoreError as exc:
        raise InvalidRequest(str(exc), param="path") from None
    assert services.catalog is not None
    services.catalog.refresh()
    if not services.pool.has_model(manifest.name):  # added, but its engine needs settings of its own
        why = services.catalog.unservable.get(manifest.name, "a configured model refers to it")
        return JSONResponse({"id": manifest.name, "served": False, "problem": why}, status_code=201)
    return JSONResponse({"id": manifest.name, "served": True, **services.pool.view(manifest.name)}, status_code=201)
