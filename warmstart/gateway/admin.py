"""Admin routes: warm, unload and hold a model in RAM (what `warmstart warm`, `unload` and `hold` call)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body
from starlette.responses import JSONResponse

from warmstart.errors import Conflict, InvalidRequest, StoreError
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

    return api
