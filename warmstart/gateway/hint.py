"""The warm hint: `POST /v1/warm` {"model"} (also what navigator.sendBeacon sends), `GET /v1/warm?model=`
for image pings, and `/warmstart.js`, a script a page includes to send them. Answers 202 at once with the
model's state; a refused hint (rate, allowlist, hourly budget) starts nothing and answers 403 or 429."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from warmstart.errors import (
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RequestError,
)
from warmstart.gateway.translate import error_json

if TYPE_CHECKING:
    from warmstart.gateway.services import Services

MAX_BODY = 4096

SCRIPT = r"""// warmstart.js: warm the model this page will use, before the user sends a prompt.
// <script src="https://YOUR-WARMSTART/warmstart.js" data-model="MODEL" data-prompt="textarea" defer></script>
(function () {
  var me = document.currentScript;
  if (!me) return;
  var model = me.getAttribute("data-model");
  if (!model) return;
  var selector = me.getAttribute("data-prompt") || "textarea, input[type=text]";
  var url = new URL("/v1/warm", me.src).href;
  var last = 0;
  function ping() {
    var now = Date.now();
    if (now - last < 30000) return;  // the server keeps it warm for a while; no need to ask again so soon
    last = now;
    var body = JSON.stringify({ model: model });
    if (navigator.sendBeacon && navigator.sendBeacon(url, body)) return;
    new Image().src = url + "?model=" + encodeURIComponent(model) + "&t=" + now;
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ping);
  else ping();
  document.addEventListener("focusin", function (e) {
    if (e.target && e.target.matches && e.target.matches(selector)) ping();
  });
  window.warmstart = { warm: function () { last = 0; ping(); } };
})();
"""


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["warming"])
    def allowed() -> set[str]:  # the config in force: a reload may change it
        return set(services.config.warming.hint.cors_origins)

    def cors(request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        origins = allowed()
        if origin and ("*" in origins or origin in origins):
            return {"access-control-allow-origin": origin, "vary": "Origin"}
        return {}

    def refuse(request: Request, exc: RequestError) -> Response:
        return error_json(exc, cors(request))

    def answer(request: Request, model: Any) -> Response:
        try:
            return JSONResponse(_hint(services, request, model, allowed()), status_code=202, headers=cors(request))
        except RequestError as exc:
            return refuse(request, exc)

    @api.post("/v1/warm")
    async def warm_post(request: Request) -> Response:
        """Warm a model for a short while (JSON body {"model": ...}, any content type, as sendBeacon sends)."""
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return refuse(request, PayloadTooLarge(f"The body of a warm hint is at most {MAX_BODY} bytes."))
        model: Any = request.query_params.get("model")
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return refuse(request, InvalidRequest('The body must be JSON like {"model": "name"}.'))
            model = body.get("model", model)
        return answer(request, model)

    @api.get("/v1/warm")
    async def warm_get(request: Request) -> Response:
        """The same as POST, for an image ping: GET /v1/warm?model=name."""
        return answer(request, request.query_params.get("model"))

    @api.options("/v1/warm", include_in_schema=False)
    async def warm_preflight(request: Request) -> Response:
        headers = cors(request)
        if headers:
            headers.update({"access-control-allow-methods": "GET, POST, OPTIONS",
                            "access-control-allow-headers": "content-type", "access-control-max-age": "600"})
        return Response(status_code=204, headers=headers)

    @api.get("/warmstart.js", include_in_schema=False)
    async def script() -> Response:
        return Response(SCRIPT, media_type="application/javascript",
                        headers={"cache-control": "public, max-age=300"})

    return api


def _hint(services: Services, request: Request, model: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    runner = services.warming
    hint = services.config.warming.hint
    if runner is None or not hint.enabled:
        raise PermissionDenied("Warm hints are turned off on this server ([warming.hint] enabled = false).")
    origin = page_origin(request)
    # browsers send Origin on a same-origin POST too (sendBeacon does): a page warmstart serves itself is allowed
    same_origin = origin is not None and urlsplit(origin).netloc == request.headers.get("host")
    if origin and not same_origin and "*" not in allowed and origin not in allowed:
        services.metrics.hints.labels(model if services.pool.has_model(model) else "", "origin_not_allowed").inc()
        raise PermissionDenied(f"Warm hints from {origin} are not accepted; add it to [warming.hint] cors_origins.")
    client = request.client.host if request.client else "unknown"
    decision = runner.hint(model, client)
    if decision.outcome == "unknown_model":
        services.pool.check_model(model)  # raises the usual 404 naming the models served here
        raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
    if decision.outcome == "not_allowed":
        raise PermissionDenied(f"Warm hints may not warm the model '{model}' ([warming.hint] models).",
                               param="model")
    if decision.outcome == "rate_limited":
        raise RateLimited("Too many warm hints from this client; try again later.",
                          retry_after=_seconds(decision.retry_after), code="hint_rate_limited")
    if decision.outcome == "over_budget" and decision.retry_after is not None and math.isinf(decision.retry_after):
        raise PermissionDenied(f"A hint cannot start the model '{model}': it never unloads (its keep_alive is "
                               "negative), and no hint budget pays for a replica kept forever.", param="model")
    if decision.outcome == "over_budget":
        raise RateLimited("The hourly budget of hint-started replica-seconds is spent; nothing was started.",
                          retry_after=_seconds(decision.retry_after), code="hint_budget_exhausted")
    return {"model": model, "state": services.pool.state_of(model).value, "outcome": decision.outcome,
            "warm_for_s": hint.warm_for}


def page_origin(request: Request) -> str | None:
    """The origin of the page that sent a hint. A browser's image ping (GET) carries no Origin: then the
    Referer's origin stands for it, and a request the browser marks as cross-site (Sec-Fetch-Site) with
    neither is from an unknown page ("null"). None: no page (curl, a server), judged by keys alone."""
    origin = request.headers.get("origin")
    if origin:
        return origin
    referer = urlsplit(request.headers.get("referer") or "")
    if referer.scheme and referer.netloc:
        return f"{referer.scheme}://{referer.netloc}"
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return "null"
    return None


def _seconds(value: float | None) -> float:
    return 60.0 if value is None or math.isinf(value) else max(1.0, value)
