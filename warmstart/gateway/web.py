"""The web pages: the dashboard at `/`, the playground at `/playground`, their assets under `/static/`, and
the dashboard's data at `GET /api/dashboard` (behind the API key when keys are configured).

Every asset is read from warmstart/web/static/ once, at start-up, and served from memory: the pages fetch
nothing from anywhere else (their Content-Security-Policy says so to the browser too).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import html
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from warmstart import __version__
from warmstart.telemetry.window import Figures, HourWindow

log = logging.getLogger("warmstart.gateway")

if TYPE_CHECKING:
    from warmstart.gateway.services import Services

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
GZIP_ABOVE = 8192
# how many past starts the dashboard draws per model
HISTORY = 10


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets(root: Path = STATIC) -> dict[str, Asset]:
    assets = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[path.relative_to(root).as_posix()] = Asset(body, TYPES[path.suffix], etag)
    return assets


def router(services: Services) -> APIRouter:
    assets = load_assets()
    clock = services.clock
    window = HourWindow(services.metrics, started=clock.now())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_sample_forever(window, services), name="dashboard window")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    api = APIRouter(tags=["web"], lifespan=lifespan)

    def page(name: str, substitute: dict[str, str] | None = None) -> Response:
        asset = assets[name]
        body = asset.body
        for key, value in (substitute or {}).items():
            body = body.replace(("{{" + key + "}}").encode(), html.escape(value, quote=True).encode())
        return Response(body, media_type=asset.media_type,
                        headers={"content-security-policy": CSP, "cache-control": "no-cache",
                                 "x-content-type-options": "nosniff", "referrer-policy": "same-origin"})

    @api.get("/", include_in_schema=False)
    async def dashboard_page() -> Response:
        return page("dashboard.html")

    @api.get("/playground", include_in_schema=False)
    async def playground_page(request: Request) -> Response:
        model = request.query_params.get("model") or ""
        if not services.pool.has_model(model):
            model = default_chat_model(services)
        return page("playground.html", {"model": model})

    @api.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None or name.endswith(".html"):
            raise HTTPException(404, f"No asset named '{name}'.")
        headers = {"etag": asset.etag, "cache-control": "no-cache", "x-content-type-options": "nosniff"}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    @api.get("/api/dashboard")
    async def dashboard_data(request: Request) -> Response:
        """Every model's state, replicas and recent starts, and the last hour's figures (see docs/web.md)."""
        views = services.pool.snapshot()  # accounts replica-seconds up to now, which the figures then read
        window_s, per_model, totals = window.figures(clock.now())
        body = json.dumps(dashboard(services, views, window_s, per_model, totals), separators=(",", ":")).encode()
        headers = {"cache-control": "no-store"}
        if len(body) > GZIP_ABOVE and "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=5)
            headers.update({"content-encoding": "gzip", "vary": "Accept-Encoding"})
        return Response(body, media_type="application/json", headers=headers)

    return api


async def _sample_forever(window: HourWindow, services: Services) -> None:
    while True:
        await services.clock.sleep(window.interval)
        try:
            services.pool.account_all()
            window.sample(services.clock.now())
        except Exception:  # a bad sample must not end the sampling: the next one may work
            log.exception("dashboard: sampling the metrics failed")


def default_chat_model(services: Services) -> str:
    """The playground's model when none is asked for: the first that can chat (or simply the first)."""
    models = services.pool.configs()
    for model in models:
        caps = services.pool.known_capabilities(model.name)
        chat = caps.chat if caps is not None else model.chat
        if chat is not False:
            return model.name
    return models[0].name if models else ""


def dashboard(services: Services, views: list[dict[str, Any]], window_s: float, per_model: dict[str, Figures],
              totals: Figures) -> dict[str, Any]:
    """The dashboard's data from the pool's snapshot (`views`) and the last hour's figures."""
    pool = services.pool
    created = {r.id: r.created_at for name in pool.model_names() for r in pool.replicas(name)}
    now = services.clock.now()
    models = [model_row(view, per_model.get(view["name"]), created, now) for view in views]
    states: dict[str, int] = {}
    for m in models:
        states[m["state"]] = states.get(m["state"], 0) + 1
    data = {
        "version": __version__,
        "now": services.clock.wall(),
        "uptime_s": round(services.clock.wall() - services.started_wall, 1),
        "window_s": round(window_s, 1),
        "states": states,
        "totals": totals.to_dict(),
        "models": models,
    }
    nodes = pool.nodes_view()
    if nodes is not None:  # many machines: each node's memory and models per tier
        data["nodes"] = nodes
    return data


def model_row(view: dict[str, Any], hour: Figures | None, created: dict[str, float], now: float) -> dict[str, Any]:
    """One model as the dashboard draws it (a compact form of /v1/models' entry, plus its last hour)."""
    replicas = []
    for r in view["replicas"]:
        row = {k: r[k] for k in ("id", "state", "phase", "in_flight", "idle_s", "expires_in_s", "trigger", "pid",
                                 "node")}
        if r["state"] == "starting":
            row["phases"] = r["phases"]
            row["elapsed_s"] = round(now - created[r["id"]], 2) if r["id"] in created else None
        replicas.append(row)
    starting = [r for r in replicas if r["state"] == "starting"]
    last = view["last_start"]
    return {
        "name": view["name"],
        "engine": view["engine"],
        "state": view["state"],
        "phase": starting[0]["phase"] if starting else None,
        "replicas": replicas,
        "queue": view["queue_depth"],
        "keep_alive_s": view["keep_alive_s"],
        "unload_in_s": unload_in(replicas),
        # the trigger of the start under way, else of the last one
        "trigger": starting[0]["trigger"] if starting else (last["trigger"] if last else None),
        "last_start": last,
        "starts": view["starts"][-HISTORY:],
        "last_failure": view["last_failure"],
        "problem": view["problem"],
        "hour": hour.to_dict() if hour is not None else None,
    }


def unload_in(replicas: list[dict[str, Any]]) -> float | None:
    """Seconds until the model goes cold if no request comes: the last idle warm replica's expiry.
    None when nothing is warm, when a replica is busy, or when keep-alive is forever."""
    warm = [r for r in replicas if r["state"] == "warm"]
    if not warm or any(r["in_flight"] > 0 or r["expires_in_s"] is None for r in warm):
        return None
    return float(max(r["expires_in_s"] for r in warm))
